"""Faults caused on purpose (issue 10, docs/reliability.md): each actor kind killed by pid in the
middle of a Ray run, the driver SIGKILLed and resumed, the process group sent SIGTERM. After
each, the run ends with exit 0 and a summary, and `check` passes: ids unique, no repeated
physics, generated = kept + discarded, summary equal to the records' summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pipeline_fakes
import pytest
from pipeline_fakes import SKIM
from test_pipeline import FAKES_MAIN
from test_replay import fake_plan

from adaptive_bkg.workflows.check import check_runs

N_EVENTS = 30_000  # 30 batches of 1000, ~50 ms each on the wall clock: ~2-4 s of production
PACED = ("backend.clock=wall", "generator.seed=5", f"run.events={N_EVENTS}")


@pytest.fixture(scope="module")
def ray_fakes(ray_session):  # type: ignore[no-untyped-def]
    ray_session.cloudpickle.register_pickle_by_value(pipeline_fakes)
    yield ray_session
    ray_session.cloudpickle.unregister_pickle_by_value(pipeline_fakes)


def _n_record_files(run_dir: Path) -> int:
    return len(list((run_dir / "records").glob("part-*.parquet")))


def _kill_when_running(ray, run_dir: Path, kind: str, killed: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    """Wait until a few batches are recorded, then SIGKILL the actor `kind` by its pid."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _n_record_files(run_dir) < 4:
        time.sleep(0.02)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    name = next(n for n in names if n.startswith(kind))
    actor = ray.get_actor(name)
    pid = ray.get(actor.pid.remote())
    os.kill(pid, signal.SIGKILL)
    killed[kind] = pid


