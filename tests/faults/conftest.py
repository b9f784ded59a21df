"""The fault suite uses the serving tests' real-server and engine fixtures (``tests/serving/harness.py``)."""

from serving.harness import engine_factory, make_recorder, server, slow, slow_server_factory  # noqa: F401
