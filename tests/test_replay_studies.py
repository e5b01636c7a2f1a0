"""Replays as a study tool with the real model: deterministic, equal to a run, swept in parallel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from adaptive_bkg.cli import app
from adaptive_bkg.config import load_config
from adaptive_bkg.pipeline.replay import replay_run
from adaptive_bkg.stages.recorder import read_records

SKIM = "tau-generic"
N_EVENTS = 3000
SETTINGS = ["run.batch_size=1000", "run.plots=false", "learner.batch_size=64"]
SETTINGS += ["learner.publish_every_steps=2", "ray.generators=1", "generator.seed=5"]


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The events `run` generates with generator seed 5, labelled by the emulator."""
    out = tmp_path_factory.mktemp("studies") / "labelled.parquet"
    args = ["label", "-o", str(out), "-n", str(N_EVENTS), "--skims", f"{SKIM},dstar-d0pi"]
    invoke([*args, "--seed", "5"])
    return out


def decisions(run_dir: Path) -> pa.Table:
    table = read_records(run_dir, columns=["event_id", "model_version", "p", "kept", "weight"])
    return table.sort_by("event_id")


def test_two_replays_write_identical_records(labelled: Path, tmp_path: Path) -> None:
    """Learning on: the same file, config and seed give the very same records."""
    runs = []
    for name in ("a", "b"):
        cfg = load_config(None, [*SETTINGS, f"run.skims=[{SKIM}]", f"run.out={tmp_path / name}"])
        replay_run(cfg, labelled, learn=True, show_live=False)
        runs.append(read_records(tmp_path / name).sort_by("event_id"))
    assert runs[0].num_rows == N_EVENTS
    assert runs[0]["model_version"].to_numpy().max() >= 2  # it did learn
    assert runs[0].equals(runs[1])


def test_no_learn_replay_and_run_keep_the_same_events(
    ray_session,  # type: ignore[no-untyped-def]
    labelled: Path,
    tmp_path: Path,
) -> None:
    """`run --no-learn` on Ray and `replay --no-learn` of the same events and seed decide alike.

    With learning off the learner still refits the policy's scale k from probe events, here
    every 2 batches. A Ray run in lockstep (one batch in flight, waiting for each refit)
    adopts every refit at the same batch boundary as the serial replay, so every keep
    decision is identical. (Without lockstep Ray adopts a refit when it arrives, a batch or
    more later: measured p within 0.3 %.)"""
    common = ["--skim", SKIM, "--no-learn", "--quiet"]
    lockstep = [
        "run.wait_for_learner=true",
        "ray.max_in_flight=1",
        "run.learner_max_pending=1",
        "learner.publish_every_s=1e9",  # refits by batch count only, never by wall time
    ]
    for setting in [*SETTINGS, *lockstep]:
        common += ["--set", setting]
    invoke(["run", "--events", str(N_EVENTS), "--out", str(tmp_path / "run"), *common])
    invoke(["replay", str(labelled), "--out", str(tmp_path / "replay"), *common])
    ran, replayed = decisions(tmp_path / "run"), decisions(tmp_path / "replay")
    assert ran.num_rows == replayed.num_rows == N_EVENTS
    np.testing.assert_array_equal(ran["event_id"].to_numpy(), replayed["event_id"].to_numpy())
    np.testing.assert_array_equal(ran["kept"].to_numpy(), replayed["kept"].to_numpy())
    np.testing.assert_allclose(ran["p"].to_numpy(), replayed["p"].to_numpy(), rtol=1e-6)
    kept = ran["kept"].to_numpy()
    assert 0 < kept.sum() < N_EVENTS  # a real filter decided
    versions = ran["model_version"].to_numpy()
    assert len(np.unique(versions)) >= 2  # refits happened, at the same batches
    np.testing.assert_array_equal(versions, replayed["model_version"].to_numpy())


def test_sweep_runs_the_grid_and_matches_a_single_replay(labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", str(labelled), "--skim", SKIM, "--no-learn", "-o", str(out), "-j", "2"]
    args += ["--grid", "policy=identity,sqrt-optimal"]
    for setting in SETTINGS:
        args += ["--set", setting]
    output = invoke(args)
    assert "[2/2]" in output
    assert "identity" in output
    assert "sqrt-optimal" in output
    assert (out / "comparison.md").exists()
    # The point replayed in a worker process equals the same replay done here.
    cfg = load_config(
        None,
        [*SETTINGS, f"run.skims=[{SKIM}]", "policy.name=identity", f"run.out={tmp_path / 'one'}"],
    )
    replay_run(cfg, labelled, learn=False, show_live=False)
    assert decisions(out / "policy.name=identity").equals(decisions(tmp_path / "one"))
    identity, sqrt = (
        decisions(out / "policy.name=identity"),
        decisions(out / "policy.name=sqrt-optimal"),
    )
    assert not np.array_equal(identity["p"].to_numpy(), sqrt["p"].to_numpy())


def test_replay_without_labels_for_the_skim_is_one_line(labelled: Path, tmp_path: Path) -> None:
    args = ["replay", str(labelled), "--skim", "radiative", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "has no labels for skim(s) radiative" in result.output
    assert not (tmp_path / "r").exists()  # found before anything was written
