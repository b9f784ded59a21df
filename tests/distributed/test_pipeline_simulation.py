"""The pipeline simulator behind the bubble prediction: it reproduces the formula where the formula's
assumptions hold, and adds exactly what transfer and per-piece overhead cost where they do not."""

from __future__ import annotations

import pytest

from ai_system.distributed.launch import run_distributed
from ai_system.distributed.layout import Layout
from ai_system.distributed.pipeline import Work, bubble_fraction, simulate_pipeline
from ai_system.training.bubble import measure_bubbles, schedule_overhead
from ai_system.training.config import TrainConfig

FORWARD, BACKWARD = 1.0, 2.0


def gpipe(stage: int, m: int) -> list[Work]:
    last = stage == 1
    return [w for mb in range(m) for w in [Work("F", stage, mb)] + ([Work("L", stage, mb)] if last else [])] + \
        [Work("B", stage, mb) for mb in range(m)]


def one_f_one_b(stage: int, m: int, p: int = 2) -> list[Work]:
    """torch's 1F1B order: p - stage warm-up forwards, then alternate a backward and a forward."""
    last = stage == p - 1
    forward = [[Work("F", stage, mb)] + ([Work("L", stage, mb)] if last else []) for mb in range(m)]
    warmup = min(m, p - stage)
    order = [w for mb in range(warmup) for w in forward[mb]]
    for mb in range(m):
        order.append(Work("B", stage, mb))
        if warmup + mb < m:
            order += forward[warmup + mb]
    return order


def durations(programs: list[list[Work]]) -> dict[Work, float]:
    return {w: {"F": FORWARD, "B": BACKWARD, "L": 0.0}[w.kind] for program in programs for w in program}


def bubble(programs: list[list[Work]], **kwargs: float) -> tuple[float, float]:
    makespan, busy = simulate_pipeline(programs, durations(programs), num_stages=2, **{"transfer_seconds": 0.0,
                                                                                         **kwargs})
    return makespan, 1 - sum(busy) / len(busy) / makespan


@pytest.mark.parametrize("schedule", [gpipe, one_f_one_b])
@pytest.mark.parametrize("m", [2, 4, 8])
def test_equal_stages_without_communication_give_the_formula(schedule, m):
    _, simulated = bubble([schedule(0, m), schedule(1, m)])
    assert simulated == pytest.approx(bubble_fraction(2, m))


def test_transfer_and_overhead_lengthen_the_step_by_what_they_cost():
    m = 4
    plain, _ = bubble([one_f_one_b(0, m), one_f_one_b(1, m)])
    delayed, _ = bubble([one_f_one_b(0, m), one_f_one_b(1, m)], transfer_seconds=0.1)
    slowed, _ = bubble([one_f_one_b(0, m), one_f_one_b(1, m)], overhead_seconds=0.01)
    assert plain + 2 * 0.1 <= delayed <= plain + 2 * m * 0.1  # between one crossing each way and every one
    assert plain < slowed <= plain + 2 * m * 3 * 0.01


def test_programs_that_wait_for_each_other_are_named():
    with pytest.raises(ValueError, match="deadlock"):
        simulate_pipeline([[Work("B", 0, 0)], [Work("F", 1, 0), Work("L", 1, 0)]],
                          {Work("B", 0, 0): 1.0, Work("F", 1, 0): 1.0, Work("L", 1, 0): 0.0}, 0.0, 2)


def test_schedule_overhead_counts_only_gaps_where_the_input_was_ready():
    """Rank 1 waits for rank 0's forward (not overhead); its loss follows its forward 0.5 ms later (overhead)."""
    record = [[(Work("F", 0, 0), 0.0, 1.0), (Work("B", 0, 0), 3.0105, 1.0)],
              [(Work("F", 1, 0), 1.002, 1.0), (Work("L", 1, 0), 2.0025, 0.0), (Work("B", 1, 0), 2.003, 1.0)]]
    gaps = schedule_overhead(record, transfer=0.001, num_stages=2)
    assert gaps == pytest.approx([0.0005, 0.0005])


def test_measure_bubble_times_every_piece_of_a_real_step():
    """The trainer's own 1F1B and interleaved steps on two ranks: every kind of work on every stage is timed, and the
    prediction replays the ranks' orders of work without deadlock."""
    configs = [TrainConfig(model="debug", model_overrides={"n_layers": 4}, dataset="synthetic", seq_len=32,
                           batch_size=8, progress=False, layout=Layout.parse(f"pp=2,mb=2,schedule={schedule}"))
               for schedule in ("1f1b", "interleaved-1f1b")]
    results = run_distributed(measure_bubbles, 2, configs)
    for config, result in zip(configs, results, strict=True):
        stages = config.layout.num_stages
        expected = {f"{kind}{stage}" for stage in range(stages) for kind in "FBR"} | {f"L{stages - 1}"}
        assert set(result["work_seconds"]) == expected
        assert 0 < result["measured"] < 1 and 0 < result["predicted"] < 1
        assert result["predicted_step_seconds"] > 0 and result["step_seconds"] > 0
        assert result["transfer_seconds"] > 0 and result["overhead_seconds"] >= 0
        assert result["formula"] == pytest.approx(bubble_fraction(2, 4, config.layout.virtual_stages))
