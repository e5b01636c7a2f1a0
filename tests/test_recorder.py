"""RecorderStage: dedup, reconciliation, restart, and summaries recomputed from records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from pipeline_fakes import SKIM, FakeBackend, FakeScorer, FakeSource
from test_stages import fast_cost, snapshot

from adaptive_bkg.errors import UserError
from adaptive_bkg.stages import (
    FilterStage,
    GeneratorStage,
    RecordBatch,
    RecorderStage,
    SimulateStage,
)
from adaptive_bkg.stages.recorder import (
    EventIdSet,
    read_records,
    summaries_close,
    summarize_records,
)

SKIMS = (SKIM,)


def record_batches(n_batches: int, size: int = 1500, seed: int = 1) -> list[RecordBatch]:
    filt = FilterStage(FakeScorer(), SKIMS, seed=seed, nn_cost=fast_cost)
    filt.swap(snapshot(0))
    gen = GeneratorStage(FakeSource(seed=seed), fast_cost=fast_cost)
    sim = SimulateStage(FakeBackend(), SKIMS)
    return [sim.simulate(filt.filter(gen.next_batch(size)))[0] for _ in range(n_batches)]


def test_event_id_set_matches_python_set() -> None:
    rng = np.random.default_rng(0)
    ids_set: set[int] = set()
    compact = EventIdSet()
    for _ in range(50):
        start = int(rng.integers(0, 5000))
        chunk = np.arange(start, start + int(rng.integers(1, 300)), dtype=np.uint64)
        chunk = chunk[rng.random(chunk.size) < 0.9]  # holes
        compact.add(chunk)
        ids_set.update(chunk.tolist())
    probe = np.arange(0, 6000, dtype=np.uint64)
    expected = np.array([i in ids_set for i in probe.tolist()])
    np.testing.assert_array_equal(compact.contains(probe), expected)
    assert len(compact) == len(ids_set)
    assert not EventIdSet().contains(probe).any()


def test_records_columns_dedup_and_reconcile(tmp_path: Path) -> None:
    batches = record_batches(4)
    rec = RecorderStage(tmp_path / "records", SKIMS, compact_rows=2000)
    for b in batches:
        rec.record(b)
    # At-least-once: a whole batch and a half batch delivered again are dropped.
    rec.record(batches[1])
    half = np.arange(700)
    rec.record(
        RecordBatch(
            batches[2].decisions.take(half), batches[2].passed[half], batches[2].cost_slow_s[half]
        )
    )
    status = rec.close()
    assert status.n_duplicates == 1500 + 700
    assert status.n_generated == 4 * 1500
    table = read_records(tmp_path)
    assert table.num_rows == status.n_generated
    assert len(set(table.column("event_id").to_pylist())) == table.num_rows
    kept = table.column("kept").to_numpy()
    # Reconciliation: generated = kept + discarded.
    assert status.n_kept == int(kept.sum())
    assert status.n_generated == kept.sum() + (~kept).sum()
    p, w = table.column("p").to_numpy(), table.column("weight").to_numpy()
    np.testing.assert_allclose(w[kept], 1.0 / p[kept])
    assert np.all(w[~kept] == 0)
    assert table.column(f"pass_{SKIM}").null_count == int((~kept).sum())
    assert np.all(table.column("cost_slow_s").to_numpy()[~kept] == 0)
    np.testing.assert_array_equal(
        table.column("q").to_numpy(), table.column(f"q_{SKIM}").to_numpy()
    )
    # The summary recomputed from the files equals the running one (sums in another order:
    # relative 1e-9 is far above float64 rounding of ~1e4 terms and far below any real effect).
    assert summaries_close(summarize_records(tmp_path), status.summary)
    assert status.summary.skims[SKIM].n_eff > 0


def test_restarted_recorder_resumes(tmp_path: Path) -> None:
    batches = record_batches(3, seed=2)
    first = RecorderStage(tmp_path / "records", SKIMS)
    first.record(batches[0])  # durable at once: a crash now (no close) loses nothing
    second = RecorderStage(tmp_path / "records", SKIMS)
    second.record(batches[0])  # redelivered after the restart: all duplicates
    second.record(batches[1])
    names = sorted(p.name for p in (tmp_path / "records").glob("*.parquet"))
    assert names == ["part-000000.parquet", "part-000001.parquet"]
    status = second.close()  # merges the single-batch files
    assert status.n_generated == 3000
    assert status.n_duplicates == 1500
    names = sorted(p.name for p in (tmp_path / "records").glob("*.parquet"))
    assert names == ["part-000000-000001.parquet"]
    assert pc.count_distinct(read_records(tmp_path).column("event_id")).as_py() == 3000
    with pytest.raises(UserError, match="other skims"):
        RecorderStage(tmp_path / "records", ("other",))


def test_records_survive_a_crash_in_the_middle_of_a_merge(tmp_path: Path) -> None:
    """A crash after the merged file is in place but before its members are deleted (or while
    a file is half written) double-counts nothing and loses nothing."""
    batches = record_batches(3, seed=3)
    records = tmp_path / "records"
    rec = RecorderStage(records, SKIMS, compact_rows=10**9)
    for b in batches[:2]:
        rec.record(b)
    members = sorted(records.glob("part-*.parquet"))
    saved = [m.read_bytes() for m in members]
    rec.compact()
    for member, data in zip(members, saved, strict=True):
        member.write_bytes(data)  # as if the crash came before the deletions
    (records / "part-000009.parquet.tmp").write_bytes(b"half a file")
    assert pc.count_distinct(read_records(tmp_path).column("event_id")).as_py() == 3000
    assert read_records(tmp_path).num_rows == 3000
    resumed = RecorderStage(records, SKIMS)
    assert resumed.status().n_generated == 3000
    assert sorted(p.name for p in records.iterdir()) == ["part-000000-000001.parquet"]
    resumed.record(batches[2])
    assert resumed.close().n_generated == 4500
    assert summaries_close(summarize_records(tmp_path), resumed.status().summary)
