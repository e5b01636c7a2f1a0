"""Every figure of the project in one HEP style: mplhep's ROOT style, `histplot` for histograms
and a "Belle II emulated" label (`hep_style`, `experiment_label`; the detector is the emulator).

Each plot is a data function returning a typed result (what the tests check: the numbers, not
the pixels) and a small drawing function on a given axes; the notebooks call the same pairs:

    progress_curves(run_dir)           -> plot_neff_vs_compute, plot_speedup_vs_compute
    weights_by_version(run_dir)        -> plot_weights_by_version
    keep_probability_by_label(run_dir) -> plot_keep_probability
    roc_by_version(run_dir)            -> plot_roc

`plot_run(run_dir)` writes them all to `run_dir/plots/` (and is called at the end of every run);
closure plots (`workflows.closure.write_closure_plots`) need the labelled file a run replayed.
`plot_learning_curve(history, path)` draws a pretraining or fine-tuning history (recipes.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import mplhep
import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.pipeline.live import read_metrics
from adaptive_bkg.stages.recorder import existing_run_dir, read_records, records_skims

if TYPE_CHECKING:  # annotation only: drawing a run's plots never loads torch
    from adaptive_bkg.model.fitting import TrainingHistory

F64 = NDArray[np.float64]
MAX_VERSIONS = 6  # versions drawn per plot, spread evenly from first to last


@contextmanager
def hep_style() -> Iterator[None]:
    """mplhep's ROOT style for the plots made inside (leaves global matplotlib settings alone)."""
    with plt.style.context(mplhep.style.ROOT):
        yield


def experiment_label(ax: Any, rlabel: str = "") -> None:
    """ "Belle II emulated" top left (the detector is the emulator, not basf2), `rlabel` right."""
    mplhep.label.exp_label(exp="Belle II", llabel="emulated", rlabel=rlabel, ax=ax, loc=0)


def spread(values: Sequence[int], n: int = MAX_VERSIONS) -> list[int]:
    """At most n of the sorted values, evenly spread and always with the first and last."""
    if len(values) <= n:
        return list(values)
    return [values[int(i)] for i in np.unique(np.linspace(0, len(values) - 1, n).round())]


# --- N_eff and speedup vs compute -------------------------------------------------------------
@dataclass(frozen=True)
class SkimCurve:
    """One skim's progress, one point per metrics record."""

    compute_h: F64  # emulated compute spent [h] (Σ cost_fast + cost_nn + cost_slow)
    n_eff: F64
    speedup: F64
    oracle_speedup: F64
    n_eff_no_filter: F64  # ε̂·compute/t3: what the same compute gives without a filter
    n_eff_oracle: F64  # the no-filter N_eff times the oracle speedup (a perfect classifier)


def progress_curves(run_dir: Path) -> dict[str, SkimCurve]:
    """Per skim, N_eff and speedup vs compute from metrics.jsonl (empty if it has no lines).

    The no-filter line is N_eff / speedup: by the speedup's definition (DESIGN §2) exactly the
    N_eff the same compute buys without a filter (ε̂·C/t3 with the run's mean costs then)."""
    records = read_metrics(Path(run_dir) / "metrics.jsonl")
    if not records:
        return {}
    compute = np.array([m.total_cost_s for m in records])
    curves = {}
    for skim in records[-1].skims:
        rows = [m.skims[skim] for m in records if skim in m.skims]
        n_eff = np.array([s.n_eff for s in rows])
        speedup = np.array([s.speedup for s in rows])
        with np.errstate(divide="ignore", invalid="ignore"):
            no_filter = np.where(speedup > 0, n_eff / speedup, np.nan)
        oracle = np.array([s.oracle_speedup for s in rows])
        curves[skim] = SkimCurve(
            compute_h=compute[-len(rows) :] / 3600.0,
            n_eff=n_eff,
            speedup=speedup,
            oracle_speedup=oracle,
            n_eff_no_filter=no_filter,
            n_eff_oracle=no_filter * oracle,
        )
    return curves


def plot_neff_vs_compute(curves: Mapping[str, SkimCurve], ax: Any, tag: str = "") -> None:
    """N_eff vs compute, with the oracle (dashed) and no-filter (dotted) N_eff per skim."""
    for skim, c in curves.items():
        (line,) = ax.plot(c.compute_h, c.n_eff, label=f"{tag}{skim}")
        if not tag:  # reference lines once (not per run in an overlay)
            color = line.get_color()
            ax.plot(c.compute_h, c.n_eff_oracle, ls="--", color=color, label=f"{skim} oracle")
            ax.plot(c.compute_h, c.n_eff_no_filter, ls=":", color=color, label=f"{skim} no filter")
    ax.set_xlabel("emulated compute [h]")
    ax.set_ylabel(r"$N_\mathrm{eff} = (\sum w)^2 / \sum w^2$")
    ax.legend(fontsize="x-small")


