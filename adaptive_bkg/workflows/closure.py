"""Closure by eye and by numbers: the weighted kept sample against all events (DESIGN §2).

For a run replayed on a labelled file every event has its skim label, so the events passing
the skim can be histogrammed twice: all of them (what brute force would give) and only the
kept ones weighted by w = 1/p (what the filtered production gives). Importance sampling is
unbiased, so the two agree within errors in every bin of every observable.

Errors: the weighted histogram carries sqrt(Σw²) (its error as an estimate of the population),
the all-events one sqrt(N). The pull compares the two on the same events, so it uses the
variance of their difference: each passing event contributes w·[kept] − 1 with variance
(1 − p)/p, and p is recorded for every event, kept or not, so the variance Σ_all (1 − p)/p is
known exactly. (Its unbiased estimate from kept events alone, Σ_kept (w² − w), is ~0 in a bin
whose few low-p events were all dropped, which gave pulls of −8 in sparse tails.)

Observables (workflows/observables.py): generator level and the emulator's reconstruction of
each event (the run's backend settings; deterministic per seed and event id). The statistical
suite over many runs (merged sparse bins, χ² p-values, pull summaries) is workflows/validate.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.config import Config, load_config
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.labelled import LabelledEvents, labelled_skims, read_labelled
from adaptive_bkg.stages.recorder import existing_run_dir, read_records, records_skims
from adaptive_bkg.workflows.observables import (
    OBSERVABLES,
    Observable,
    histogram_values,
    observables,
)

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class ClosureHistogram:
    observable: Observable
    all_counts: F64  # passing events, unweighted
    kept_sumw: F64  # passing kept events, weighted by 1/p
    kept_sumw2: F64  # Σw² per bin
    diff_var: F64  # Σ_all (1 − p)/p per bin: variance of kept_sumw − all_counts on these events

    @property
    def pulls(self) -> F64:
        diff = self.kept_sumw - self.all_counts
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.diff_var > 0, diff / np.sqrt(self.diff_var), 0.0)

    @property
    def chi2(self) -> tuple[float, int]:
        """(χ², number of bins with a non-zero variance)."""
        used = self.diff_var > 0
        return float((self.pulls[used] ** 2).sum()), int(used.sum())


@dataclass(frozen=True)
class Closure:
    skim: str
    n_pass_all: int  # passing events among those the run generated
    n_pass_kept: int
    sum_w_pass: float
    sum_w_pass_err: float  # sqrt(Σ (1 − p)/p) over all passing events
    histograms: tuple[ClosureHistogram, ...]

    @property
    def total_pull(self) -> float:
        return (self.sum_w_pass - self.n_pass_all) / max(self.sum_w_pass_err, 1e-300)


def check_labelled(data: Path, skim: str) -> None:
    """`data` exists and has labels for `skim` (else a `UserError` naming the fix)."""
    if not data.exists():
        raise UserError(f"closure data {data} not found; give the labelled file the run replayed")
    available = labelled_skims(data)
    if skim not in available:
        raise UserError(
            f"{data} has no labels for skim {skim} (it has: {', '.join(available) or 'none'}); "
            "give the labelled file the run replayed"
        )


@dataclass(frozen=True)
class RunDraws:
    """What one run recorded for the events of a labelled file that pass `skim`."""

    skim: str
    rows: NDArray[np.int64]  # row in the labelled file of each passing recorded event
    kept: NDArray[np.bool_]
    weight: F64
    p: F64
    config: Config


def run_draws(run_dir: Path, labelled: LabelledEvents, data: Path, skim: str) -> RunDraws:
    """Match a run's records to `labelled` (read from `data`) and keep the passing events."""
    table = read_records(run_dir, columns=["event_id", "kept", "weight", "p"])
    ids = table.column("event_id").to_numpy()
    order = np.argsort(labelled.batch.event_id)
    sorted_ids = labelled.batch.event_id[order]
    position = np.searchsorted(sorted_ids, ids)
    found = (position < len(sorted_ids)) & (
        sorted_ids[np.minimum(position, len(sorted_ids) - 1)] == ids
    )
    if not found.any() or not found.all():
        raise UserError(
            f"{data} does not hold the events of run {run_dir} ({int((~found).sum())} of "
            f"{len(ids)} missing): give the labelled file the run replayed"
        )
    rows = order[position]  # row in `labelled` of each recorded event
    passed = labelled.labels[rows, labelled.skims.index(skim)]
    return RunDraws(
        skim,
        rows[passed],
        table.column("kept").to_numpy()[passed],
        table.column("weight").to_numpy()[passed],
        table.column("p").to_numpy()[passed],
        load_config(run_dir / "config.yaml"),
    )


