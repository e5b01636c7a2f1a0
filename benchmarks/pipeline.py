"""Pipeline benchmark: orchestration overhead, and strategies compared at the same compute.

(a) overhead: the Ray pipeline (`orchestrate.run_pipeline`: generator, filter, simulate,
    learner and recorder actors) on a recorded events file with a zero-cost backend and a
    constant scorer, against the bare Parquet source read alone, in the same run (events/s and
    their ratio). Ray start-up (~4.5 s) is not counted: RunResult.wall_s starts after it.
(b) compare: on recorded labelled files (virtual clock, stage times t_fast : t_NN : t_slow =
    1 : 1 : 100 from the emulator cost model), each strategy gets the same emulated compute
    budget and is run with several seeds (keep draws and learner):
      - held-out skims (no pretrained head): no filter (policy none) / two-step (the first
        `two_step_events` events simulated unfiltered, a full fine-tune on them, then static
        with the fine-tuned model for the rest of the budget) / static (shipped model, new
        head at the prior, --no-learn) / adaptive (online learning);
      - pretrained skims under other detector conditions (files labelled with
        backend.conditions=degraded or high-background): adaptive vs --no-learn.
    Per run: speedup ± σ (delta method, metrics.py), the expected speedup of the final model
    on the validation stream, and the time to break-even (emulated compute until the
    cumulative speedup first reaches 1). Per strategy: mean ± standard error over seeds.

    .venv/bin/python benchmarks/pipeline.py --quick --out /tmp/pipeline-quick.json    # CI
    .venv/bin/python benchmarks/pipeline.py --part overhead --events 200000 --out o.json
    .venv/bin/python benchmarks/pipeline.py --part compare --nominal lab.parquet \\
        --degraded deg.parquet --high-background hb.parquet --budget 3000 --seeds 3 --out c.json
    .venv/bin/python benchmarks/pipeline.py --budget 3000 --from-runs a.runs.jsonl b.runs.jsonl \\
        --out c.json    # the table of runs finished by several (or interrupted) processes

`--quick` makes its own tiny inputs (synthetic events; 3000 labelled Pythia events) and runs
every part at toy size: it checks that the benchmark works, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _machine import describe
from numpy.typing import NDArray

from adaptive_bkg.config import BackendConfig, Config, load_config, with_overrides
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.interfaces import SimResult
from adaptive_bkg.stages.build import DefaultStages
from adaptive_bkg.stages.filter import FilterStage
from adaptive_bkg.stages.learner import LearnerStage, MeanTimes
from adaptive_bkg.stages.simulate import SimulateStage

HELD_OUT = ("dstar-d0pi", "radiative")
PRETRAINED = ("leptonic-untagged", "fei-semileptonic")


# ---------------------------------------------------------------------------------------------
# (a) orchestration overhead
class ZeroCostBackend:
    """Passes nothing, costs nothing: only the data flow is left to measure."""

    def __init__(self, skims: Sequence[str]) -> None:
        self._skims = tuple(skims)

    @property
    def skims(self) -> tuple[str, ...]:
        return self._skims

    def simulate(self, batch: EventBatch) -> SimResult:
        n = len(batch)
        return SimResult(
            batch.event_id.copy(), np.zeros((n, len(self._skims)), np.bool_), np.zeros(n)
        )


class ConstantScorer:
    """q = 0.5 for every event and skim, no model."""

    def __init__(self, n_skims: int) -> None:
        self.n_skims = n_skims

    def logits(self, batch: EventBatch) -> NDArray[np.float64]:
        return np.zeros((len(batch), self.n_skims))

    def load_state_dict(self, state: Any) -> None:
        pass


class _ConstantTrainer:
    def __init__(self, n_skims: int) -> None:
        self.n_skims = n_skims

    def train_step(self, *args: Any) -> Any:
        raise RuntimeError("learning is off in the overhead benchmark")

    def evaluate(self, batch: EventBatch, labels: Any, weights: Any) -> Any:
        from adaptive_bkg.model.training import EvalResult

        logits = np.zeros((len(batch), self.n_skims), np.float32)
        return EvalResult(0.0, {}, logits)

    def state_dict_cpu(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class ZeroCostStages(DefaultStages):
    """The default stages on a recorded events file, with the model and backend made free."""

    def validate(self) -> None:
        from adaptive_bkg.stats.sampling import make_policy

        make_policy(self.cfg.policy, self.skims)

    def filter(self) -> FilterStage:
        return FilterStage(
            ConstantScorer(len(self.skims)), self.skims, seed=self.cfg.run.seed, nn_cost=None
        )

    def simulator(self, index: int) -> SimulateStage:
        return SimulateStage(ZeroCostBackend(self.skims), self.skims)

    def learner(self) -> LearnerStage:
        from adaptive_bkg.stats.sampling import make_policy

        return LearnerStage(
            _ConstantTrainer(len(self.skims)),
            ConstantScorer(len(self.skims)).logits,
            make_policy(self.cfg.policy, self.skims),
            self.skims,
            self.cfg.learner,
            MeanTimes(1e-3, 1e-3, 1e-1),
            learn=False,
            seed=self.cfg.run.seed,
        )

    def save_checkpoint(self, path: Path, snapshot: Any) -> None:
        pass


def bare_source_rate(path: Path, batch_size: int) -> tuple[float, int]:
    """Events per second of reading the file alone with the same source and batch size."""
    from adaptive_bkg.generators.recorded import FileSource

    source = FileSource(path)
    start = time.perf_counter()
    n = 0
    while True:
        batch = source.next_batch(batch_size)
        if len(batch) == 0:
            break
        n += len(batch)
    return n / (time.perf_counter() - start), n


def overhead(n_events: int, batch_size: int, work: Path, num_cpus: int = 2) -> dict[str, Any]:
    from adaptive_bkg.formats.events import write_events
    from adaptive_bkg.model.synthetic import synthetic_events
    from adaptive_bkg.pipeline.orchestrate import run_pipeline
    from adaptive_bkg.pipeline.plan import plan_run

    path = work / "overhead-events.parquet"
    write_events(path, synthetic_events(n_events, seed=5, mean_particles=25.0))
    bare_rate, n_read = bare_source_rate(path, batch_size)
    skims = ("dstar-d0pi",)
    cfg = load_config(
        None,
        [
            "run.skims=[dstar-d0pi]",
            f"run.events={n_events}",
            f"run.batch_size={batch_size}",
            f"run.out={work / 'overhead-run'}",
            "run.plots=false",
            "policy.name=none",  # every event travels the whole chain: kept, simulated, recorded
            f"ray.num_cpus={num_cpus}",
            "run.metrics_every_s=0.05",
        ],
    )
    factory = ZeroCostStages(cfg, skims, learn=False, source_path=path)
    result = run_pipeline(plan_run(cfg, learn=False, factory=factory), show_live=False)
    # Actors start (import torch, build stages) after the clock starts; on a loaded 2-core
    # machine that takes over a minute. Throughput is measured from the first recorded batch
    # to the end, from the metrics log.
    from adaptive_bkg.pipeline.live import read_metrics

    records = read_metrics(result.run_dir / "metrics.jsonl")
    first, last = records[0], records[-1]
    steady = (last.n_generated - first.n_generated) / max(last.wall_s - first.wall_s, 1e-9)
    ray_rate = steady if last.n_generated > first.n_generated else math.nan
    return {
        "events": n_events,
        "batch_size": batch_size,
        "num_cpus": num_cpus,
        "bare_source_events_per_s": bare_rate,
        "bare_source_events": n_read,
        "ray_pipeline_events_per_s": ray_rate,
        "ray_pipeline_events": result.summary.n_generated,
        "ray_pipeline_steady_events": last.n_generated - first.n_generated,
        "ray_pipeline_startup_s": first.wall_s,
        "ray_pipeline_wall_s": result.wall_s,
        "ray_pipeline_events_per_s_with_startup": result.summary.n_generated / result.wall_s,
        "ray_over_bare": ray_rate / bare_rate,
        "target_events_per_s": 20_000,
        "meets_target": ray_rate >= 20_000,
    }


# ---------------------------------------------------------------------------------------------
# (b) strategies at the same compute
@dataclass
class RunRow:
    case: str  # e.g. "dstar-d0pi" or "leptonic-untagged@degraded"
    strategy: str
    seed: int
    speedup: float
    speedup_err: float
    expected_speedup: float
    expected_speedup_err: float
    n_generated: int
    n_pass_kept: int
    compute_s: float
    time_to_break_even_s: float | None
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _time_to_break_even(run_dir: Path, skim: str) -> float | None:
    from adaptive_bkg.pipeline.live import read_metrics

    for record in read_metrics(run_dir / "metrics.jsonl"):
        if record.skims[skim].speedup >= 1.0:
            return record.spent_s
    return None


def _base_cfg(
    skim: str, budget_s: float, seed: int, out: Path, extra: Sequence[str], batch_size: int
) -> Config:
    return load_config(
        None,
        [
            f"run.skims=[{skim}]",
            f"run.batch_size={batch_size}",
            f"run.budget={budget_s:g}s",
            f"run.seed={seed}",
            f"learner.seed={seed}",
            f"run.out={out}",
            "run.plots=false",
            "run.metrics_every_s=0.5",
            "model.device=cpu",
            "learner.cpu_threads=1",
            *extra,
        ],
    )


def _replay_row(
    case: str, strategy: str, cfg: Config, data: Path, learn: bool, seed: int
) -> RunRow:
    from adaptive_bkg.pipeline.replay import replay_run

    start = time.perf_counter()
    result = replay_run(cfg, data, learn=learn, show_live=False)
    skim = cfg.run.skims[0]
    s = result.summary.skims[skim]
    expected = (result.expected_speedup or {}).get(skim, (math.nan, math.nan))
    return RunRow(
        case=case,
        strategy=strategy,
        seed=seed,
        speedup=s.speedup,
        speedup_err=s.speedup_err,
        expected_speedup=expected[0],
        expected_speedup_err=expected[1],
        n_generated=result.summary.n_generated,
        n_pass_kept=s.n_pass_kept,
        compute_s=result.summary.total_cost_s,
        time_to_break_even_s=_time_to_break_even(result.run_dir, skim),
        wall_s=time.perf_counter() - start,
    )


def _split_labelled(data: Path, n_first: int, work: Path) -> tuple[Path, Path]:
    """Write the first n_first events and the rest of a labelled file as two files."""
    from adaptive_bkg.formats.labelled import read_labelled, write_labelled

    labelled = read_labelled(data)
    paths = []
    for name, index in (
        ("first", np.arange(n_first)),
        ("rest", np.arange(n_first, len(labelled))),
    ):
        part = labelled.take(index)
        cost = part.cost_slow_s if part.cost_slow_s is not None else np.zeros(len(part))
        result = SimResult(part.batch.event_id, part.labels, np.asarray(cost, np.float64))
        path = work / f"{data.stem}-{name}{n_first}.parquet"
        if not path.exists():
            write_labelled(path, part.batch, result, part.skims)
        paths.append(path)
    return paths[0], paths[1]


def _two_step_row(
    case: str,
    skim: str,
    data: Path,
    budget_s: float,
    n_first: int,
    seed: int,
    work: Path,
    batch_size: int,
) -> RunRow:
    """Simulate n_first events unfiltered, fine-tune on them, run static on the rest; the
    speedup counts both phases' compute and N_eff (unfiltered events carry w = 1)."""
    from adaptive_bkg.backends.emulator.cost import CostModel
    from adaptive_bkg.formats.labelled import read_labelled
    from adaptive_bkg.stages.recorder import RECORDS_DIR, _add_table
    from adaptive_bkg.stages.recorder import parquet_io as rio
    from adaptive_bkg.stats.metrics import RunAccumulator
    from adaptive_bkg.workflows.recipes import finetune

    start = time.perf_counter()
    first, rest = _split_labelled(data, n_first, work)
    cost_model = CostModel.from_config(BackendConfig())
    phase1 = read_labelled(first, (skim,))
    c_fast = cost_model.fast_cost(phase1.batch)
    c_slow = cost_model.slow_cost(phase1.batch)
    acc = RunAccumulator((skim,))
    acc.add(np.ones(len(phase1), bool), 1.0, phase1.labels, c_fast, 0.0, c_slow)
    spent = acc.total_cost_s
    out = work / f"two-step-{case}-{seed}"
    ckpt = out.with_suffix(".pt")
    cfg0 = _base_cfg(skim, budget_s, seed, out, [], batch_size)
    if not ckpt.exists():
        from adaptive_bkg.checkpoints import default_checkpoint

        n_train = int(0.9 * n_first) - 1  # the rest of the unfiltered events validate
        finetune(cfg0, default_checkpoint(), [skim], "full", n_train, ckpt, data=first)
    remaining = max(budget_s - spent, 1.0)
    cfg = with_overrides(
        _base_cfg(skim, remaining, seed, out, [], batch_size), [f"model.checkpoint={ckpt}"]
    )
    row = _replay_row(case, "two-step", cfg, rest, False, seed)
    from adaptive_bkg.stages.recorder import RECORDS_KIND, RECORDS_SCHEMA_VERSION

    phase2 = RunAccumulator((skim,))
    for table in rio.iter_row_groups(out / RECORDS_DIR, RECORDS_KIND, RECORDS_SCHEMA_VERSION):
        _add_table(phase2, table)
    acc.merge(phase2)
    times = cost_model.mean_times
    s = acc.summary(times[0], times[1], times[2]).skims[skim]
    row.speedup, row.speedup_err = s.speedup, s.speedup_err
    row.n_generated = acc.n_generated
    row.n_pass_kept = s.n_pass_kept
    row.compute_s = acc.total_cost_s
    row.time_to_break_even_s = None  # phase 1 alone never breaks even
    row.wall_s = time.perf_counter() - start
    row.extra = {"unfiltered_events": n_first, "unfiltered_compute_s": spent}
    return row


