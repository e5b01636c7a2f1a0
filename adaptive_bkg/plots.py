"""End-of-run plots from a run directory: N_eff and speedup vs time, weights per model version."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from adaptive_bkg.live import read_metrics
from adaptive_bkg.stages.recorder import read_records


def plot_run(run_dir: Path) -> list[Path]:
    """Write plots/progress.png and plots/weights_by_version.png; returns the paths."""
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []
    metrics = read_metrics(run_dir / "metrics.jsonl")
    if metrics:
        fig, (ax_neff, ax_speed) = plt.subplots(1, 2, figsize=(10, 4))
        spent_h = np.array([m.spent_s for m in metrics]) / 3600.0
        for skim in metrics[-1].skims:
            ax_neff.plot(spent_h, [m.skims[skim].n_eff for m in metrics], label=skim)
            line = ax_speed.plot(spent_h, [m.skims[skim].speedup for m in metrics], label=skim)
            ax_speed.plot(
                spent_h,
                [m.skims[skim].oracle_speedup for m in metrics],
                ls="--",
                color=line[0].get_color(),
                label=f"{skim} oracle",
            )
        ax_neff.set(xlabel="budget spent [h]", ylabel="N_eff", title="effective sample size")
        # Log scale: the oracle is often 10-40x above the achieved speedup, which a linear axis
        # would flatten into a line at the bottom. The dotted line at 1 is "no filter".
        ax_speed.axhline(1.0, color="grey", ls=":", lw=1)
        ax_speed.set(
            xlabel="budget spent [h]",
            ylabel="speedup (cumulative)",
            title="speedup vs unfiltered",
            yscale="log",
        )
        for ax in (ax_neff, ax_speed):
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out / "progress.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    table = read_records(run_dir, columns=["model_version", "kept", "weight"])
    kept = table.column("kept").to_numpy()
    versions = table.column("model_version").to_numpy()[kept]
    weights = table.column("weight").to_numpy()[kept]
    if weights.size:
        fig, ax = plt.subplots(figsize=(6, 4))
        bins = np.logspace(0, np.log10(max(weights.max(), 2.0)) + 0.05, 40)
        unique = np.unique(versions)
        # At most 6 versions, evenly spread from first to last, so the plot stays readable.
        shown = unique[np.unique(np.linspace(0, len(unique) - 1, min(6, len(unique))).astype(int))]
        for version in shown:
            ax.hist(
                weights[versions == version], bins=list(bins), histtype="step", label=f"v{version}"
            )
        ax.set(xscale="log", yscale="log", xlabel="weight 1/p", ylabel="kept events")
        ax.set_title("weights per model version")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "weights_by_version.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written