@pytest.mark.parametrize("kind", ["generator", "filter", "simulate", "learner", "recorder"])
def test_actor_death_survived(ray_fakes, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    from adaptive_bkg.pipeline.orchestrate import run_pipeline

    run_dir = tmp_path / "run"
    plan = fake_plan(run_dir, *PACED, "run.plots=false")
    killed: dict[str, int] = {}
    killer = threading.Thread(
        target=_kill_when_running, args=(ray_fakes, run_dir, kind, killed), daemon=True
    )
    killer.start()
    result = run_pipeline(plan, show_live=False)
    killer.join(timeout=5)
    assert kind in killed, "the actor was not killed"
    assert result.failure is None
    assert result.summary.n_generated == N_EVENTS  # every event recorded exactly once
    assert (run_dir / "summary.json").exists()
    report = check_runs([run_dir])
    assert report.ok, report.lines()
    if kind == "learner":  # production went on with the newest weights, and said so
        assert result.learner_failure is not None
        assert json.loads((run_dir / "summary.json").read_text())["run"]["learner_failure"]
    else:
        assert result.learner_failure is None
    if kind == "generator":  # the restarted generator made new events under new id fields
        from adaptive_bkg.formats.events import decode_event_ids
        from adaptive_bkg.stages.recorder import read_records

        ids = read_records(run_dir, ["event_id"]).column("event_id").to_numpy()
        assert len(set(decode_event_ids(ids)[1].tolist())) == 2  # incarnations 0 and 1


def _cli(out: Path, *args: str, gcs: str) -> list[str]:
    return [
        sys.executable, "-c", FAKES_MAIN, "run", *args, "--address", gcs, "--quiet",
        "--set", "run.metrics_every_s=0.2", "--set", "run.plots=false",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "RAY_AUTH_MODE": "disabled"}


def test_driver_sigkill_then_resume(ray_fakes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL the driver mid-run; `run --resume DIR` finishes the same run: every recorded row
    kept, no event counted twice, no physics repeated, the summary covers the whole run."""
    out = tmp_path / "run"
    gcs = ray_fakes.get_runtime_context().gcs_address
    start = _cli(
        out, "--skim", SKIM, "--events", str(N_EVENTS), "--out", str(out),
        "--set", "run.stages=pipeline_fakes:FakeStages", "--set", "run.batch_size=1000",
        "--set", "backend.clock=wall", "--set", "generator.seed=9", gcs=gcs,
    )  # fmt: skip
    proc = subprocess.Popen(start, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and _n_record_files(out) < 6:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "summary.json").exists()
    recorded_before = _n_record_files(out)
    report = check_runs([out])  # no summary yet: check says so and how to go on
    assert not report.ok
    assert "--resume" in report.problems[0]
    resumed = subprocess.run(
        _cli(out, "--resume", str(out), gcs=gcs),
        env=_env(), capture_output=True, timeout=180,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_generated"] == N_EVENTS
    assert summary["run"]["resumed_from"]["n_generated"] >= 1000 * (recorded_before - 1)
    assert summary["run"]["resumed_from"]["first_incarnation"] == 1
    report = check_runs([out])
    assert report.ok, report.lines()


def test_process_group_sigterm(tmp_path: Path) -> None:
    """What `timeout`, Slurm and HTCondor do: SIGTERM to the whole process group of a run with
    its own local Ray. The driver stops cleanly and writes the summary; `check` passes."""
    out = tmp_path / "run"
    cmd = [
        "timeout", "--preserve-status", "-s", "TERM", "--kill-after=120", "45",
        sys.executable, "-c", FAKES_MAIN, "run", "--skim", SKIM, "--budget", "1000h",
        "--out", str(out), "--quiet",
        "--set", "run.stages=pipeline_fakes:FakeStages", "--set", "run.batch_size=1000",
        "--set", "backend.clock=wall", "--set", "run.plots=false", "--set", "ray.num_cpus=2",
    ]  # fmt: skip
    # timeout sends SIGTERM to its own process group, which holds the driver: run it in a
    # group of its own so that this test process is not signalled too.
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0
    )
    # Stop it as soon as it produces (well before timeout's own 45 s).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and _n_record_files(out) < 3:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=150)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["stop_reason"] == "signal SIGTERM"
    assert summary["n_generated"] > 0
    report = check_runs([out])
    assert report.ok, report.lines()


def test_check_finds_repeated_physics_across_runs(tmp_path: Path) -> None:
    """Two productions with one explicit seed and one run number are the same physics (what
    --reproduce relies on): merged, `check` names the repeats. Another run number gives
    disjoint physics under the same seed, and `check` passes on the pair."""
    from typer.testing import CliRunner

    from adaptive_bkg.cli import app
    from adaptive_bkg.pipeline.replay import run_serial

    def run(name: str, *overrides: str) -> Path:
        out = tmp_path / name
        run_serial(fake_plan(out, "run.events=3000", "run.plots=false", *overrides), False)
        return out

    first = run("first", "generator.seed=3")
    repeat = run("repeat", "generator.seed=3")
    other_run = run("other-run", "generator.seed=3", "run.run_number=1")
    report = check_runs([first, repeat])
    assert not report.ok
    assert any("3,000 events with repeated physics" in p for p in report.problems)
    assert any("3,000 event ids recorded twice" in p for p in report.problems)
    assert check_runs([first, other_run]).ok
    runner = CliRunner()
    assert runner.invoke(app, ["check", str(first), str(other_run)]).exit_code == 0
    failed = runner.invoke(app, ["check", str(first), str(repeat)])
    assert failed.exit_code == 1
    assert "FAILED: 3,000 events with repeated physics" in failed.output
    not_a_run = runner.invoke(app, ["check", str(tmp_path)])
    assert not_a_run.exit_code == 2
    assert "is not a run directory" in not_a_run.stderr


def test_a_batch_failing_for_good_stops_the_run_cleanly(ray_fakes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A backend that keeps failing (e.g. the external command after its retries) ends the run
    with every recorded row kept, a summary, a passing check and a message naming the error."""
    from adaptive_bkg.pipeline.orchestrate import run_pipeline

    run_dir = tmp_path / "run"
    plan = fake_plan(run_dir, *PACED, "run.plots=false", "backend.name=fail-from-5")
    result = run_pipeline(plan, show_live=False)
    assert result.failure is not None
    assert "fake simulation failed for good" in result.failure
    assert 5000 <= result.summary.n_generated < N_EVENTS
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["failure"] == result.failure
    assert check_runs([run_dir]).ok