def plot_speedup_vs_compute(curves: Mapping[str, SkimCurve], ax: Any, tag: str = "") -> None:
    """Cumulative speedup vs compute; oracle dashed; no filter = 1 (dotted)."""
    for skim, c in curves.items():
        (line,) = ax.plot(c.compute_h, c.speedup, label=f"{tag}{skim}")
        if not tag:
            ax.plot(c.compute_h, c.oracle_speedup, ls="--", color=line.get_color(),
                    label=f"{skim} oracle")  # fmt: skip
    ax.axhline(1.0, color="grey", ls=":", lw=1, label="no filter")
    # Log scale: the oracle is often 10-40x the achieved speedup.
    ax.set_yscale("log")
    ax.set_xlabel("emulated compute [h]")
    ax.set_ylabel("speedup (cumulative)")
    ax.legend(fontsize="x-small")


# --- per model version -------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionHistograms:
    """Weighted histograms per model version: counts[i] for versions[i] (Σw² in sumw2)."""

    versions: tuple[int, ...]
    edges: F64
    counts: F64  # [n_versions, n_bins]
    sumw2: F64


def _records(run_dir: Path, columns: list[str]) -> dict[str, NDArray[Any]]:
    table = read_records(existing_run_dir(run_dir), columns=columns)
    return {
        c: table.column(c).fill_null(False).to_numpy(zero_copy_only=False)
        if c.startswith("pass_")
        else table.column(c).to_numpy()
        for c in columns
    }


def _histograms(
    values: F64, weights: F64, versions: NDArray[Any], shown: list[int], edges: F64
) -> VersionHistograms:
    counts = np.zeros((len(shown), len(edges) - 1))
    sumw2 = np.zeros_like(counts)
    for i, v in enumerate(shown):
        sel = versions == v
        counts[i] = np.histogram(values[sel], edges, weights=weights[sel])[0]
        sumw2[i] = np.histogram(values[sel], edges, weights=weights[sel] ** 2)[0]
    return VersionHistograms(tuple(shown), edges, counts, sumw2)


def weights_by_version(run_dir: Path) -> VersionHistograms:
    """Kept events per weight bin (log bins from 1 to the largest weight), per model version."""
    r = _records(run_dir, ["model_version", "kept", "weight"])
    kept = r["kept"]
    w, versions = r["weight"][kept], r["model_version"][kept]
    top = max(float(w.max()) if w.size else 2.0, 2.0)
    edges = np.logspace(0, np.log10(top) + 0.05, 31)
    shown = spread(sorted(int(v) for v in np.unique(versions)))
    return _histograms(w, np.ones_like(w), versions, shown, edges)


