"""Recorder stage: one Parquet row per GENERATED event, deduplicated, plus running statistics.

Columns of `records/part-*.parquet` (kind "run-records", schema version 2):

    event_id uint64, bkg_type int8, model_version int32,
    physics_hash uint64 (events.physics_hashes: equal hashes = the same physics, `check`),
    q_<skim> float64 per skim (calibrated pass probability from the deciding model),
    q float64 = max over skims of q_<skim> (the skim-combined score; p = max_s p_s likewise),
    p float64 (keep probability), kept bool, weight float64 (1/p if kept else 0),
    cost_fast_s, cost_nn_s, cost_slow_s float64 (cost_slow_s = 0 if not kept),
    pass_<skim> bool per skim (null when not kept: the label is unknown).

Durability: every batch is written as its own complete file (`part-NNNNNN.parquet`, fsynced,
renamed into place) before `record` returns, so a crash of the recorder, the driver or the
machine loses no recorded row. Every `compact_rows` rows the single-batch files are merged into
one `part-AAAAAA-BBBBBB.parquet` (covering shards A..B), written durably before the members
are deleted; `record_files` ignores members a merged file covers, so a crash between the two
steps double-counts nothing.

Delivery between stages is at-least-once (Ray retries), so rows are deduplicated by event_id
(a compact interval set: ids are consecutive within a generator batch). The recorder can be
restarted on an existing records folder: it re-reads the ids and sums already written and
continues the shard numbering, so counts still reconcile (generated = kept + discarded).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from adaptive_bkg.errors import UserError
from adaptive_bkg.formats import parquet_io
from adaptive_bkg.stages.types import RecordBatch
from adaptive_bkg.stats.metrics import RunAccumulator, RunSummary, SkimSummary

RECORDS_KIND = "run-records"
RECORDS_SCHEMA_VERSION = 2
RECORDS_DIR = "records"
SUMMARY_FILE = "summary.json"


def records_schema(skims: tuple[str, ...]) -> pa.Schema:
    fields = [
        pa.field("event_id", pa.uint64(), nullable=False),
        pa.field("bkg_type", pa.int8(), nullable=False),
        pa.field("model_version", pa.int32(), nullable=False),
        pa.field("physics_hash", pa.uint64(), nullable=False),
        *[pa.field(f"q_{s}", pa.float64(), nullable=False) for s in skims],
        pa.field("q", pa.float64(), nullable=False),
        pa.field("p", pa.float64(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("weight", pa.float64(), nullable=False),
        pa.field("cost_fast_s", pa.float64(), nullable=False),
        pa.field("cost_nn_s", pa.float64(), nullable=False),
        pa.field("cost_slow_s", pa.float64(), nullable=False),
        *[pa.field(f"pass_{s}", pa.bool_(), nullable=True) for s in skims],
    ]
    return parquet_io.with_kind(
        pa.schema(fields), RECORDS_KIND, RECORDS_SCHEMA_VERSION, {"skims": ",".join(skims)}
    )


def records_to_table(records: RecordBatch, schema: pa.Schema) -> pa.Table:
    d = records.decisions
    kept = d.kept
    columns: dict[str, pa.Array] = {
        "event_id": pa.array(d.event_id, pa.uint64()),
        "bkg_type": pa.array(d.bkg_type, pa.int8()),
        "model_version": pa.array(d.model_version, pa.int32()),
        "physics_hash": pa.array(d.physics_hash, pa.uint64()),
    }
    for k, skim in enumerate(d.skims):
        columns[f"q_{skim}"] = pa.array(d.q[:, k], pa.float64())
    columns["q"] = pa.array(d.q.max(axis=1) if d.q.shape[1] else np.zeros(len(d)), pa.float64())
    columns["p"] = pa.array(d.p, pa.float64())
    columns["kept"] = pa.array(kept, pa.bool_())
    # 1/p only where kept: hard-cut has p = 0 for discarded events.
    weight = np.divide(1.0, d.p, out=np.zeros_like(d.p), where=kept)
    columns["weight"] = pa.array(weight, pa.float64())
    columns["cost_fast_s"] = pa.array(d.cost_fast_s, pa.float64())
    columns["cost_nn_s"] = pa.array(d.cost_nn_s, pa.float64())
    columns["cost_slow_s"] = pa.array(records.cost_slow_s, pa.float64())
    for k, skim in enumerate(d.skims):
        columns[f"pass_{skim}"] = pa.array(records.passed[:, k], pa.bool_(), mask=~kept)
    return pa.Table.from_pydict(columns, schema=schema)


class EventIdSet:
    """Set of uint64 ids stored as sorted, disjoint half-open intervals [start, end)."""

    def __init__(self) -> None:
        self.starts = np.zeros(0, dtype=np.uint64)
        self.ends = np.zeros(0, dtype=np.uint64)

    def __len__(self) -> int:
        return int((self.ends - self.starts).sum())

    def contains(self, ids: NDArray[np.uint64]) -> NDArray[np.bool_]:
        ids = np.asarray(ids, dtype=np.uint64)
        idx = np.searchsorted(self.starts, ids, side="right") - 1
        safe = np.maximum(idx, 0)
        return np.asarray((idx >= 0) & (ids < self.ends[safe] if self.ends.size else False))

    def add(self, ids: NDArray[np.uint64]) -> None:
        ids = np.unique(np.asarray(ids, dtype=np.uint64))
        if ids.size == 0:
            return
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        starts = np.concatenate([self.starts, ids[np.r_[0, breaks]]])
        ends = np.concatenate([self.ends, ids[np.r_[breaks - 1, ids.size - 1]] + np.uint64(1)])
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
        # Coalesce overlapping or touching intervals: a new interval opens where its start
        # exceeds every end before it.
        running_end = np.maximum.accumulate(ends)
        opens = np.r_[True, starts[1:] > running_end[:-1]]
        group = np.cumsum(opens) - 1
        self.starts = starts[opens]
        self.ends = np.zeros(self.starts.size, dtype=np.uint64)
        np.maximum.at(self.ends, group, ends)


@dataclass(frozen=True)
class RecorderStatus:
    """Running totals after a `record` call (small: travels to the driver every batch)."""

    n_generated: int
    n_kept: int
    n_duplicates: int
    n_batches: int
    total_cost_s: float
    summary: RunSummary


def _pass_flags(table: pa.Table, skims: tuple[str, ...]) -> NDArray[np.bool_]:
    flags = np.zeros((table.num_rows, len(skims)), dtype=np.bool_)
    for k, skim in enumerate(skims):
        flags[:, k] = pc.fill_null(table.column(f"pass_{skim}"), False).to_numpy()
    return flags


def _add_table(acc: RunAccumulator, table: pa.Table) -> None:
    acc.add(
        kept=table.column("kept").to_numpy(),
        p=table.column("p").to_numpy(),
        flags=_pass_flags(table, acc.skims),
        cost_fast=table.column("cost_fast_s").to_numpy(),
        cost_nn=table.column("cost_nn_s").to_numpy(),
        cost_slow=table.column("cost_slow_s").to_numpy(),
    )


def _shard_range(path: Path) -> tuple[int, int]:
    """`part-000007.parquet` -> (7, 7); `part-000000-000049.parquet` -> (0, 49)."""
    numbers = [int(x) for x in path.name.removesuffix(".parquet").split("-")[1:]]
    return numbers[0], numbers[-1]


def record_files(records_dir: Path) -> list[Path]:
    """The record files of a run, without single-batch shards that a merged file covers."""
    files = []
    for path in sorted(Path(records_dir).glob("part-*.parquet")):
        try:
            files.append((_shard_range(path), path))
        except ValueError:
            raise UserError(f"{path}: not a record file name (part-N or part-A-B)") from None
    merged = [r for r, _ in files if r[0] != r[1]]
    return [p for (a, b), p in files if a != b or not any(lo <= a <= hi for lo, hi in merged)]


def _checked_record_files(records_dir: Path) -> list[Path]:
    files = record_files(records_dir)
    if not files:
        raise UserError(f"{records_dir}: no records (part-*.parquet); is this a run directory?")
    return files


def records_skims(records_dir: Path) -> tuple[str, ...]:
    files = parquet_io.checked_files(
        _checked_record_files(records_dir)[:1], RECORDS_KIND, RECORDS_SCHEMA_VERSION
    )
    meta = files[0][1].schema_arrow.metadata or {}
    raw = meta.get(b"adaptive_bkg.skims", b"").decode()
    return tuple(s for s in raw.split(",") if s)


class RecorderStage:
    """Writes records durably per batch, deduplicates, keeps the RunAccumulator."""

    def __init__(
        self, records_dir: Path, skims: tuple[str, ...], compact_rows: int = 50_000
    ) -> None:
        self.records_dir = Path(records_dir)
        self.skims = tuple(skims)
        self.schema = records_schema(self.skims)
        self.accumulator = RunAccumulator(self.skims)
        self.seen = EventIdSet()
        self.n_duplicates = 0
        self.n_batches = 0
        self.compact_rows = compact_rows
        try:
            self.records_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write to {self.records_dir}: {exc.strerror}") from None
        self._singles: list[tuple[int, int]] = []  # (shard number, rows) not merged yet
        self._next_shard = self._resume()

    def _resume(self) -> int:
        """Re-read the records already in the folder (a restarted recorder, a resumed run),
        finish an interrupted merge; returns the next shard number."""
        for tmp in self.records_dir.glob("*.tmp"):
            tmp.unlink()  # an interrupted write: its rows were never acknowledged
        live = set(record_files(self.records_dir))
        for path in self.records_dir.glob("part-*.parquet"):
            if path not in live:
                path.unlink()  # a member of a merged file whose deletion was interrupted
        if not live:
            return 0
        if records_skims(self.records_dir) != self.skims:
            raise UserError(f"{self.records_dir} holds records of other skims; use a new --out")
        for path, parquet in parquet_io.checked_files(
            sorted(live), RECORDS_KIND, RECORDS_SCHEMA_VERSION
        ):
            first, last = _shard_range(path)
            if first == last:
                self._singles.append((first, parquet.metadata.num_rows))
            for i in range(parquet.num_row_groups):
                table = parquet.read_row_group(i)
                self.seen.add(table.column("event_id").to_numpy())
                _add_table(self.accumulator, table)
        return max(_shard_range(p)[1] for p in live) + 1

    def record(self, records: RecordBatch) -> RecorderStatus:
        ids = records.decisions.event_id
        # Unique within the batch, and not written before.
        _, first = np.unique(ids, return_index=True)
        fresh = np.zeros(len(ids), dtype=np.bool_)
        fresh[first] = True
        fresh &= ~self.seen.contains(ids)
        self.n_duplicates += int((~fresh).sum())
        self.n_batches += 1
        if fresh.any():
            idx = np.flatnonzero(fresh)
            if idx.size < len(ids):
                d = records.decisions.take(idx)
                records = RecordBatch(d, records.passed[idx], records.cost_slow_s[idx])
            self._write(records_to_table(records, self.schema))
            self.seen.add(records.decisions.event_id)
            d = records.decisions
            self.accumulator.add(
                d.kept, d.p, records.passed, d.cost_fast_s, d.cost_nn_s, records.cost_slow_s
            )
        return self.status()

    def _write(self, table: pa.Table) -> None:
        number = self._next_shard
        parquet_io.write_durable(table, self.records_dir / f"part-{number:06d}.parquet")
        self._next_shard += 1
        self._singles.append((number, table.num_rows))
        if sum(rows for _, rows in self._singles) >= self.compact_rows:
            self.compact()

    def compact(self) -> None:
        """Merge the single-batch files written since the last merge into one file."""
        if len(self._singles) < 2:
            return
        first, last = self._singles[0][0], self._singles[-1][0]
        members = [self.records_dir / f"part-{n:06d}.parquet" for n, _ in self._singles]
        table = parquet_io.read_table(members, RECORDS_KIND, RECORDS_SCHEMA_VERSION)
        merged = self.records_dir / f"part-{first:06d}-{last:06d}.parquet"
        parquet_io.write_durable(table, merged, row_group_size=10_000)
        for member in members:
            member.unlink()
        self._singles = []

    def status(self) -> RecorderStatus:
        acc = self.accumulator
        return RecorderStatus(
            n_generated=acc.n_generated,
            n_kept=acc.n_kept,
            n_duplicates=self.n_duplicates,
            n_batches=self.n_batches,
            total_cost_s=acc.total_cost_s,
            summary=acc.summary(),
        )

    def close(self) -> RecorderStatus:
        self.compact()
        return self.status()


# ---------------------------------------------------------------------------------------------
def existing_run_dir(run_dir: Path) -> Path:
    """A finished or running run directory, else a one-line error naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory; give a run directory (runs/<name>)")
    if not (run_dir / "records").is_dir() or not any((run_dir / "records").glob("part-*.parquet")):
        raise UserError(
            f"{run_dir} is not a run directory (no records/part-*.parquet): give one written by "
            "adaptive-bkg run or replay"
        )
    return run_dir


