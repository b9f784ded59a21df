"""A real Prometheus on loopback, with the system's rules, scraping targets on this machine.

The integration test and the docs' dashboard screenshot run it: the ``prometheus`` binary (Debian's
package, or any release) with a configuration from ``monitoring.prometheus_config`` whose targets are
static ``127.0.0.1:<port>`` addresses, its TSDB in a temporary folder, and the HTTP query API for
reading series back.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.deployment.monitoring import prometheus_config, rules
from ai_system.deployment.text import yaml_text
from ai_system.distributed.launch import free_port


class LocalPrometheus:
    """``with LocalPrometheus(system, {"serving": ["127.0.0.1:8000"]}) as prometheus: prometheus.query(...)``"""

    def __init__(self, system: DistributedAISystem, targets: dict[str, list[str]], interval: str = "1s",
                 binary: str = "prometheus") -> None:
        if shutil.which(binary) is None:
            raise FileNotFoundError(f"no {binary!r} on PATH (Debian: apt-get install prometheus)")
        self.binary = binary
        self.folder = Path(tempfile.mkdtemp(prefix="aisys-prometheus-"))
        (self.folder / "prometheus.yml").write_text(yaml_text(prometheus_config(system, targets, interval)))
        (self.folder / "alerts.yml").write_text(yaml_text(rules(system)))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> LocalPrometheus:
        log = (self.folder / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus was not ready within {timeout_s} s:\n{self.log()[-2000:]}")

    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text() if path.exists() else ""

    def _api(self, path: str, **params: Any) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {answer.get('error', answer)}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now: ``[{"metric": {...}, "value": [time, "text"]}, ...]``."""
        return self._api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self._api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self._api("targets")["activeTargets"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
