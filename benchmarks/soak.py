"""Soak: a production on the WALL clock for 30 minutes; does any actor's memory creep?

Runs what `adaptive-bkg run` runs (plan_run + run_pipeline on a fresh local Ray) with
`backend.clock=wall`: the simulate actor really waits cost / wall_speedup seconds, so the live
pipeline (generator, filter, simulate, recorder, learner) runs at a steady pace for the whole
budget. A sampler thread in the driver records, every `--sample-s` (default 60 s):

  * RSS and USS (unique set size: pages no other process shares, so object-store pages mapped
    into a worker do not count) and CPU % of every Ray actor process, found by pid as the
    descendants of this driver whose process title is `ray::<ActorClass>...` (a restarted
    actor is a new pid and shows up as a new series);
  * the same for Ray's own processes (gcs_server, raylet) and the driver;
  * object-store use: resident MiB of the plasma store (see `object_store_usage`);
  * every listening socket of those processes (the local instance must bind loopback only).

After the warm-up (`--warmup-min`, default 5) it reports per actor the RSS growth from the
first post-warm-up sample to the last, in % (target < 10 %), and the fitted slope in MiB/h.
Writes benchmarks/results/soak.json and docs/images/soak.png.

Not run in CI. Run:  .venv/bin/python benchmarks/soak.py            (30 minutes)
                     .venv/bin/python benchmarks/soak.py --minutes 2 --sample-s 15 --warmup-min 0.5
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT_JSON = ROOT / "benchmarks" / "results" / "soak.json"
OUT_PNG = ROOT / "docs" / "images" / "soak.png"
MIB = 1024 * 1024
TARGET_GROWTH_PCT = 10.0
ACTOR_PREFIX = "ray::_"  # orchestrate's actor classes: _GeneratorActor, _FilterActor, ...
SYSTEM_NAMES = ("gcs_server", "raylet")

# The production: the emulator on the wall clock. t_slow is scaled so that the simulate actor
# paces the pipeline (it sleeps, it does not burn CPU) and generator + filter + learner keep
# the 2 cores busy without a queue building up; see the cpu_percent figures in the JSON.
OVERRIDES = (
    "run.skims=[dstar-d0pi]",
    "backend.name=emulator",
    "backend.clock=wall",
    "backend.cost.t_slow_mean_s=0.002",
    "model.preset=part-small",
    "model.device=cpu",
    "ray.num_cpus=2",
    "run.plots=false",
    "run.metrics_every_s=10",
)


@dataclass
class Sampler:
    """Samples the Ray processes below this driver every `period_s` in a daemon thread."""

    period_s: float
    start: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _cpu: dict[int, psutil.Process] = field(default_factory=dict)
    _labels: dict[int, str] = field(default_factory=dict)

    def run(self) -> None:
        while not self._stop.wait(0 if not self.samples else self.period_s):
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # a sample must never end the soak
                self.samples.append({"t_s": self.elapsed(), "error": repr(exc)})

    def stop(self) -> None:
        self._stop.set()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def label(self, process: psutil.Process) -> str | None:
        """'generator'… for an actor, the binary name for Ray's services, None otherwise."""
        title = " ".join(process.cmdline())
        if title.startswith(ACTOR_PREFIX):
            name = title.split()[0].removeprefix(ACTOR_PREFIX).split(".")[0]
            self._labels[process.pid] = name.removesuffix("Actor").lower()
        elif process.pid not in self._labels and process.name() in SYSTEM_NAMES:
            self._labels[process.pid] = process.name()
        return self._labels.get(process.pid)  # an actor keeps its label while it runs a task

    def sample(self) -> dict[str, Any]:
        driver = psutil.Process()
        processes: dict[str, Any] = {}
        sockets: list[list[Any]] = []
        for process in [driver, *driver.children(recursive=True)]:
            try:
                label = "driver" if process.pid == driver.pid else self.label(process)
                if label is None:
                    continue
                with process.oneshot():
                    memory = process.memory_full_info()
                    cpu = self._cpu.setdefault(process.pid, process).cpu_percent(None)
                    for conn in process.net_connections(kind="inet"):
                        if conn.status == psutil.CONN_LISTEN and conn.laddr:
                            sockets.append([label, process.pid, conn.laddr.ip, conn.laddr.port])
            except psutil.Error:
                continue  # it ended between the listing and the reading
            try:  # proof that the allocator settings of orchestrate.init_ray reached it
                arena_max = process.environ().get("MALLOC_ARENA_MAX")
            except psutil.Error:
                arena_max = None
            processes[str(process.pid)] = {
                "label": label,
                "malloc_arena_max": arena_max,
                "rss_mib": memory.rss / MIB,
                "uss_mib": memory.uss / MIB,
                "cpu_percent": cpu,
            }
        exposed = [s for s in sockets if not _is_loopback(s[2])]
        raylets = [int(pid) for pid, p in processes.items() if p["label"] == "raylet"]
        try:
            store = object_store_usage(raylets[0] if raylets else None)
        except OSError as exc:
            store = {"error": repr(exc)}
        return {
            "t_s": self.elapsed(),
            "processes": processes,
            "object_store": store,
            "n_listening": len(sockets),
            "exposed_sockets": exposed,
            "load_avg_1m": os.getloadavg()[0],
        }