def summarize_records(run_dir: Path) -> RunSummary:
    """Recompute the run summary from `run_dir/records` alone (must equal summary.json)."""
    records_dir = Path(run_dir) / RECORDS_DIR
    acc = RunAccumulator(records_skims(records_dir))
    for table in parquet_io.iter_row_groups(
        record_files(records_dir), RECORDS_KIND, RECORDS_SCHEMA_VERSION
    ):
        _add_table(acc, table)
    return acc.summary()


def summarize_by_version(run_dir: Path) -> dict[int, RunSummary]:
    """One summary per model version over the events that version decided on."""
    records_dir = Path(run_dir) / RECORDS_DIR
    skims = records_skims(records_dir)
    per_version: dict[int, RunAccumulator] = {}
    for table in parquet_io.iter_row_groups(
        record_files(records_dir), RECORDS_KIND, RECORDS_SCHEMA_VERSION
    ):
        versions = table.column("model_version").to_numpy()
        for version in np.unique(versions):
            part = table.filter(pa.array(versions == version))
            _add_table(per_version.setdefault(int(version), RunAccumulator(skims)), part)
    return {v: acc.summary() for v, acc in sorted(per_version.items())}


def read_records(run_dir: Path, columns: list[str] | None = None) -> pa.Table:
    files = _checked_record_files(Path(run_dir) / RECORDS_DIR)
    return parquet_io.read_table(files, RECORDS_KIND, RECORDS_SCHEMA_VERSION, columns)


