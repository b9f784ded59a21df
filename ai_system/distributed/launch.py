"""Process groups: joining one, and starting one on this machine, by spawn or under torchrun.

Every rank, however it was started, joins through ``init_runtime``, which reads the environment
torchrun defines (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): gloo on
the CPU, NCCL on CUDA. ``run_distributed`` spawns local ranks that set that same environment (tests,
benchmarks, the case study: call a function on every rank, get rank 0's answer); ``run_torchrun``
and ``start_torchrun`` run ``ai-system train`` under torchrun (multi-rank training, fault restarts).
A process with no such environment is a single, unsharded rank without a process group.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("gloo", "nccl")
T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world_size``, its device, and whether a process group exists."""

    rank: int
    world_size: int
    device: torch.device
    distributed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_runtime(backend: str | None = None) -> Runtime:
    """Join the process group the environment describes (or the one already joined), else run alone.

    torchrun keeps one store across restarts, so the group's keys are prefixed by the restart
    count: otherwise a restarted rank can read the address a killed peer published and fail to
    connect to it.
    """
    cuda = torch.cuda.is_available() and backend != "gloo"
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        if "WORLD_SIZE" not in os.environ:
            return Runtime(rank=0, world_size=1, device=device, distributed=False)
        store, rank, world_size = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"),
                                store=dist.PrefixStore(f"attempt{attempt}", store), rank=rank,
                                world_size=world_size, device_id=device if cuda else None)
    return Runtime(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, distributed=True)


ALONE = Runtime(rank=0, world_size=1, device=torch.device("cpu"), distributed=False)
"""A process on its own: what a check run before any process group exists (the launcher) passes."""


def from_main(runtime: Runtime, value: T) -> T:
    """Rank 0's ``value`` on every rank (others pass anything, e.g. None): the ranks act on one answer."""
    if not runtime.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def decided_on_main(runtime: Runtime, decide: Callable[[], T]) -> T:
    """``decide()`` on rank 0 only, its answer or its ``ValueError``/``OSError`` delivered to every rank.

    For checks a shared filesystem answers (is this directory writable?): if each rank asked on
    its own, one could fail while its peers wait for it in the next collective.
    """
    outcome: tuple[bool, Any] = (True, None)
    if runtime.is_main:
        try:
            outcome = (True, decide())
        except (ValueError, OSError) as error:
            outcome = (False, error)
    succeeded, value = from_main(runtime, outcome)
    if not succeeded:
        raise value
    return value


def shutdown(runtime: Runtime) -> None:
    """Tear the group down after a barrier: no rank may close its gloo pairs while a peer still has
    point-to-point work in flight with it (it aborts with "terminate called without an active exception")."""
    if runtime.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned_rank(rank: int, world_size: int, port: int, backend: str, fn: Callable[..., Any],
                  args: tuple[Any, ...], results: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    runtime = init_runtime(backend)
    try:
        result = fn(*args)
    except BaseException:
        dist.destroy_process_group()  # no barrier: the peers may never reach it
        raise
    if rank == 0:
        results.put(pickle.dumps(result))
    shutdown(runtime)


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo") -> Any:
    """Run ``fn(*args)`` on ``world_size`` spawned ranks (one thread each) and return rank 0's result.

    ``fn`` must be importable (module level) so the spawned processes can unpickle it. When a rank
    raises, the others are terminated (they may be waiting for it in a collective) and the error is
    raised here with that rank's traceback. The answer travels pickled by value (tensors included,
    not as shared memory that dies with the rank) and is read while the ranks run, so a large one
    cannot block rank 0 on a full pipe.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    results = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(_spawned_rank, args=(world_size, free_port(), backend, fn, args, results),
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


def torchrun_command(nproc: int, train_args: Sequence[str], max_restarts: int = 0) -> list[str]:
    """``ai-system train`` on ``nproc`` local ranks; ``--standalone`` rendezvous on a free port, so
    concurrent jobs do not collide."""
    if nproc <= 0:
        raise ValueError(f"nproc must be positive, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", "-m", "ai_system.cli", "train", *train_args]


def start_torchrun(nproc: int, train_args: Sequence[str], max_restarts: int = 0, threads: int = 1,
                   log_path: Path | None = None) -> subprocess.Popen:
    """Launch without waiting; output goes to ``log_path`` (or is discarded) so a full pipe never blocks it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    sink = log_path.open("w") if log_path is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(torchrun_command(nproc, train_args, max_restarts), env=env,
                                stdout=sink, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    finally:
        if log_path is not None:
            sink.close()


def rank_process(job: subprocess.Popen, rank: int) -> psutil.Process | None:
    """The worker process of ``rank`` in a job ``start_torchrun`` started (None until it exists), e.g. to kill it."""
    for child in psutil.Process(job.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "ai_system.cli" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def run_torchrun(nproc: int, train_args: Sequence[str], timeout_s: float, threads: int = 1,
                 log_path: Path | None = None) -> None:
    """Run to completion; a failure raises with the tail of the job's output."""
    process = start_torchrun(nproc, train_args, threads=threads, log_path=log_path)
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    if code:
        tail = log_path.read_text()[-3000:] if log_path is not None else "(output discarded)"
        raise RuntimeError(f"torchrun with {nproc} ranks exited with {code}:\n{tail}")
