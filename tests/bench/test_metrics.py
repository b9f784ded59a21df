import pytest

from ai_system.bench.metrics import Metric, Projection

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
