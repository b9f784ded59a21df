"""Offline and online training of the two models, and the quality metrics against ground truth.

Offline: loop over mini-batches of the synthetic stream. Online: ``OnlineTrainer`` runs the same
step in a background thread on a stream while a server keeps answering; each step writes back only
the rows its batch touched, so serving sees a user's new row as soon as ``apply_gradients`` returns.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ai_system.recsys.data import Impressions, PlantedWorld
from ai_system.recsys.models import DLRM, StoreTable, TwoTower
from ai_system.search import FlatIndex


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads: these dense layers are tiny, and beside a store, a server and a
    trainer thread, more intra-op threads only oversubscribe the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class TwoTowerTrainer:
    """Full-softmax retrieval over the item catalogue (cheap at these sizes, exact for recall).

    ``normalizer`` is the global batch size: ranks of a sharded run each sum their local losses and
    divide by it, so the summed gradients equal one process's mean-loss gradient. ``reduce_dense``
    all-reduces dense gradients there; it is a no-op in one process. ``dense_optimizer="sgd"`` makes
    sharded-vs-unsharded parity exact to float noise (Adam's per-element normalisation amplifies it).
    """

    model: TwoTower
    users: StoreTable
    items: StoreTable
    item_ids: np.ndarray
    lr_dense: float = 1e-2
    lr_sparse: float = 0.1
    reduce_dense: Callable[[nn.Module], None] = lambda model: None
    dense_optimizer: Literal["adam", "sgd"] = "adam"
    optimizer: torch.optim.Optimizer = field(init=False)
    rows_written: int = 0

    def __post_init__(self) -> None:
        if self.dense_optimizer not in ("adam", "sgd"):
            raise ValueError(f"dense_optimizer must be 'adam' or 'sgd', got {self.dense_optimizer!r}")
        optimizer = torch.optim.Adam if self.dense_optimizer == "adam" else torch.optim.SGD
        self.optimizer = optimizer(self.model.parameters(), lr=self.lr_dense)
        self.lock = threading.Lock()

    def step(self, user_ids: np.ndarray, item_index: np.ndarray, normalizer: int | None = None) -> float:
        with self.lock:
            user_rows = self.users.lookup(user_ids)
            item_rows = self.items.lookup(self.item_ids)
            logits = self.model(user_rows, item_rows)
            target = torch.from_numpy(np.asarray(item_index, dtype=np.int64))
            loss = F.cross_entropy(logits, target, reduction="sum") / (normalizer or len(user_ids))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.reduce_dense(self.model)
            self.optimizer.step()
            self.rows_written += self.users.step(self.lr_sparse) + self.items.step(self.lr_sparse)
        return float(loss.detach())


@dataclass
class DLRMTrainer:
    model: DLRM
    users: StoreTable
    items: StoreTable
    lr_dense: float = 1e-2
    lr_sparse: float = 0.1
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr_dense)

    def logits(self, user_ids: np.ndarray, item_ids: np.ndarray, dense: np.ndarray) -> torch.Tensor:
        return self.model(torch.from_numpy(dense), [self.users.lookup(user_ids), self.items.lookup(item_ids)])

    def step(self, user_ids: np.ndarray, item_ids: np.ndarray, dense: np.ndarray, labels: np.ndarray) -> float:
        loss = F.binary_cross_entropy_with_logits(self.logits(user_ids, item_ids, dense), torch.from_numpy(labels))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.users.step(self.lr_sparse)
        self.items.step(self.lr_sparse)
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray, dense: np.ndarray) -> np.ndarray:
        logits = self.logits(user_ids, item_ids, dense)
        self.users.discard()
        self.items.discard()
        return logits.numpy()


RETRIEVAL = "exact search through ai_system.search.FlatIndex (fused similarity top-k)"
"""How candidates are retrieved, stated beside every recall figure the case study publishes."""


def recall_at_k(users: torch.Tensor, items: torch.Tensor, held_out: np.ndarray, k: int) -> float:
    """Share of held-out interactions whose item is among the ``k`` items of highest ``user · item``.

    Rows of ``users`` are events, ``held_out`` their items' row indices in ``items``; the top ``k``
    come from ``ai_system.search.FlatIndex`` (exact search by the fused similarity top-k), the
    retrieval the serving endpoint runs.
    """
    if not 1 <= k <= items.shape[0]:
        raise ValueError(f"k must be in [1, {items.shape[0]}] (the catalogue size), got {k}")
    index = FlatIndex(items.shape[1], "ip")
    index.add(items)
    top = index.search(users, k).ids
    return float((top.numpy() == held_out[:, None]).any(1).mean())


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged."""
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, starts, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(starts + (counts + 1) / 2.0, counts)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def two_tower_vectors(trainer: TwoTowerTrainer, user_ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Serving-path vectors: read rows without creating them, run each through its tower."""
    users = trainer.users.store.get(user_ids, create=False)
    items = trainer.items.store.get(trainer.item_ids, create=False)
    return trainer.model.user_tower(users), trainer.model.item_tower(items)


@dataclass(frozen=True)
class RetrievalQuality:
    recall: float
    truth_recall: float
    k: int

    @property
    def ratio(self) -> float:
        return self.recall / self.truth_recall


def retrieval_quality(trainer: TwoTowerTrainer, world: PlantedWorld, users: np.ndarray, items: np.ndarray,
                      k: int) -> RetrievalQuality:
    """Recall@k of the trained model and of the generating factors on the same held-out events.

    The factors rank items by ``u · v``: the world's affinity divides that by a positive temperature,
    which changes no ranking.
    """
    learned = recall_at_k(*two_tower_vectors(trainer, world.user_ids[users]), items, k)
    truth = recall_at_k(torch.from_numpy(world.user_factors[users]).float(),
                        torch.from_numpy(world.item_factors).float(), items, k)
    return RetrievalQuality(learned, truth, k)


@dataclass(frozen=True)
class RankingQuality:
    auc: float
    truth_auc: float

    @property
    def ratio(self) -> float:
        return self.auc / self.truth_auc


def ranking_quality(trainer: DLRMTrainer, world: PlantedWorld, impressions: Impressions) -> RankingQuality:
    scores = trainer.predict(world.user_ids[impressions.users], world.item_ids[impressions.items],
                             impressions.dense)
    return RankingQuality(auc(scores, impressions.labels), auc(impressions.true_probability, impressions.labels))


class OnlineTrainer:
    """Consumes a stream in a background thread, one step per mini-batch, until stopped or exhausted."""

    def __init__(self, trainer: TwoTowerTrainer, world: PlantedWorld,
                 stream: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
        self.trainer = trainer
        self.world = world
        self.stream = stream
        self.steps = 0
        self.samples = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="online-trainer", daemon=True)

    def _run(self) -> None:
        try:
            for users, items in self.stream:
                if self._stop.is_set():
                    return
                self.trainer.step(self.world.user_ids[users], items)
                self.steps += 1
                self.samples += len(users)
        except BaseException as error:  # surfaced by stop(); a dead consumer must not pass silently
            self.error = error

    def start(self) -> OnlineTrainer:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> float:
        """Stop after the current step; see ``join``."""
        self._stop.set()
        return self.join()

    def join(self) -> float:
        """Wait for the consumer, re-raise its failure if any, and return samples per second."""
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"online trainer failed after {self.steps} steps") from self.error
        return self.samples / (time.perf_counter() - self.started)
