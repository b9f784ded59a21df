"""How big a cluster a 1B-user deployment needs, projected from figures measured on this machine.

The model is deliberately plain: memory decides how many shards hold the rows (bytes per stored row,
measured, times rows, over the usable memory of one shard), throughput decides how many serve the
traffic (row reads and writes per second, over one shard's measured row rate), and the cluster is
the larger of the two, times replicas. Every output is a projection and is published as one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

GIB = 1 << 30


@dataclass(frozen=True)
class SizingInputs:
    bytes_per_row: float
    rows_per_s_per_shard: float
    users: int = 1_000_000_000
    items: int = 10_000_000
    requests_per_s: float = 1_000_000.0
    rows_per_request: int = 1
    events_per_user_per_day: float = 20.0
    shard_memory_bytes: float = 64 * GIB
    memory_headroom: float = 0.7
    replicas_per_shard: int = 1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0 or (name not in ("replicas_per_shard", "events_per_user_per_day") and value == 0):
                raise ValueError(f"SizingInputs.{name} must be positive, got {value}")
        if self.memory_headroom > 1:
            raise ValueError(f"memory_headroom is the usable share of a shard's memory, got {self.memory_headroom}")


@dataclass(frozen=True)
class Sizing:
    rows: int
    total_bytes: float
    reads_per_s: float
    writes_per_s: float
    shards_for_memory: int
    shards_for_throughput: int
    shards: int
    nodes: int


def project(inputs: SizingInputs) -> Sizing:
    rows = inputs.users + inputs.items
    total_bytes = rows * inputs.bytes_per_row
    reads = inputs.requests_per_s * inputs.rows_per_request
    writes = inputs.users * inputs.events_per_user_per_day / 86400.0
    for_memory = math.ceil(total_bytes / (inputs.shard_memory_bytes * inputs.memory_headroom))
    for_throughput = math.ceil((reads + writes) / inputs.rows_per_s_per_shard)
    shards = max(for_memory, for_throughput)
    return Sizing(rows=rows, total_bytes=total_bytes, reads_per_s=reads, writes_per_s=writes,
                  shards_for_memory=for_memory, shards_for_throughput=for_throughput, shards=shards,
                  nodes=shards * (1 + inputs.replicas_per_shard))
