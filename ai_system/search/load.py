"""Open-loop Poisson load against ``POST /search``: latency percentiles and throughput as clients see them.

The same open-loop schedule and report as the model server's load generator
(``ai_system.serving.loadgen``: ``arrival_times``, ``LoadReport``), with a bare asyncio HTTP/1.1
client so the client's own CPU time stays small on a two-core machine. Each request carries one
query vector, drawn in turn from ``queries``.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import torch

from ai_system.serving.loadgen import LoadReport, RequestRecord, arrival_times


def search_request(host: str, port: int, query: list[float], k: int) -> bytes:
    body = json.dumps({"queries": [query], "k": k}).encode()
    head = (f"POST /search HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


async def _send(host: str, port: int, request: bytes, t0: float) -> RequestRecord:
    sent = time.perf_counter() - t0
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        length = next(int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:"))
        body = await reader.readexactly(length)
        error = "" if status == 200 else body.decode(errors="replace")[:200]
        return RequestRecord(sent, time.perf_counter() - t0, None, 1 if status == 200 else 0, status, error)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError,
            StopIteration) as error:
        return RequestRecord(sent, time.perf_counter() - t0, None, 0, 0, f"{type(error).__name__}: {error}")
    finally:
        if writer is not None:
            writer.close()


async def _at(host: str, port: int, request: bytes, at: float, t0: float, timeout_s: float) -> RequestRecord:
    """Send ``request`` ``at`` seconds after ``t0``, whatever earlier requests are doing (open loop)."""
    await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
    try:
        return await asyncio.wait_for(_send(host, port, request, t0), timeout_s)
    except TimeoutError:
        return RequestRecord(at, time.perf_counter() - t0, None, 0, 0, f"no answer within {timeout_s} s")


async def _open_loop(base_url: str, queries: torch.Tensor, k: int, rate: float, count: int, seed: int,
                     timeout_s: float) -> list[RequestRecord]:
    url = urlsplit(base_url)
    if url.scheme != "http" or url.hostname is None or url.port is None:
        raise ValueError(f"base_url must look like http://host:port, got {base_url!r}")
    rows = queries.tolist()
    requests = [search_request(url.hostname, url.port, rows[i % len(rows)], k) for i in range(count)]
    schedule = arrival_times(rate, count, seed=seed)
    t0 = time.perf_counter()
    return list(await asyncio.gather(*(_at(url.hostname, url.port, request, at, t0, timeout_s)
                                       for request, at in zip(requests, schedule, strict=True))))


def search_load(base_url: str, queries: torch.Tensor, k: int, rate: float, count: int, seed: int = 0,
                slo_s: float = 0.05, timeout_s: float = 30.0) -> LoadReport:
    """Send ``count`` single-query searches at Poisson rate ``rate``/s and summarize them."""
    records = asyncio.run(_open_loop(base_url, queries, k, rate, count, seed, timeout_s))
    return LoadReport.from_records(records, rate, slo_s)
