"""Labelled events: generator-level events with the skim flags and slow-stage cost they got.

This is the training set of every offline model study (pretraining, fine-tuning, the transfer
study) and a recorded "fully simulated" dataset the replay backend can look labels up in.

On disk it is the `events` schema plus one bool column `pass_<skim>` per skim (the column
order is the skim order) and `cost_slow_s` (float64), under kind "labelled-events". Like every
file here it is written through `parquet_io.ShardedParquetWriter`, so a crashed `label` run
leaves its flushed row groups readable in `<path>.partial/`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from adaptive_bkg.errors import UserError
from adaptive_bkg.formats import parquet_io
from adaptive_bkg.formats.events import (
    DEFAULT_ROW_GROUP,
    EVENT_SCHEMA,
    EventBatch,
    batch_to_table,
    table_to_batch,
)


class SimResult(NamedTuple):
    """What the slow stage reports for a batch of kept events, in the batch's order."""

    event_id: NDArray[np.uint64]  # [n]
    flags: NDArray[np.bool_]  # [n, n_skims], True = event passes that skim
    cost_s: NDArray[np.float64]  # [n], slow-stage seconds spent on each event


LABELLED_KIND = "labelled-events"
LABELLED_SCHEMA_VERSION = 1
PASS_PREFIX = "pass_"
COST_COLUMN = "cost_slow_s"


@dataclass(frozen=True, eq=False)
class LabelledEvents:
    """Events with per-skim pass flags (column order = `skims`) and slow-stage cost."""

    batch: EventBatch
    labels: NDArray[np.bool_]  # [n, n_skims]
    skims: tuple[str, ...]
    cost_slow_s: NDArray[np.float64]  # [n]

    def __post_init__(self) -> None:
        n = len(self.batch)
        if self.labels.shape != (n, len(self.skims)):
            raise ValueError(
                f"LabelledEvents: labels shape {self.labels.shape} != ({n}, {len(self.skims)})"
            )
        if self.cost_slow_s.shape != (n,):
            raise ValueError("LabelledEvents: cost_slow_s length differs from the batch")

    def __len__(self) -> int:
        return len(self.batch)

    def take(self, index: NDArray[np.integer] | NDArray[np.bool_]) -> LabelledEvents:
        index = np.asarray(index)
        sel = np.flatnonzero(index) if index.dtype == np.bool_ else index.astype(np.int64)
        return LabelledEvents(
            self.batch.take(sel), self.labels[sel], self.skims, self.cost_slow_s[sel]
        )

    def head(self, n: int) -> LabelledEvents:
        return self.take(np.arange(min(n, len(self))))

    def select_skims(self, skims: Sequence[str]) -> LabelledEvents:
        """The same events with only the label columns of `skims`, in that order."""
        missing = [s for s in skims if s not in self.skims]
        if missing:
            raise UserError(
                f"skim(s) {', '.join(missing)} not labelled in this dataset "
                f"(it has: {', '.join(self.skims)}); relabel with adaptive-bkg label --skims"
            )
        columns = [self.skims.index(s) for s in skims]
        return LabelledEvents(self.batch, self.labels[:, columns], tuple(skims), self.cost_slow_s)

    def split(
        self, validation_fraction: float, seed: int = 0
    ) -> tuple[LabelledEvents, LabelledEvents]:
        """(train, validation), a seeded random partition of the events."""
        if not 0.0 < validation_fraction < 1.0:
            raise UserError(f"validation fraction {validation_fraction} must be in (0, 1)")
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = max(1, round(validation_fraction * len(self)))
        if n_val >= len(self):
            raise UserError(f"{len(self)} events are too few to split off a validation set")
        return self.take(np.sort(order[n_val:])), self.take(np.sort(order[:n_val]))

    @staticmethod
    def concat(parts: Sequence[LabelledEvents]) -> LabelledEvents:
        if not parts:
            raise ValueError("LabelledEvents.concat needs at least one part")
        skims = parts[0].skims
        if any(p.skims != skims for p in parts):
            raise ValueError("LabelledEvents.concat: parts label different skims")
        return LabelledEvents(
            EventBatch.concat([p.batch for p in parts]),
            np.concatenate([p.labels for p in parts]),
            skims,
            np.concatenate([p.cost_slow_s for p in parts]),
        )


def labelled_schema(skims: Sequence[str]) -> pa.Schema:
    if not skims:
        raise UserError("a labelled dataset needs at least one skim")
    if len(set(skims)) != len(skims):
        raise UserError(f"duplicate skim names in {list(skims)}")
    fields = [
        *EVENT_SCHEMA,
        *[pa.field(PASS_PREFIX + s, pa.bool_(), nullable=False) for s in skims],
        pa.field(COST_COLUMN, pa.float64(), nullable=False),
    ]
    return parquet_io.with_kind(
        pa.schema(fields),
        LABELLED_KIND,
        LABELLED_SCHEMA_VERSION,
        {"skims": ",".join(skims), "units": "GeV, cm, ns; cost in seconds"},
    )


