"""Compare finished runs: one table per skim and overlay plots (`adaptive-bkg compare`).

Per run and skim: policy, learning on/off, events, compute, N_eff, speedup ± its uncertainty,
fraction of the oracle, max weight and the time to speedup (compute until the cumulative
speedup reached 90 % of its final value and stayed there).

The speedup's uncertainty: speedup = t3·N·(Σw)/(Σw²)/C over the kept passing events (DESIGN
§2 with N_eff/ε̂ = N·Σw/Σw²). Its statistical error comes from the per-event sums by the delta
method (generated events are independent; the compute C, a sum of many small costs, is taken
as exact). It matches the spread over independent replicas for thousands of passing events
and runs ~5-15 % low with a few hundred and weights up to 100 (tests/test_analysis.py).
A summary.json that already carries `speedup_err` is used as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.errors import UserError
from adaptive_bkg.pipeline.live import read_metrics
from adaptive_bkg.stages.recorder import SUMMARY_FILE, existing_run_dir, load_summary, read_records

TIME_TO_FRACTION = 0.9


def speedup_relative_error(w: NDArray[np.float64], n_generated: int) -> float:
    """Relative error of Σw/Σw² over kept passing weights `w` among `n_generated` events."""
    if len(w) < 2 or n_generated < 2:
        return math.nan
    a, b = w.sum(), (w**2).sum()
    n = n_generated
    # Per generated event a_i = w_i, b_i = w_i² (zero for events not kept or not passing).
    var_a = (w**2).sum() - a**2 / n
    var_b = (w**4).sum() - b**2 / n
    cov = (w**3).sum() - a * b / n
    ratio = a / b
    var_ratio = var_a / b**2 + a**2 * var_b / b**4 - 2 * a * cov / b**3
    return float(math.sqrt(max(var_ratio, 0.0)) / ratio)


def time_to_speedup(compute_s: Sequence[float], speedup: Sequence[float]) -> float:
    """Compute spent until the speedup reached 90 % of its final value for good (nan: none)."""
    s = np.asarray(speedup, dtype=np.float64)
    if not len(s) or not np.isfinite(s[-1]) or s[-1] <= 0:
        return math.nan
    below = np.flatnonzero(~(s >= TIME_TO_FRACTION * s[-1]))
    first = 0 if not len(below) else below[-1] + 1
    return float(compute_s[first]) if first < len(s) else math.nan


@dataclass(frozen=True)
class RunRow:
    """One run's numbers for one skim."""

    run: str
    skim: str
    policy: str
    learn: bool
    n_generated: int
    compute_s: float
    n_eff: float
    speedup: float
    speedup_err: float
    fraction_of_oracle: float
    oracle_speedup: float
    max_weight: float
    time_to_speedup_s: float
    # With the learner's CPU seconds added to the cost (docs/statistics.md); NaN for a run
    # directory written before the learner's compute was accounted.
    speedup_with_learner: float = math.nan
    speedup_with_learner_err: float = math.nan


def run_rows(run_dir: Path) -> list[RunRow]:
    run_dir = existing_run_dir(run_dir)
    if not (run_dir / SUMMARY_FILE).exists():
        raise UserError(f"{run_dir} has no {SUMMARY_FILE}: the run has not finished")
    summary = load_summary(run_dir / SUMMARY_FILE)
    raw = json.loads((run_dir / SUMMARY_FILE).read_text())
    extra = raw.get("run", {})
    metrics = read_metrics(run_dir / "metrics.jsonl")
    compute = [m.total_cost_s for m in metrics]
    rows = []
    for skim, s in summary.skims.items():
        given = raw["skims"][skim].get("speedup_err")
        if given is not None:
            err = float(given)
        else:
            table = read_records(run_dir, columns=["kept", "weight", f"pass_{skim}"])
            passed = table.column(f"pass_{skim}").fill_null(False).to_numpy(zero_copy_only=False)
            kept = table.column("kept").to_numpy() & passed.astype(bool)
            w = table.column("weight").to_numpy()[kept]
            err = s.speedup * speedup_relative_error(w, summary.n_generated)
        speedups = [m.skims[skim].speedup if skim in m.skims else math.nan for m in metrics]
        with_learner = extra.get("speedup_with_learner", {}).get(skim, (math.nan, math.nan))
        rows.append(
            RunRow(
                run=run_dir.name,
                skim=skim,
                policy=str(extra.get("policy", "?")),
                learn=bool(extra.get("learn", False)),
                n_generated=summary.n_generated,
                compute_s=summary.total_cost_s,
                n_eff=s.n_eff,
                speedup=s.speedup,
                speedup_err=err,
                fraction_of_oracle=s.fraction_of_oracle,
                oracle_speedup=s.oracle_speedup,
                max_weight=s.max_weight,
                time_to_speedup_s=time_to_speedup(compute, speedups),
                speedup_with_learner=float(with_learner[0]),
                speedup_with_learner_err=float(with_learner[1]),
            )
        )
    return rows