def _is_loopback(host: str) -> bool:
    address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def object_store_usage(raylet_pid: int | None) -> dict[str, float] | None:
    """Resident size of the plasma store: the tmpfs pages its (deleted) /dev/shm file holds,
    read through /proc/<raylet>/map_files (Ray's Python gRPC client is not installed here).

    Pages stay allocated after objects are freed (the store reuses them), so this is the
    store's memory footprint: it must level off, not creep towards the configured size."""
    if raylet_pid is None:
        return None
    seen: dict[int, tuple[float, float]] = {}
    with open(f"/proc/{raylet_pid}/maps") as maps:
        for line in maps:
            if "plasma" not in line:
                continue
            stat = os.stat(f"/proc/{raylet_pid}/map_files/{line.split()[0]}")
            seen[stat.st_ino] = (stat.st_blocks * 512 / MIB, stat.st_size / MIB)
    if not seen:
        return None
    return {
        "resident_mib": sum(r for r, _ in seen.values()),
        "size_mib": sum(z for _, z in seen.values()),
    }


def growth(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, dict[str, Any]]:
    """Per process (pid): RSS/USS at the first post-warm-up sample and at the last, growth in %,
    least-squares slope in MiB/h over the post-warm-up samples."""
    series: dict[str, dict[str, Any]] = {}
    for sample in samples:
        for pid, p in sample.get("processes", {}).items():
            entry = series.setdefault(pid, {"label": p["label"], "t": [], "rss": [], "uss": []})
            entry["t"].append(sample["t_s"])
            entry["rss"].append(p["rss_mib"])
            entry["uss"].append(p["uss_mib"])
    result = {}
    for pid, s in series.items():
        t, rss, uss = (np.asarray(s[k]) for k in ("t", "rss", "uss"))
        after = t >= warmup_s
        if after.sum() < 2:
            continue
        t_a, rss_a, uss_a = t[after], rss[after], uss[after]
        result[pid] = {
            "label": s["label"],
            "n_samples": int(after.sum()),
            "t_first_s": float(t_a[0]),
            "t_last_s": float(t_a[-1]),
            "rss_first_mib": float(rss_a[0]),
            "rss_last_mib": float(rss_a[-1]),
            "rss_max_mib": float(rss_a.max()),
            "rss_growth_pct": float(100 * (rss_a[-1] - rss_a[0]) / rss_a[0]),
            "rss_slope_mib_per_h": float(np.polyfit(t_a / 3600, rss_a, 1)[0]),
            "uss_first_mib": float(uss_a[0]),
            "uss_last_mib": float(uss_a[-1]),
            "uss_growth_pct": float(100 * (uss_a[-1] - uss_a[0]) / uss_a[0]),
        }
    return result


