"""What durability costs the embedded store, and what the stores keep through faults, measured here.

- Cost: batched ``apply_gradients`` and ``get`` on a durable store (update log, ``fsync`` ``always`` or
  ``everysec``) against the in-memory store, the two timed back to back in each round on the same
  batch, in wall-clock time (an ``fsync`` is time the caller waits, though its thread sleeps). The
  store that goes second finds more of its rows in cache (a first run read durable ``get`` at 1.6×
  the in-memory rate), so the order alternates every round and a figure is the median over pairs of
  rounds of the two ratios' geometric mean, which cancels that bias.
- Faults (``ai_system.recsys.faults``): acknowledged updates lost to a ``SIGKILL`` of the embedded
  store's process and of ``redis-server`` under each fsync policy, and the time to take calls again;
  a ``SIGSTOP``-ed Redis: how long a store call blocks against its socket timeout, how long
  ``/healthz`` takes meanwhile, and how many times a retried gradient update is applied.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from ai_system.bench.metrics import Baseline, Spread
from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.faults import crash_embedded_writer, crash_redis_server, hang_redis
from ai_system.recsys.redis_server import MISSING_REDIS, redis_available

AREA = "recommender"
DIM = 64
POLICIES = ["always", "everysec"]
QUESTION_COST = "What does durability (an update log, fsync per Redis' policies) cost the embedded store?"
QUESTION_LOST = "How many acknowledged updates does a store lose when its process is killed?"
QUESTION_RECOVERY = "How long does a killed store take to answer again?"
QUESTION_HANG = "Does a hung Redis keep the recommender within its stated timeouts?"
needs_redis = pytest.mark.skipif(not redis_available(), reason=MISSING_REDIS)


@pytest.mark.parametrize("fsync", POLICIES)
def test_durability_cost(benchmark, record, profile, tmp_path, fsync):
    rows, batch = profile.pick(quick=50_000, full=500_000), profile.pick(quick=1024, full=4096)
    rounds = profile.pick(quick=20, full=100)  # even: the order alternates in pairs of rounds
    rng = np.random.default_rng(0)
    ids = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, rows, dtype=np.int64)
    memory = EmbeddedStore(DIM)
    durable = EmbeddedStore(DIM, path=tmp_path, fsync=fsync)
    for store in (memory, durable):
        for chunk in np.array_split(ids, max(1, rows // 10000)):
            store.get(chunk)
    batches = [(ids[rng.integers(0, rows, batch)], rng.normal(size=(batch, DIM)).astype(np.float32))
               for _ in range(rounds + 1)]
    seconds: dict[str, list[float]] = {"update_memory": [], "update_durable": [], "get_memory": [],
                                       "get_durable": []}

    def timed(name: str, call, *args) -> None:
        start = time.perf_counter()
        call(*args)
        seconds[name].append(time.perf_counter() - start)

    def one_round(step: list[int]) -> None:
        batch_ids, grads = batches[step[0] % len(batches)]
        order = [("memory", memory), ("durable", durable)][::1 if step[0] % 2 else -1]
        step[0] += 1
        for name, store in order:
            timed(f"update_{name}", store.apply_gradients, batch_ids, grads, 0.01)
        for name, store in order:
            timed(f"get_{name}", store.get, batch_ids, False)

    counter = [0]
    benchmark.pedantic(one_round, args=(counter,), rounds=rounds, iterations=1, warmup_rounds=1)
    durable.close()
    scale = f"{rows:,} rows × {DIM} float32, batches of {batch}"
    params = {"fsync": fsync, "rows": rows, "dim": DIM, "batch": batch}
    for operation, verb in (("update", "apply_gradients"), ("get", "get")):
        memory_s, durable_s = seconds[f"{operation}_memory"][-rounds:], seconds[f"{operation}_durable"][-rounds:]
        ratios = [m / d for m, d in zip(memory_s, durable_s, strict=True)]
        paired = [(first * second) ** 0.5 for first, second in zip(ratios[::2], ratios[1::2], strict=True)]
        durable_rate, memory_rate = batch / statistics.median(durable_s), batch / statistics.median(memory_s)
        record(name=f"durable_{fsync}_{operation}_rows_per_s", value=durable_rate / 1e6, unit="Mrows/s",
               better="higher", area=AREA, scale=scale, params=params,
               spread=Spread.of([batch / s / 1e6 for s in durable_s]),
               description=f"batched {verb} on the durable embedded store (fsync {fsync}), median round")
        record(name=f"durable_{fsync}_{operation}_vs_in_memory", value=statistics.median(paired), unit="ratio",
               better="higher", area=AREA, scale=scale, params=params, question=QUESTION_COST,
               baseline=Baseline("the in-memory embedded store", memory_rate / 1e6, "Mrows/s",
                                 ours=durable_rate / 1e6),
               spread=Spread.of(paired),
               description=f"in-memory time / durable time for {verb}, same batch back to back, order alternating "
                           "each round; median over pairs of rounds of the two ratios' geometric mean"
                           + (" (reads never touch the log)" if operation == "get" else ""))


def record_crash(record, name: str, outcome, scale: str, params: dict) -> None:
    record(name=f"{name}_acknowledged_updates_lost", value=outcome.lost, unit="updates", better="lower",
           area=AREA, scale=scale, params=params, question=QUESTION_LOST, goal=0,
           description=f"acknowledged batches missing or wrong after the kill and restart, of {outcome.acknowledged} "
                       f"acknowledged; {outcome.torn} rows of the in-flight batch half written")
    record(name=f"{name}_recovery_s", value=outcome.recovery_s, unit="s", better="lower", area=AREA, scale=scale,
           params=params, question=QUESTION_RECOVERY, description="from restart to taking calls again")


@pytest.mark.parametrize("fsync", POLICIES)
def test_kill_embedded_store_process(benchmark, record, profile, tmp_path, fsync):
    kill_after = profile.pick(quick=300, full=2000)
    outcome = benchmark.pedantic(lambda: crash_embedded_writer(tmp_path / "store", fsync, kill_after=kill_after,
                                                               compact_bytes=256 << 10), rounds=1, iterations=1)
    record_crash(record, f"kill_embedded_{fsync}", outcome,
                 f"SIGKILL after ≥{kill_after} acknowledged update() batches of 50 rows × 16, snapshot every 256 KiB "
                 "of log", {"store": "embedded", "fsync": fsync, "kill_after": kill_after})


@needs_redis
@pytest.mark.parametrize("appendfsync", POLICIES)
def test_kill_redis_server(benchmark, record, profile, tmp_path, appendfsync):
    kill_after = profile.pick(quick=300, full=2000)
    outcome, _ = benchmark.pedantic(lambda: crash_redis_server(tmp_path / "aof", appendfsync, kill_after=kill_after),
                                    rounds=1, iterations=1)
    record_crash(record, f"kill_redis_{appendfsync}", outcome,
                 f"SIGKILL of redis-server (AOF, appendfsync {appendfsync}) after ≥{kill_after} acknowledged batches",
                 {"store": "redis", "fsync": appendfsync, "kill_after": kill_after})


@needs_redis
def test_hung_redis(benchmark, record, tmp_path):
    outcome = benchmark.pedantic(lambda: hang_redis(tmp_path / "redis", timeout_s=1.0), rounds=1, iterations=1)
    scale = "SIGSTOP of redis-server under the serving recommender, 32 requests waiting on it"
    params = {"timeout_s": outcome.timeout_s}
    record(name="hung_redis_store_call_s", value=outcome.call_s, unit="s", better="lower", area=AREA, scale=scale,
           params=params, question=QUESTION_HANG, goal=outcome.timeout_s * 1.5,
           baseline=Baseline("socket timeout", outcome.timeout_s, "s", kind="limit"),
           description="a store read against the hung server: time until it raised StoreUnavailableError")
    record(name="hung_redis_healthz_max_s", value=max(outcome.healthz_s), unit="s", better="lower", area=AREA,
           scale=scale, params=params, question=QUESTION_HANG, goal=0.1,
           spread=Spread.of(outcome.healthz_s) if len(outcome.healthz_s) > 1 else None,
           description=f"slowest /healthz while requests waited on the store (last status: {outcome.healthz_status}; "
                       f"the requests answered {sorted(set(outcome.recommend_status))})")
    record(name="hung_redis_retried_update_steps", value=outcome.steps_applied, unit="steps", better="lower",
           area=AREA, scale=scale, params=params, question=QUESTION_HANG, goal=1,
           description="Adagrad steps a row took from one update whose timed-out write landed when the server "
                       f"resumed (landed: {outcome.landed_late}) plus its retry with the same update id")
