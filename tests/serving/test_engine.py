"""The dynamic-batching engine: same tokens as plain generation, slots freed, queue bounded."""

from __future__ import annotations

import pytest
import torch

import ai_system.models.transformer as transformer_module
from ai_system.inference.engine import (
    EngineClosedError,
    EngineConfig,
    EngineThread,
    Event,
    Request,
    load_model,
)
from ai_system.inference.generate import SamplingParams, generate
from ai_system.serving.loadgen import submit_and_wait
from serving.harness import wait_until_generating


def test_continuous_batching_matches_plain_generation(engine_factory, make_recorder):
    """Ragged prompts, chunked prefill, requests joining mid-decode: every row gets generate()'s tokens."""
    engine = engine_factory(max_batch_size=3, prefill_chunk=8)
    reference = load_model("debug", seed=0)
    prompts = [list(b"a prompt longer than one prefill chunk"), list(b"hi"), list(b"abc"), list(b"x" * 20),
               list(b"q")]
    budgets = [12, 3, 20, 7, 9]
    recorders = [make_recorder() for _ in prompts]
    for prompt, budget, recorder in zip(prompts, budgets, recorders, strict=True):
        engine.submit(Request(prompt, SamplingParams(max_new_tokens=budget), recorder))
    for prompt, budget, recorder in zip(prompts, budgets, recorders, strict=True):
        assert recorder.final == Event("done", reason="length")
        tokens = [event.token for event in recorder.events if event.kind == "token"]
        assert tokens == generate(reference, [prompt], SamplingParams(max_new_tokens=budget))[0]


def test_long_generation_does_not_hold_up_a_short_one(make_recorder):
    engine = EngineThread(load_model("debug"), EngineConfig(max_batch_size=2)).start()
    try:
        long, short = make_recorder(), make_recorder()
        long_request = Request(list(b"long"), SamplingParams(max_new_tokens=100), long)
        engine.submit(long_request)
        short_request = Request(list(b"short"), SamplingParams(max_new_tokens=4), short)
        engine.submit(short_request)
        assert short.final.reason == "length" and long.final.reason == "length"
        assert short_request.finished_at < long_request.finished_at
    finally:
        engine.stop()


def test_cancel_frees_the_slot_for_the_next_request(engine_factory, make_recorder):
    engine = engine_factory(step_delay_s=0.005, max_batch_size=1)
    first, second = make_recorder(), make_recorder()
    first_request = Request(list(b"first"), SamplingParams(max_new_tokens=120), first)
    engine.submit(first_request)
    engine.submit(Request(list(b"second"), SamplingParams(max_new_tokens=3), second))
    wait_until_generating(first_request)
    engine.cancel(first_request)
    assert first.final == Event("done", reason="cancelled")
    assert second.final == Event("done", reason="length")
    assert len(first_request.generated) < 120


def test_cancel_while_queued_never_runs(engine_factory, make_recorder):
    engine = engine_factory(step_delay_s=0.005, max_batch_size=1)
    running, queued = make_recorder(), make_recorder()
    engine.submit(Request(list(b"busy"), SamplingParams(max_new_tokens=20), running))
    waiting = Request(list(b"waiting"), SamplingParams(max_new_tokens=5), queued)
    engine.submit(waiting)
    engine.cancel(waiting)
    assert queued.final == Event("done", reason="cancelled")
    assert waiting.generated == []
    assert running.final.reason == "length"


def test_stop_finishes_running_requests_and_rejects_queued_ones(slow, make_recorder):
    model = slow(load_model("debug"), 0.005)
    engine = EngineThread(model, EngineConfig(max_batch_size=1)).start()
    running, queued = make_recorder(), make_recorder()
    first = Request(list(b"run"), SamplingParams(max_new_tokens=10), running)
    engine.submit(first)
    wait_until_generating(first)
    engine.submit(Request(list(b"wait"), SamplingParams(max_new_tokens=10), queued))
    engine.stop(drain_timeout=30)
    assert running.final == Event("done", reason="length")
    assert queued.final.kind == "error" and "shutting down" in queued.final.reason
    assert not engine.running
    with pytest.raises(EngineClosedError):
        engine.submit(Request(list(b"late"), SamplingParams(max_new_tokens=1), make_recorder()))


def test_stop_aborts_what_the_drain_timeout_cannot_finish(slow, make_recorder):
    engine = EngineThread(slow(load_model("debug"), 0.01), EngineConfig(max_batch_size=1)).start()
    recorder = make_recorder()
    request = Request(list(b"long"), SamplingParams(max_new_tokens=100), recorder)
    engine.submit(request)
    wait_until_generating(request)
    engine.stop(drain_timeout=0.05)
    assert recorder.final.kind == "error" and "shut down" in recorder.final.reason


