"""Global batches split deterministically across ranks, resumable at the exact sample.

The whole run is one global sequence of samples: sample g is window ``perm_e[g mod N]`` of the
source, where ``perm_e`` is a seeded shuffle for epoch ``e = g // N``. A step takes the next
``batch_size`` samples and rank r keeps the r-th contiguous slice, so the ranks of any world size
together see exactly the batch a single process would. The only state is ``samples_seen``, which
is why a checkpoint can resume the stream exactly, even on a different number of ranks.
"""

from __future__ import annotations

from typing import Any

import torch

from ai_system.data.sources import SequenceSource


class ShardedBatches:
    """This rank's share of each global batch: ``(batch_size // world_size, seq_len + 1)`` tokens."""

    def __init__(self, source: SequenceSource, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0) -> None:
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        if batch_size <= 0 or batch_size % world_size:
            raise ValueError(f"global batch_size={batch_size} must be a positive multiple of world_size={world_size}")
        self.source = source
        self.batch_size = batch_size
        self.local_batch_size = batch_size // world_size
        self.rank = rank
        self.seed = seed
        self.samples_seen = 0
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def _index(self, sample: int) -> int:
        epoch, position = divmod(sample, len(self.source))
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._order = torch.randperm(len(self.source), generator=generator)
            self._epoch = epoch
        return int(self._order[position])

    def next_batch(self) -> torch.Tensor:
        first = self.samples_seen + self.rank * self.local_batch_size
        rows = [self.source.sequence(self._index(first + i)) for i in range(self.local_batch_size)]
        self.samples_seen += self.batch_size
        return torch.stack(rows)

    def state_dict(self) -> dict[str, Any]:
        return {"samples_seen": self.samples_seen, "seed": self.seed, "fingerprint": self.source.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after ``state["samples_seen"]`` samples; refuse a different corpus or shuffle seed."""
        if state["fingerprint"] != self.source.fingerprint():
            raise ValueError(f"checkpoint was written for data {state['fingerprint']!r}, "
                             f"but this run reads {self.source.fingerprint()!r}")
        if state["seed"] != self.seed:
            raise ValueError(f"checkpoint data seed {state['seed']} differs from this run's seed {self.seed}")
        self.samples_seen = int(state["samples_seen"])
