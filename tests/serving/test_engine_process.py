"""The engine in a child process: same tokens, same queue bound, cancellation and shutdown across the pipe."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

from ai_system.inference.engine import (
    Engine,
    EngineClosedError,
    EngineConfig,
    EngineProcess,
    EngineThread,
    Event,
    ModelSpec,
    QueueFullError,
    Request,
    load_model,
)
from ai_system.inference.generate import SamplingParams, generate


@pytest.fixture(scope="module")
def engine():
    process = EngineProcess(ModelSpec("debug", seed=0), EngineConfig(max_batch_size=3, max_queue_size=2,
                                                                      prefill_chunk=8)).start()
    yield process
    process.stop(drain_timeout=0)


def test_child_engine_generates_what_generate_does(engine, make_recorder):
    reference = load_model("debug", seed=0)
    prompts = [list(b"a prompt longer than a chunk"), list(b"hi"), list(b"xyz")]
    ended = [make_recorder() for _ in prompts]
    requests = [Request(prompt, SamplingParams(max_new_tokens=6 + i), end)
                for i, (prompt, end) in enumerate(zip(prompts, ended, strict=True))]
    for request in requests:
        engine.submit(request)
    for i, (prompt, request, end) in enumerate(zip(prompts, requests, ended, strict=True)):
        assert end.final == Event("done", reason="length")
        assert request.generated == generate(reference, [prompt], SamplingParams(max_new_tokens=6 + i))[0]
        assert [e.token for e in end.events[:-1]] == request.generated
        assert request.arrival <= request.first_token_at <= request.finished_at


def test_parent_bounds_the_queue_and_cancel_reaches_the_child(engine, make_recorder):
    ended = [make_recorder() for _ in range(5)]
    requests = [Request(list(b"long"), SamplingParams(max_new_tokens=120), end) for end in ended]
    for request in requests:
        engine.submit(request)
    with pytest.raises(QueueFullError, match="queue is full"):
        engine.submit(Request(list(b"one too many"), SamplingParams(max_new_tokens=1), make_recorder()))
    for request in requests:
        engine.cancel(request)
    assert all(end.final.kind == "done" for end in ended)
    assert any(len(request.generated) < 120 for request in requests)
    follow_up = make_recorder()
    engine.submit(Request(list(b"next"), SamplingParams(max_new_tokens=2), follow_up))
    assert follow_up.final.reason == "length"


def test_stopped_engine_process_refuses_work_and_exits(make_recorder):
    process = EngineProcess(ModelSpec("debug"), EngineConfig(max_batch_size=2)).start()
    assert process.ready and process.max_context == 128
    end = make_recorder()
    process.submit(Request(list(b"bye"), SamplingParams(max_new_tokens=3), end))
    assert end.final.reason == "length"
    process.stop(drain_timeout=5)
    assert not process.running and not process.ready
    with pytest.raises(EngineClosedError):
        process.submit(Request(list(b"late"), SamplingParams(max_new_tokens=1), make_recorder()))


def test_a_child_that_cannot_load_its_model_fails_start_with_the_reason():
    with pytest.raises(RuntimeError, match="unknown model config 'nope'"):
        EngineProcess(ModelSpec("nope")).start()


def test_a_child_that_dies_fails_its_requests_instead_of_hanging_them(make_recorder):
    process = EngineProcess(ModelSpec("debug"), EngineConfig(max_batch_size=2)).start()
    end = make_recorder()
    request = Request(list(b"long"), SamplingParams(max_new_tokens=120), end)
    process.submit(request)
    os.kill(process._process.pid, signal.SIGKILL)  # noqa: SLF001 - simulate a crash of the child
    assert end.final.kind == "error" and "exited" in end.final.reason
    assert not process.running
    with pytest.raises(EngineClosedError):
        process.submit(Request(list(b"late"), SamplingParams(max_new_tokens=1), make_recorder()))
    process.stop(drain_timeout=1)


def test_an_unknown_command_is_reported_back_and_changes_nothing(engine, make_recorder, caplog):
    """The old tuple form of "stop" is not a command any more: the child says so and keeps serving."""
    with caplog.at_level(logging.ERROR, logger="ai_system.inference.engine"):
        engine._commands.send(("stop", 0.0))  # noqa: SLF001 - a message no parent of this version sends
        deadline = time.monotonic() + 30
        while not (reports := [r.getMessage() for r in caplog.records if "unknown command" in r.getMessage()]):
            assert time.monotonic() < deadline, "the child did not report the unknown command"
            time.sleep(0.01)
    assert "('stop', 0.0)" in reports[0]
    assert engine.ready
    end = make_recorder()
    engine.submit(Request(list(b"still here"), SamplingParams(max_new_tokens=2), end))
    assert end.final.reason == "length"


def test_both_engines_implement_the_engine_protocol():
    assert isinstance(EngineThread(load_model("debug")), Engine)
    assert isinstance(EngineProcess(ModelSpec("debug")), Engine)
