"""Server faults: every bad input and hostile client gets a bounded, counted answer in one error shape.

Issue 11, defects 1-5: a request that killed the engine (``top_p=1e-46``), a lone surrogate and
framework-level 400s in another shape and uncounted, no body/header/slow-connection limits, no auth,
unchecked ports, and configuration errors that ended in tracebacks. Each has a regression test here,
with the overload and dropped-stream tests that already passed.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from serving.harness import RunningServer, metric_samples, running_server, wait_for

from ai_system.cli import main
from ai_system.data.tokenizer import ByteTokenizer
from ai_system.inference.engine import EngineConfig, EngineThread, load_model
from ai_system.inference.generate import SamplingParams, generate
from ai_system.serving.http_guard import HTTPLimits
from ai_system.serving.server import create_app

TIGHT = HTTPLimits(max_body_bytes=4096, max_header_bytes=4096, header_timeout_s=1.0, body_timeout_s=1.0,
                   keep_alive_s=1.0)


@pytest.fixture(scope="module")
def tight() -> Iterator[RunningServer]:
    """A server with small limits and short timeouts, whose engine iterations take at least 10 ms."""
    with running_server(EngineConfig(max_batch_size=4), step_delay_s=0.01, limits=TIGHT) as running:
        yield running


def errors_counted(server: RunningServer) -> dict[str, float]:
    return {name.split('"')[1]: value for name, value in metric_samples(server.url).items()
            if name.startswith("aisys_request_errors_total{")}


def assert_error_shape(body: bytes | str, status: int, text: str) -> dict:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status, error
    assert text in error["message"], error
    return error


def raw_exchange(server: RunningServer, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send raw bytes on a new connection; everything the server sends until it closes the connection."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(("body", "message"), [
    (b'{"prompt": "unterminated', "malformed JSON"),
    (b'["a", "list"]', "valid dictionary"),
    (b'{"max_tokens": 4}', "prompt: Field required"),
    (b'{"prompt": ["token", "list"]}', "prompt: Input should be a valid string"),
    (b'{"prompt": "hi", "max_tokens": "4"}', "max_tokens: Input should be a valid integer"),
    (b'{"prompt": "hi", "stream": "yes"}', "stream: Input should be a valid boolean"),
    (b'{"prompt": "", "max_tokens": 4}', "empty prompt"),
    (b'{"prompt": "' + b"x" * 5000 + b'", "max_tokens": 4}', "prompt length 5000 + max_tokens 4"),
    (b'{"prompt": "hi", "max_tokens": 1000000000}', "exceeds the context of 128 tokens"),
    (b'{"prompt": "hi", "max_tokens": 0}', "max_tokens must be at least 1, got 0"),
    (b'{"prompt": "hi", "temperature": -1}', "temperature must be >= 0"),
    (b'{"prompt": "hi", "top_p": 2}', "top_p must be in (0, 1]"),
    (b'{"prompt": "hi", "temperature": NaN}', "temperature: Input should be a finite number"),
    (b'{"prompt": "hi", "seed": -1}', "seed: Input should be greater than or equal to 0"),
    (b'{"prompt": "hi", "seed": 100000000000000000000000}', "seed: Input should be less than"),
    (b'{"prompt": "hi", "top_p": 1e-46}', "not round to 0 in torch.float32"),
    (b'{"prompt": "hi", "temperature": 1e39}', "temperature must be finite in torch.float32"),
    (b'{"prompt": "\\ud800 lone", "max_tokens": 2}', "lone UTF-16 surrogate ('\\ud800' at character 0)"),
    (b'{"prompt": "hi", "n": 2}', "n=2 is not supported"),
    (b'{"prompt": "hi", "stop": ["\\n"]}', "stop=[\"\\n\"] is not supported"),
    (b'{"prompt": "hi", "logprobs": 5}', "logprobs=5 is not supported"),
    (b'{"prompt": "hi", "stream_options": {"include_usage": "yes"}}', "stream_options.include_usage"),
])
def test_bad_requests_get_400_with_a_clear_message(server, body, message):
    with server.client() as client:
        response = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"]


def test_full_queue_answers_429_at_once(slow_server_factory):
    server = slow_server_factory(max_batch_size=1, max_queue_size=1)
    payload = {"prompt": "busy", "max_tokens": 100, "stream": True}
    with server.client() as running, server.client() as queued, server.client(timeout=5) as rejected:
        with running.stream("POST", "/v1/completions", json=payload) as first:
            lines = first.iter_lines()
            next(lines)
            with queued.stream("POST", "/v1/completions", json=payload):
                wait_for(lambda: server.engine.queue_depth == 1)
                response = rejected.post("/v1/completions", json={"prompt": "one more", "max_tokens": 2})
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "overloaded_error"
    assert server.metric('aisys_request_errors_total{kind="queue_full"}') == 1


def test_client_that_disconnects_mid_stream_frees_its_slot(slow_server_factory):
    server = slow_server_factory(max_batch_size=1)
    with server.client() as client:
        with client.stream("POST", "/v1/completions",
                           json={"prompt": "bye", "max_tokens": 100, "stream": True}) as response:
            lines = response.iter_lines()
            next(lines), next(lines)
    wait_for(lambda: server.engine.active == 0)
    assert server.metric("aisys_batch_size_count") < 100
    assert server.metric('aisys_request_errors_total{kind="client_disconnected"}') == 1
    with server.client() as client:
        assert client.post("/v1/completions", json={"prompt": "next", "max_tokens": 2}).status_code == 200


def test_client_that_disconnects_while_waiting_for_a_full_answer_frees_its_slot(slow_server_factory):
    server = slow_server_factory(max_batch_size=1)
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "bye", "max_tokens": 100}).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_for(lambda: server.engine.active == 1)
    wait_for(lambda: server.engine.active == 0)
    assert server.metric("aisys_batch_size_count") < 100
    assert server.metric('aisys_request_errors_total{kind="client_disconnected"}') == 1


@pytest.mark.parametrize(("body", "message", "param"), [
    ({"messages": []}, "messages: List should have at least 1 item", "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role: Input should be", "messages.0.role"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, "lone UTF-16 surrogate", "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content", "messages.0.content.str"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools=", "tools"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0},
     "max_tokens must be at least 1, got 0", None),
    ({"messages": [{"role": "user", "content": "x" * 200}]}, "exceeds the context of 128 tokens", None),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 1e-46}, "not round to 0", None),
])
def test_bad_chat_requests_get_400_naming_the_field(server, body, message, param):
    with server.client() as client:
        response = client.post("/v1/chat/completions", content=json.dumps(body).encode(),
                               headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = assert_error_shape(response.content, 400, message)
    assert error["type"] == "invalid_request_error" and error["param"] == param


@pytest.mark.parametrize(("method", "path", "body", "status", "message", "kind"), [
    ("POST", "/v1/completions", b'{"prompt": "\xff\xfe"}', 400, "request body is not UTF-8: byte 0xff at position 12",
     "invalid_request"),
    ("POST", "/v1/completions", b"[" * 100_000, 400, "nested too deeply", "invalid_request"),
    ("POST", "/v1/completions", b'{"prompt": "\\ud800", "stream": true}', 400, "lone UTF-16 surrogate",
     "invalid_request"),
    ("POST", "/v1/completions", b'{"prompt": "hi", "model": "gpt-4"}', 404, "model 'gpt-4' is not served here",
     "not_found"),
    ("GET", "/v1/models/gpt-4", b"", 404, "model 'gpt-4' is not served here", "not_found"),
    ("GET", "/v2/engines", b"", 404, "no endpoint GET /v2/engines here", "not_found"),
    ("GET", "/v1/completions", b"", 405, "/v1/completions does not answer GET", "invalid_request"),
])
def test_every_layer_answers_in_one_shape_and_counts_the_error(server, method, path, body, status, message, kind):
    """Framework-level refusals (an undecodable body, an unknown route) used to answer ``{"detail": ...}``
    and go uncounted; a lone surrogate used to give a 500."""
    before = errors_counted(server)
    with server.client() as client:
        response = client.request(method, path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert_error_shape(response.content, status, message)
    after = errors_counted(server)
    assert after[kind] == before[kind] + 1
    assert sum(after.values()) == sum(before.values()) + 1


class BuggyTokenizer(ByteTokenizer):
    """A tokenizer with a bug, to reach the server's last line of defence."""

    def encode(self, text: str) -> list[int]:
        raise RuntimeError("secret detail of a tokenizer bug")


