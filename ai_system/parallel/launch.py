"""Start ``world_size`` local processes with an initialized process group and collect their results.

Tests, benchmarks and the case study all need the same thing: run a function on every rank of a
small gloo (CPU) or NCCL (GPU) group on this machine and get rank 0's answer back.
"""

from __future__ import annotations

import os
import pickle
import socket
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
        if rank == 0:
            results.put(pickle.dumps(result))
        # No rank may tear down its gloo pairs while a peer still has point-to-point work in flight.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo") -> Any:
    """Run ``fn(*args)`` on ``world_size`` spawned ranks and return rank 0's result.

    ``fn`` must be importable (module level) so the spawned processes can unpickle it. When a rank
    raises, the others are terminated (they may be waiting for it in a collective) and the error is
    raised here with that rank's traceback. The answer travels pickled by value (tensors included,
    not as shared memory that dies with the rank) and is read while the ranks run, so a large one
    cannot block rank 0 on a full pipe.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    results = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(_worker, args=(world_size, free_port(), backend, fn, args, results),
                                 nprocs=world_size, join=False, start_method="spawn")
    answers = []
    try:
        while not context.join(timeout=0.1):
            if not results.empty():
                answers.append(results.get())
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as error:
        raise RuntimeError(f"a rank of {world_size} failed:\n{error}") from None
    while not results.empty():
        answers.append(results.get())
    return pickle.loads(answers[0])
