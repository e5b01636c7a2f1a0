"""`replay` backend: labels looked up in a recorded, fully simulated dataset.

For offline studies (policy comparisons, the transfer study) the expensive labels are produced
once and then replayed: a `labels` Parquet file holds, per event, `event_id`, one boolean
`pass_<skim>` column per skim and `cost_slow_s` (what simulating it cost). `record_labels`
writes such a file from any backend; a `labelled-events` training set (`adaptive-bkg label`,
formats/labelled.py) has the same columns and is accepted as it is. `ReplayBackend` answers
`simulate(batch)` by a vectorised lookup (binary search over the sorted ids). The recorded
cost is spent on the configured clock, so a replay with `backend.clock=wall` paces a live
pipeline like the original backend would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.cost import make_clock
from adaptive_bkg.backends.external import empty_result, show_ids
from adaptive_bkg.config import BackendConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats import parquet_io
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.formats.labelled import (
    COST_COLUMN,
    LABELLED_KIND,
    LABELLED_SCHEMA_VERSION,
    LABELS_KIND,
    LABELS_SCHEMA_VERSION,
    PASS_PREFIX,
    labelled_skims,
    labels_schema,
)
from adaptive_bkg.interfaces import SimResult, SimulationBackend


class RecordedLabels(NamedTuple):
    """What `record_labels` wrote."""

    path: Path
    n_events: int
    skims: tuple[str, ...]
    n_pass: tuple[int, ...]  # per skim


def record_labels(
    source_batches: Iterable[EventBatch], backend: SimulationBackend, out: Path
) -> RecordedLabels:
    """Simulate every batch with `backend` and write the labels file `out` (crash-safe)."""
    skims = tuple(backend.skims)
    schema = labels_schema(skims)
    n_events, n_pass = 0, np.zeros(len(skims), dtype=np.int64)
    with parquet_io.ShardedParquetWriter(Path(out), schema) as writer:
        for batch in source_batches:
            result = backend.simulate(batch)
            if not np.array_equal(result.event_id, batch.event_id):
                raise UserError(f"backend {type(backend).__name__} returned ids out of order")
            columns: dict[str, pa.Array] = {
                "event_id": pa.array(batch.event_id, pa.uint64()),
                "bkg_type": pa.array(batch.bkg_type, pa.int8()),
                **{
                    PASS_PREFIX + s: pa.array(result.flags[:, j], pa.bool_())
                    for j, s in enumerate(skims)
                },
                COST_COLUMN: pa.array(result.cost_s, pa.float64()),
            }
            writer.write(pa.Table.from_pydict(columns, schema=schema))
            n_events += len(batch)
            n_pass += result.flags.sum(axis=0)
    return RecordedLabels(Path(out), n_events, skims, tuple(int(k) for k in n_pass))


def _replayable_kind(path: Path) -> tuple[str, int, tuple[str, ...]]:
    """(kind, version, skims) of a `labels` file or of a `labelled-events` training set (same
    label columns plus particles, which the column projection below never reads); UserError
    naming the expected kind otherwise."""
    try:
        files = parquet_io.checked_files(Path(path), LABELS_KIND, LABELS_SCHEMA_VERSION)
    except UserError as not_labels:
        try:
            skims = labelled_skims(path)
        except UserError:
            raise not_labels from None
        return LABELLED_KIND, LABELLED_SCHEMA_VERSION, skims
    names = files[0][1].schema_arrow.names
    skims = tuple(n.removeprefix(PASS_PREFIX) for n in names if n.startswith(PASS_PREFIX))
    return LABELS_KIND, LABELS_SCHEMA_VERSION, skims


def recorded_skims(path: Path) -> tuple[str, ...]:
    """Skims held by a labels (or labelled-events) file, from its `pass_<skim>` columns."""
    return _replayable_kind(path)[2]


class ReplayBackend:
    """Answers `simulate` from a `labels` file (`backend.replay.path`)."""

    def __init__(self, cfg: BackendConfig, skims: Sequence[str] | None = None) -> None:
        path = cfg.replay.path
        if path is None:
            raise UserError(
                "the replay backend needs a labels file: backend.replay.path=labels.parquet "
                "(write one with adaptive_bkg.backends.labelled.record_labels)"
            )
        kind, version, available = _replayable_kind(path)
        chosen = tuple(skims) if skims is not None else (cfg.skims or available)
        absent = [s for s in chosen if s not in available]
        if absent:
            raise UserError(
                f"labels file {path} has no labels for skims {absent} "
                f"(it has: {', '.join(available) or 'none'})"
            )
        columns = ["event_id", *(PASS_PREFIX + s for s in chosen), COST_COLUMN]
        table = parquet_io.read_table(path, kind, version, columns)
        ids = table.column("event_id").to_numpy().astype(np.uint64)
        order = np.argsort(ids, kind="stable")
        self._ids: NDArray[np.uint64] = ids[order]
        duplicated = self._ids[1:][self._ids[1:] == self._ids[:-1]]
        if len(duplicated):
            raise UserError(
                f"labels file {path}: event id {int(duplicated[0])} recorded more than once"
            )
        flags = np.zeros((len(ids), len(chosen)), dtype=np.bool_)
        for j, skim in enumerate(chosen):
            flags[:, j] = table.column(PASS_PREFIX + skim).to_numpy(zero_copy_only=False)
        self._flags = flags[order]
        self._cost = table.column(COST_COLUMN).to_numpy().astype(np.float64)[order]
        self._skims = chosen
        self._path = Path(path)
        self.clock = make_clock(cfg)

    @property
    def skims(self) -> tuple[str, ...]:
        return self._skims

    def __len__(self) -> int:
        return len(self._ids)

    def simulate(self, batch: EventBatch) -> SimResult:
        if len(batch) == 0:
            return empty_result(len(self._skims))
        position = np.searchsorted(self._ids, batch.event_id)
        inside = position < len(self._ids)
        found = np.zeros(len(batch), dtype=np.bool_)
        found[inside] = self._ids[position[inside]] == batch.event_id[inside]
        if not found.all():
            raise UserError(
                f"labels file {self._path} has no labels for event ids "
                f"{show_ids(batch.event_id[~found])} "
                "(replay the events the file was recorded from)"
            )
        cost = self._cost[position]
        self.clock.spend(float(cost.sum()))
        return SimResult(batch.event_id.copy(), self._flags[position], cost)
