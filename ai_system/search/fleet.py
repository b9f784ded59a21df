"""How many replicas serve a target QPS, from one replica's measured throughput: a projection, not a measurement.

Model: each replica holds the whole index and answers ``measured_qps`` at the chosen recall with
its p99 inside the latency budget; replicas share no work, so the fleet's throughput is their sum.
Replicas run at ``utilization`` of that throughput, the headroom that keeps the p99 inside the
budget when Poisson arrivals bunch up (the measured p99 was taken at that load). Hence
``replicas = ceil(target / (measured_qps * utilization))``, and hosts hold ``devices_per_host``
replicas each. What this leaves out: network and load-balancer latency, a corpus larger than one
device's memory (sharding multiplies devices by the shard count), and cross-replica updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ai_system.bench.metrics import Projection

TARGET_QPS = 10_000_000
MODEL = "replicas = ceil(target QPS / (measured QPS per replica * utilization)); hosts = ceil(replicas / per host)"


@dataclass(frozen=True)
class FleetPlan:
    target_qps: float
    measured_qps: float
    utilization: float
    replicas: int
    hosts: int
    latency_budget_ms: float
    measured_p99_ms: float

    def projection(self, **context: float | int | str) -> Projection:
        """The ``Projection`` a published figure carries: this model and the measured inputs it used."""
        return Projection(MODEL, {"target_qps": self.target_qps, "measured_qps_per_replica": self.measured_qps,
                                  "utilization": self.utilization, "measured_p99_ms": self.measured_p99_ms,
                                  "latency_budget_ms": self.latency_budget_ms, **context})


def plan_fleet(measured_qps: float, measured_p99_ms: float, latency_budget_ms: float,
               target_qps: float = TARGET_QPS, utilization: float = 0.7, devices_per_host: int = 8) -> FleetPlan:
    """Replicas and hosts for ``target_qps``; refuses a replica whose measured p99 misses the budget."""
    if not measured_qps > 0 or not target_qps > 0:
        raise ValueError(f"measured and target QPS must be positive, got {measured_qps} and {target_qps}")
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    if devices_per_host < 1:
        raise ValueError(f"devices_per_host must be >= 1, got {devices_per_host}")
    if measured_p99_ms > latency_budget_ms:
        raise ValueError(f"a replica's measured p99 of {measured_p99_ms:.1f} ms exceeds the {latency_budget_ms} ms "
                         "budget; no number of replicas fixes that (lower the batch delay or nprobe)")
    replicas = math.ceil(target_qps / (measured_qps * utilization))
    return FleetPlan(target_qps, measured_qps, utilization, replicas, math.ceil(replicas / devices_per_host),
                     latency_budget_ms, measured_p99_ms)
