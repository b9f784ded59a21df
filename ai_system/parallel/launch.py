"""Start ``world_size`` local processes with an initialized process group and collect their results.

Tests, benchmarks and the case study all need the same thing: run a function on every rank of a
small gloo (CPU) or NCCL (GPU) group on this machine and get rank 0's answer back.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, backend: str, fn: Callable[..., Any],
            args: tuple[Any, ...], results: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        result = fn(*args)
        results.put((rank, "ok", result))
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo") -> Any:
    """Run ``fn(*args)`` on ``world_size`` spawned ranks and return rank 0's result.

    ``fn`` must be importable (module level) so the spawned processes can unpickle it; any rank's
    exception is re-raised here with its traceback.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(_worker, args=(world_size, free_port(), backend, fn, args, results),
                       nprocs=world_size, join=True, start_method="spawn")
    answers = {}
    while not results.empty():
        rank, status, value = results.get()
        if status == "error":
            raise RuntimeError(f"rank {rank} failed:\n{value}")
        answers[rank] = value
    return answers[0]
