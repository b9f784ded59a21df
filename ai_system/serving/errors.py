"""One error shape for everything the server refuses, and one counter that sees every refusal.

Every error leaves as OpenAI's ``{"error": {"message", "type", "param", "code"}}`` (``code`` is the
HTTP status), whichever layer refuses: the endpoints (``APIError``), request validation, the
framework (a body that is not UTF-8 or JSON nested too deeply, an unknown route), an unexpected
exception (500, logged with its traceback), the HTTP guard (``http_guard``: auth, size and time
limits) and the HTTP parser. Each is counted once in ``aisys_request_errors_total{kind}``.

The body is rendered with ``ensure_ascii``: a message that quotes a lone surrogate (``"\\ud800"``)
still encodes, where UTF-8 rendering would itself fail with a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

ErrorCounter = Callable[[str], None]
"""Counts one error of a kind (the ``kind`` label of ``aisys_request_errors_total``)."""

ERROR_KINDS = ("invalid_request", "not_found", "unauthorized", "body_too_large", "headers_too_large", "timeout",
               "invalid_http", "queue_full", "unavailable", "client_disconnected", "engine_error", "internal_error")


class APIError(Exception):
    """A refusal with its HTTP status, OpenAI error ``type``, offending ``param`` and metric ``kind``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 kind: str = "invalid_request", headers: dict[str, str] | None = None) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"error kind must be one of {ERROR_KINDS}, got {kind!r}")
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.kind = status, message, type, param, kind
        self.headers = headers or {}


def error_body(status: int, message: str, type: str = "invalid_request_error", param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "param": param, "code": status}}).encode()


def error_response(error: APIError) -> Response:
    return Response(error_body(error.status, error.message, error.type, error.param), status_code=error.status,
                    media_type="application/json", headers=error.headers)


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    issues = error.errors()
    if issues and issues[0]["type"] == "json_invalid":
        return f"malformed JSON body near character {issues[0]['loc'][-1]}", None
    fields = [".".join(str(part) for part in issue["loc"] if part != "body") for issue in issues]
    problems = "; ".join(f"{name or 'body'}: {issue['msg']}" for name, issue in zip(fields, issues, strict=True))
    hint = "" if all(fields) else " (send a JSON object with Content-Type: application/json)"
    return f"invalid request: {problems}{hint}", fields[0] if fields and fields[0] else None


def _unparsable_body_message(cause: BaseException | None) -> str:
    """FastAPI answers every body it cannot decode with one vague 400; say which problem it was."""
    if isinstance(cause, UnicodeDecodeError):
        return f"request body is not UTF-8: byte 0x{cause.object[cause.start]:02x} at position {cause.start}"
    if isinstance(cause, RecursionError):
        return "request JSON is nested too deeply to parse"
    return f"request body could not be parsed: {type(cause).__name__}: {cause}" if cause else \
        "request body could not be parsed"


def install_error_handlers(app: FastAPI, count: ErrorCounter) -> None:
    """Answer every error raised inside ``app`` in the one shape, and count it."""

    def respond(error: APIError) -> Response:
        count(error.kind)
        return error_response(error)

    @app.exception_handler(APIError)
    async def api_error(_: HTTPRequest, error: APIError) -> Response:
        return respond(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: HTTPRequest, error: RequestValidationError) -> Response:
        message, param = _validation_message(error)
        return respond(APIError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: HTTPRequest, error: StarletteHTTPException) -> Response:
        if error.status_code == 404:
            return respond(APIError(404, f"no endpoint {request.method} {request.url.path} here", kind="not_found"))
        if error.status_code == 405:
            return respond(APIError(405, f"{request.url.path} does not answer {request.method}",
                                    headers=dict(error.headers or {})))
        if error.status_code == 400:
            return respond(APIError(400, _unparsable_body_message(error.__cause__)))
        return respond(APIError(error.status_code, str(error.detail), headers=dict(error.headers or {})))

    @app.exception_handler(Exception)
    async def internal_error(request: HTTPRequest, error: Exception) -> Response:
        logger.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=error)
        return respond(APIError(500, f"internal error: {type(error).__name__}", type="server_error",
                                kind="internal_error"))