def _store_ok(sample: dict[str, Any]) -> bool:
    return bool(sample.get("object_store")) and "resident_mib" in sample["object_store"]


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [s for s in report["samples"] if "processes" in s]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=(3, 1))
    pids = sorted({pid for s in samples for pid in s["processes"]}, key=int)
    for pid in pids:
        points = [(s["t_s"] / 60, s["processes"][pid]) for s in samples if pid in s["processes"]]
        label = points[0][1]["label"]
        top.plot(
            [t for t, _ in points],
            [p["rss_mib"] for _, p in points],
            marker="o",
            ms=3,
            label=f"{label} (pid {pid})",
        )
    warmup_min = report["config"]["warmup_min"]
    for axis in (top, bottom):
        axis.axvspan(0, warmup_min, color="0.9", zorder=0)
    top.set_ylabel("RSS [MiB]")
    top.set_yscale("log")
    top.legend(fontsize=7, ncol=2)
    verdict = "PASS" if report["pass"] else "FAIL"
    top.set_title(
        f"soak: {report['config']['minutes']:g} min wall clock; max actor RSS growth after "
        f"warm-up {report['max_actor_rss_growth_pct']:.1f} % (target < "
        f"{TARGET_GROWTH_PCT:g} %): {verdict}",
        fontsize=9,
    )
    store = [(s["t_s"] / 60, s["object_store"]) for s in samples if _store_ok(s)]
    bottom.plot([t for t, _ in store], [o["resident_mib"] for _, o in store], color="k", marker=".")
    bottom.set_ylabel("object store\nresident [MiB]")
    bottom.set_xlabel("wall time [min] (grey: warm-up)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget")
    parser.add_argument("--warmup-min", type=float, default=5.0, help="excluded from growth")
    parser.add_argument("--sample-s", type=float, default=60.0, help="sampling period")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: tmp)")
    parser.add_argument("--json", type=Path, default=OUT_JSON)
    parser.add_argument("--png", type=Path, default=OUT_PNG)
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from adaptive_bkg.config import load_config
    from adaptive_bkg.pipeline.orchestrate import run_pipeline
    from adaptive_bkg.pipeline.plan import plan_run

    run_dir = args.out or Path(tempfile.mkdtemp(prefix="adaptive-bkg-soak-")) / "run"
    overrides = [*OVERRIDES, f"run.budget={args.minutes:g}m", f"run.out={run_dir}", *args.set]
    plan = plan_run(load_config(None, overrides))
    sampler = Sampler(args.sample_s)
    thread = threading.Thread(target=sampler.run, daemon=True)
    started = datetime.now(UTC)
    thread.start()
    result = run_pipeline(plan, show_live=False)
    sampler.stop()
    thread.join(timeout=30)

    warmup_s = 60 * args.warmup_min
    per_process = growth(sampler.samples, warmup_s)
    actors = {
        pid: g for pid, g in per_process.items() if g["label"] not in ("driver", *SYSTEM_NAMES)
    }
    worst = max((g["rss_growth_pct"] for g in actors.values()), default=float("nan"))
    stores = [s["object_store"] for s in sampler.samples if _store_ok(s)]
    exposed = [sock for s in sampler.samples for sock in s.get("exposed_sockets", [])]
    summary = result.summary
    report = {
        "benchmark": "soak",
        "started_utc": started.isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "memory_gib": psutil.virtual_memory().total / 1024**3,
        },
        "config": {
            "minutes": args.minutes,
            "warmup_min": args.warmup_min,
            "sample_s": args.sample_s,
            "overrides": overrides,
        },
        "run": {
            "run_dir": str(result.run_dir),
            "stop_reason": result.stop_reason,
            "wall_s": result.wall_s,
            "n_generated": summary.n_generated,
            "n_kept": summary.n_kept,
            "n_model_versions": result.n_versions,
            "n_dropped_for_learner": result.n_dropped_for_learner,
            "events_per_wall_s": summary.n_generated / max(result.wall_s, 1e-9),
        },
        "target_rss_growth_pct": TARGET_GROWTH_PCT,
        "max_actor_rss_growth_pct": worst,
        "pass": bool(actors) and worst < TARGET_GROWTH_PCT and not exposed,
        "per_process": per_process,
        "object_store_resident_mib": {
            "first_after_warmup": next(
                (
                    s["object_store"]["resident_mib"]
                    for s in sampler.samples
                    if _store_ok(s) and s["t_s"] >= warmup_s
                ),
                None,
            ),
            "max": max((s["resident_mib"] for s in stores), default=None),
            "last": stores[-1]["resident_mib"] if stores else None,
            "size_mib": stores[-1]["size_mib"] if stores else None,
        },
        "exposed_sockets": exposed,
        "samples": sampler.samples,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    plot(report, args.png)
    print(
        f"soak {args.minutes:g} min: {summary.n_generated:,} events "
        f"({report['run']['events_per_wall_s']:.0f}/s), {len(sampler.samples)} samples; "
        f"max actor RSS growth after warm-up {worst:.1f} % (target < {TARGET_GROWTH_PCT:g} %); "
        f"{len(exposed)} non-loopback listeners; wrote {args.json} and {args.png}"
    )
    for pid, g in sorted(per_process.items(), key=lambda kv: kv[1]["label"]):
        print(
            f"  {g['label']:>10} pid {pid}: RSS {g['rss_first_mib']:.0f} -> "
            f"{g['rss_last_mib']:.0f} MiB ({g['rss_growth_pct']:+.1f} %, "
            f"{g['rss_slope_mib_per_h']:+.0f} MiB/h); USS {g['uss_growth_pct']:+.1f} %"
        )


if __name__ == "__main__":
    main()
