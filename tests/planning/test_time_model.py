from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ai_system.distributed.layout import Layout
from ai_system.models.config import get_config
from ai_system.models.transformer import RMSNorm, apply_rope, rope_tables
from ai_system.planning.accelerators import get_accelerator
from ai_system.planning.calibration import CALIBRATED, calibrated_time_model
from ai_system.planning.planner import Job, estimate, search
from ai_system.planning.time_model import (
    EAGER_BYTES_PER_ELEMENT,
    TRAINER,
    Implementation,
    Recomputation,
    TimeModel,
    block_work,
    gemm_seconds,
    ring_seconds,
)

A100 = get_accelerator("A100-80GB")
H100 = get_accelerator("H100-SXM")
MODEL = TimeModel(matmul_efficiency=0.7, attention_efficiency=0.5, memory_efficiency=0.8, nvlink_efficiency=0.8,
                  network_efficiency=0.9, nvlink_latency=5e-6, network_latency=10e-6)


class ElementwiseBytes(TorchDispatchMode):
    """Bytes every non-view op reads and writes, as the HBM traffic of an eager kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func is not torch.ops.aten.detach.default:
            tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor) and t.numel() > 1]
            self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return out


def forward_and_backward_bytes(fn, *inputs: torch.Tensor) -> tuple[float, float]:
    """Per element of the first input; the output gradient is made outside the count."""
    forward = ElementwiseBytes()
    with forward:
        out = fn(*inputs)
    grad = torch.ones_like(out)
    backward = ElementwiseBytes()
    with backward:
        out.backward(grad)
    elements = inputs[0].numel()
    return forward.bytes / elements, backward.bytes / elements


def test_eager_elementwise_bytes_are_what_the_ops_move() -> None:
    """The eager constants are this repository's ops counted op by op on bf16 activations."""
    tokens, dim, heads = 64, 256, 4
    x = torch.randn(tokens, dim, dtype=torch.bfloat16, requires_grad=True)
    norm = RMSNorm(dim, 1e-5).to(torch.bfloat16)
    assert forward_and_backward_bytes(norm, x) == pytest.approx(EAGER_BYTES_PER_ELEMENT["norm"], abs=0.5)
    q = torch.randn(1, tokens, heads, dim // heads, dtype=torch.bfloat16, requires_grad=True)
    cos, sin = rope_tables(dim // heads, tokens, 10000.0)
    rotary = forward_and_backward_bytes(lambda t: apply_rope(t, cos[None], sin[None]), q)
    assert rotary == pytest.approx(EAGER_BYTES_PER_ELEMENT["rotary"])
    gate, up = (torch.randn(tokens, dim, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    assert forward_and_backward_bytes(lambda a, b: F.silu(a) * b, gate, up) == pytest.approx(
        EAGER_BYTES_PER_ELEMENT["gate"])
    residual = forward_and_backward_bytes(lambda a, b: a + b, gate, up)
    assert residual[0] == EAGER_BYTES_PER_ELEMENT["residual"][0]


def test_gemm_roofline_is_compute_bound_when_large_and_memory_bound_when_skinny() -> None:
    large = gemm_seconds(8192, 8192, 8192, H100, MODEL, 2)
    assert large == pytest.approx(2 * 8192**3 / (H100.peak_flops * MODEL.matmul_efficiency))
    skinny = gemm_seconds(65536, 64, 4096, H100, MODEL, 2)
    traffic = 2 * (65536 * 4096 + 4096 * 64 + 65536 * 64)
    assert skinny == pytest.approx(traffic / (H100.memory_bandwidth * MODEL.memory_efficiency))
    assert skinny > 2 * 65536 * 64 * 4096 / (H100.peak_flops * MODEL.matmul_efficiency)


def test_ring_collectives_pay_a_latency_per_step_and_the_bus_volume() -> None:
    size = 1e9
    within = ring_seconds("all_reduce", size, 8, 8, H100, MODEL)
    assert within == pytest.approx(14 * 5e-6 + 2 * 7 / 8 * size / (450e9 * 0.8))
    across = ring_seconds("all_gather", size, 64, 512, H100, MODEL)
    assert across == pytest.approx(63 * 10e-6 + 63 / 64 * size / (50e9 * 0.9))
    assert ring_seconds("reduce_scatter", size, 1, 8, H100, MODEL) == 0.0


def test_full_recomputation_reruns_one_forward() -> None:
    config = get_config("8B")
    plain = block_work(config, Layout(tp=8), 1, 8192, H100, MODEL, TRAINER, 2)
    full = block_work(config, Layout(tp=8, recompute="full"), 1, 8192, H100, MODEL, TRAINER, 2)
    assert full.gemm[1] == pytest.approx(plain.gemm[1] + plain.gemm[0])
    assert full.attention[1] == pytest.approx(plain.attention[1] + plain.attention[0])
    assert full.tp[1] == pytest.approx(2 * plain.tp[1])


def test_overlapped_data_parallel_communication_costs_less_than_serial() -> None:
    job = Job(get_config("8B"), seq_len=8192, global_batch=128)
    layout = Layout(dp=128, zero=3, micro_batch=1, recompute="selective")
    model = calibrated_time_model(H100)
    overlapped = estimate(job, layout, H100, time_model=model)
    serial = estimate(job, layout, H100, time_model=model, implementation=replace(TRAINER, dp_overlap=False))
    assert 0 < overlapped.seconds["dp"] < serial.seconds["dp"]
    assert overlapped.seconds["compute"] == serial.seconds["compute"]


def test_flat_model_charges_every_flop_at_one_efficiency() -> None:
    job = Job(get_config("1B"), seq_len=2048, global_batch=64)
    result = estimate(job, Layout(dp=1, micro_batch=64), H100, compute_efficiency=0.5)
    flops_seconds = result.seconds["compute"] + result.seconds["attention"]
    assert flops_seconds == pytest.approx(result.hardware_flops / (H100.peak_flops * 0.5), rel=1e-3)
    assert result.seconds["elementwise"] == result.seconds["optimizer"] == 0.0


def test_calibrated_model_is_the_default_and_borrowed_where_no_run_was_published() -> None:
    job = Job(get_config("1B"), seq_len=2048, global_batch=64)
    assert estimate(job, Layout(dp=8, micro_batch=8), A100).time_model == CALIBRATED["A100-80GB"]
    h200 = calibrated_time_model(get_accelerator("H200-SXM"))
    assert h200.matmul_efficiency == CALIBRATED["H100-SXM"].matmul_efficiency and "borrowed" in h200.source
    assert search(job, get_accelerator("H200-SXM"), 8)
    with pytest.raises(ValueError, match="no calibrated time model"):
        calibrated_time_model(replace(A100, name="TPU-v5"))


def test_bad_time_model_inputs_name_the_value() -> None:
    with pytest.raises(ValueError, match="matmul_efficiency=1.5"):
        replace(MODEL, matmul_efficiency=1.5)
    with pytest.raises(ValueError, match="network_latency"):
        replace(MODEL, network_latency=-1.0)
    with pytest.raises(ValueError, match="attention='paged'"):
        Implementation(attention="paged")
    with pytest.raises(ValueError, match="matmuls=2"):
        Recomputation(matmuls=2)
    job = Job(get_config("1B"), seq_len=2048, global_batch=64)
    with pytest.raises(ValueError, match="dp_overlap=0.5 applies to the flat model"):
        estimate(job, Layout(dp=8, micro_batch=8), A100, dp_overlap=0.5)
    with pytest.raises(ValueError, match="no memory bandwidth"):
        estimate(job, Layout(dp=8, micro_batch=8), replace(A100, memory_bandwidth=None),
                 time_model=CALIBRATED["A100-80GB"])