def test_seeded_sampling_repeats_inside_a_batch(engine_factory):
    engine = engine_factory(max_batch_size=4)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first, second, third = submit_and_wait(engine, [list(b"same"), list(b"same"), list(b"same")], params)
    assert first.generated == second.generated == third.generated


def test_idle_engine_gathers_a_batch_within_the_queue_delay(engine_factory):
    steps = []
    engine = engine_factory(max_batch_size=4, max_queue_delay_ms=200)
    engine.on_step = steps.append
    submit_and_wait(engine, [list(b"a"), list(b"b"), list(b"c"), list(b"d")], SamplingParams(max_new_tokens=2))
    assert steps[0].batch_size == 4


def test_busy_engine_admits_arrivals_together_without_pausing_decode(engine_factory, make_recorder):
    steps = []
    engine = engine_factory(step_delay_s=0.002, max_batch_size=4, max_queue_delay_ms=300)
    engine.on_step = steps.append
    running = Request(list(b"long"), SamplingParams(max_new_tokens=40), make_recorder())
    engine.submit(running)
    wait_until_generating(running)
    arrivals = [Request(list(b"abc"), SamplingParams(max_new_tokens=2), make_recorder()) for _ in range(3)]
    for request in arrivals:
        engine.submit(request)
    for request in arrivals:
        assert request.on_event.final.reason == "length"
    prefills = [step.prefill_tokens for step in steps if step.prefill_tokens]
    assert prefills == [4, 9]
    assert running.on_event.final.reason == "length"


class RecordingOps:
    """Stands in for the transformer's ``ops`` module and keeps the ``lengths`` every attention call got."""

    def __init__(self, ops: object) -> None:
        self._ops = ops
        self.lengths: list[list[int]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._ops, name)

    def attention(self, *args: object, lengths: torch.Tensor | None = None, **kwargs: object) -> torch.Tensor:
        self.lengths.append(lengths.tolist())
        return self._ops.attention(*args, lengths=lengths, **kwargs)

    def decode_attention(self, *args: object, lengths: torch.Tensor | None = None, **kwargs: object) -> torch.Tensor:
        self.lengths.append(lengths.tolist())
        return self._ops.decode_attention(*args, lengths=lengths, **kwargs)


def test_mixed_prefill_and_decode_attend_to_each_rows_real_length(monkeypatch, make_recorder):
    """A row's length is its filled cache prefix, not the cache length its padding reaches, so the
    attention kernels stop there for every row of a mixed prefill + decode iteration; the tokens stay
    those of generate()."""
    model = load_model("debug", seed=0)
    cache_len = model.config.max_seq_len
    forwards: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward = model.forward

    def recording_forward(tokens, positions, mask, lengths):
        forwards.append((positions.clone(), lengths.clone()))
        return forward(tokens, positions, mask, lengths)

    model.forward = recording_forward
    ops = RecordingOps(transformer_module.ops)
    monkeypatch.setattr(transformer_module, "ops", ops)
    engine = EngineThread(model, EngineConfig(max_batch_size=2, prefill_chunk=8, max_queue_delay_ms=0)).start()
    try:
        decoding = Request(list(b"first"), SamplingParams(max_new_tokens=30), make_recorder())
        engine.submit(decoding)
        wait_until_generating(decoding)
        joining = Request(list(b"a prompt of 3 chunks!"), SamplingParams(max_new_tokens=5), make_recorder())
        engine.submit(joining)
        assert decoding.on_event.final.reason == "length" and joining.on_event.final.reason == "length"
    finally:
        engine.stop()

    mixed = 0
    for positions, lengths in forwards:
        real = positions != cache_len - 1
        expected = [int(row[keep].max()) + 1 if keep.any() else 1 for row, keep in zip(positions, real, strict=True)]
        assert lengths.tolist() == expected
        counts = real.sum(dim=1).tolist()
        mixed += 1 in counts and any(count > 1 for count in counts)
    assert mixed >= 2, "the run never fed a prompt chunk and a decode token in one iteration"
    assert max(max(lengths) for lengths in ops.lengths) < cache_len
    per_forward = [lengths.tolist() for _, lengths in forwards for _ in range(model.config.n_layers)]
    assert ops.lengths == per_forward
    reference = load_model("debug", seed=0)
    for request in (decoding, joining):
        assert request.generated == generate(reference, [request.prompt], request.params)[0]
