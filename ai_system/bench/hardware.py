"""Describe the machine a benchmark ran on, so every result can say where it came from."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from typing import Any

import psutil


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _gpu_info() -> dict[str, Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    driver = None
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "driver": driver,
        "cuda": torch.version.cuda,
    }


def hardware_info() -> dict[str, Any]:
    """CPU, memory, GPU and software versions of this machine."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": cores,
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": _gpu_info(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _package_version("triton"),
        "numpy": _package_version("numpy"),
        "os": f"{platform.system()} {platform.release()}",
    }


def hardware_slug(info: dict[str, Any]) -> str:
    """A folder name for results of this hardware: the GPU if any, else the CPU model and core count."""
    if info.get("gpu"):
        gpu = info["gpu"]
        label = f"{gpu['count']}x-{gpu['name']}" if gpu["count"] > 1 else gpu["name"]
    else:
        label = f"{info['cpu_model']}-{info['cpu_cores']}c"
    label = re.sub(r"\((r|tm|R|TM)\)|\bCPU\b|@.*?GHz|\bwith\b.*", "", label)
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def hardware_label(info: dict[str, Any]) -> str:
    """A one-line human description for tables."""
    if info.get("gpu"):
        gpu = info["gpu"]
        return f"{gpu['count']}× {gpu['name']} ({gpu['memory_gib']} GiB), torch {info['torch']}"
    return f"{info['cpu_model']}, {info['cpu_cores']} cores, {info['ram_gib']} GiB, torch {info['torch']}"
