"""Engine faults: bad requests are refused at the door, and nothing one request does stops the others.

Issue 11, defect 1: ``top_p=1e-46`` passed the ``0 < top_p`` check, became 0.0 in float32 inside
``sample_tokens``, raised in the engine thread and stopped the engine for everyone. Here the
parameters are checked in float32 up front, and a request that gets past the checks anyway (forced
below) fails alone while the requests batched with it finish with exactly their own tokens.
"""

from __future__ import annotations

import pytest
import torch
from serving.harness import break_model, wait_until_generating

from ai_system.inference.engine import (
    MAX_CONSECUTIVE_FAILED_STEPS,
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
from ai_system.inference.generate import SamplingParams, generate, sample_tokens


def poisoned(params: SamplingParams, **values: object) -> SamplingParams:
    """``params`` with values its checks refuse, as if they had slipped past them."""
    for name, value in values.items():
        object.__setattr__(params, name, value)
    return params


@pytest.mark.parametrize(("values", "message"), [
    ({"top_p": 1e-46}, r"top_p must be in \(0, 1\] and not round to 0 in torch.float32"),
    ({"top_p": float("nan")}, "top_p must be finite"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"temperature": 1e39}, "temperature must be finite in torch.float32"),
    ({"temperature": float("inf")}, "temperature must be finite"),
    ({"temperature": float("nan")}, "temperature must be finite"),
    ({"temperature": -0.5}, "temperature must be >= 0"),
    ({"temperature": "1"}, "temperature must be a number"),
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
    ({"max_new_tokens": 2.5}, "max_new_tokens must be at least 1"),
    ({"max_new_tokens": True}, "max_new_tokens must be at least 1"),
    ({"seed": -1}, "seed must be None or an integer >= 0"),
    ({"seed": 2**64}, "seed must be below 2\\*\\*64"),
    ({"stop_token": -3}, "stop_token must be None or an integer >= 0"),
])
def test_sampling_parameters_are_checked_in_the_dtype_sampling_uses(values, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**values)


def test_the_smallest_top_p_float32_keeps_samples_without_raising():
    params = SamplingParams(temperature=1.0, top_p=1e-44)
    logits = torch.randn(3, 16)
    tokens = sample_tokens(logits, params.temperature, params.top_p, torch.Generator().manual_seed(0))
    assert tokens.tolist() == logits.argmax(dim=-1).tolist()


def test_sample_tokens_refuses_values_that_round_to_nothing_in_float32():
    with pytest.raises(ValueError, match="top_p"):
        sample_tokens(torch.randn(1, 8), 1.0, 1e-46)
    with pytest.raises(ValueError, match="temperature"):
        sample_tokens(torch.randn(1, 8), float("nan"), 1.0)


def test_one_poisoned_request_among_many_leaves_the_others_correct(engine_factory, make_recorder):
    """The poisoned row makes the batched sampling call raise; each row is then sampled alone."""
    engine = engine_factory(max_batch_size=4, max_queue_delay_ms=200)
    reference = load_model("debug", seed=0)
    prompts = [list(b"first"), list(b"second one"), list(b"3rd")]
    healthy = [make_recorder() for _ in prompts]
    bad = make_recorder()
    for prompt, recorder in zip(prompts[:2], healthy[:2], strict=True):
        engine.submit(Request(prompt, SamplingParams(max_new_tokens=8), recorder))
    engine.submit(Request(list(b"poison"), poisoned(SamplingParams(max_new_tokens=8, temperature=1.0),
                                                      top_p=1e-46), bad))
    engine.submit(Request(prompts[2], SamplingParams(max_new_tokens=8), healthy[2]))
    assert bad.final.kind == "error" and "sampling failed for this request" in bad.final.reason
    for prompt, recorder in zip(prompts, healthy, strict=True):
        assert recorder.final == Event("done", reason="length")
        tokens = [event.token for event in recorder.events if event.kind == "token"]
        assert tokens == generate(reference, [prompt], SamplingParams(max_new_tokens=8))[0]
    assert engine.ready
    later = make_recorder()
    engine.submit(Request(list(b"later"), SamplingParams(max_new_tokens=2), later))
    assert later.final.reason == "length"


def test_an_iteration_that_raises_fails_only_the_requests_it_ran(make_recorder):
    model = break_model(load_model("debug"), "transient device error", calls={2})
    engine = EngineThread(model, EngineConfig(max_batch_size=1)).start()
    try:
        first, second = make_recorder(), make_recorder()
        engine.submit(Request(list(b"one"), SamplingParams(max_new_tokens=5), first))
        engine.submit(Request(list(b"two"), SamplingParams(max_new_tokens=5), second))
        assert first.final.kind == "error" and "transient device error" in first.final.reason
        assert second.final == Event("done", reason="length")
        assert [e.token for e in second.events[:-1]] == generate(load_model("debug"), [list(b"two")],
                                                                 SamplingParams(max_new_tokens=5))[0]
        assert engine.running and engine.ready
    finally:
        engine.stop(drain_timeout=5)


