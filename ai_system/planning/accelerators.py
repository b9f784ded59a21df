"""Accelerator specifications the capacity planner plans for, each with its source.

Peaks are the vendors' dense (no structured sparsity) BF16 tensor-core figures; bandwidths are per
GPU and per direction: HBM, NVLink within a node, the GPU's own InfiniBand/Ethernet NIC between
nodes. What a GPU sustains of these figures is the calibrated time model's business
(``ai_system/planning/time_model.py``), not this table's.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Accelerator:
    """One device type and the node it comes in."""

    name: str
    peak_flops: float
    memory_bytes: float
    intra_node_bandwidth: float
    inter_node_bandwidth: float
    devices_per_node: int
    source: str
    memory_bandwidth: float | None = None

    def __post_init__(self) -> None:
        for field_name in ("peak_flops", "memory_bytes", "intra_node_bandwidth", "inter_node_bandwidth",
                           "devices_per_node"):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"Accelerator {self.name!r}: {field_name} must be positive, "
                                 f"got {getattr(self, field_name)}")
        if self.memory_bandwidth is not None and self.memory_bandwidth <= 0:
            raise ValueError(f"Accelerator {self.name!r}: memory_bandwidth must be positive or None (unknown), "
                             f"got {self.memory_bandwidth}")


ACCELERATORS: dict[str, Accelerator] = {
    accelerator.name: accelerator
    for accelerator in (
        Accelerator("A100-80GB", peak_flops=312e12, memory_bytes=80 * GB, intra_node_bandwidth=300 * GB,
                    inter_node_bandwidth=25 * GB, devices_per_node=8, memory_bandwidth=2039 * GB,
                    source="NVIDIA A100 Tensor Core GPU datasheet (BF16 312 TFLOPS dense, 80 GB HBM2e at "
                           "2,039 GB/s (SXM), NVLink 600 GB/s bidirectional); DGX A100 datasheet "
                           "(8x 200 Gb/s HDR InfiniBand)"),
        Accelerator("H100-SXM", peak_flops=989e12, memory_bytes=80 * GB, intra_node_bandwidth=450 * GB,
                    inter_node_bandwidth=50 * GB, devices_per_node=8, memory_bandwidth=3350 * GB,
                    source="NVIDIA H100 Tensor Core GPU datasheet (BF16 1,979 TFLOPS with sparsity = 989 dense, "
                           "80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s bidirectional); DGX H100 "
                           "(8x 400 Gb/s ConnectX-7)"),
        Accelerator("H100-HBM2e-96GB-500W", peak_flops=989e12, memory_bytes=96 * GB, intra_node_bandwidth=450 * GB,
                    inter_node_bandwidth=50 * GB, devices_per_node=8, memory_bandwidth=2400 * GB,
                    source="Meta Grand Teton H100 as torchtitan describes it (96 GB HBM2e at 2.4 TB/s, 500 W "
                           "power limit, 400 Gb/s RDMA per GPU, NVLink as the H100 SXM datasheet); its dense "
                           "BF16 peak is not published and lies below the SXM's: 989 TFLOPS here is the "
                           "datasheet figure torchtitan divides by, and the calibrated matmul efficiency "
                           "carries the difference"),
        Accelerator("H200-SXM", peak_flops=989e12, memory_bytes=141 * GB, intra_node_bandwidth=450 * GB,
                    inter_node_bandwidth=50 * GB, devices_per_node=8, memory_bandwidth=4800 * GB,
                    source="NVIDIA H200 Tensor Core GPU datasheet (BF16 1,979 TFLOPS with sparsity = 989 dense, "
                           "141 GB HBM3e at 4.8 TB/s, NVLink 900 GB/s bidirectional); DGX H200 "
                           "(8x 400 Gb/s ConnectX-7)"),
        Accelerator("B200", peak_flops=2250e12, memory_bytes=180 * GB, intra_node_bandwidth=900 * GB,
                    inter_node_bandwidth=50 * GB, devices_per_node=8, memory_bandwidth=8000 * GB,
                    source="NVIDIA DGX B200 datasheet (8 GPUs: 1,440 GB HBM3e at 64 TB/s, FP16/BF16 36 PFLOPS "
                           "with sparsity = 2.25 PFLOPS dense per GPU, NVLink 5 1.8 TB/s bidirectional, "
                           "8x 400 Gb/s ConnectX-7)"),
    )
}


def get_accelerator(name: str) -> Accelerator:
    if name not in ACCELERATORS:
        raise ValueError(f"unknown accelerator {name!r}; expected one of {sorted(ACCELERATORS)}")
    return ACCELERATORS[name]
