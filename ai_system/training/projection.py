"""From one measured device to N: FSDP's communication volume against a stated link bandwidth.

Per optimizer step every rank all-gathers the parameters for the forward, again for the backward
(FSDP2 frees them after the forward by default), and reduce-scatters the gradients. Each of these
moves ``(N-1)/N`` of the full tensor through every rank's link (ring algorithms), so per rank:

    bytes = P · (2·b_param + b_grad) · (N-1)/N,       t_comm = bytes / link_bandwidth

With the per-rank batch held fixed (weak scaling), a step takes ``t_compute + t_comm`` with no
overlap, or ``max(t_compute, t_comm)`` with perfect overlap of communication behind compute; the
truth lies between. Throughput = N · samples per rank per step / step time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FSDPProjection:
    world_size: int
    comm_bytes_per_rank: float
    comm_time_s: float
    step_time_s: float
    samples_per_s: float
    scaling_efficiency: float


def project_fsdp(single_device_samples_per_s: float, samples_per_device_step: int, num_params: int,
                 world_size: int, link_bandwidth_bytes_per_s: float, param_bytes: int = 2, grad_bytes: int = 4,
                 overlap: bool = False) -> FSDPProjection:
    """Projected throughput of ``world_size`` devices, each running the measured single-device step.

    ``param_bytes``/``grad_bytes`` are the all-gathered parameter and reduced gradient widths
    (bf16 parameters, fp32 reduction: 2 and 4).
    """
    for name, value in (("single_device_samples_per_s", single_device_samples_per_s),
                        ("samples_per_device_step", samples_per_device_step), ("num_params", num_params),
                        ("world_size", world_size), ("link_bandwidth_bytes_per_s", link_bandwidth_bytes_per_s),
                        ("param_bytes", param_bytes), ("grad_bytes", grad_bytes)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    compute_s = samples_per_device_step / single_device_samples_per_s
    volume = num_params * (2 * param_bytes + grad_bytes) * (world_size - 1) / world_size
    comm_s = volume / link_bandwidth_bytes_per_s
    step_s = max(compute_s, comm_s) if overlap else compute_s + comm_s
    samples_per_s = world_size * samples_per_device_step / step_s
    return FSDPProjection(world_size=world_size, comm_bytes_per_rank=volume, comm_time_s=comm_s, step_time_s=step_s,
                          samples_per_s=samples_per_s,
                          scaling_efficiency=samples_per_s / (world_size * single_device_samples_per_s))
