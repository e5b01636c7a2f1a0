"""What a user sees during a run: progress toward the stop, ETA, plain log lines, notices."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_replay import fake_plan

from adaptive_bkg.config import load_config
from adaptive_bkg.pipeline.budget import Progress, StopRule
from adaptive_bkg.pipeline.progress import start_line, toward_stop
from adaptive_bkg.pipeline.replay import run_serial
from adaptive_bkg.pipeline.runbook import RunBook


def test_toward_the_stop_met_first_with_eta_from_the_rate() -> None:
    rule = StopRule(budget_s=3600.0, events=10_000, target_neff=500.0)
    # 40 % of the budget, 25 % of the events, 10 % of N_eff: the budget ends the run first.
    toward = toward_stop(rule, Progress(2500, 1440.0, 50.0), wall_s=30.0, origin=(10.0, 0.2))
    assert toward.fraction == pytest.approx(0.4)
    assert "budget" in toward.what
    # 0.2 of the run in the 20 s since the origin: 0.6 to go takes 60 s.
    assert toward.eta_s == pytest.approx(60.0)
    assert "ETA 60 s" in toward.describe()
    only_neff = toward_stop(StopRule(target_neff=100.0), Progress(1, 1.0, 250.0), 5.0)
    assert only_neff.fraction == 1.0
    assert only_neff.eta_s == 0.0
    unknown = toward_stop(StopRule(events=100), Progress(0, 0.0, 0.0), 1.0)
    assert math.isnan(unknown.eta_s)
    assert "ETA unknown" in unknown.describe()


def test_first_line_says_what_starts() -> None:
    cfg = load_config(None, ["run.skims=[tau-generic]", "run.budget=2h", "run.events=5000"])
    line = start_line(cfg, learn=False, driver="starting Ray")
    assert "tau-generic" in line
    assert "model fixed" in line
    assert "budget 2.0 h or 5,000 events" in line
    assert line.endswith("starting Ray…")


def test_plain_log_lines_when_stdout_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = fake_plan(tmp_path / "run", "run.events=5000", "run.metrics_every_s=0.001")
    run_serial(plan, show_live=None)  # the CLI default; pytest's stdout is not a terminal
    lines = [line for line in capsys.readouterr().out.splitlines() if " generated, " in line]
    assert len(lines) >= 3  # one per batch at this metrics period, plus the final one
    assert "5,000 generated" in lines[-1]
    assert "100 % (5,000 of 5,000 events)" in lines[-1]
    assert "[fake-skim] N_eff" in lines[-1]
    assert "ETA" in lines[1]


def test_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_serial(fake_plan(tmp_path / "run", "run.events=2000"), show_live=False)
    assert capsys.readouterr().out == ""


def test_batches_not_trained_on_are_said_when_it_happens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = RunBook(fake_plan(tmp_path / "run", "run.events=100"), show_live=False)
    book.n_dropped_for_learner = 3
    book.log()
    book.log()  # said again only after 5 metrics periods, and only if more were dropped
    err = capsys.readouterr().err
    assert err.count("learner busy: 3 batch(es) so far recorded but not trained on") == 1
