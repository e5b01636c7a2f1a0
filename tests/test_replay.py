"""The serial (no Ray) pipeline on fake stages: run directory, reconciliation, summaries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pipeline_fakes
import pytest
from pipeline_fakes import SKIM, FakeStages

from adaptive_bkg.config import load_config
from adaptive_bkg.errors import UserError
from adaptive_bkg.pipeline.budget import parse_budget
from adaptive_bkg.pipeline.live import read_metrics
from adaptive_bkg.pipeline.plan import plan_run
from adaptive_bkg.pipeline.replay import run_serial
from adaptive_bkg.stages import load_summary, summarize_records
from adaptive_bkg.stages.recorder import read_records, summaries_close


def fake_plan(out: Path, *overrides: str, learn: bool = True):  # type: ignore[no-untyped-def]
    cfg = load_config(
        None,
        [
            f"run.skims=[{SKIM}]",
            f"run.out={out}",
            "run.batch_size=1000",
            "run.metrics_every_s=0.001",
            "learner.batch_size=64",
            "learner.publish_every_steps=3",
            "generator.seed=1",
            *overrides,
        ],
    )
    return plan_run(cfg, learn=learn, factory=FakeStages(cfg, (SKIM,), learn))


def test_serial_run_writes_a_consistent_run_directory(tmp_path: Path) -> None:
    result = run_serial(fake_plan(tmp_path / "run", "run.events=12500"), show_live=False)
    run_dir = tmp_path / "run"
    for name in pipeline_fakes.RUN_DIR_FILES:
        assert (run_dir / name).exists(), name
    s = result.summary
    assert s.n_generated == 12500  # exactly --events, the last batch is short
    table = read_records(run_dir)
    kept = table.column("kept").to_numpy()
    assert table.num_rows == s.n_generated == int(kept.sum()) + int((~kept).sum())
    assert s.n_kept == int(kept.sum())
    # summary.json equals the summary recomputed from the records alone.
    assert summaries_close(load_summary(run_dir / "summary.json"), summarize_records(run_dir))
    versions = table.column("model_version").to_numpy()
    assert versions.min() == 0
    assert versions.max() >= 2
    assert np.all(np.diff(versions) >= 0)
    assert result.n_versions == len(np.unique(versions))
    extra = json.loads((run_dir / "summary.json").read_text())["run"]
    assert extra["stop_reason"].startswith("events")
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert metrics
    assert metrics[-1].n_generated == s.n_generated
    assert s.skims[SKIM].speedup > 1  # the fake classifier is good: the filter pays off


def test_budget_and_target_neff_stop(tmp_path: Path) -> None:
    # Virtual clock: each event costs 2 ms + 0.1 s·p on average; 60 s of budget is spent after
    # a few thousand events, well before the 10^6 events limit.
    result = run_serial(fake_plan(tmp_path / "a", "run.budget=60s", "run.events=1000000"), False)
    assert result.stop_reason.startswith("budget")
    assert 60 <= result.summary.total_cost_s < 60 + 1000 * 0.2  # overshoot: at most a batch
    result = run_serial(
        fake_plan(tmp_path / "b", "run.target_neff=200", "run.events=1000000"), False
    )
    assert result.stop_reason.startswith("target")
    assert result.summary.skims[SKIM].n_eff >= 200


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run.budget=12 parsecs", "bad budget"),
        ("policy.name=greedy", "unknown policy|greedy"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        fake_plan(tmp_path / "x", "run.events=10", override)
    assert not (tmp_path / "x").exists()  # nothing written


def test_existing_run_directory_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="already exists"):
        fake_plan(tmp_path / "old", "run.events=10")
    assert (tmp_path / "old" / "summary.json").read_text() == "{}"


def test_no_stop_condition_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no stop condition"):
        fake_plan(tmp_path / "x")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400.0), ("90m", 5400.0), ("30s", 30.0), ("1.5d", 129600.0), ("45", 45.0)],
)
def test_parse_budget(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "24x", "-3h", "0s", "1e3h", "24 hours", "nan"])
def test_parse_budget_rejects(text: str) -> None:
    with pytest.raises(UserError, match="bad budget"):
        parse_budget(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "3 fortnights"], "bad budget '3 fortnights'"),
        (["--skim", "no-such-skim", "--events", "10"], "unknown skim 'no-such-skim'"),
        (["--policy", "greedy", "--events", "10"], "greedy"),
        (["--skim", "radiative", "--skims", "a,b", "--events", "10"], "either --skim or --skims"),
        (["--events", "10", "--set", "model.checkpoint=/nonexistent.pt"], "not found"),
        (["--skim", "radiative"], "no stop condition"),
    ],
)
def test_cli_run_bad_inputs_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from adaptive_bkg.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists()  # validated before anything was written


def test_file_source_rechunks_labelled_and_event_files(tmp_path: Path) -> None:
    from pipeline_fakes import FakeBackend, FakeSource

    from adaptive_bkg.formats.events import write_events
    from adaptive_bkg.formats.labelled import write_labelled
    from adaptive_bkg.generators.recorded import FileSource

    events = FakeSource(seed=3).next_batch(2500)
    write_labelled(tmp_path / "l.parquet", events, FakeBackend().simulate(events), (SKIM,), 1000)
    write_events(tmp_path / "e.parquet", events, 1000)
    for name in ("l.parquet", "e.parquet"):
        source = FileSource(tmp_path / name)
        sizes, ids = [], []
        while len(batch := source.next_batch(700)):
            sizes.append(len(batch))
            ids.append(batch.event_id)
        assert sizes == [700, 700, 700, 400]
        np.testing.assert_array_equal(np.concatenate(ids), events.event_id)
    (tmp_path / "r.parquet").write_bytes((tmp_path / "e.parquet").read_bytes()[:100])
    with pytest.raises(UserError):
        FileSource(tmp_path / "r.parquet")


def test_live_view_renders_and_logs(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from adaptive_bkg.pipeline.live import LiveView, metrics_record, render
    from adaptive_bkg.stats.metrics import RunAccumulator

    acc = RunAccumulator((SKIM,))
    acc.add([True, False, True], [0.5, 0.1, 1.0], [[True], [False], [False]], 0.001, 0.001, 0.1)
    record = metrics_record(acc.summary(), 3.0, 3.0, (1.0, 2.0, 3.0), 4, 7, {SKIM: 0.8})
    view = LiveView(tmp_path / "metrics.jsonl", "t", show=False)
    view.update(record)
    view.update(record)
    assert read_metrics(tmp_path / "metrics.jsonl") == [record, record]  # lossless round trip
    console = Console(file=io.StringIO(), width=120)
    console.print(render(record))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"[{SKIM}] online AUC" in text
    assert "0.800" in text
    assert "speedup" in text


def test_cli_replay_of_a_labelled_file(tmp_path: Path, small_events) -> None:  # type: ignore[no-untyped-def]
    """`adaptive-bkg replay` with the real model and the replay backend on recorded labels."""
    from typer.testing import CliRunner

    from adaptive_bkg.backends.emulator import EmulatorBackend
    from adaptive_bkg.cli import app
    from adaptive_bkg.config import BackendConfig
    from adaptive_bkg.formats.labelled import write_labelled

    events = small_events
    skims = ("tau-generic", "dstar-d0pi")
    result = EmulatorBackend(BackendConfig(), skims).simulate(events)
    write_labelled(tmp_path / "labelled.parquet", events, result, skims)
    out = tmp_path / "run"
    args = ["replay", str(tmp_path / "labelled.parquet"), "--skim", "tau-generic"]
    args += ["--out", str(out), "--quiet", "--set", "run.batch_size=500"]
    args += ["--set", "run.plots=false"]
    cli = CliRunner().invoke(app, args)
    assert cli.exit_code == 0, cli.output
    assert "stopped (source exhausted)" in cli.output
    table = read_records(out)
    assert table.num_rows == len(events)  # every recorded event replayed once
    kept = table.column("kept").to_numpy()
    # Labels come from the file: the kept events' flags equal the recorded ones.
    order = np.searchsorted(events.event_id, table.column("event_id").to_numpy())
    recorded = result.flags[order, 0]
    replayed = table.column("pass_tau-generic").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(replayed[kept].astype(bool), recorded[kept])
    assert summaries_close(load_summary(out / "summary.json"), summarize_records(out))
