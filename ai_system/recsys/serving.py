"""The serving endpoint: top-K items for a user, from rows read fresh out of the store.

Each request reads the user's row from the store (no cache), so an acknowledged update is visible
to the next request; item vectors go through the item tower once per ``item_refresh_s`` in a
background thread (Monolith-style periodic sync), which bounds item freshness by that interval.
Unknown users get the documented cold-start default: a zero row, i.e. the towers' global ranking,
flagged ``cold_start`` in the answer. A store outage answers 503 (the item index keeps serving from
its last refresh), within the store's timeout; malformed ids answer 422, and an id must be written
exactly (``" 5"`` is not 5). ``/healthz`` never touches the store: it runs on the event loop, not in
the worker threads that a hung store can tie up, and reports what the last store call saw. Same
stack as the inference server: FastAPI + uvicorn.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib

import httpx
import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Path, Query

from ai_system.recsys.models import TwoTower
from ai_system.recsys.store import INT64_MAX, INT64_MIN, EmbeddingStore, StoreUnavailableError, parse_id
from ai_system.search import FlatIndex


class Recommender:
    """Scores a user against the item index; the index is refreshed from the store periodically."""

    def __init__(self, model: TwoTower, users: EmbeddingStore, items: EmbeddingStore, item_ids: np.ndarray,
                 item_refresh_s: float = 1.0, model_lock: threading.Lock | None = None) -> None:
        if item_refresh_s <= 0:
            raise ValueError(f"item_refresh_s must be positive, got {item_refresh_s}")
        self.model = model
        self.users = users
        self.items = items
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.item_refresh_s = item_refresh_s
        self.model_lock = model_lock or threading.Lock()
        self.item_vectors = torch.zeros(0, users.dim)
        self.item_index = FlatIndex(users.dim, "ip")
        self.refreshed_at = float("-inf")
        self.store_ok_at = float("-inf")
        self.store_error: str | None = None
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def _read(self, store: EmbeddingStore, ids: np.ndarray | list[int]) -> torch.Tensor:
        """A serving read that records whether the store answered, for ``/healthz``."""
        try:
            rows = store.get(ids, create=False)
        except StoreUnavailableError as error:
            self.store_error = str(error)
            raise
        self.store_ok_at, self.store_error = time.monotonic(), None
        return rows

    def health(self) -> dict[str, object]:
        """What the last store call saw; no store call here, so it answers at once even while the store hangs."""
        now = time.monotonic()
        return {"status": "ok" if self.store_error is None else "degraded", "items": len(self.item_ids),
                "store_reachable": self.store_error is None, "store_error": self.store_error,
                "store_ok_s_ago": now - self.store_ok_at if self.store_ok_at > float("-inf") else None,
                "items_refreshed_s_ago": now - self.refreshed_at if self.refreshed_at > float("-inf") else None}

    @torch.no_grad()
    def refresh_items(self) -> None:
        rows = self._read(self.items, self.item_ids)
        with self.model_lock:
            item_vectors = self.model.item_tower(rows)
        index = FlatIndex(item_vectors.shape[1], "ip")
        index.add(item_vectors)
        self.item_vectors, self.item_index = item_vectors, index
        self.refreshed_at = time.monotonic()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.item_refresh_s):
            with contextlib.suppress(StoreUnavailableError):
                self.refresh_items()

    def start(self) -> None:
        self.refresh_items()
        self._stop.clear()
        self._refresher = threading.Thread(target=self._refresh_loop, name="item-refresh", daemon=True)
        self._refresher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None

    @torch.no_grad()
    def top_k(self, user_row: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
        """The ``k`` best items for one user row (1, dim) and their scores, from the exact search index
        (``ai_system.search.FlatIndex``: the fused similarity top-k) over the refreshed item vectors."""
        with self.model_lock:
            user = self.model.user_tower(user_row)
            index = self.item_index
        hits = index.search(user, k)
        return self.item_ids[hits.ids[0].numpy()].tolist(), hits.scores[0].tolist()

    def recommend(self, user_id: int, k: int) -> dict[str, object]:
        if not 1 <= k <= len(self.item_ids):
            raise ValueError(f"k must be in [1, {len(self.item_ids)}] (the catalogue size), got {k}")
        row = self._read(self.users, [user_id])
        items, scores = self.top_k(row, k)
        return {"user_id": user_id, "items": items, "scores": scores, "cold_start": not bool(row.any()),
                "user_row_crc": row_fingerprint(row[0]),
                "items_refreshed_s_ago": time.monotonic() - self.refreshed_at}


def create_app(recommender: Recommender) -> FastAPI:
    app = FastAPI(title="ai-system recommender")

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        """Liveness with the store's state: 200 while the process serves, ``"degraded"`` while the store
        does not answer (a restart would not fix the store)."""
        return recommender.health()

    @app.get("/recommend/{user_id}")
    def recommend(user_id: str = Path(description=f"raw 64-bit user id in [{INT64_MIN}, {INT64_MAX}], plain "
                                                  "decimal"),
                  k: int = Query(10, ge=1, description="how many items")) -> dict[str, object]:
        try:
            return recommender.recommend(parse_id(user_id), k)
        except ValueError as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        except StoreUnavailableError as error:
            raise HTTPException(status_code=503, detail=str(error)) from error

    return app


def row_fingerprint(row: torch.Tensor) -> int:
    """CRC32 of a row's float32 bytes: lets a client tell which version of a row an answer used."""
    return zlib.crc32(row.detach().to(torch.float32).contiguous().numpy().tobytes())


def measure_freshness(client: httpx.Client, recommender: Recommender, probes: int, seed: int = 0,
                      timeout_s: float = 5.0) -> np.ndarray:
    """Seconds from an acknowledged row update to the first served answer computed from it.

    Each probe writes a new random row for a reserved user id (one the trainer never touches); the
    clock starts when ``update`` returns and stops at the first answer whose ``user_row_crc`` is
    that row's. Trainer writes to other rows and to the dense weights may run concurrently.
    """
    rng = np.random.default_rng(seed)
    probe_users = rng.integers(INT64_MIN, INT64_MAX, probes, dtype=np.int64)
    latencies = []
    for user_id in probe_users.tolist():
        row = torch.from_numpy(rng.normal(size=(1, recommender.users.dim)).astype(np.float32))
        expected = row_fingerprint(row[0])
        recommender.users.update([user_id], row)
        acknowledged = time.perf_counter()
        while client.get(f"/recommend/{user_id}", params={"k": 1}).json()["user_row_crc"] != expected:
            if time.perf_counter() - acknowledged > timeout_s:
                raise RuntimeError(f"update of user {user_id} not served within {timeout_s}s")
        latencies.append(time.perf_counter() - acknowledged)
    return np.array(latencies)
