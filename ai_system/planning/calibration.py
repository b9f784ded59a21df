"""The time model's constants per GPU type: where each starts, which are fitted, and the fit.

``PRIORS`` holds each GPU's constants before fitting, from measurements others published;
``FITTED`` names those fitted on that GPU's published runs (``published_runs.csv``) by
``ai_system.planning.validation.fit_time_model``; ``CALIBRATED`` is that fit, rounded, which the
planner uses. ``tests/planning/test_validation.py`` re-fits and fails if the two drift apart. A
GPU with fewer published runs fits fewer constants; one with none borrows a calibrated GPU's.

Priors, with their sources:

* ``attention_efficiency``: FlashAttention-2 reaches 50–73% of the A100's peak in its forward pass
  and less in backward (Dao, 2023): 0.6; on H100 it reaches 35% (Shah et al., 2024, FlashAttention-3,
  §1): 0.35. No published run here separates it from the matmul rate, so it is not fitted.
* ``nvlink_efficiency``: NCCL's all-reduce bus bandwidth over the NVLink figure, about 0.8 on DGX
  A100 and H100 for large messages (NVIDIA nccl-tests); ``nvlink_latency`` a few µs per ring step.
* ``network_efficiency``: about 0.9 of the NIC's line rate for large messages; ``network_latency``
  10 µs per ring step across nodes.
* ``matmul_efficiency`` 0.75 and ``memory_efficiency`` 0.85: starting points only, always fitted.
"""

from __future__ import annotations

from dataclasses import replace

from ai_system.planning.accelerators import Accelerator
from ai_system.planning.time_model import TimeModel

PRIORS: dict[str, TimeModel] = {
    "A100-80GB": TimeModel(matmul_efficiency=0.75, attention_efficiency=0.6, memory_efficiency=0.85,
                           nvlink_efficiency=0.8, network_efficiency=0.9, nvlink_latency=5e-6, network_latency=10e-6,
                           source="priors"),
    "H100-SXM": TimeModel(matmul_efficiency=0.75, attention_efficiency=0.35, memory_efficiency=0.85,
                          nvlink_efficiency=0.8, network_efficiency=0.9, nvlink_latency=5e-6, network_latency=10e-6,
                          source="priors"),
    "H100-HBM2e-96GB-500W": TimeModel(matmul_efficiency=0.75, attention_efficiency=0.35, memory_efficiency=0.85,
                                      nvlink_efficiency=0.8, network_efficiency=0.9, nvlink_latency=5e-6,
                                      network_latency=10e-6, source="priors"),
}
FITTED: dict[str, tuple[str, ...]] = {
    "A100-80GB": ("matmul_efficiency", "memory_efficiency", "nvlink_efficiency", "network_efficiency",
                  "network_latency"),
    "H100-HBM2e-96GB-500W": ("matmul_efficiency", "memory_efficiency", "nvlink_efficiency"),
    "H100-SXM": ("matmul_efficiency",),
}
"""47 A100 runs fit five constants; the 9 torchtitan H100 runs (one cluster, no run that varies the
network much) three; Llama 3's two runs only the matmul rate."""

CALIBRATED: dict[str, TimeModel] = {
    "A100-80GB": replace(PRIORS["A100-80GB"], matmul_efficiency=0.73, memory_efficiency=0.998,
                         nvlink_efficiency=0.389, network_efficiency=1.0, network_latency=1.32e-05,
                         source="fitted on 47 published A100 runs"),
    "H100-HBM2e-96GB-500W": replace(PRIORS["H100-HBM2e-96GB-500W"], matmul_efficiency=0.463, memory_efficiency=1.0,
                                    nvlink_efficiency=0.522, source="fitted on 7 published torchtitan H100 runs"),
    "H100-SXM": replace(PRIORS["H100-SXM"], matmul_efficiency=0.617, source="fitted on 2 published Llama 3 runs"),
}
BORROWED = {"H200-SXM": "H100-SXM", "B200": "H100-SXM"}
"""GPUs with no published run: the H200 is an H100 with more and faster HBM (the fractions apply to
its own bandwidths); the B200 has no calibration of its own and borrows the H100's fractions."""


def calibrated_time_model(accelerator: Accelerator) -> TimeModel:
    """The fitted constants of ``accelerator``'s type, or those it borrows; a clear error otherwise."""
    name = accelerator.name
    if name in CALIBRATED:
        return CALIBRATED[name]
    if name in BORROWED:
        borrowed = CALIBRATED[BORROWED[name]]
        return replace(borrowed, source=f"{borrowed.source}; borrowed from {BORROWED[name]} ({name} has no "
                                        "published run)")
    raise ValueError(f"accelerator {name!r} has no calibrated time model (calibrated: {sorted(CALIBRATED)}, "
                     f"borrowed: {sorted(BORROWED)}); plan it with compute_efficiency (the flat model, --efficiency)")


CONSTANT_COLUMNS = {"matmul_efficiency": "matmul", "attention_efficiency": "attention", "memory_efficiency": "HBM",
                    "nvlink_efficiency": "NVLink", "network_efficiency": "network", "nvlink_latency": "NVLink step",
                    "network_latency": "network step"}


def constants_table() -> list[str]:
    """The calibrated constants as the Markdown table of ``docs/systems/capacity-planner.md`` (a test
    holds the page to it); fitted values in bold, the rest are priors."""
    lines = ["| GPU | " + " | ".join(CONSTANT_COLUMNS.values()) + " | Source |",
             "|" + " --- |" * (len(CONSTANT_COLUMNS) + 2)]
    for gpu, model in CALIBRATED.items():
        cells = []
        for name in CONSTANT_COLUMNS:
            value = getattr(model, name)
            text = f"{value * 1e6:.3g} µs" if name.endswith("latency") else f"{value:.3g}"
            cells.append(f"**{text}**" if name in FITTED[gpu] else text)
        lines.append(f"| {gpu} | " + " | ".join(cells) + f" | {model.source} |")
    return lines
