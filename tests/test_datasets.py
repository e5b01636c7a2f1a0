"""Labelled-events files: round trip, crash safety, kind checks, replay conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from adaptive_bkg.config import BackendConfig, GeneratorConfig, ReplayConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats import parquet_io
from adaptive_bkg.formats.events import write_events
from adaptive_bkg.formats.labelled import (
    LabelledEvents,
    LabelledWriter,
    iter_labelled,
    labelled_skims,
    read_labelled,
    write_labelled,
    write_replay_labels,
)
from adaptive_bkg.interfaces import SimResult
from adaptive_bkg.model.synthetic import synthetic_events
from adaptive_bkg.workflows.label import label_events, label_in_memory

SKIMS = ("tau-generic", "ks-rich", "dstar-d0pi")


def fake_result(n: int, event_id: np.ndarray, seed: int = 0) -> SimResult:
    rng = np.random.default_rng(seed)
    return SimResult(event_id.copy(), rng.random((n, len(SKIMS))) < 0.3, rng.exponential(0.1, n))


def test_round_trip_is_exact(tmp_path: Path) -> None:
    batch = synthetic_events(300, seed=3)
    result = fake_result(300, batch.event_id)
    path = tmp_path / "l.parquet"
    write_labelled(path, batch, result, SKIMS, row_group_size=128)
    back = read_labelled(path)
    assert back.batch.equals(batch)
    assert back.skims == SKIMS
    np.testing.assert_array_equal(back.labels, result.flags)
    np.testing.assert_array_equal(back.cost_slow_s, result.cost_s)
    # Streaming gives the same events in row groups of the requested size.
    parts = list(iter_labelled(path))
    assert [len(p) for p in parts] == [128, 128, 44]
    assert LabelledEvents.concat(parts).batch.equals(batch)
    assert labelled_skims(path) == SKIMS


def test_select_skims_reorders_and_rejects_unknown(tmp_path: Path) -> None:
    batch = synthetic_events(50, seed=4)
    result = fake_result(50, batch.event_id)
    path = tmp_path / "l.parquet"
    write_labelled(path, batch, result, SKIMS)
    sub = read_labelled(path, ["dstar-d0pi", "tau-generic"])
    np.testing.assert_array_equal(sub.labels, result.flags[:, [2, 0]])
    with pytest.raises(UserError, match="not labelled in this dataset"):
        read_labelled(path, ["radiative"])


def test_split_is_a_seeded_partition() -> None:
    batch = synthetic_events(200, seed=5)
    data = LabelledEvents(batch, np.zeros((200, 1), bool), ("a",), np.zeros(200))
    train, val = data.split(0.25, seed=1)
    assert (len(train), len(val)) == (150, 50)
    ids = np.concatenate([train.batch.event_id, val.batch.event_id])
    np.testing.assert_array_equal(np.sort(ids), np.sort(batch.event_id))
    again, _ = data.split(0.25, seed=1)
    assert again.batch.equals(train.batch)
    with pytest.raises(UserError, match="validation fraction"):
        data.split(1.0)


def test_mismatched_result_is_refused(tmp_path: Path) -> None:
    batch = synthetic_events(20, seed=6)
    result = fake_result(20, batch.event_id[::-1])
    with pytest.raises(ValueError, match="event ids do not match"):
        write_labelled(tmp_path / "x.parquet", batch, result, SKIMS)


def test_crashed_writer_leaves_readable_shards(tmp_path: Path) -> None:
    batch = synthetic_events(250, seed=7)
    result = fake_result(250, batch.event_id)
    path = tmp_path / "crash.parquet"
    writer = LabelledWriter(path, SKIMS, row_group_size=100)
    writer.write_batch(batch, result)  # two full row groups flushed, 50 events pending
    # No close(): as if the process died here. The flushed shards are complete files.
    shards = parquet_io.partial_dir(path)
    with pytest.raises(UserError, match="not closed cleanly"):
        read_labelled(path)
    recovered = read_labelled(shards)
    assert len(recovered) == 200
    assert recovered.batch.equals(batch.take(np.arange(200)))


def test_wrong_kind_is_one_line_error(tmp_path: Path) -> None:
    events = tmp_path / "events.parquet"
    write_events(events, synthetic_events(10, seed=8))
    with pytest.raises(UserError, match="expected an adaptive-bkg 'labelled-events' file"):
        read_labelled(events)
    with pytest.raises(UserError, match="no such file"):
        read_labelled(tmp_path / "missing.parquet")


def test_replay_backend_reads_converted_labels(tmp_path: Path) -> None:
    from adaptive_bkg.backends import make_backend

    batch = synthetic_events(120, seed=9)
    result = fake_result(120, batch.event_id)
    labelled = tmp_path / "l.parquet"
    write_labelled(labelled, batch, result, SKIMS)
    labels = write_replay_labels(labelled, tmp_path / "labels.parquet")
    backend = make_backend(
        BackendConfig(name="replay", replay=ReplayConfig(path=labels)), ["ks-rich"]
    )
    replayed = backend.simulate(batch.take(np.arange(10, 40)))
    np.testing.assert_array_equal(replayed.flags[:, 0], result.flags[10:40, 1])
    np.testing.assert_array_equal(replayed.cost_s, result.cost_s[10:40])


def test_label_events_with_pythia_and_emulator(tmp_path: Path) -> None:
    """Generate + emulate 300 events twice: same seeds give the same file; the stored labels
    are what the emulator says for those events."""
    from adaptive_bkg.backends import make_backend

    gen, backend_cfg = GeneratorConfig(seed=2), BackendConfig()
    skims = ["tau-generic", "low-mult-2trk"]
    path = tmp_path / "lab.parquet"
    summary = label_events(gen, backend_cfg, 300, path, skims, chunk=128)
    assert (summary.n_events, summary.skims) == (300, tuple(skims))
    data = read_labelled(path)
    again = label_in_memory(gen, backend_cfg, 300, skims, chunk=128)
    assert again.batch.equals(data.batch)
    np.testing.assert_array_equal(again.labels, data.labels)
    fresh = make_backend(backend_cfg, skims).simulate(data.batch)
    np.testing.assert_array_equal(fresh.flags, data.labels)
    np.testing.assert_allclose(np.asarray(summary.pass_rate), data.labels.mean(axis=0))
    # tau-generic passes ~20 % of generic events: 0 or all would mean a broken pipeline.
    assert 0.05 < data.labels[:, 0].mean() < 0.5
    assert pq.ParquetFile(path).metadata.num_rows == 300


def test_label_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from adaptive_bkg.cli import app

    runner = CliRunner()
    out = tmp_path / "lab.parquet"
    args = ["label", "--events", "60", "--seed", "4", "--skims", "tau-generic,ks-rich"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = read_labelled(out)
    assert len(data) == 60
    assert data.skims == ("tau-generic", "ks-rich")
    # Existing output without --force, and an unknown skim: one line, exit 2, nothing written.
    again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 2
    assert "exists" in again.output
    bad = runner.invoke(
        app, ["label", "--events", "5", "--skims", "nope", "--out", str(tmp_path / "b.parquet")]
    )
    assert bad.exit_code == 2
    assert "unknown skim 'nope'" in bad.output
    assert not (tmp_path / "b.parquet").exists()
