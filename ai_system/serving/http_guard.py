"""What a connection and a request must pass before the app sees them: size and time limits, the API key.

uvicorn alone bounds none of this: a header section grows as long as the client sends it, a client
that sends a header byte every few seconds holds its connection forever (slowloris), and a body is
read as slowly and as far as the client likes. Two layers close that:

- ``guarded_http_protocol``: uvicorn's httptools protocol with a deadline for each request's header
  section (from the connection's start or the end of the previous response; 408 if bytes came,
  a silent close if none did) and a bound on its size (431). It also answers the parser's own
  400s (not HTTP at all) in the API's error shape.
- ``RequestGuard``: ASGI middleware that checks the bearer token of ``/v1/`` requests (401), refuses a
  declared ``Content-Length`` over the limit at once (413), then reads the body under a size bound
  (413) and a deadline (408) before the app runs. uvicorn stops reading a socket once 64 KiB of
  body wait unread, so a refused body never sits in memory.

Every refusal closes the connection, is answered in ``errors``' shape and counted.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from dataclasses import dataclass, fields
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ai_system.serving.errors import APIError, ErrorCounter, error_body, error_response

PROTECTED_PREFIX = "/v1/"


@dataclass(frozen=True)
class HTTPLimits:
    """Bounds on what one client may make the server hold, and for how long.

    The defaults fit this server's API: a prompt is at most a model context of text (8,192 tokens
    of the 8B config is ~32 KiB), so a 1 MiB body is generous; browsers and SDKs send well under
    8 KiB of headers (nginx's default buffers hold 32 KiB).
    """

    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 32 << 10
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"HTTPLimits.{spec.name} must be a positive finite number, got {value!r}")


def _raw_response(status: int, message: str) -> bytes:
    body = error_body(status, message)
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class _HeadersTooLarge(Exception):
    pass


def guarded_http_protocol(limits: HTTPLimits, count: ErrorCounter) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header-section deadline and size bound (pass as ``http=``)."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._header_bytes = 0
            self._header_sections = 0
            self._pending_refusal: tuple[int, str, str] | None = None
            self._awaiting_headers = True
            self._header_timer: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            """Counts a chunk as header bytes only if it lies wholly inside one header section: a chunk
            that holds a whole request, or ends a body and starts the next request, is not counted here
            (``on_headers_complete`` measures that section exactly), so a miss holds at most one read."""
            inside_before, sections_before = self._awaiting_headers, self._header_sections
            super().data_received(data)
            if inside_before and self._awaiting_headers and self._header_sections == sections_before \
                    and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > limits.max_header_bytes:
                    self._refuse(431, "headers_too_large", f"request header section is larger than "
                                                          f"{limits.max_header_bytes} bytes")

        def on_headers_complete(self) -> None:
            """Measures the parsed section exactly (a section that arrived in one read was not counted)
            and refuses it before the app runs; raising stops the parser, which calls ``send_400_response``."""
            self._header_sections += 1
            self._awaiting_headers = False
            self._header_bytes = 0
            self._disarm_header_timer()
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > limits.max_header_bytes:
                self._pending_refusal = (431, "headers_too_large", f"request header section is larger than "
                                                                   f"{limits.max_header_bytes} bytes")
                raise _HeadersTooLarge
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._awaiting_headers = True

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._awaiting_headers and not self.transport.is_closing():
                self._arm_header_timer()

        def send_400_response(self, msg: str) -> None:
            self._refuse(*(self._pending_refusal or
                           (400, "invalid_http", f"not a valid HTTP/1.1 request ({msg.rstrip('.')})")))

        def _refuse(self, status: int, kind: str, message: str) -> None:
            count(kind)
            self._disarm_header_timer()
            self.transport.write(_raw_response(status, message))
            self.transport.close()

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._header_deadline_passed)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline_passed(self) -> None:
            self._header_timer = None
            responding = self.cycle is not None and not self.cycle.response_complete
            if not self._awaiting_headers or responding or self.transport.is_closing():
                return
            if self._header_bytes:
                self._refuse(408, "timeout", f"request headers did not arrive within {limits.header_timeout_s} s")
            else:
                self.transport.close()

    return GuardedHttpToolsProtocol


def uvicorn_options(limits: HTTPLimits, count: ErrorCounter) -> dict[str, object]:
    """The ``uvicorn.Config`` keywords that apply ``limits`` at the connection level."""
    return {"http": guarded_http_protocol(limits, count), "timeout_keep_alive": limits.keep_alive_s}


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class RequestGuard:
    """ASGI middleware: the API key for ``/v1/`` routes, then the whole body read within its bounds."""

    def __init__(self, app: ASGIApp, limits: HTTPLimits, count: ErrorCounter, api_key: str | None = None) -> None:
        self.app = app
        self.limits = limits
        self.count = count
        self.expected_authorization = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.expected_authorization is not None and scope["path"].startswith(PROTECTED_PREFIX) and \
                not hmac.compare_digest(headers.get(b"authorization", b""), self.expected_authorization):
            await self._refuse(scope, receive, send, APIError(
                401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                type="authentication_error", kind="unauthorized", headers={"WWW-Authenticate": "Bearer"}))
            return
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            await self._refuse(scope, receive, send, self._too_large(int(declared)))
            return
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.limits.body_timeout_s)
        except _ClientGone:
            return
        except _BodyTooLarge:
            await self._refuse(scope, receive, send, self._too_large())
            return
        except asyncio.TimeoutError:
            await self._refuse(scope, receive, send, APIError(
                408, f"request body did not arrive within {self.limits.body_timeout_s} s", kind="timeout"))
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int | None = None) -> APIError:
        sent = f" (got {size} bytes)" if size is not None else ""
        return APIError(413, f"request body is larger than the limit of {self.limits.max_body_bytes} bytes{sent}",
                        kind="body_too_large")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: APIError) -> None:
        self.count(error.kind)
        error.headers["Connection"] = "close"
        await error_response(error)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the connection's own events."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
