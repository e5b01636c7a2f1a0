"""Scaling benchmark: pipeline throughput vs the number of simulate actors on a multi-node Ray
cluster (`ray.cluster_utils.Cluster`: several raylets on this machine), with the ideal line.

The slow stage is a backend whose cost is a known sleep per kept event (`--sleep-ms`), so a
simulate actor spends its time waiting, not computing: on a 2-core machine the throughput of
K actors can still reach K times that of one, and what stops it is what a real cluster would
hit too (the driver's per-batch work, the single filter actor, the recorder). The rest of the
chain is made free as in the overhead benchmark (benchmarks/pipeline.py: recorded synthetic
events, constant scorer, policy `none` so every event is kept, learning off).

Per actor count K (default 1, 2, 4, 8): events = rounds·K·batch; steady-state throughput =
events recorded after the first K batches (every actor has started) divided by the time they
took (metrics.jsonl), against the ideal K·1000/sleep_ms events/s. Wall clock includes actor
start-up (each actor imports torch). Two smaller measurements feed docs/scaling.md:
  - per-batch cost of the chain: zero-cost backend, small batches, batches/s at the driver;
  - object transfer between nodes: `ray.get` on another node of a weights-snapshot-sized
    array (part-small and part-2m fp32 state dicts), median of a few.
On one machine "between nodes" is a local copy through the object managers, not a network:
a lower bound on what a real cluster pays.

    .venv/bin/python benchmarks/scaling.py                  # ~10 min on 2 cores
    .venv/bin/python benchmarks/scaling.py --quick --out /tmp/scaling-quick.json   # CI, < 60 s

Writes benchmarks/results/scaling.json and docs/images/scaling-actors.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _machine import describe

from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.interfaces import SimResult
from adaptive_bkg.stages.simulate import SimulateStage

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "scaling.json"
PNG = ROOT / "docs" / "images" / "scaling-actors.png"
MIB = 1024 * 1024
# fp32 state-dict sizes: parameter counts of benchmarks/results/model-cpu.json × 4 bytes
SNAPSHOT_BYTES = {"part-small": 178_781 * 4, "part-2m": 2_090_125 * 4}


class SleepBackend:
    """Sleeps `seconds_per_event` per event and passes nothing: a slow stage of known cost."""

    def __init__(self, skims: Sequence[str], seconds_per_event: float) -> None:
        self._skims = tuple(skims)
        self.seconds_per_event = seconds_per_event

    @property
    def skims(self) -> tuple[str, ...]:
        return self._skims

    def simulate(self, batch: EventBatch) -> SimResult:
        n = len(batch)
        if self.seconds_per_event > 0:
            time.sleep(n * self.seconds_per_event)
        cost = np.full(n, self.seconds_per_event)
        return SimResult(batch.event_id.copy(), np.zeros((n, len(self._skims)), np.bool_), cost)


def _stages_class() -> type:
    # benchmarks/pipeline.py holds the free stages of the overhead benchmark; it is a script,
    # not a package module, so Ray's workers get it by value (registered in main()).
    from pipeline import ZeroCostStages

    @dataclass(frozen=True)
    class SleepStages(ZeroCostStages):  # type: ignore[misc]
        sleep_s: float = 0.0
        barrier: str = ""  # a folder: every simulate actor waits here for all the others
        n_simulators: int = 1

        def simulator(self, index: int) -> SimulateStage:
            if self.barrier:
                _wait_for_all(Path(self.barrier), index, self.n_simulators)
            return SimulateStage(SleepBackend(self.skims, self.sleep_s), self.skims)

    return SleepStages


def _wait_for_all(folder: Path, index: int, n: int, timeout_s: float = 600.0) -> None:
    """Start-up barrier (one machine, so one filesystem): the actors import torch one after
    the other on a loaded machine; without it the first actor would work alone for tens of
    seconds and the steady-state window would mix K and fewer actors."""
    (folder / f"simulator-{index}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob("simulator-*"))) < n and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass
class Point:
    simulators: int
    batch_size: int
    sleep_ms: float
    events: int
    wall_s: float  # run wall clock after Ray start: actor start-up + the data flow
    startup_s: float  # to the first recorded batch
    steady_events: int
    steady_s: float
    events_per_s: float  # steady state: slope of recorded events vs time
    events_per_s_err: float  # spread over thirds of the window
    ideal_events_per_s: float
    efficiency: float
    nodes_used: int
    driver_cpu_ms_per_batch: float  # this process (the driver) over the whole run


def run_point(
    stages: type,
    source: Path,
    work: Path,
    simulators: int,
    events: int,
    batch_size: int,
    sleep_ms: float,
) -> Point:
    from adaptive_bkg.config import load_config
    from adaptive_bkg.pipeline.orchestrate import run_pipeline
    from adaptive_bkg.pipeline.plan import plan_run

    out = work / f"run-k{simulators}-b{batch_size}-s{sleep_ms:g}"
    cfg = load_config(
        None,
        [
            "run.skims=[dstar-d0pi]",
            f"run.events={events}",
            f"run.batch_size={batch_size}",
            f"run.out={out}",
            "run.plots=false",
            "policy.name=none",
            f"ray.simulators={simulators}",
            f"ray.max_in_flight={2 * simulators + 2}",  # every actor has a batch queued
            "run.metrics_every_s=0.05",
        ],
    )
    barrier = out.with_name(out.name + "-barrier")
    barrier.mkdir(parents=True)
    factory = stages(
        cfg,
        ("dstar-d0pi",),
        learn=False,
        source_path=source,
        sleep_s=sleep_ms / 1e3,
        barrier=str(barrier),
        n_simulators=simulators,
    )
    cpu = time.process_time()
    result = run_pipeline(plan_run(cfg, learn=False, factory=factory), show_live=False)
    cpu = time.process_time() - cpu
    n_batches = -(-result.summary.n_generated // batch_size)
    steady = steady_state(result.run_dir / "metrics.jsonl", simulators * batch_size)
    steady_events, steady_s, rate, rate_err, startup_s = steady
    ideal = simulators / (sleep_ms / 1e3) if sleep_ms > 0 else float("nan")
    return Point(
        simulators=simulators,
        batch_size=batch_size,
        sleep_ms=sleep_ms,
        events=result.summary.n_generated,
        wall_s=result.wall_s,
        startup_s=startup_s,
        steady_events=steady_events,
        steady_s=steady_s,
        events_per_s=rate,
        events_per_s_err=rate_err,
        ideal_events_per_s=ideal,
        efficiency=rate / ideal if sleep_ms > 0 else float("nan"),
        nodes_used=_nodes_alive(),
        driver_cpu_ms_per_batch=1e3 * cpu / n_batches,
    )


def steady_state(metrics: Path, per_round: int) -> tuple[int, float, float, float, float]:
    """(events, seconds, events/s, its error, start-up s) of a run's steady state, from its
    metrics.jsonl: from the moment the first round (one batch per actor) was recorded, which
    leaves out the actors' staggered start-up, to the end."""
    from adaptive_bkg.pipeline.live import read_metrics

    records = read_metrics(metrics)
    start = next((r for r in records if r.n_generated >= per_round), records[0])
    window = [r for r in records if r.wall_s >= start.wall_s]
    t = np.array([r.wall_s for r in window])
    n = np.array([r.n_generated for r in window], float)
    rate, err = _slope(t, n, per_round)
    last = records[-1]
    return (
        last.n_generated - start.n_generated,
        last.wall_s - start.wall_s,
        rate,
        err,
        records[0].wall_s,
    )


