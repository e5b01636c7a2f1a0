"""Soak: a production on the WALL clock; does any actor's memory creep once it is warm?

Runs what `adaptive-bkg run` runs (plan_run + run_pipeline on a fresh local Ray) with
`backend.clock=wall`: the simulate actor really waits cost / wall_speedup seconds, so the live
pipeline (generator, filter, simulate, recorder, learner) runs at a steady pace. A sampler
thread in the driver records, every `--sample-s` (default 60 s):

  * RSS and USS (unique set size: pages no other process shares, so object-store pages mapped
    into a worker do not count) and CPU % of every Ray actor process, found by pid as the
    descendants of this driver whose process title is `ray::<ActorClass>...` (a restarted
    actor is a new pid and shows up as a new series);
  * the same for Ray's own processes (gcs_server, raylet) and the driver;
  * object-store use: resident MiB of the plasma store (see `object_store_usage`);
  * every listening socket of those processes (the local instance must bind loopback only);
  * the learner's replay-buffer fill (`learner_buffer_events` of the run's metrics.jsonl).

Warm-up ends when the learner's replay buffer is full (its memory grows with the fill, by
design, up to `learner.replay_buffer_events`) or after `--warmup-min`, whichever is later.
The soak then measures `--measure-min` (default 30) more minutes and ends the run as a user
would, with SIGTERM (a clean stop); `--max-minutes` caps the whole run (run.budget).

Statistic judged (target < 10 % per actor): the growth of each actor's RSS FLOOR, the minimum
over the first `--window` (default 5) post-warm-up samples against the minimum over the last
`--window`. A leak keeps memory, so it raises the floor; a transient allocation (a training
burst, a publish) is given back and only lifts the samples that happen to land on it. The
first-to-last sample growth, the growth of the window peaks and the fitted slopes (of all
samples and of the rolling floor) are reported next to it.

Writes benchmarks/results/soak.json (raw samples first, then the analysis) and
docs/images/soak.png. `--analyse FILE` recomputes both from a saved JSON.

Not run in CI. Run:  .venv/bin/python benchmarks/soak.py            (warm-up + 30 minutes)
                     .venv/bin/python benchmarks/soak.py --measure-min 2 --sample-s 15 \
                        --warmup-min 0.5 --window 3 --set learner.replay_buffer_events=2000
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from _machine import describe

ROOT = Path(__file__).resolve().parent.parent
OUT_JSON = ROOT / "benchmarks" / "results" / "soak.json"
OUT_PNG = ROOT / "docs" / "images" / "soak.png"
MIB = 1024 * 1024
TARGET_GROWTH_PCT = 10.0
JUDGED = "rss_floor_growth_pct"  # see the module docstring
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
    metrics_path: Path | None = None  # the run's metrics.jsonl (learner buffer fill)
    warmup_s: float = 0.0
    measure_s: float | None = None  # then SIGTERM this process: the run stops cleanly
    start: float = field(default_factory=time.monotonic)
    stop_sent_s: float | None = None
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
            self._stop_when_measured()

    def _stop_when_measured(self) -> None:
        if self.measure_s is None or self.stop_sent_s is not None:
            return
        end = warmup_end_s(self.samples, self.warmup_s)
        if end is not None and self.samples[-1]["t_s"] >= end + self.measure_s:
            self.stop_sent_s = self.elapsed()
            os.kill(os.getpid(), signal.SIGTERM)  # run_pipeline turns it into a clean stop

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
            **learner_buffer(self.metrics_path),
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


def learner_buffer(metrics_path: Path | None) -> dict[str, int]:
    """The learner's replay-buffer fill from the last line of the run's metrics.jsonl."""
    if metrics_path is None or not metrics_path.exists():
        return {}
    lines = [line for line in metrics_path.read_text().splitlines() if line.strip()]
    if not lines:
        return {}
    last = json.loads(lines[-1])
    return {
        "learner_buffer_events": int(last.get("learner_buffer_events", 0)),
        "learner_buffer_capacity": int(last.get("learner_buffer_capacity", 0)),
    }


def warmup_end_s(samples: list[dict[str, Any]], warmup_s: float) -> float | None:
    """When the warm-up ends: the first sample with the learner's buffer full, or `warmup_s`,
    whichever is later. None while the buffer is not full (or never reported)."""
    for sample in samples:
        capacity = sample.get("learner_buffer_capacity", 0)
        if capacity > 0 and sample.get("learner_buffer_events", 0) >= capacity:
            return max(warmup_s, float(sample["t_s"]))
    return None


def window_stats(t: np.ndarray, values: np.ndarray, window: int, name: str) -> dict[str, float]:
    """Growth of one post-warm-up series (MiB) seen four ways: first vs last sample, first vs
    last `window`-sample floor (minimum) and peak (maximum), and fitted slopes of all samples
    and of the rolling floor. In %, MiB and MiB/h."""
    w = min(window, len(values))
    first, last = values[:w], values[-w:]
    floors = np.array([values[i : i + w].min() for i in range(len(values) - w + 1)])
    floor_t = np.array([t[i : i + w].mean() for i in range(len(values) - w + 1)])
    hours = t / 3600

    def pct(a: float, b: float) -> float:
        return float(100 * (b - a) / a)

    out = {
        f"{name}_first_mib": float(values[0]),
        f"{name}_last_mib": float(values[-1]),
        f"{name}_min_mib": float(values.min()),
        f"{name}_max_mib": float(values.max()),
        f"{name}_growth_pct": pct(values[0], values[-1]),
        f"{name}_floor_first_mib": float(first.min()),
        f"{name}_floor_last_mib": float(last.min()),
        f"{name}_floor_growth_pct": pct(first.min(), last.min()),
        f"{name}_peak_first_mib": float(first.max()),
        f"{name}_peak_last_mib": float(last.max()),
        f"{name}_peak_growth_pct": pct(first.max(), last.max()),
        f"{name}_slope_mib_per_h": float(np.polyfit(hours, values, 1)[0]),
        f"{name}_floor_slope_mib_per_h": (
            float(np.polyfit(floor_t / 3600, floors, 1)[0]) if len(floors) >= 2 else float("nan")
        ),
    }
    return out


def growth(samples: list[dict[str, Any]], start_s: float, window: int) -> dict[str, dict[str, Any]]:
    """Per process (pid): `window_stats` of RSS and USS over the samples from `start_s` on."""
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
        after = t >= start_s
        if after.sum() < 2:
            continue
        result[pid] = {
            "label": s["label"],
            "n_samples": int(after.sum()),
            "t_first_s": float(t[after][0]),
            "t_last_s": float(t[after][-1]),
            **window_stats(t[after], rss[after], window, "rss"),
            **window_stats(t[after], uss[after], window, "uss"),
        }
    return result


def _store_ok(sample: dict[str, Any]) -> bool:
    return bool(sample.get("object_store")) and "resident_mib" in sample["object_store"]


def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    """The verdict from the raw samples: warm-up end, per-process growth, object store."""
    config = raw["config"]
    samples = raw["samples"]
    window = int(config["window"])
    warmup_s = 60 * config["warmup_min"]
    # A run without the buffer field (older JSON) ends its warm-up after --warmup-min.
    reported = any("learner_buffer_capacity" in s for s in samples)
    full_s = warmup_end_s(samples, warmup_s) if reported else warmup_s
    # Buffer never full: the figures from --warmup-min on are reported, marked provisional
    # (they include the buffer's growth by design), and the verdict is a fail.
    end_s = full_s if full_s is not None else warmup_s
    last_s = max((s["t_s"] for s in samples), default=0.0)
    measured_min = (last_s - end_s) / 60
    per_process = growth(samples, end_s, window)
    actors = {
        pid: g for pid, g in per_process.items() if g["label"] not in ("driver", *SYSTEM_NAMES)
    }
    worst = max((g[JUDGED] for g in actors.values()), default=float("nan"))
    worst_sample = max((g["rss_growth_pct"] for g in actors.values()), default=float("nan"))
    stores = [s for s in samples if _store_ok(s) and s["t_s"] >= end_s]
    store = (
        window_stats(
            np.array([s["t_s"] for s in stores]),
            np.array([s["object_store"]["resident_mib"] for s in stores]),
            window,
            "resident",
        )
        if len(stores) >= 2
        else {}
    )
    exposed = [sock for s in samples for sock in s.get("exposed_sockets", [])]
    loads = [s["load_avg_1m"] for s in samples if "load_avg_1m" in s]
    problems = []
    if full_s is None:
        filled = [s for s in samples if s.get("learner_buffer_capacity")]
        fill = (
            f"{filled[-1]['learner_buffer_events']:,} of "
            f"{filled[-1]['learner_buffer_capacity']:,} events"
            if filled
            else "no report"
        )
        problems.append(
            f"the learner's replay buffer never filled ({fill}): warm-up not over, the "
            "figures (from --warmup-min on) are provisional"
        )
    elif measured_min < config["measure_min"] - config["sample_s"] / 60:
        problems.append(
            f"measured {measured_min:.1f} min after warm-up, wanted {config['measure_min']:g}"
        )
    if not actors:
        problems.append("no actor sampled after warm-up")
    if actors and not worst < TARGET_GROWTH_PCT:
        problems.append(f"actor RSS floor growth {worst:.1f} % >= {TARGET_GROWTH_PCT:g} %")
    if exposed:
        problems.append(f"{len(exposed)} listener(s) off loopback")
    return {
        "warmup_end_s": end_s,
        "warmup_ended_by": (
            "nothing: the buffer never filled (figures from --warmup-min on)"
            if full_s is None
            else "learner buffer full"
            if reported and full_s > warmup_s
            else "--warmup-min"
        ),
        "measured_min": measured_min,
        "target_rss_growth_pct": TARGET_GROWTH_PCT,
        "judged_statistic": JUDGED,
        "window_samples": window,
        "max_actor_rss_floor_growth_pct": worst,
        "max_actor_rss_sample_growth_pct": worst_sample,
        "pass": not problems,
        "problems": problems,
        "per_process": per_process,
        "object_store": store,
        "exposed_sockets": exposed,
        "load_avg_1m": (
            {"min": min(loads), "median": float(np.median(loads)), "max": max(loads)}
            if loads
            else None
        ),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [s for s in report["samples"] if "processes" in s]
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(9, 9), sharex=True, height_ratios=(3, 1, 1)
    )
    pids = sorted({pid for s in samples for pid in s["processes"]}, key=int)
    per_process = report["per_process"]
    end_s = report["warmup_end_s"]
    for pid in pids:
        points = [(s["t_s"] / 60, s["processes"][pid]) for s in samples if pid in s["processes"]]
        label = points[0][1]["label"]
        g = per_process.get(pid)
        if g is not None:
            label += f" {g['rss_floor_growth_pct']:+.1f} %"
        (line,) = top.plot(
            [t for t, _ in points], [p["rss_mib"] for _, p in points], marker="o", ms=3, label=label
        )
        if g is not None:  # the two floors the verdict compares
            top.hlines(
                [g["rss_floor_first_mib"], g["rss_floor_last_mib"]],
                [
                    end_s / 60,
                    g["t_last_s"] / 60
                    - report["config"]["window"] * report["config"]["sample_s"] / 60,
                ],
                [
                    end_s / 60 + report["config"]["window"] * report["config"]["sample_s"] / 60,
                    g["t_last_s"] / 60,
                ],
                colors=line.get_color(),
                linestyles="dashed",
                lw=1,
            )
    warm = end_s / 60
    for axis in (top, middle, bottom):
        axis.axvspan(0, warm, color="0.9", zorder=0)
    top.set_ylabel("RSS [MiB]")
    top.set_yscale("log")
    top.legend(fontsize=7, ncol=2, title="RSS floor growth after warm-up", title_fontsize=7)
    verdict = "PASS" if report["pass"] else "FAIL"
    top.set_title(
        f"soak: {report['measured_min']:.0f} min measured after a {warm:.0f}-min warm-up "
        f"(wall clock); max actor RSS floor growth {report['max_actor_rss_floor_growth_pct']:.1f} %"
        f" (target < {TARGET_GROWTH_PCT:g} %): {verdict}\ndashed: the floors compared (minimum "
        f"of the first / last {report['config']['window']} samples)",
        fontsize=9,
    )
    store = [(s["t_s"] / 60, s["object_store"]) for s in samples if _store_ok(s)]
    middle.plot([t for t, _ in store], [o["resident_mib"] for _, o in store], color="k", marker=".")
    middle.set_ylabel("object store\nresident [MiB]")
    fill = [s for s in samples if s.get("learner_buffer_capacity")]
    bottom.plot(
        [s["t_s"] / 60 for s in fill],
        [s["learner_buffer_events"] / 1000 for s in fill],
        color="C3",
        marker=".",
    )
    if fill:
        bottom.axhline(fill[-1]["learner_buffer_capacity"] / 1000, color="0.5", ls=":", lw=1)
    bottom.set_ylabel("learner replay\nbuffer [k events]")
    bottom.set_xlabel("wall time [min] (grey: warm-up, until the learner's buffer is full)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the production under the sampler; the raw record (config, run, samples)."""
    from adaptive_bkg.config import load_config
    from adaptive_bkg.pipeline.orchestrate import run_pipeline
    from adaptive_bkg.pipeline.plan import plan_run

    run_dir = args.out or Path(tempfile.mkdtemp(prefix="adaptive-bkg-soak-")) / "run"
    overrides = [
        *OVERRIDES,
        f"run.budget={args.max_minutes:g}m",
        f"run.out={run_dir}",
        *args.set,
    ]
    plan = plan_run(load_config(None, overrides))
    sampler = Sampler(
        args.sample_s,
        metrics_path=run_dir / "metrics.jsonl",
        warmup_s=60 * args.warmup_min,
        measure_s=60 * args.measure_min,
    )
    thread = threading.Thread(target=sampler.run, daemon=True)
    started = datetime.now(UTC)
    thread.start()
    result = run_pipeline(plan, show_live=False)
    sampler.stop()
    thread.join(timeout=30)
    summary = result.summary
    return {
        "benchmark": "soak",
        "started_utc": started.isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "memory_gib": psutil.virtual_memory().total / 1024**3,
        },
        "machine": describe(),
        "config": {
            "warmup_min": args.warmup_min,
            "measure_min": args.measure_min,
            "max_minutes": args.max_minutes,
            "sample_s": args.sample_s,
            "window": args.window,
            "overrides": overrides,
        },
        "run": {
            "run_dir": str(result.run_dir),
            "stop_reason": result.stop_reason,
            "stop_sent_s": sampler.stop_sent_s,
            "wall_s": result.wall_s,
            "n_generated": summary.n_generated,
            "n_kept": summary.n_kept,
            "n_model_versions": result.n_versions,
            "n_dropped_for_learner": result.n_dropped_for_learner,
            "events_per_wall_s": summary.n_generated / max(result.wall_s, 1e-9),
        },
        "samples": sampler.samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup-min", type=float, default=5.0, help="least warm-up")
    parser.add_argument("--measure-min", type=float, default=30.0, help="after the warm-up")
    parser.add_argument("--max-minutes", type=float, default=120.0, help="run.budget (a cap)")
    parser.add_argument("--sample-s", type=float, default=60.0, help="sampling period")
    parser.add_argument("--window", type=int, default=5, help="samples per floor/peak window")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: tmp)")
    parser.add_argument("--json", type=Path, default=OUT_JSON)
    parser.add_argument("--png", type=Path, default=OUT_PNG)
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    parser.add_argument("--analyse", type=Path, default=None, help="re-analyse a saved JSON")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    if args.analyse is not None:
        raw = json.loads(args.analyse.read_text())
        config = raw["config"]
        config.setdefault("measure_min", config.get("minutes", 30.0) - config["warmup_min"])
        config.setdefault("window", args.window)
    else:
        raw = run_soak(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(raw, indent=1))  # the samples are safe before analysis
    keys = ("benchmark", "started_utc", "host", "config", "run", "samples")
    report = {**{k: raw[k] for k in keys}, **analyse(raw)}
    report["samples"] = raw["samples"]  # last: the long part
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    plot(report, args.png)
    run = report["run"]
    print(
        f"soak: {run['n_generated']:,} events ({run['events_per_wall_s']:.0f}/s), "
        f"{len(report['samples'])} samples; warm-up ended by {report['warmup_ended_by']} at "
        f"{report['warmup_end_s'] / 60:.1f} min, then {report['measured_min']:.1f} min; "
        f"max actor RSS floor growth {report['max_actor_rss_floor_growth_pct']:.1f} % (target < "
        f"{TARGET_GROWTH_PCT:g} %): {'PASS' if report['pass'] else 'FAIL'} "
        f"{'; '.join(report['problems'])}; wrote {args.json} and {args.png}"
    )
    for pid, g in sorted(report["per_process"].items(), key=lambda kv: kv[1]["label"]):
        print(
            f"  {g['label']:>10} pid {pid}: RSS floor {g['rss_floor_first_mib']:.0f} -> "
            f"{g['rss_floor_last_mib']:.0f} MiB ({g['rss_floor_growth_pct']:+.1f} %), peak "
            f"{g['rss_peak_growth_pct']:+.1f} %, samples {g['rss_first_mib']:.0f} -> "
            f"{g['rss_last_mib']:.0f} ({g['rss_growth_pct']:+.1f} %), slope "
            f"{g['rss_slope_mib_per_h']:+.0f} MiB/h (floor {g['rss_floor_slope_mib_per_h']:+.0f});"
            f" USS floor {g['uss_floor_growth_pct']:+.1f} %"
        )


if __name__ == "__main__":
    main()