def test_an_unexpected_exception_is_a_counted_500_in_the_one_shape_without_its_details(caplog):
    engine = EngineThread(load_model("debug", seed=0), EngineConfig(max_batch_size=1))
    with TestClient(create_app(engine, BuggyTokenizer(), "debug"), raise_server_exceptions=False) as client:
        response = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        metrics = client.get("/metrics").text
    assert response.status_code == 500
    error = assert_error_shape(response.content, 500, "internal error: RuntimeError")
    assert error["type"] == "server_error" and "secret detail" not in response.text
    assert 'aisys_request_errors_total{kind="internal_error"} 1.0' in metrics
    assert "secret detail of a tokenizer bug" in caplog.text, "the traceback goes to the log"


def test_the_request_that_killed_the_engine_is_refused_and_the_others_are_answered(server):
    """Issue 11, defect 1, end to end: the poisoned request gets 400 while eight others in flight get
    exactly the model's tokens, and the server stays healthy."""
    reference = load_model("debug", seed=0)
    results: dict[int, httpx.Response] = {}

    def call(index: int) -> None:
        body = {"prompt": f"request {index}", "max_tokens": 6}
        if index == 4:
            body.update(temperature=1.0, top_p=1e-46)
        with server.client() as client:
            results[index] = client.post("/v1/completions", json=body)

    threads = [threading.Thread(target=call, args=(index,)) for index in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results[4].status_code == 400 and "top_p" in results[4].json()["error"]["message"]
    for index in set(results) - {4}:
        expected = generate(reference, [list(f"request {index}".encode())], SamplingParams(max_new_tokens=6))[0]
        assert results[index].status_code == 200
        assert results[index].json()["choices"][0]["text"] == bytes(expected).decode("utf-8", errors="replace")
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(tight):
    """A 50 MB Content-Length gets 413 after a few bytes: the server never reads (or holds) the body."""
    host, port = tight.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 52428800\r\n\r\n" + b"{" * 1024)
        status, headers, body = split_response(sock.recv(65536))
    assert status == 413 and headers["connection"] == "close"
    assert_error_shape(body, 413, "larger than the limit of 4096 bytes (got 52428800 bytes)")


def test_a_chunked_body_over_the_limit_is_cut_off_at_the_limit(tight):
    before = errors_counted(tight)["body_too_large"]
    chunk = b"x" * 1000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    raw = raw_exchange(tight, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    status, _, body = split_response(raw)
    assert status == 413 and "larger than the limit of 4096 bytes" in body.decode()
    assert errors_counted(tight)["body_too_large"] == before + 1


def test_a_header_section_over_the_limit_gets_431(tight):
    raw = raw_exchange(tight, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16_384 + b"\r\n\r\n")
    status, _, body = split_response(raw)
    assert status == 431
    assert_error_shape(body, 431, "request header section is larger than 4096 bytes")
    assert errors_counted(tight)["headers_too_large"] >= 1


def test_bytes_that_are_not_http_get_400_in_the_one_shape(tight):
    status, _, body = split_response(raw_exchange(tight, b"HELLO THERE\x00\r\n\r\n"))
    assert status == 400
    assert_error_shape(body, 400, "not a valid HTTP/1.1 request")
    assert errors_counted(tight)["invalid_http"] >= 1


def test_slowloris_connections_are_closed_at_the_header_deadline(tight):
    """100 connections that send a header line every 0.1 s and never finish: each gets 408 and is
    closed about ``header_timeout_s`` after it opened, and a normal client is served meanwhile."""
    host, port = tight.url.removeprefix("http://").split(":")
    sockets = [socket.create_connection((host, int(port)), timeout=10) for _ in range(100)]
    idle = socket.create_connection((host, int(port)), timeout=10)
    opened = time.monotonic()
    received = {sock: b"" for sock in sockets}
    closed_after: dict[socket.socket, float] = {}
    try:
        for sock in sockets:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        with tight.client() as client:
            assert client.post("/v1/completions", json={"prompt": "meanwhile", "max_tokens": 2}).status_code == 200
        while len(closed_after) < len(sockets) and time.monotonic() - opened < 15:
            for sock in set(sockets) - set(closed_after):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    closed_after[sock] = time.monotonic() - opened
            readable = select.select(list(set(sockets) - set(closed_after)), [], [], 0.1)[0]
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                received[sock] += data
                if not data:
                    closed_after[sock] = time.monotonic() - opened
        assert len(closed_after) == len(sockets)
        assert max(closed_after.values()) < TIGHT.header_timeout_s + 10
        for data in received.values():
            if data:
                status, _, body = split_response(data)
                assert status == 408
                assert_error_shape(body, 408, "request headers did not arrive within 1.0 s")
        assert sum(1 for data in received.values() if data) >= len(sockets) // 2
        assert idle.recv(1) == b"", "a connection that never sent a byte is closed quietly"
    finally:
        for sock in [*sockets, idle]:
            sock.close()


def test_a_body_that_trickles_gets_408(tight):
    host, port = tight.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"prompt\": ")
        started = time.monotonic()
        status, _, body = split_response(sock.recv(65536))
    assert status == 408 and time.monotonic() - started < TIGHT.body_timeout_s + 10
    assert_error_shape(body, 408, "request body did not arrive within 1.0 s")


def test_a_hung_client_that_never_reads_or_closes_costs_the_others_nothing(tight):
    """A client that asks for a stream and then neither reads nor closes: its generation ends, the
    others are answered meanwhile, and the server closes the idle connection after the keep-alive time."""
    host, port = tight.url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "hung", "max_tokens": 60, "stream": True}).encode()
    with socket.create_connection((host, int(port)), timeout=30) as hung:
        hung.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_for(lambda: tight.engine.active == 1)
        with tight.client() as client:
            for index in range(3):
                answer = client.post("/v1/completions", json={"prompt": f"other {index}", "max_tokens": 3})
                assert answer.status_code == 200
        wait_for(lambda: tight.engine.active == 0, timeout_s=30)
        received = b""
        while chunk := hung.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in received