def _slope(t: np.ndarray, n: np.ndarray, per_round: int) -> tuple[float, float]:
    """Events/s ± its standard error from the times at which each round of `per_round` events
    (one batch per actor) was complete: a straight-line fit through those points, so the
    steps of whole batches do not enter, only how evenly the rounds came."""
    targets = np.arange(n[0] + per_round, n[-1] + 1, per_round)
    done = np.searchsorted(n, targets)  # first metrics line at which each round was recorded
    x, y = t[done], n[done]
    if len(x) < 3:
        span = t[-1] - t[0]
        return ((n[-1] - n[0]) / span if span > 0 else float("nan")), float("nan")
    (rate, _), cov = np.polyfit(x, y, 1, cov=True)
    return float(rate), float(np.sqrt(cov[0, 0]))


def _nodes_alive() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"])


def recorder_cost(source: Path, work: Path, batch_size: int, n_batches: int) -> dict[str, Any]:
    """The recorder stage alone (no Ray): seconds per `record` call (a fsynced Parquet file per
    batch, the running accumulator, deduplication), batches prepared beforehand."""
    from pipeline import ZeroCostStages

    from adaptive_bkg.config import load_config
    from adaptive_bkg.stages.recorder import RecorderStage

    cfg = load_config(None, ["run.skims=[dstar-d0pi]", "policy.name=none"])
    stages = ZeroCostStages(cfg, ("dstar-d0pi",), learn=False, source_path=source)
    gen, filt, sim = stages.generator(0, 0), stages.filter(), stages.simulator(0)
    filt.swap(stages.learner().initial_snapshot())
    batches = [sim.simulate(filt.filter(gen.next_batch(batch_size)))[0] for _ in range(n_batches)]
    recorder = RecorderStage(work / f"recorder-{batch_size}", ("dstar-d0pi",))
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        recorder.record(batch)
        seconds.append(time.perf_counter() - start)
    return {
        "batch_size": batch_size,
        "batches": n_batches,
        "s_per_batch_median": statistics.median(seconds),
        "s_per_batch_min": min(seconds),
        "s_per_batch_max": max(seconds),
        "events_per_s": batch_size / statistics.median(seconds),
    }


