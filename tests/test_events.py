"""Event files: Parquet round trips, `RecordedSource`, crash safety and bad-file errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adaptive_bkg.errors import UserError
from adaptive_bkg.formats import parquet_io
from adaptive_bkg.formats.events import (
    BKG_TYPES,
    EVENT_SCHEMA,
    EVENTS_KIND,
    EventBatch,
    EventWriter,
    batch_to_table,
    iter_event_batches,
    read_events,
    write_events,
)
from adaptive_bkg.generators import RecordedSource, inspect_event_file


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory, small_events: EventBatch) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.parquet"
    write_events(path, small_events, row_group_size=300)  # 1400 -> 5 row groups
    return path


def test_round_trip_is_bit_exact(events_file: Path, small_events: EventBatch):
    assert read_events(events_file).equals(small_events)
    assert pq.ParquetFile(events_file).num_row_groups == 5
    groups = list(iter_event_batches(events_file))
    assert [len(g) for g in groups] == [300, 300, 300, 300, 200]
    assert EventBatch.concat(groups).equals(small_events)


@pytest.mark.parametrize("chunk", [1, 137, 300, 1000, 5000])
def test_recorded_source_rechunks_across_row_groups(
    events_file: Path, small_events: EventBatch, chunk: int
):
    source = RecordedSource(events_file)
    batches = []
    while len(batch := source.next_batch(chunk)):
        batches.append(batch)
    sizes = [len(b) for b in batches]
    assert all(size == chunk for size in sizes[:-1])
    assert 0 < sizes[-1] <= chunk
    assert EventBatch.concat(batches).equals(small_events)
    assert len(source.next_batch(chunk)) == 0  # stays exhausted


def test_recorded_source_loops(events_file: Path, small_events: EventBatch):
    from adaptive_bkg.interfaces import EventSource

    source = RecordedSource(events_file, loop=True)
    assert isinstance(source, EventSource)
    first = source.next_batch(1000)
    second = source.next_batch(1000)  # 400 from the end, then 600 from the start again
    assert first.equals(small_events.take(np.arange(1000)))
    expected = EventBatch.concat(
        [small_events.take(np.arange(1000, 1400)), small_events.take(np.arange(600))]
    )
    assert second.equals(expected)
    assert source.passes == 1


def test_recorded_source_on_empty_file_does_not_spin(tmp_path: Path):
    path = tmp_path / "empty.parquet"
    write_events(path, EventBatch.empty())
    assert len(RecordedSource(path, loop=True).next_batch(10)) == 0
    with pytest.raises(UserError, match=">= 0"):
        RecordedSource(path).next_batch(-1)


def test_crashed_writer_leaves_readable_shards(tmp_path: Path, small_events: EventBatch):
    path = tmp_path / "crash.parquet"
    writer = EventWriter(path, row_group_size=100)
    writer.write_batch(small_events.take(np.arange(250)))  # two row groups flushed, 50 pending
    # ... the process dies here: close() is never called.
    partial = parquet_io.partial_dir(path)
    assert sorted(p.name for p in partial.iterdir()) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    with pytest.raises(UserError, match="not closed cleanly"):
        read_events(path)
    recovered = read_events(partial)
    assert recovered.equals(small_events.take(np.arange(200)))
    assert RecordedSource(partial).next_batch(150).equals(small_events.take(np.arange(150)))
    assert inspect_event_file(partial).n_events == 200


def test_non_event_parquet_file(tmp_path: Path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    with pytest.raises(UserError, match="not an adaptive-bkg file"):
        read_events(path)
    with pytest.raises(UserError, match="not an adaptive-bkg file"):
        RecordedSource(path)


def test_other_kind_and_other_schema_version(tmp_path: Path, small_events: EventBatch):
    table = batch_to_table(small_events.take(np.arange(5)))
    meta = dict(EVENT_SCHEMA.metadata)
    other_version = tmp_path / "v99.parquet"
    pq.write_table(
        table.replace_schema_metadata({**meta, parquet_io.VERSION_KEY: b"99"}), other_version
    )
    with pytest.raises(UserError, match="schema version 99"):
        read_events(other_version)
    other_kind = tmp_path / "records.parquet"
    pq.write_table(
        table.replace_schema_metadata({**meta, parquet_io.KIND_KEY: b"records"}), other_kind
    )
    with pytest.raises(UserError, match=f"expected an adaptive-bkg '{EVENTS_KIND}' file"):
        read_events(other_kind)


def test_corrupt_and_truncated_files(tmp_path: Path, events_file: Path):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet at all")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(events_file.read_bytes()[: events_file.stat().st_size // 2])
    for path in (garbage, truncated):
        with pytest.raises(UserError, match="not a readable Parquet file"):
            read_events(path)
        with pytest.raises(UserError):
            inspect_event_file(path)
    with pytest.raises(UserError, match="no such file"):
        read_events(tmp_path / "missing.parquet")


def test_inspect_event_file(events_file: Path, small_events: EventBatch):
    info = inspect_event_file(events_file)
    assert info.n_events == 1400
    assert info.n_row_groups == 5
    assert info.n_files == 1
    assert sum(t.n_events for t in info.per_type) == 1400
    counts = dict(zip(*np.unique(small_events.bkg_type, return_counts=True), strict=True))
    assert {t.name: t.n_events for t in info.per_type} == {
        name: int(counts[code]) for code, name in enumerate(BKG_TYPES) if code in counts
    }
    assert info.particle_quantiles[0] == small_events.n_particles.min()
    assert info.particle_quantiles[-1] == small_events.n_particles.max()
    assert np.all(np.diff(info.charged_quantiles) >= 0)