def test_an_api_key_guards_the_api_but_not_the_probes():
    with running_server(EngineConfig(max_batch_size=2), api_key="s3cret") as server, server.client() as client:
        payload = {"prompt": "hi", "max_tokens": 2}
        missing = client.post("/v1/completions", json=payload)
        wrong = client.post("/v1/completions", json=payload, headers={"Authorization": "Bearer guess"})
        models = client.get("/v1/models")
        for response in (missing, wrong, models):
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert assert_error_shape(response.content, 401, "missing or wrong API key")["type"] == \
                "authentication_error"
        assert client.post("/v1/completions", json=payload,
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert client.get(probe).status_code == 200
        assert errors_counted(server)["unauthorized"] == 3


def test_the_openapi_ui_is_off_unless_asked_for(server):
    with server.client() as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 404
    with running_server(EngineConfig(max_batch_size=1), docs=True) as documented, documented.client() as client:
        assert client.get("/docs").status_code == 200
        assert "/v1/chat/completions" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(("argv", "message"), [
    (["serve", "--port", "99999"], "argument --port: expected an integer in [1, 65535], got '99999'"),
    (["serve", "--port", "0"], "argument --port: expected an integer in [1, 65535], got '0'"),
    (["serve", "--port", "http"], "argument --port: expected an integer in [1, 65535], got 'http'"),
    (["serve", "--max-batch-size", "0"], "argument --max-batch-size: expected an integer in [1, 4096], got '0'"),
    (["serve", "--max-queue-size", "-5"], "argument --max-queue-size: expected an integer in [1, 1e+06], got '-5'"),
    (["serve", "--max-queue-delay-ms", "nan"], "argument --max-queue-delay-ms: expected a number in [0, 60000]"),
    (["serve", "--prefill-chunk", "1.5"], "argument --prefill-chunk: expected an integer"),
    (["serve", "--threads", "0"], "argument --threads: expected an integer in [1, 1024], got '0'"),
    (["serve", "--drain-timeout", "inf"], "argument --drain-timeout: expected a number in [0, 86400], got 'inf'"),
    (["serve", "--seed", "-1"], "argument --seed: expected an integer in [0, 1.84467e+19], got '-1'"),
    (["serve", "--max-body-bytes", "0"], "argument --max-body-bytes: expected an integer >= 1, got '0'"),
    (["serve", "--max-header-bytes", "10"], "argument --max-header-bytes: expected an integer >= 1024, got '10'"),
    (["serve", "--header-timeout", "0"], "argument --header-timeout: expected a number in (0, 3600], got '0'"),
    (["serve", "--body-timeout", "-1"], "argument --body-timeout: expected a number in (0, 3600], got '-1'"),
    (["serve", "--keep-alive-timeout", "1e9"], "argument --keep-alive-timeout: expected a number in (0, 3600]"),
    (["serve", "--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
    (["serve", "--device", "gpu0"], "argument --device: expected a torch device such as cpu, cuda or cuda:0"),
    (["loadtest", "--rate", "0"], "argument --rate: expected a number > 0 or inf, got '0'"),
    (["loadtest", "--rate", "nan"], "argument --rate: expected a number > 0 or inf, got 'nan'"),
    (["loadtest", "--count", "0"], "argument --count: expected an integer in [1, 1e+07], got '0'"),
    (["loadtest", "--max-tokens", "-1"], "argument --max-tokens: expected an integer in [1, 1e+06], got '-1'"),
    (["loadtest", "--burstiness", "0"], "argument --burstiness: expected a number > 0, got '0'"),
    (["loadtest", "--seed", "x"], "argument --seed: expected an integer >= 0, got 'x'"),
    (["loadtest", "--slo-ms", "-5"], "argument --slo-ms: expected a number > 0, got '-5'"),
    (["loadtest", "--url", "ftp://host:1"], "argument --url: expected http://host:port with a port in [1, 65535]"),
    (["loadtest", "--url", "http://host:99999"], "argument --url: expected http://host:port"),
])
def test_a_bad_option_is_one_line_naming_it_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize(("argv", "message"), [
    (["serve", "--host", "256.0.0.1"], "cannot listen on 256.0.0.1:{port}"),
    (["serve", "--api-key", " "], "--api-key must not be empty or blank"),
    (["serve", "--device", "cuda:99"], "--device: expected a device this machine has, got 'cuda:99'"),
    (["serve", "--port", "{busy}"], "cannot listen on 127.0.0.1:{busy}: Address already in use"),
])
def test_serve_refuses_an_address_or_key_it_cannot_use_in_one_line_before_loading(capsys, argv, message):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        argv = [arg.format(busy=port) for arg in argv]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(port=8000, busy=port) in err, err