def compare(
    nominal: Path | None,
    degraded: Path | None,
    high_background: Path | None,
    budget_s: float,
    seeds: Sequence[int],
    two_step_events: int,
    work: Path,
    held_out: Sequence[str] = HELD_OUT,
    pretrained: Sequence[str] = PRETRAINED,
    batch_size: int = 2000,
    progress: bool = True,
    partial: Path | None = None,
) -> list[RunRow]:
    """`partial`: a JSON-lines file each finished run is appended to at once, so that an
    interrupted comparison (hours at full size) keeps every run it finished."""
    rows: list[RunRow] = []

    def add(row: RunRow) -> None:
        rows.append(row)
        if partial is not None:
            with partial.open("a") as f:
                f.write(json.dumps(asdict(row), default=str) + "\n")
        if progress:
            print(
                f"{row.case:32s} {row.strategy:9s} seed {row.seed}: speedup "
                f"{row.speedup:.2f} ± {row.speedup_err:.2f}, expected {row.expected_speedup:.2f}"
                f", {row.n_generated} events, {row.wall_s:.0f} s",
                flush=True,
            )

    for seed in seeds:
        if nominal is not None:
            for skim in held_out:
                for strategy, extra, learn in (
                    ("no-filter", ["policy.name=none"], False),
                    ("static", [], False),
                    ("adaptive", [], True),
                ):
                    out = work / f"{skim}-{strategy}-{seed}"
                    cfg = _base_cfg(skim, budget_s, seed, out, extra, batch_size)
                    add(_replay_row(skim, strategy, cfg, nominal, learn, seed))
                add(
                    _two_step_row(
                        skim, skim, nominal, budget_s, two_step_events, seed, work, batch_size
                    )
                )
        for conditions, data in (("degraded", degraded), ("high-background", high_background)):
            if data is None:
                continue
            for skim in pretrained:
                for strategy, learn in (("no-learn", False), ("adaptive", True)):
                    case = f"{skim}@{conditions}"
                    out = work / f"{case}-{strategy}-{seed}"
                    cfg = _base_cfg(skim, budget_s, seed, out, [], batch_size)
                    add(_replay_row(case, strategy, cfg, data, learn, seed))
    return rows