@dataclass(frozen=True)
class Comparison:
    rows: tuple[RunRow, ...]
    run_dirs: tuple[Path, ...]

    @property
    def skims(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.skim for r in self.rows))

    def for_skim(self, skim: str) -> list[RunRow]:
        return [r for r in self.rows if r.skim == skim]

    def to_json(self) -> str:
        return json.dumps([asdict(r) for r in self.rows], indent=2, allow_nan=True)


def compare_runs(run_dirs: Sequence[Path]) -> Comparison:
    if not run_dirs:
        raise UserError("give at least one run directory to compare")
    rows: list[RunRow] = []
    for d in run_dirs:
        rows += run_rows(Path(d))
    return Comparison(tuple(rows), tuple(Path(d) for d in run_dirs))


COLUMNS = (
    "run", "policy", "learning", "events", "compute [h]", "N_eff", "speedup",
    "incl. learner", "of oracle", "max weight", "time to 90 % [h]",
)  # fmt: skip


def table_cells(row: RunRow) -> tuple[str, ...]:
    """The cells of one table row, as `compare` prints them."""
    tts = "n/a" if math.isnan(row.time_to_speedup_s) else f"{row.time_to_speedup_s / 3600:.3g}"
    return (
        row.run,
        row.policy,
        "on" if row.learn else "off",
        f"{row.n_generated:,}",
        f"{row.compute_s / 3600:.3g}",
        f"{row.n_eff:,.1f}",
        f"{row.speedup:.2f} ± {row.speedup_err:.2f}",
        "n/a"
        if math.isnan(row.speedup_with_learner)
        else f"{row.speedup_with_learner:.2f} ± {row.speedup_with_learner_err:.2f}",
        f"{100 * row.fraction_of_oracle:.0f} % of {row.oracle_speedup:.1f}",
        f"{row.max_weight:.1f}",
        tts,
    )


def to_markdown(comparison: Comparison) -> str:
    parts = []
    for skim in comparison.skims:
        parts.append(f"### {skim}\n")
        parts.append("| " + " | ".join(COLUMNS) + " |")
        parts.append("|" + "---|" * len(COLUMNS))
        parts += ["| " + " | ".join(table_cells(r)) + " |" for r in comparison.for_skim(skim)]
        parts.append("")
    return "\n".join(parts)


def write_comparison(comparison: Comparison, out: Path) -> list[Path]:
    """comparison.json, comparison.md and overlay plots (speedup and N_eff vs compute)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib only when drawing

    from adaptive_bkg.pipeline.plots import (
        experiment_label,
        hep_style,
        plot_neff_vs_compute,
        plot_speedup_vs_compute,
        progress_curves,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "comparison.json", out / "comparison.md"]
    written[0].write_text(comparison.to_json())
    written[1].write_text(to_markdown(comparison))
    curves = {d.name: progress_curves(d) for d in comparison.run_dirs}
    with hep_style():
        for skim in comparison.skims:
            fig, (ax_neff, ax_speed) = plt.subplots(1, 2, figsize=(14, 6))
            for name, by_skim in curves.items():
                if skim in by_skim:
                    one = {skim: by_skim[skim]}
                    plot_neff_vs_compute(one, ax_neff, tag=f"{name}: ")
                    plot_speedup_vs_compute(one, ax_speed, tag=f"{name}: ")
            oracle = max((r.oracle_speedup for r in comparison.for_skim(skim)), default=math.nan)
            if math.isfinite(oracle):
                ax_speed.axhline(oracle, color="black", ls="--", lw=1, label="oracle")
                ax_speed.legend(fontsize="x-small")
            for ax in (ax_neff, ax_speed):
                experiment_label(ax, skim)
            fig.tight_layout()
            path = out / f"compare_{skim.replace('/', '_')}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written