def _check_result(batch: EventBatch, result: SimResult, n_skims: int) -> None:
    if not np.array_equal(result.event_id, batch.event_id):
        raise ValueError("SimResult event ids do not match the batch (order or content)")
    if result.flags.shape != (len(batch), n_skims):
        raise ValueError(f"SimResult flags shape {result.flags.shape} != ({len(batch)}, {n_skims})")


def labelled_to_table(
    batch: EventBatch, result: SimResult, skims: Sequence[str], schema: pa.Schema | None = None
) -> pa.Table:
    _check_result(batch, result, len(skims))
    schema = schema if schema is not None else labelled_schema(skims)
    table = batch_to_table(batch)
    columns = {name: table.column(name) for name in table.column_names}
    for k, skim in enumerate(skims):
        columns[PASS_PREFIX + skim] = pa.chunked_array([pa.array(result.flags[:, k], pa.bool_())])
    columns[COST_COLUMN] = pa.chunked_array([pa.array(result.cost_s, pa.float64())])
    return pa.Table.from_pydict(columns, schema=schema)


def table_to_labelled(table: pa.Table) -> LabelledEvents:
    skims = tuple(
        name.removeprefix(PASS_PREFIX)
        for name in table.column_names
        if name.startswith(PASS_PREFIX)
    )
    if not skims or COST_COLUMN not in table.column_names:
        raise UserError("labelled-events table lacks pass_<skim> or cost_slow_s columns")
    labels = np.zeros((table.num_rows, len(skims)), dtype=np.bool_)
    for k, skim in enumerate(skims):
        labels[:, k] = table.column(PASS_PREFIX + skim).to_numpy(zero_copy_only=False)
    cost = table.column(COST_COLUMN).to_numpy().astype(np.float64, copy=False)
    return LabelledEvents(table_to_batch(table), labels, skims, cost)


class LabelledWriter(parquet_io.ShardedParquetWriter):
    """Streams (EventBatch, SimResult) pairs to a labelled-events file; crash-safe."""

    def __init__(
        self, path: Path, skims: Sequence[str], row_group_size: int = DEFAULT_ROW_GROUP
    ) -> None:
        self.skims = tuple(skims)
        super().__init__(Path(path), labelled_schema(self.skims), row_group_size=row_group_size)

    def write_batch(self, batch: EventBatch, result: SimResult) -> None:
        self.write(labelled_to_table(batch, result, self.skims, self.schema))


def write_labelled(
    path: Path,
    batch: EventBatch,
    result: SimResult,
    skims: Sequence[str],
    row_group_size: int = DEFAULT_ROW_GROUP,
) -> None:
    with LabelledWriter(path, skims, row_group_size) as writer:
        writer.write_batch(batch, result)


def read_labelled(path: Path, skims: Sequence[str] | None = None) -> LabelledEvents:
    """Read a whole labelled-events file; `skims` selects (and orders) label columns."""
    table = parquet_io.read_table(Path(path), LABELLED_KIND, LABELLED_SCHEMA_VERSION)
    data = table_to_labelled(table)
    return data.select_skims(skims) if skims is not None else data


def iter_labelled(path: Path) -> Iterator[LabelledEvents]:
    """Stream a labelled-events file row group by row group."""
    for table in parquet_io.iter_row_groups(Path(path), LABELLED_KIND, LABELLED_SCHEMA_VERSION):
        yield table_to_labelled(table)


def labelled_skims(path: Path) -> tuple[str, ...]:
    """The skims a labelled-events file holds, without reading its data."""
    files = parquet_io.checked_files(Path(path), LABELLED_KIND, LABELLED_SCHEMA_VERSION)
    names = files[0][1].schema_arrow.names
    return tuple(n.removeprefix(PASS_PREFIX) for n in names if n.startswith(PASS_PREFIX))


def write_replay_labels(labelled: Path, out: Path) -> Path:
    """Convert a labelled-events file into the replay backend's `labels` kind (drops the
    particles), so `backend.name=replay backend.replay.path=<out>` can replay it."""
    skims = labelled_skims(labelled)
    schema = labels_schema(skims)
    columns = ["event_id", "bkg_type", *(PASS_PREFIX + s for s in skims), COST_COLUMN]
    with parquet_io.ShardedParquetWriter(Path(out), schema) as writer:
        for table in parquet_io.iter_row_groups(
            Path(labelled), LABELLED_KIND, LABELLED_SCHEMA_VERSION, columns
        ):
            writer.write(table.select(columns).replace_schema_metadata(schema.metadata))
    # Reading back through the replay kind check proves the file is what replay expects.
    parquet_io.checked_files(Path(out), LABELS_KIND, LABELS_SCHEMA_VERSION)
    return Path(out)


LABELS_KIND = "labels"
LABELS_SCHEMA_VERSION = 1


def labels_schema(skims: Sequence[str]) -> pa.Schema:
    return parquet_io.with_kind(
        pa.schema(
            [
                pa.field("event_id", pa.uint64(), nullable=False),
                pa.field("bkg_type", pa.int8(), nullable=False),
                *[pa.field(PASS_PREFIX + s, pa.bool_(), nullable=False) for s in skims],
                pa.field(COST_COLUMN, pa.float64(), nullable=False),
            ]
        ),
        LABELS_KIND,
        LABELS_SCHEMA_VERSION,
        {"skims": ",".join(skims)},
    )