def transfer_times(repeats: int) -> dict[str, Any]:
    """`ray.get` of a snapshot-sized array put on the head, from an actor on another node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = ray.get_runtime_context().get_node_id()
    other = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != head)

    @ray.remote(num_cpus=0)
    class Fetcher:
        def fetch(self, refs: list[Any]) -> tuple[float, int]:
            start = time.perf_counter()
            value = ray.get(refs[0])
            return time.perf_counter() - start, int(value.nbytes)

    fetcher = Fetcher.options(  # type: ignore[attr-defined]
        scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=False)
    ).remote()
    rows: dict[str, Any] = {}
    for name, nbytes in SNAPSHOT_BYTES.items():
        seconds = []
        for _ in range(repeats):
            ref = ray.put(np.ones(nbytes // 4, np.float32))  # a new object: no cached copy
            dt, _ = ray.get(fetcher.fetch.remote([ref]))
            seconds.append(dt)
            del ref
        rows[name] = {
            "bytes": nbytes,
            "get_s_median": statistics.median(seconds),
            "get_s_min": min(seconds),
            "get_s_max": max(seconds),
            "repeats": repeats,
            "mib_per_s": nbytes / MIB / statistics.median(seconds),
        }
    ray.kill(fetcher)
    return rows


def plot(points: list[dict[str, Any]], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = np.array([p["simulators"] for p in points])
    rate = np.array([p["events_per_s"] for p in points])
    ideal = np.array([p["ideal_events_per_s"] for p in points])
    wall = np.array([p["wall_s"] for p in points])
    startup = np.array([p["startup_s"] for p in points])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(k, ideal, "k--", label="ideal: K / t_sim")
    a.plot(k, rate, "o-", label="measured (steady state)")
    a.set(xscale="log", yscale="log", xlabel="simulate actors K", ylabel="events/s")
    a.set_xticks(k, [str(v) for v in k])
    a.set_xticks([], minor=True)
    a.legend()
    labels = [str(v) for v in k]
    b.bar(labels, startup, color="tab:gray", label="actor start-up (imports)")
    b.bar(labels, wall - startup, bottom=startup, color="tab:blue", label="events flowing")
    b.set(xlabel="simulate actors K (events grow with K)", ylabel="wall clock of the run, s")
    b.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _title(result: dict[str, Any]) -> str:
    return (
        f"{result['nodes']}-node ray.cluster_utils.Cluster on one machine "
        f"({result['machine']['cores']} cores, load {result['machine']['load_average'][0]:.0f}), "
        f"simulate cost {result['sleep_ms_per_event']:g} ms/event (sleep), batches of "
        f"{result['batch_size']}" + (" — QUICK: toy sizes" if result["quick"] else "")
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (CI): 1 and 2 actors")
    parser.add_argument("--simulators", default="1,2,4,8", help="comma list of actor counts")
    parser.add_argument("--nodes", type=int, default=3, help="head + worker raylets")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--sleep-ms", type=float, default=2.0, help="simulate cost per event")
    parser.add_argument("--rounds", type=int, default=16, help="batches per actor")
    parser.add_argument("--chain-batch-size", type=int, default=200, help="per-batch cost part")
    parser.add_argument("--chain-events", type=int, default=20_000)
    parser.add_argument("--transfer-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--png", type=Path, default=None, help=f"plot (default {PNG.name})")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from --out")
    parser.add_argument(
        "--reanalyse", type=Path, help="work folder of a run: recompute --out's steady states"
    )
    args = parser.parse_args(argv)
    if args.reanalyse:  # the run directories are kept: recompute the steady state of each
        done = json.loads(args.out.read_text())
        for point in [*done["points"], *([done["chain"]] if done.get("chain") else [])]:
            run = f"run-k{point['simulators']}-b{point['batch_size']}-s{point['sleep_ms']:g}"
            steady = steady_state(args.reanalyse / run / "metrics.jsonl",
                                  point["simulators"] * point["batch_size"])  # fmt: skip
            keys = ("steady_events", "steady_s", "events_per_s", "events_per_s_err")
            point.update(zip(keys, steady[:4], strict=True))
            if point["sleep_ms"] > 0:
                point["efficiency"] = point["events_per_s"] / point["ideal_events_per_s"]
            else:
                point["batches_per_s"] = point["events_per_s"] / point["batch_size"]
                point["per_batch_ms"] = 1e3 / point["batches_per_s"]
        done["reanalysed"] = f"steady state recomputed by --reanalyse {args.reanalyse}"
        args.out.write_text(json.dumps(done, indent=2) + "\n")
        args.replot = True
    if args.replot:
        done = json.loads(args.out.read_text())
        plot(done["points"], args.png or PNG, _title(done))
        return done
    counts = [int(c) for c in args.simulators.split(",")]
    if args.quick:  # one 2-actor point: each run costs ~30 s of actor start-up on 2 cores
        counts, args.nodes, args.rounds, args.batch_size = [2], 2, 6, 200
        args.sleep_ms, args.chain_events, args.transfer_repeats = 2.0, 0, 2
    png = args.png or (PNG if not args.quick else args.out.with_suffix(".png"))

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import pipeline
    import ray
    from ray.cluster_utils import Cluster

    from adaptive_bkg.formats.events import write_events
    from adaptive_bkg.model.synthetic import synthetic_events

    ray.cloudpickle.register_pickle_by_value(pipeline)  # the workers cannot import a script
    stages = _stages_class()
    work = Path(tempfile.mkdtemp(prefix="adaptive-bkg-scaling-"))
    print(f"run directories in {work} (for --reanalyse)", flush=True)
    n_max = max(max(counts) * args.rounds * args.batch_size, args.chain_events)
    source = work / "events.parquet"
    write_events(source, synthetic_events(n_max, seed=5, mean_particles=25.0))
    started = time.perf_counter()
    recorder = [
        recorder_cost(source, work, b, min(20, n_max // b))
        for b in ([args.batch_size] if args.quick else [200, 2_000, 10_000])
    ]
    print(json.dumps(recorder), flush=True)
    # The head holds the driver and the recorder; the actors' CPU requests (generator 0.25,
    # filter 0.5, learner 0.5, simulate 0.25 each) need the worker nodes too at K >= 4.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": 96 * MIB, "include_dashboard": False},
    )
    for _ in range(args.nodes - 1):
        cluster.add_node(num_cpus=2, object_store_memory=96 * MIB)
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        points = []
        for k in counts:
            point = run_point(
                stages, source, work, k, k * args.rounds * args.batch_size, args.batch_size,
                args.sleep_ms,
            )  # fmt: skip
            print(json.dumps(point.__dict__), flush=True)
            points.append(point.__dict__)
        chain: dict[str, Any] | None = None
        if args.chain_events:  # zero-cost backend, small batches: what one batch costs
            chain = run_point(
                stages, source, work, 2, args.chain_events, args.chain_batch_size, 0.0
            ).__dict__
            chain["batches_per_s"] = chain["events_per_s"] / args.chain_batch_size
            chain["per_batch_ms"] = 1e3 / chain["batches_per_s"]
            print(json.dumps(chain), flush=True)
        transfer = transfer_times(args.transfer_repeats)
        print(json.dumps(transfer), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    result = {
        "benchmark": "scaling: pipeline throughput vs simulate actors on a multi-node cluster",
        "quick": args.quick,
        "machine": describe(),
        "command": " ".join(["benchmarks/scaling.py", *(sys.argv[1:] if argv is None else argv)]),
        "nodes": args.nodes,
        "node_cpus": [1] + [2] * (args.nodes - 1),
        "sleep_ms_per_event": args.sleep_ms,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "points": points,
        "chain": chain,
        "recorder": recorder,
        "transfer": transfer,
        "total_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(points, png, _title(result))
    print(f"wrote {args.out} and {png}")
    return result


if __name__ == "__main__":
    main()
