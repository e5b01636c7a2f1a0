"""Closure by eye, checked by its numbers: the shipped replay is unbiased, a hard cut is not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from adaptive_bkg.cli import app
from adaptive_bkg.config import load_config
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.labelled import read_labelled
from adaptive_bkg.pipeline.replay import replay_run
from adaptive_bkg.stats.sampling import BiasedPolicyWarning
from adaptive_bkg.workflows.closure import OBSERVABLES, closure_histograms, observables

DATA = Path(__file__).parent.parent / "notebooks" / "data"
SKIM = "tau-generic"


def test_closure_of_the_shipped_learning_replay() -> None:
    closure = closure_histograms(DATA / "run-tau", DATA / "labelled.parquet")
    labelled = read_labelled(DATA / "labelled.parquet", [SKIM])
    assert closure.skim == SKIM
    assert closure.n_pass_all == int(labelled.labels[:, 0].sum())  # the run replayed every event
    assert len(closure.histograms) >= 8
    values = observables(labelled.batch.take(np.flatnonzero(labelled.labels[:, 0])),
                         load_config(DATA / "run-tau" / "config.yaml"))  # fmt: skip
    for h in closure.histograms:
        # "all" holds every passing event with a value (clipped into range, none lost).
        assert h.all_counts.sum() == np.isfinite(values[h.observable.name]).sum()
        assert np.all(h.diff_var >= 0)
    assert closure.histograms[0].kept_sumw.sum() == pytest.approx(closure.sum_w_pass)
    # Unbiased: the weighted kept total agrees with the true count (4σ); the pulls of the bins
    # with some variance have rms ~1 and no outliers. (All observables histogram the same events,
    # so their pulls share the total's fluctuation: their mean is not tested against 0.)
    assert abs(closure.total_pull) < 4
    pulls = np.concatenate([h.pulls[h.diff_var > 4] for h in closure.histograms])
    assert len(pulls) > 50
    assert 0.6 < pulls.std() < 1.5
    assert np.all(np.abs(pulls) < 5)


# recorder.records_to_table computes 1/p for discarded events too (harmless: masked out); p = 0
# only happens with hard-cut. Reported to the lead (recorder.py is being changed in issue 10).
@pytest.mark.filterwarnings("ignore:divide by zero encountered in divide:RuntimeWarning")
def test_closure_exposes_a_biased_policy(tmp_path: Path) -> None:
    """`hard-cut` keeps p in {0, 1}: events it drops are missing, and the closure shows it."""
    cfg = load_config(
        None,
        [f"run.skims=[{SKIM}]", "policy.name=hard-cut", "run.plots=false",
         "run.batch_size=500", f"run.out={tmp_path / 'cut'}"],
    )  # fmt: skip
    with pytest.warns(BiasedPolicyWarning):
        replay_run(cfg, DATA / "labelled.parquet", learn=False, show_live=False)
    closure = closure_histograms(tmp_path / "cut", DATA / "labelled.parquet")
    assert closure.sum_w_pass < 0.95 * closure.n_pass_all  # passing events lost for good
    assert closure.total_pull < -5  # and the pulls say so


def test_closure_needs_the_replayed_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        closure_histograms(DATA / "run-tau", tmp_path / "missing.parquet")
    assert {o.name for o in OBSERVABLES} >= {"n_tracks", "e_vis", "thrust", "r2", "lepton_pstar"}


def test_plot_closure_from_the_command_line(tmp_path: Path) -> None:
    """`adaptive-bkg plot RUN --closure DATA` writes the run's figures and one closure figure
    per skim (on a copy: the shipped run stays untouched)."""
    run = shutil.copytree(DATA / "run-tau", tmp_path / "run")
    result = CliRunner().invoke(
        app, ["plot", str(run), "--closure", str(DATA / "labelled.parquet")]
    )
    assert result.exit_code == 0, result.output
    closure_png = run / "plots" / f"closure_{SKIM}.png"
    assert closure_png.is_file()
    assert closure_png.stat().st_size > 10_000
    assert f"wrote {closure_png}" in result.output.replace("\n", "")
    assert (run / "plots" / "roc_by_version.png").is_file()
