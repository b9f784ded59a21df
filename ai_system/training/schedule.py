"""Learning rate: linear warmup, then cosine decay to a floor (the Llama / Chinchilla recipe)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """Multiplier of the peak lr at a step: ramps up over ``warmup`` steps, decays to ``min_ratio``.

    A plain object (not a closure) so ``LambdaLR.state_dict`` can save and compare it.
    """

    warmup: int
    total: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        decay_steps = max(self.total - self.warmup, 1)
        progress = min((step - self.warmup) / decay_steps, 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int,
                            min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, min_ratio))