def aggregate(rows: Sequence[RunRow]) -> list[dict[str, Any]]:
    """Mean ± standard error over seeds per (case, strategy)."""
    groups: dict[tuple[str, str], list[RunRow]] = {}
    for r in rows:
        groups.setdefault((r.case, r.strategy), []).append(r)
    out = []
    for (case, strategy), group in groups.items():
        s = np.array([r.speedup for r in group])
        e = np.array([r.expected_speedup for r in group])
        t = [r.time_to_break_even_s for r in group if r.time_to_break_even_s is not None]
        n = len(group)
        sem = float(s.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        out.append(
            {
                "case": case,
                "strategy": strategy,
                "seeds": n,
                "speedup_mean": float(s.mean()),
                "speedup_sem": sem,
                "speedup_sigma_mean": float(np.mean([r.speedup_err for r in group])),
                "expected_speedup_mean": float(np.nanmean(e)) if np.isfinite(e).any() else None,
                "time_to_break_even_s_mean": float(np.mean(t)) if t else None,
                "runs_breaking_even": len(t),
                "events_mean": float(np.mean([r.n_generated for r in group])),
            }
        )
    return out


def markdown(table: Sequence[dict[str, Any]], budget_s: float) -> str:
    lines = [
        f"| case | strategy | seeds | speedup (mean ± s.e.) | mean σ per run | expected (val.) "
        f"| time to break-even (of {budget_s:g} s) | events |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        expected = r["expected_speedup_mean"]
        tte = r["time_to_break_even_s_mean"]
        reached = f"{r['runs_breaking_even']}/{r['seeds']}"
        lines.append(
            f"| {r['case']} | {r['strategy']} | {r['seeds']} | {r['speedup_mean']:.3f} ± "
            f"{r['speedup_sem']:.3f} | {r['speedup_sigma_mean']:.3f} | "
            f"{'–' if expected is None else f'{expected:.3f}'} | "
            f"{'never' if tte is None else f'{tte:.0f} s ({reached})'}"
            f" | {r['events_mean']:,.0f} |"
        )
    return "\n".join(lines)


def _quick_inputs(work: Path) -> Path:
    """3000 labelled Pythia events for the toy comparison (about half a minute)."""
    from adaptive_bkg.workflows.label import label_events

    path = work / "quick-labelled.parquet"
    cfg = load_config(None, ["generator.seed=31"])
    label_events(cfg.generator, cfg.backend, 3000, path, [*HELD_OUT, *PRETRAINED])
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (CI)")
    parser.add_argument("--part", choices=("all", "overhead", "compare"), default="all")
    parser.add_argument("--events", type=int, default=200_000, help="overhead events")
    parser.add_argument("--batch-size", type=int, default=10_000, help="overhead batches")
    parser.add_argument("--compare-batch-size", type=int, default=2_000)
    parser.add_argument("--nominal", type=Path, help="labelled file, nominal conditions")
    parser.add_argument("--degraded", type=Path, help="labelled file, degraded conditions")
    parser.add_argument("--high-background", type=Path, help="labelled file, high-background")
    parser.add_argument("--budget", type=float, default=3000.0, help="emulated compute, s")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=1, help="seeds first … first+seeds-1 (split a run)"
    )
    parser.add_argument(
        "--from-runs",
        type=Path,
        nargs="+",
        help="only aggregate finished runs from these <out>.runs.jsonl files (no new runs)",
    )
    parser.add_argument("--two-step-events", type=int, default=10_000)
    parser.add_argument("--held-out", default=",".join(HELD_OUT), help="comma list of skims")
    parser.add_argument("--pretrained", default=",".join(PRETRAINED), help="comma list")
    parser.add_argument("--work", type=Path, default=None, help="keep run directories here")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result: dict[str, Any] = {
            "benchmark": "pipeline: orchestration overhead and strategies at equal compute",
            "quick": args.quick,
            "machine": describe(),
        }
        if args.quick:
            args.events, args.batch_size, args.budget, args.seeds = 40_000, 2_000, 40.0, 1
            args.two_step_events, args.compare_batch_size = 500, 250
            labelled = _quick_inputs(work)
            args.nominal = args.degraded = labelled  # toy: the same file stands in for both
            args.high_background = None
        if args.part in ("all", "overhead") and not args.from_runs:
            result["overhead"] = overhead(args.events, args.batch_size, work)
            print(json.dumps(result["overhead"], indent=2), flush=True)
        if args.from_runs:
            rows = [
                RunRow(**json.loads(line))
                for path in args.from_runs
                for line in path.read_text().splitlines()
                if line.strip()
            ]
            table = aggregate(rows)
            result["compare"] = {
                "budget_s": args.budget,
                "seeds": sorted({r.seed for r in rows}),
                "from_runs": [str(p) for p in args.from_runs],
                "runs": [asdict(r) for r in rows],
                "table": table,
                "markdown": markdown(table, args.budget),
            }
            print(result["compare"]["markdown"], flush=True)
        elif args.part in ("all", "compare"):
            seeds = list(range(args.first_seed, args.first_seed + args.seeds))
            held_out = [x for x in args.held_out.split(",") if x]
            pretrained = [x for x in args.pretrained.split(",") if x]
            if args.quick:
                held_out, pretrained = held_out[:1], pretrained[:1]
            rows = compare(
                args.nominal, args.degraded, args.high_background, args.budget, seeds,
                args.two_step_events, work, held_out, pretrained, args.compare_batch_size,
                partial=None if args.out is None else args.out.with_suffix(".runs.jsonl"),
            )  # fmt: skip
            table = aggregate(rows)
            result["compare"] = {
                "budget_s": args.budget,
                "seeds": seeds,
                "two_step_events": args.two_step_events,
                "batch_size": args.compare_batch_size,
                "inputs": {
                    "nominal": str(args.nominal),
                    "degraded": str(args.degraded),
                    "high_background": str(args.high_background),
                },
                "runs": [asdict(r) for r in rows],
                "table": table,
                "markdown": markdown(table, args.budget),
            }
            print(result["compare"]["markdown"], flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
            print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
