"""Figures of the closure suite (`adaptive-bkg validate --plots`, docs/validation.md).

Each draws a `Validation` (and optionally a second one, e.g. `hard-cut`, for contrast):
the pooled pull distribution against N(0, 1), the χ² p-values against uniform, and pull mean
and width per observable with their between-run errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adaptive_bkg.pipeline.plots import experiment_label, hep_style, plt, save_figure
from adaptive_bkg.workflows.validate import Validation

PULL_RANGE = 5.0


def _label(v: Validation) -> str:
    return f"{', '.join(v.policies)} ({len(v.run_dirs)} runs)"


def plot_pulls(v: Validation, ax: Any, other: Validation | None = None) -> None:
    edges = np.linspace(-PULL_RANGE, PULL_RANGE, 41)
    for k, res in enumerate([v] if other is None else [v, other]):
        z = np.concatenate(res.pulls_by_run) if res.pulls_by_run else np.zeros(0)
        p = res.pulls
        ax.hist(np.clip(z, -PULL_RANGE + 1e-9, PULL_RANGE - 1e-9), edges, density=True,
                histtype="step", lw=2, color=f"C{k}",
                label=f"{_label(res)}:\nmean {p.mean.value:+.3f} ± {p.mean.error:.3f}, "
                      f"width {p.width.value:.3f} ± {p.width.error:.3f}")  # fmt: skip
    x = np.linspace(-PULL_RANGE, PULL_RANGE, 200)
    ax.plot(x, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), color="black", ls="--", label="N(0, 1)")
    ax.set_xlabel("pull of a merged bin (over/underflow in the end bins)")
    ax.set_ylabel("density")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.8)  # room for the legend
    ax.legend(fontsize="x-small", loc="upper right")
    experiment_label(ax)


def plot_p_values(v: Validation, ax: Any, other: Validation | None = None) -> None:
    edges = np.linspace(0, 1, 21)
    for k, res in enumerate([v] if other is None else [v, other]):
        values = np.concatenate([np.asarray(p) for p in res.p_values.values()] or [np.zeros(0)])
        ax.hist(values, edges, density=True, histtype="step", lw=2, color=f"C{k}",
                label=f"{_label(res)}: KS p = {res.uniformity.ks_pvalue:.2g}")  # fmt: skip
    ax.axhline(1.0, color="black", ls="--", label="uniform")
    ax.set_xlabel(r"$\chi^2$ p-value (one per observable and run)")
    ax.set_ylabel("density")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.4)  # room for the legend
    ax.legend(fontsize="x-small", loc="upper right")
    experiment_label(ax)


def plot_per_observable(v: Validation, ax_mean: Any, ax_width: Any) -> None:
    tested = [o for o in v.observables if o.n_runs_tested]
    y = np.arange(len(tested))
    for ax, attr, ref in ((ax_mean, "mean", 0.0), (ax_width, "width", 1.0)):
        values = [getattr(o.pulls, attr) for o in tested]
        ax.errorbar([e.value for e in values], y, xerr=[e.error for e in values], fmt="o", ms=4)
        ax.axvline(ref, color="grey")
        ax.axvspan(ref - 0.1, ref + 0.1, color="grey", alpha=0.2)
        ax.set_xlabel(f"pull {attr}")
    ax_mean.set_yticks(y, [f"{o.skim}/{o.name}" for o in tested], fontsize="xx-small")
    ax_mean.tick_params(axis="y", which="minor", left=False, right=False)
    ax_width.tick_params(axis="y", labelleft=False)
    ax_mean.set_title(_label(v), fontsize="small")


def write_validation_plots(
    v: Validation, out: Path, other: Validation | None = None, prefix: str = "validation-"
) -> list[Path]:
    """validation-pulls.png, validation-pvalues.png, validation-observables.png in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with hep_style():
        fig, ax = plt.subplots(figsize=(10, 7))
        plot_pulls(v, ax, other)
        written.append(save_figure(fig, out / f"{prefix}pulls.png"))
        fig, ax = plt.subplots(figsize=(9, 7))
        plot_p_values(v, ax, other)
        written.append(save_figure(fig, out / f"{prefix}pvalues.png"))
        n = sum(1 for o in v.observables if o.n_runs_tested)
        fig, (a, b) = plt.subplots(1, 2, figsize=(12, 2 + 0.3 * n), sharey=True)
        plot_per_observable(v, a, b)
        written.append(save_figure(fig, out / f"{prefix}observables.png"))
    return written