def plot_weights_by_version(h: VersionHistograms, ax: Any) -> None:
    for i, v in enumerate(h.versions):
        mplhep.histplot(h.counts[i], h.edges, ax=ax, label=f"v{v}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("weight $w = 1/p$")
    ax.set_ylabel("kept events / bin")
    ax.legend(fontsize="x-small", title="model version")


@dataclass(frozen=True)
class KeepProbability:
    """Per skim and version: the keep probability p of passing and of failing events, each
    weighted by w = 1/p over kept events (an unbiased estimate of all events' distribution)."""

    skim: str
    passing: VersionHistograms
    failing: VersionHistograms


def keep_probability_by_label(run_dir: Path, skim: str | None = None) -> KeepProbability:
    skim = skim or records_skims(Path(run_dir) / "records")[0]
    r = _records(run_dir, ["model_version", "kept", "weight", "p", f"pass_{skim}"])
    kept = r["kept"]
    p, w, versions = r["p"][kept], r["weight"][kept], r["model_version"][kept]
    passed = r[f"pass_{skim}"][kept].astype(bool)
    low = 0.9 * max(min(float(p.min()) if p.size else 0.01, 0.5), 1e-4)
    edges = np.logspace(np.log10(low), 0, 26)
    edges[-1] = 1.0 + 1e-9  # p = 1 lands in the last bin
    shown = spread(sorted(int(v) for v in np.unique(versions)), 4)
    return KeepProbability(
        skim,
        _histograms(p[passed], w[passed], versions[passed], shown, edges),
        _histograms(p[~passed], w[~passed], versions[~passed], shown, edges),
    )


def plot_keep_probability(k: KeepProbability, ax: Any) -> None:
    """Solid: passing events; dashed: failing ones; each normalised to unit area."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, v in enumerate(k.passing.versions):
        color = colors[i % len(colors)]
        for h, ls, what in ((k.passing, "-", "pass"), (k.failing, "--", "fail")):
            total = h.counts[i].sum()
            if total > 0:
                mplhep.histplot(h.counts[i] / total, h.edges, ax=ax, color=color, ls=ls,
                                label=f"v{v} {what}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("keep probability $p$")
    ax.set_ylabel("fraction of events (weighted by $1/p$)")
    ax.legend(fontsize="x-small", title=k.skim)


@dataclass(frozen=True)
class Roc:
    """ROC of one model version's q on the events it scored (fresh: it never trained on them),
    from the kept ones weighted by 1/p, which estimates the ROC over all scored events."""

    version: int
    false_positive_rate: F64
    true_positive_rate: F64
    auc: float
    n_pass: int  # kept passing events behind the curve
    n_fail: int


def weighted_roc(score: F64, label: NDArray[np.bool_], weight: F64) -> tuple[F64, F64, float]:
    """(fpr, tpr, AUC) with per-event weights; ties in the score form one step."""
    order = np.argsort(-score, kind="stable")
    s, y, w = score[order], label[order], weight[order]
    tp = np.cumsum(w * y)
    fp = np.cumsum(w * ~y)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each group of equal scores
    tpr = np.r_[0.0, tp[last] / max(tp[-1], 1e-300)]
    fpr = np.r_[0.0, fp[last] / max(fp[-1], 1e-300)]
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def roc_by_version(run_dir: Path, skim: str | None = None) -> list[Roc]:
    skim = skim or records_skims(Path(run_dir) / "records")[0]
    r = _records(run_dir, ["model_version", "kept", "weight", f"q_{skim}", f"pass_{skim}"])
    kept = r["kept"]
    q, w, versions = r[f"q_{skim}"][kept], r["weight"][kept], r["model_version"][kept]
    passed = r[f"pass_{skim}"][kept].astype(bool)
    out = []
    for v in spread(sorted(int(v) for v in np.unique(versions))):
        sel = versions == v
        n_pass, n_fail = int(passed[sel].sum()), int((~passed[sel]).sum())
        if n_pass and n_fail:
            fpr, tpr, auc = weighted_roc(q[sel], passed[sel], w[sel])
            out.append(Roc(v, fpr, tpr, auc, n_pass, n_fail))
    return out


def plot_roc(rocs: Sequence[Roc], ax: Any, skim: str = "") -> None:
    for roc in rocs:
        ax.plot(roc.false_positive_rate, roc.true_positive_rate,
                label=f"v{roc.version} AUC {roc.auc:.3f} ({roc.n_pass} pass)")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="random")
    ax.set_xlabel("false positive rate (failing events kept)")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize="x-small", title=skim)


# --- all of it ----------------------------------------------------------------------------------
def save_figure(fig: Any, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_run(run_dir: Path) -> list[Path]:
    """Write every plot of `run_dir` into `run_dir/plots/`; returns the paths written."""
    run_dir = existing_run_dir(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    skims = records_skims(run_dir / "records")
    title = ", ".join(skims)
    written = []
    with hep_style():
        curves = progress_curves(run_dir)
        if curves:
            fig, (ax_neff, ax_speed) = plt.subplots(1, 2, figsize=(14, 6))
            plot_neff_vs_compute(curves, ax_neff)
            plot_speedup_vs_compute(curves, ax_speed)
            for ax in (ax_neff, ax_speed):
                experiment_label(ax, title)
            written.append(save_figure(fig, out / "progress.png"))
        if any(_records(run_dir, ["kept"])["kept"]):
            fig, ax = plt.subplots(figsize=(8, 6))
            plot_weights_by_version(weights_by_version(run_dir), ax)
            experiment_label(ax, title)
            written.append(save_figure(fig, out / "weights_by_version.png"))
            fig, axes = plt.subplots(1, len(skims), figsize=(8 * len(skims), 6), squeeze=False)
            for ax, skim in zip(axes[0], skims, strict=True):
                plot_keep_probability(keep_probability_by_label(run_dir, skim), ax)
                experiment_label(ax, skim)
            written.append(save_figure(fig, out / "keep_probability.png"))
            fig, axes = plt.subplots(1, len(skims), figsize=(8 * len(skims), 6), squeeze=False)
            for ax, skim in zip(axes[0], skims, strict=True):
                plot_roc(roc_by_version(run_dir, skim), ax, skim)
                experiment_label(ax, skim)
            written.append(save_figure(fig, out / "roc_by_version.png"))
    return written


# --- training ---------------------------------------------------------------------------------
def plot_learning_curve(history: TrainingHistory, path: Path, title: str = "") -> Path:
    """Two panels: train (running) and validation loss; validation AUC per skim."""
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4.2))
    if history.step_loss:
        steps, values = zip(*history.step_loss, strict=True)
        ax_loss.plot(steps, values, color="0.6", lw=1, label="train (running mean)")
    if history.epochs:
        ax_loss.plot(
            [e.step for e in history.epochs],
            [e.train_loss for e in history.epochs],
            "o-",
            label="train (epoch mean)",
        )
        ax_loss.plot(
            [e.step for e in history.epochs],
            [e.val_loss for e in history.epochs],
            "s-",
            label="validation",
        )
        for skim in history.skims:
            aucs = [e.skims[skim].auc if skim in e.skims else math.nan for e in history.epochs]
            ax_auc.plot([e.epoch for e in history.epochs], aucs, "o-", label=skim)
    ax_loss.set_xlabel("optimiser step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    ax_auc.set_xlabel("epoch")
    ax_auc.set_ylabel("validation AUC")
    ax_auc.legend(fontsize=7, ncol=2)
    ax_auc.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
