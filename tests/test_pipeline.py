"""The Ray pipeline (orchestrate.py) end to end, on the shared session Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pipeline_fakes
import pytest
from pipeline_fakes import SKIM
from test_replay import fake_plan

from adaptive_bkg.stages import load_summary, summarize_records
from adaptive_bkg.stages.recorder import read_records, summaries_close


@pytest.fixture(scope="module")
def ray_fakes(ray_session):  # type: ignore[no-untyped-def]
    # Actors must unpickle the fake factory: ship the test module by value.
    ray_session.cloudpickle.register_pickle_by_value(pipeline_fakes)
    yield ray_session
    ray_session.cloudpickle.unregister_pickle_by_value(pipeline_fakes)


N_FAKE = 12000


@pytest.fixture(scope="module")
def fake_ray_run(ray_fakes, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One learning, filtering production on the fakes (2 generators, 2 simulators)."""
    from adaptive_bkg.pipeline.orchestrate import run_pipeline

    run_dir = tmp_path_factory.mktemp("fake") / "run"
    plan = fake_plan(run_dir, f"run.events={N_FAKE}", "ray.simulators=2", "ray.generators=2")
    return run_pipeline(plan, show_live=False), run_dir


def test_ray_pipeline_on_fake_stages(fake_ray_run) -> None:  # type: ignore[no-untyped-def]
    result, run_dir = fake_ray_run
    s = result.summary
    assert s.n_generated == N_FAKE
    table = read_records(run_dir)
    ids = table.column("event_id").to_numpy()
    assert table.num_rows == N_FAKE
    assert np.unique(ids).size == N_FAKE
    kept = table.column("kept").to_numpy()
    assert s.n_kept == int(kept.sum())
    assert s.n_generated == kept.sum() + (~kept).sum()
    assert summaries_close(load_summary(run_dir / "summary.json"), summarize_records(run_dir))
    extra = json.loads((run_dir / "summary.json").read_text())["run"]
    assert extra["n_duplicates"] == 0
    assert max(extra["model_versions"]) >= 1  # the learner published and the filter swapped
    assert (run_dir / "checkpoints" / "final.pt").exists()
    assert s.skims[SKIM].speedup > 1
    # Both generator actors contributed (worker field of the event id).
    assert np.unique((ids >> np.uint64(32)) & np.uint64(0xFFF)).tolist() == [0, 1]


FAKES_MAIN = (
    "import sys, ray, pipeline_fakes; "
    "ray.cloudpickle.register_pickle_by_value(pipeline_fakes); "
    "from adaptive_bkg.cli import main; sys.argv[0] = 'adaptive-bkg'; main()"
)


def test_sigterm_stops_cleanly(ray_session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A production joined to the session cluster (--address) is stopped by SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    paths = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]  # keep a checkout's
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, paths)),
        "RAY_AUTH_MODE": "disabled",
    }
    gcs = ray_session.get_runtime_context().gcs_address
    cmd = [
        sys.executable, "-c", FAKES_MAIN, "run", "--skim", SKIM, "--budget", "1000h",
        "--out", str(out), "--address", gcs, "--quiet",
        "--set", "run.stages=pipeline_fakes:FakeStages", "--set", "run.batch_size=1000",
        "--set", "run.metrics_every_s=0.2", "--set", "run.plots=false",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert "signal SIGTERM" in stdout.decode()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["stop_reason"] == "signal SIGTERM"
    table = read_records(out)  # every record flushed, shards complete
    assert table.num_rows == summary["n_generated"] > 0
    kept = table.column("kept").to_numpy()
    assert summary["n_kept"] == int(kept.sum())
    assert summaries_close(load_summary(out / "summary.json"), summarize_records(out))


def test_unbiased_closure_against_unfiltered_run(fake_ray_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Σ_{kept, pass} 1/p of a learning, filtering Ray run equals the pass count of the same
    events all simulated (a --policy none run with the same seed)."""
    from adaptive_bkg.pipeline.replay import run_serial

    filtered, run_dir = fake_ray_run
    n = N_FAKE
    # Same seed: the serial runner's generators make the same events as the Ray ones did.
    truth_run = run_serial(
        fake_plan(
            tmp_path / "t", f"run.events={n}", "policy.name=none", "ray.generators=2", learn=False
        ),
        False,
    )
    truth_table = read_records(tmp_path / "t")
    assert truth_table.column("kept").to_numpy().all()  # policy none simulates everything
    table = read_records(run_dir)
    # Same seed -> the very same events in both runs.
    np.testing.assert_array_equal(
        np.sort(table.column("event_id").to_numpy()),
        np.sort(truth_table.column("event_id").to_numpy()),
    )
    truth = float(truth_table.column(f"pass_{SKIM}").to_numpy().sum())
    kept = table.column("kept").to_numpy()
    passed = np.zeros(len(kept), dtype=bool)
    passed[kept] = table.column(f"pass_{SKIM}").to_numpy(zero_copy_only=False)[kept].astype(bool)
    p = table.column("p").to_numpy()[passed]
    estimate = float(np.sum(1.0 / p))
    assert estimate == pytest.approx(filtered.summary.skims[SKIM].sum_w)
    # Horvitz-Thompson variance, estimated from the sample: Σ (1 − p)/p² over kept passing.
    sigma = float(np.sqrt(np.sum((1.0 - p) / p**2)))
    assert sigma > 0  # the filter really discarded passing-like events
    assert truth_run.summary.skims[SKIM].n_pass_kept == int(truth) > 300
    print(f"closure: truth {truth:.0f}, estimate {estimate:.1f} ± {sigma:.1f}")
    # 4σ: a correct pipeline fails by chance with probability ~6e-5.
    assert abs(estimate - truth) < 4 * sigma
    assert filtered.summary.n_kept < 0.9 * n  # and it did filter


def test_cli_run_end_to_end(ray_session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`adaptive-bkg run --events 4000` with every real piece: Pythia, emulator, shipped ParT."""
    from typer.testing import CliRunner

    from adaptive_bkg.cli import app

    out = tmp_path / "run"
    args = ["run", "--events", "4000", "--out", str(out), "--quiet", "--set", "run.batch_size=1000"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "generated = " in result.output
    assert "[dstar-d0pi]" in result.output
    for name in pipeline_fakes.RUN_DIR_FILES:
        assert (out / name).exists(), name
    assert next((out / "records").glob("part-*.parquet"))
    summary = load_summary(out / "summary.json")
    assert summary.n_generated == 4000
    assert set(summary.skims) == {"dstar-d0pi"}
    assert summaries_close(summary, summarize_records(out))
    table = read_records(out)
    assert {"q_dstar-d0pi", "pass_dstar-d0pi", "weight", "model_version"} <= set(table.column_names)
