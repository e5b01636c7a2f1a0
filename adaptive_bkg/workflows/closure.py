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

Observables (≥ 8), from the emulator's reconstruction of each event (the run's backend
settings; deterministic per seed and event id) plus the generator-level multiplicity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator import EmulatorBackend
from adaptive_bkg.backends.emulator.context import M_D0, SkimContext
from adaptive_bkg.config import Config, load_config
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.labelled import labelled_skims, read_labelled
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.stages.recorder import existing_run_dir, read_records, records_skims

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Observable:
    name: str
    label: str  # axis label with unit
    edges: F64


OBSERVABLES: tuple[Observable, ...] = (
    Observable("n_particles", "generator-level particles per event", np.arange(0.5, 80.5, 4.0)),
    Observable("n_tracks", "good tracks", np.arange(-0.5, 16.5, 1.0)),
    Observable("n_photons", "photons ($E > 0.1$ GeV)", np.arange(-0.5, 20.5, 1.0)),
    Observable("e_vis", r"$E_\mathrm{vis}^*$ [GeV]", np.linspace(0.0, 12.0, 25)),
    Observable("p_miss", r"$p_\mathrm{miss}^*$ [GeV]", np.linspace(0.0, 6.0, 25)),
    Observable("e_ecl", r"$E_\mathrm{ECL}$ [GeV]", np.linspace(0.0, 12.0, 25)),
    Observable("max_pt", r"leading track $p_T$ [GeV]", np.linspace(0.0, 5.0, 26)),
    Observable("thrust", "thrust", np.linspace(0.5, 1.0, 26)),
    Observable("r2", "$R_2$", np.linspace(0.0, 1.0, 26)),
    Observable(
        "lepton_pstar", r"leading lepton $p^*$ [GeV] (events with one)", np.linspace(0.0, 5.5, 23)
    ),
    Observable("d_mass", r"best $D$ candidate mass [GeV]", np.linspace(1.76, 1.96, 21)),
)


def observables(events: Any, cfg: Config) -> dict[str, F64]:
    """Per-event values of `OBSERVABLES` (NaN where an event has none, e.g. no lepton), with the
    run's detector settings and beams."""
    # skims unused: reconstruction only
    backend = EmulatorBackend(cfg.backend, ["tau-generic"], Beams.of(cfg.generator))
    ctx = SkimContext(backend.reconstruct(events), backend.beams)
    v = ctx.variables
    values: dict[str, F64] = {
        "n_particles": events.n_particles.astype(np.float64),
        "n_tracks": v.n_tracks.astype(np.float64),
        "n_photons": v.n_photons.astype(np.float64),
        "e_vis": v.e_vis,
        "p_miss": v.p_miss,
        "e_ecl": v.e_ecl,
        "max_pt": v.max_pt,
        "thrust": v.thrust,
        "r2": v.r2,
        "lepton_pstar": np.where(v.lepton_pstar > 0, v.lepton_pstar, np.nan),
    }
    d = ctx.d_mesons
    mass = np.sqrt(np.maximum(d.energy**2 - d.px**2 - d.py**2 - d.pz**2, 0.0))
    order = np.lexsort((np.abs(mass - M_D0), d.event))  # per event, closest to m(D0) first
    event = d.event[order]
    first = np.r_[True, event[1:] != event[:-1]] if len(event) else np.zeros(0, np.bool_)
    best = np.full(len(events), np.nan)
    best[event[first]] = mass[order][first]
    values["d_mass"] = best
    return values


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


def closure_histograms(
    run_dir: Path,
    data: Path,
    skim: str | None = None,
    compute: Callable[[Any, Config], dict[str, F64]] = observables,
) -> Closure:
    """Histograms of the skim-passing events of `data` that the run generated: all vs kept."""

    run_dir = existing_run_dir(run_dir)
    data = Path(data)
    if not data.exists():
        raise UserError(f"closure data {data} not found; give the labelled file the run replayed")
    skim = skim or records_skims(run_dir / "records")[0]
    available = labelled_skims(data)
    if skim not in available:
        raise UserError(
            f"{data} has no labels for skim {skim} (it has: {', '.join(available) or 'none'}); "
            "give the labelled file the run replayed"
        )
    labelled = read_labelled(data, [skim])
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
    passed = labelled.labels[rows, 0]
    kept = table.column("kept").to_numpy()
    w = table.column("weight").to_numpy()
    cfg = load_config(run_dir / "config.yaml")
    events = labelled.batch.take(rows[passed])
    values = compute(events, cfg)
    kept_pass, w_pass = kept[passed], w[passed]
    p = table.column("p").to_numpy()[passed]
    # p = 0 (hard-cut only) is not importance sampling: those events can never be made up, and
    # leaving them out of the variance lets the pulls show that bias.
    var_pass = np.divide(1.0 - p, p, out=np.zeros_like(p), where=p > 0)
    histograms = []
    for obs in OBSERVABLES:
        x = values[obs.name]
        inside = np.isfinite(x)
        # Clip into the range so that nothing is lost in an overflow the eye cannot see.
        x = np.clip(x, obs.edges[0], np.nextafter(obs.edges[-1], -np.inf))
        sel_all = inside
        sel_kept = inside & kept_pass
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
        int(passed.sum()),
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
    cols = 4
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
            top.legend(fontsize="x-small", title=f"χ²/ndf = {chi2:.1f}/{ndf}")
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