def summary_to_json(summary: RunSummary, extra: dict[str, Any] | None = None) -> str:
    """summary.json text: the RunSummary fields at top level, run facts under "run"."""
    data = summary.to_dict()
    data["run"] = extra or {}
    return json.dumps(data, indent=2, allow_nan=True)


def load_summary(path: Path) -> RunSummary:
    """Rebuild the typed RunSummary from a summary.json."""
    data = json.loads(Path(path).read_text())
    data.pop("run", None)

    def quantiles(raw: list[list[float]]) -> tuple[tuple[float, float], ...]:
        return tuple((float(q), float(v)) for q, v in raw)

    skims = {
        name: SkimSummary(**{**s, "weight_quantiles": quantiles(s["weight_quantiles"])})
        for name, s in data.pop("skims").items()
    }
    data["weight_quantiles"] = quantiles(data["weight_quantiles"])
    return RunSummary(skims=skims, **data)


def summaries_close(a: RunSummary, b: RunSummary, rel: float = 1e-9) -> bool:
    """Equal counts and floats equal to `rel` (sums taken in a different batch order)."""

    def close(x: Any, y: Any) -> bool:
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
        if isinstance(x, list | tuple):
            return len(x) == len(y) and all(close(u, v) for u, v in zip(x, y, strict=True))
        if isinstance(x, float) or isinstance(y, float):
            if math.isnan(x) and math.isnan(y):
                return True
            return math.isclose(x, y, rel_tol=rel, abs_tol=1e-12)
        return bool(x == y)

    return close(a.to_dict(), b.to_dict())
