"""The shared server and engine fixtures (``harness``)."""

from serving.harness import engine_factory, make_recorder, server, slow, slow_server_factory  # noqa: F401
