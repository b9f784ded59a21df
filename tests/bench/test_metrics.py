import pytest

from ai_system.bench.metrics import Baseline, Metric, Projection, Spread

VALID = dict(name="matmul_peak", value=1.5, unit="TFLOP/s", better="higher", area="hardware", scale="n=1024")


def test_round_trips_through_dict():
    metric = Metric(**VALID, kind="projected", seed_row="training_throughput",
                    projection=Projection(model="linear scaling", inputs={"per_gpu": 3.0}),
                    params={"n": 1024}, x="n", curve={"step": [1, 2], "loss": [3.0, 2.0]})
    assert Metric.from_dict(metric.to_dict()) == metric


@pytest.mark.parametrize(("change", "message"), [
    ({"value": float("nan")}, "finite number"),
    ({"better": "up"}, "'higher' or 'lower'"),
    ({"kind": "guessed"}, "'measured' or 'projected'"),
    ({"area": "nowhere"}, "area must be one of"),
    ({"seed_row": "latency"}, "seed_row must be one of"),
    ({"kind": "projected"}, "needs a Projection"),
    ({"x": "n"}, "must be a key of params"),
    ({"curve": {"step": [1, 2], "loss": [1.0]}}, "equal lengths"),
    ({"name": "has space"}, "identifier"),
])
def test_rejects_bad_fields_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        Metric(**{**VALID, **change})


def test_projection_must_name_inputs():
    with pytest.raises(ValueError, match="measured inputs"):
        Projection(model="linear scaling", inputs={})


PEAK = Baseline(name="fp32 matmul peak", value=0.2, unit="TFLOP/s", kind="peak")


def test_judgement_fields_round_trip_and_old_records_still_load():
    metric = Metric(**{**VALID, "unit": "%", "value": 60.0}, question="What share of the peak?", goal=50.0,
                    baseline=Baseline(name="peak", value=0.2, unit="TFLOP/s", kind="peak", ours=0.12),
                    spread=Spread(55.0, 60.0, 61.0, 3))
    assert Metric.from_dict(metric.to_dict()) == metric
    old = {key: value for key, value in Metric(**VALID).to_dict().items()
           if key not in ("question", "baseline", "goal", "spread")}
    assert Metric.from_dict(old) == Metric(**VALID)


def test_ratio_is_the_metric_itself_or_ours_over_the_baseline():
    utilization = Metric(**{**VALID, "unit": "%", "value": 60.0}, baseline=PEAK)
    assert utilization.ratio == pytest.approx(0.6)
    latency = Metric(**{**VALID, "unit": "ms", "better": "lower", "value": 40.0}, goal=50.0,
                     baseline=Baseline(name="p99 SLO", value=50.0, unit="ms", kind="limit"))
    assert latency.ratio == pytest.approx(0.8) and latency.met is True
    assert Metric(**VALID).ratio is None and Metric(**VALID).met is None
    assert Metric(**VALID, goal=2.0).met is False


@pytest.mark.parametrize(("change", "message"), [
    ({"unit": "%", "value": 108.4, "baseline": PEAK}, r"108\.4% of fp32 matmul peak .* is impossible"),
    ({"value": 0.25, "baseline": PEAK}, "is impossible"),
    ({"unit": "%", "value": 50.0, "baseline": Baseline("peak", 0.2, "TFLOP/s", "peak", ours=0.3)}, "is impossible"),
    ({"unit": "samples/s", "baseline": PEAK}, "must be in the metric's unit"),
    ({"baseline": Baseline("peak", 0.2, "TFLOP/s", "peak", ours=0.1)}, "baseline.ours is for ratio metrics"),
    ({"spread": Spread(1.6, 1.7, 1.8, 3)}, "outside its spread"),
    ({"goal": float("inf")}, "goal must be a finite number"),
])
def test_rejects_impossible_or_inconsistent_judgements(change, message):
    with pytest.raises(ValueError, match=message):
        Metric(**{**VALID, **change})


@pytest.mark.parametrize(("args", "message"), [
    (("", 1.0, "s"), "must say what"), (("torch", 0.0, "s"), "positive finite"),
    (("torch", 1.0, "s", "guess"), "kind must be one of"),
])
def test_baseline_rejects_bad_fields(args, message):
    with pytest.raises(ValueError, match=message):
        Baseline(*args)


def test_spread_of_samples_and_its_checks():
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(1.0, 2.0, 3.0, 3)
    assert Spread.of([1.0, 2.0]).scaled(10) == Spread(10.0, 15.0, 20.0, 2)
    with pytest.raises(ValueError, match="at least 2 repeats"):
        Spread(1.0, 1.0, 1.0, 1)
    with pytest.raises(ValueError, match="min <= median <= max"):
        Spread(2.0, 1.0, 3.0, 3)