def test_a_model_that_keeps_failing_stops_the_engine_so_health_checks_fail(make_recorder):
    """Consecutive failed iterations mean the model or device is broken for everyone: every request
    is told, and the engine stops so ``/healthz`` asks the orchestrator for a restart."""
    model = break_model(load_model("debug"), "device lost")
    engine = EngineThread(model, EngineConfig(max_batch_size=1, max_queue_size=8)).start()
    recorders = [make_recorder() for _ in range(MAX_CONSECUTIVE_FAILED_STEPS + 2)]
    for recorder in recorders:
        engine.submit(Request(list(b"x"), SamplingParams(max_new_tokens=4), recorder))
    for recorder in recorders:
        assert recorder.final.kind == "error" and "device lost" in recorder.final.reason
    engine._thread.join(10)
    assert not engine.running and not engine.ready
    with pytest.raises(EngineClosedError):
        engine.submit(Request(list(b"x"), SamplingParams(max_new_tokens=1), make_recorder()))


def test_a_consumer_or_observer_that_raises_does_not_stop_the_engine(engine_factory, make_recorder):
    engine = engine_factory(max_batch_size=2)

    def broken_observer(_: object) -> None:
        raise RuntimeError("metrics backend down")

    def broken_consumer(_: Event) -> None:
        raise RuntimeError("event loop closed")

    engine.on_step = broken_observer
    engine.submit(Request(list(b"gone"), SamplingParams(max_new_tokens=50), broken_consumer))
    healthy = make_recorder()
    engine.submit(Request(list(b"fine"), SamplingParams(max_new_tokens=6), healthy))
    assert healthy.final == Event("done", reason="length")
    assert engine.ready


def test_a_poisoned_request_in_the_engine_process_fails_alone(make_recorder):
    """The same isolation across the process boundary: the child's engine fails the one request, and a
    consumer that raises in the parent does not stop the delivery of the others' events."""
    engine = EngineProcess(ModelSpec("debug"), EngineConfig(max_batch_size=4, max_queue_delay_ms=100)).start()
    try:
        def broken_consumer(_: Event) -> None:
            raise RuntimeError("consumer gone")

        bad, healthy = make_recorder(), make_recorder()
        engine.submit(Request(list(b"poison"), poisoned(SamplingParams(max_new_tokens=6, temperature=1.0),
                                                          top_p=1e-46), bad))
        engine.submit(Request(list(b"broken"), SamplingParams(max_new_tokens=20), broken_consumer))
        engine.submit(Request(list(b"fine"), SamplingParams(max_new_tokens=6), healthy))
        assert bad.final.kind == "error" and "sampling failed" in bad.final.reason
        assert healthy.final == Event("done", reason="length")
        assert engine.ready
    finally:
        engine.stop(drain_timeout=5)


def test_full_queue_rejects_at_once(engine_factory, make_recorder):
    engine = engine_factory(step_delay_s=0.01, max_batch_size=1, max_queue_size=2)
    running = Request(list(b"x"), SamplingParams(max_new_tokens=30), make_recorder())
    engine.submit(running)
    wait_until_generating(running)
    for _ in range(2):
        engine.submit(Request(list(b"x"), SamplingParams(max_new_tokens=30), make_recorder()))
    with pytest.raises(QueueFullError, match="queue is full"):
        engine.submit(Request(list(b"x"), SamplingParams(max_new_tokens=30), make_recorder()))


@pytest.mark.parametrize(("prompt", "max_new_tokens", "message"), [
    ([], 4, "empty prompt"),
    ([300], 4, r"prompt tokens must lie in \[0, 256\)"),
    ([-1], 4, r"prompt tokens must lie in \[0, 256\)"),
    ([1, "2"], 4, "prompt tokens must be integers, got '2'"),
    ([1, 2.0], 4, "prompt tokens must be integers, got 2.0"),
    (list(range(100)), 100, "exceeds the context of 128 tokens"),
])
def test_requests_that_cannot_run_are_refused(engine_factory, prompt, max_new_tokens, message, make_recorder):
    engine = engine_factory()
    with pytest.raises(ValueError, match=message):
        engine.submit(Request(prompt, SamplingParams(max_new_tokens=max_new_tokens), make_recorder()))
    assert engine.ready


@pytest.mark.parametrize(("field", "value"), [("max_batch_size", 0), ("max_queue_size", 0),
                                              ("prefill_chunk", 0), ("max_queue_delay_ms", -1.0)])
def test_engine_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**{field: value})
