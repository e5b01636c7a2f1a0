"""The machine a benchmark ran on, in one place: every benchmark's JSON has `"machine":
describe(device)`, and docs/benchmarks.md prints it next to the figures.

Reads /proc (Linux) where it can and falls back to `platform`; imports torch only when the
caller passes a device or torch is already loaded (importing it costs ~4 s of CPU here).
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)  # kB -> GiB
    except OSError:
        pass
    return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def describe(device: Any = None) -> dict[str, Any]:
    """CPU model, cores, RAM, load, Python/torch versions and the device (with the GPU's name).

    `device`: "cpu", "cuda", "cuda:0" or a torch.device; None means "cpu" unless the benchmark
    says otherwise.
    """
    torch = sys.modules.get("torch")
    if device is not None and torch is None:
        import torch  # only to name a device the caller measured on

    device_name = str(device) if device is not None else "cpu"
    gpu = None
    if torch is not None and device_name.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device_name))
    return {
        "cpu_model": _cpu_model(),
        "cores": _cores(),
        "ram_gib": _ram_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": getattr(torch, "__version__", None),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "device": device_name if gpu is None else f"{device_name} ({gpu})",
        "gpu": gpu,
        "measured_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def label(machine: dict[str, Any] | None) -> str:
    """One line for the docs: 'AMD EPYC, 2 cores, 23 GiB, cpu, load 1.5' (or 'not recorded')."""
    if not machine:
        return "machine not recorded"
    parts = [
        str(machine.get("cpu_model") or machine.get("processor") or machine.get("machine") or "?"),
        f"{machine.get('cores') or machine.get('cpus') or machine.get('cpu_count') or '?'} cores",
    ]
    if machine.get("ram_gib"):
        parts.append(f"{machine['ram_gib']:.0f} GiB")
    parts.append(
        str(machine.get("device") or ("cuda " + machine["gpu"] if machine.get("gpu") else "cpu"))
    )
    load = machine.get("load_average") or machine.get("load_avg_1min")
    if isinstance(load, list):
        parts.append(f"load {load[0]:.1f}")
    elif isinstance(load, int | float):
        parts.append(f"load {load:.1f}")
    if machine.get("torch"):
        parts.append(f"torch {machine['torch']}")
    return ", ".join(parts)
