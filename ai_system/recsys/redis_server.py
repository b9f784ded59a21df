"""Start and stop real ``redis-server`` processes on loopback ports in a temporary directory.

Tests, benchmarks and the case study use these to stand up a single node (optionally with AOF
``appendfsync always`` or ``everysec``, so an acknowledged write survives ``kill -9``) or a Redis Cluster of
masters joined with ``redis-cli --cluster create``. Nothing here touches a system-wide server.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from ai_system.recsys.redis_store import DEFAULT_TIMEOUT_S, connect

MISSING_REDIS = "redis-server, redis-cli or redis-benchmark is not on PATH (Debian: apt-get install -y redis-server)"


def redis_available() -> bool:
    return all(shutil.which(tool) for tool in ("redis-server", "redis-cli", "redis-benchmark"))


def free_port(with_cluster_bus: bool = False) -> int:
    """A loopback port that is free now (and port+10000, Redis Cluster's bus port, if asked)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not with_cluster_bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("found no free loopback port pair for a Redis Cluster node after 100 tries")


class RedisServer:
    """One ``redis-server`` child process; ``kill()`` then ``start()`` restarts it on its data."""

    def __init__(self, directory: Path, port: int | None = None, appendonly: bool = False,
                 cluster: bool = False, appendfsync: str = "always") -> None:
        if not redis_available():
            raise RuntimeError(MISSING_REDIS)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(with_cluster_bus=cluster)
        if appendfsync not in ("always", "everysec"):
            raise ValueError(f"appendfsync must be 'always' or 'everysec', got {appendfsync!r}")
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--daemonize", "no", "--protected-mode", "no",
                "--logfile", str(self.directory / "redis.log"),
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "2000"]
        return args

    def start(self, timeout_s: float = 10.0) -> None:
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    client.ping()
                    if not client.info("persistence").get("loading", 0):
                        return
            except redis.exceptions.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not come up; log tail:\n{log}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown save, no flush beyond what AOF already did."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def client(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> redis.Redis:
        """A store-ready client (``redis_store.connect``): bounded round trips, no retries of its own."""
        return connect(port=self.port, timeout_s=timeout_s)

    def pause(self) -> None:
        """SIGSTOP: the process hangs with its sockets open (connections are accepted, nothing answers)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def redis_node(directory: Path, appendonly: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(directory, appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def redis_cluster(directory: Path, masters: int = 3, timeout_s: float = 30.0) -> Iterator[list[RedisServer]]:
    """``masters`` cluster-enabled nodes joined into one cluster with all 16384 slots assigned."""
    if masters < 3:
        raise ValueError(f"Redis Cluster needs at least 3 masters, got {masters}")
    servers = [RedisServer(Path(directory) / f"node{i}", cluster=True) for i in range(masters)]
    try:
        for server in servers:
            server.start()
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while not all(_cluster_ok(server) for server in servers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster on ports {[s.port for s in servers]} never reached state ok")
            time.sleep(0.1)
        yield servers
    finally:
        for server in servers:
            server.stop()


def _cluster_ok(server: RedisServer) -> bool:
    with server.client() as client:
        return client.cluster("info").get("cluster_state") == "ok"


def redis_benchmark_get_rate(port: int, keys: int, requests: int, value_bytes: int, cluster: bool = False) -> float:
    """``redis-benchmark``'s pipelined GET rate (-P 16, 50 clients) for ``value_bytes`` values on ``port``:
    what the server itself serves, the limit a client library is compared with."""
    command = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get", "-n", str(requests),
               "-P", "16", "-d", str(value_bytes), "-r", str(keys), "--csv"] + (["--cluster"] if cluster else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout
    rows = csv.DictReader(io.StringIO(output[output.index('"test"'):]))
    return {row["test"]: float(row["rps"]) for row in rows}["GET"]
