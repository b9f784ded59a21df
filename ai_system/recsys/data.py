"""A synthetic interaction stream with planted structure, so quality is measurable.

Users and items get latent factors drawn around a few shared taste clusters; a user interacts with
item ``i`` with probability ``softmax(u·v / temperature)`` (retrieval) and clicks an impression with
probability ``sigmoid(gain·u·v + bias_i)`` (ranking). The generating factors are the ground-truth
model: no learned model can beat them on this data, so recall@K and AUC are reported as a ratio to
theirs. Ids are raw random 64-bit integers, as hashed production ids are.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

N_DENSE = 4


@dataclass(frozen=True)
class PlantedWorld:
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray
    temperature: float
    click_gain: float

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def affinity(self, users: np.ndarray) -> np.ndarray:
        """True interaction logits of users (row indices) against every item."""
        return self.user_factors[users] @ self.item_factors.T / self.temperature

    def click_probability(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        logit = self.click_gain * (self.user_factors[users] * self.item_factors[items]).sum(1) + self.item_bias[items]
        return 1.0 / (1.0 + np.exp(-logit))


def make_world(n_users: int, n_items: int, rank: int = 8, clusters: int = 16, temperature: float = 0.25,
               click_gain: float = 3.0, seed: int = 0) -> PlantedWorld:
    for name, value in (("n_users", n_users), ("n_items", n_items), ("rank", rank), ("clusters", clusters)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, rank)) / np.sqrt(rank)

    def factors(n: int) -> np.ndarray:
        return (centers[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, rank)) / np.sqrt(rank))

    ids = rng.choice(np.iinfo(np.int64).max, size=n_users + n_items, replace=False).astype(np.int64)
    return PlantedWorld(user_ids=ids[:n_users], item_ids=ids[n_users:],
                        user_factors=factors(n_users).astype(np.float32),
                        item_factors=factors(n_items).astype(np.float32),
                        item_bias=rng.normal(scale=0.5, size=n_items).astype(np.float32),
                        temperature=temperature, click_gain=click_gain)


def sample_interactions(world: PlantedWorld, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(user row, item row) pairs: users uniform, items from each user's true softmax."""
    users = rng.integers(0, world.n_users, n)
    logits = world.affinity(users)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    cumulative = np.cumsum(probs, axis=1)
    draws = rng.random(n) * cumulative[:, -1]
    items = (cumulative < draws[:, None]).sum(1)
    return users, np.minimum(items, world.n_items - 1)


def interaction_stream(world: PlantedWorld, batch_size: int, seed: int = 0
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless mini-batches of interactions, the online trainer's input."""
    rng = np.random.default_rng(seed)
    while True:
        yield sample_interactions(world, batch_size, rng)


@dataclass(frozen=True)
class Impressions:
    users: np.ndarray
    items: np.ndarray
    dense: np.ndarray
    labels: np.ndarray
    true_probability: np.ndarray


def sample_impressions(world: PlantedWorld, n: int, rng: np.random.Generator) -> Impressions:
    """Random (user, item) impressions with click labels; dense features carry a noisy item bias."""
    users = rng.integers(0, world.n_users, n)
    items = rng.integers(0, world.n_items, n)
    probability = world.click_probability(users, items)
    dense = rng.normal(size=(n, N_DENSE)).astype(np.float32)
    dense[:, 0] = world.item_bias[items] + 0.1 * dense[:, 0]
    return Impressions(users, items, dense, (rng.random(n) < probability).astype(np.float32), probability)