def closure_histograms(
    run_dir: Path,
    data: Path,
    skim: str | None = None,
    compute: Callable[[Any, Config], dict[str, F64]] = observables,
) -> Closure:
    """Histograms of the skim-passing events of `data` that the run generated: all vs kept."""

    run_dir = existing_run_dir(run_dir)
    data = Path(data)
    skim = skim or records_skims(run_dir / "records")[0]
    check_labelled(data, skim)
    labelled = read_labelled(data, [skim])
    draws = run_draws(run_dir, labelled, data, skim)
    values = compute(labelled.batch.take(draws.rows), draws.config)
    kept_pass, w_pass, p = draws.kept, draws.weight, draws.p
    # p = 0 (hard-cut only) is not importance sampling: those events can never be made up, and
    # leaving them out of the variance lets the pulls show that bias.
    var_pass = np.divide(1.0 - p, p, out=np.zeros_like(p), where=p > 0)
    histograms = []
    for obs in OBSERVABLES:
        sel_all, x = histogram_values(values[obs.name], obs)
        sel_kept = sel_all & kept_pass
        hist = np.histogram
        histograms.append(
            ClosureHistogram(
                obs,
                hist(x[sel_all], obs.edges)[0].astype(np.float64),
                hist(x[sel_kept], obs.edges, weights=w_pass[sel_kept])[0],
                hist(x[sel_kept], obs.edges, weights=w_pass[sel_kept] ** 2)[0],
                hist(x[sel_all], obs.edges, weights=var_pass[sel_all])[0],
            )
        )
    return Closure(
        skim,
        len(draws.rows),
        int(kept_pass.sum()),
        float(w_pass[kept_pass].sum()),
        float(np.sqrt(var_pass.sum())),
        tuple(histograms),
    )


def plot_closure(closure: Closure) -> Any:
    """A figure: per observable, all events vs weighted kept (Σw² errors) and a pull panel."""
    import matplotlib.pyplot as plt  # lazy: matplotlib only when drawing
    import mplhep

    from adaptive_bkg.pipeline.plots import experiment_label, hep_style

    n = len(closure.histograms)
    cols = 6
    rows = -(-n // cols)
    with hep_style():
        fig = plt.figure(figsize=(7 * cols, 7 * rows))
        outer = fig.add_gridspec(rows, cols, hspace=0.3, wspace=0.35)
        for i, h in enumerate(closure.histograms):
            r, c = divmod(i, cols)
            inner = outer[r, c].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
            top = fig.add_subplot(inner[0])
            bottom = fig.add_subplot(inner[1], sharex=top)
            mplhep.histplot(h.all_counts, h.observable.edges, ax=top, yerr=True,
                            label="all events", color="black")  # fmt: skip
            mplhep.histplot(h.kept_sumw, h.observable.edges, ax=top,
                            yerr=np.sqrt(h.kept_sumw2), histtype="errorbar",
                            label="kept, weighted 1/p", color="C1")  # fmt: skip
            top.set_ylabel("events / bin")
            top.tick_params(labelbottom=False)
            chi2, ndf = h.chi2
            # A fixed legend place and one experiment label: "best" placement and mplhep's
            # label each redraw the whole canvas, which made a 29-panel figure take minutes.
            top.legend(fontsize="x-small", title=f"χ²/ndf = {chi2:.1f}/{ndf}", loc="upper right")
            if i == 0:
                experiment_label(top)
            centres = 0.5 * (h.observable.edges[1:] + h.observable.edges[:-1])
            bottom.axhline(0.0, color="grey", lw=1)
            bottom.plot(centres, h.pulls, "o", color="C1", ms=4)
            bottom.set_ylim(-4, 4)
            bottom.set_ylabel("pull")
            bottom.set_xlabel(h.observable.label)
        fig.suptitle(
            f"{closure.skim}: {closure.n_pass_all} passing events; weighted kept "
            f"{closure.sum_w_pass:.1f} ± {closure.sum_w_pass_err:.1f} "
            f"(pull {closure.total_pull:+.2f})",
            y=0.93,
        )
    return fig


def write_closure_plots(run_dir: Path, data: Path) -> list[Path]:
    """One closure figure per skim of the run, written to `run_dir/plots/closure_<skim>.png`."""
    from adaptive_bkg.pipeline.plots import save_figure  # lazy: matplotlib only when drawing

    run_dir = existing_run_dir(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    return [
        save_figure(
            plot_closure(closure_histograms(run_dir, data, skim)),
            out / f"closure_{skim}.png",
            tight=False,
        )
        for skim in records_skims(run_dir / "records")
    ]
