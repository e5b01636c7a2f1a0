"""Generator-level events: the in-memory `EventBatch`, event ids, Parquet io and padding.

Conventions follow basf2's MCParticle so a model trained here could run there: per particle
pdg (int32), mother index (int32, -1 = none, index into the same event), E, px, py, pz (GeV,
lab frame) and production vertex x, y, z (cm) and time t (ns). Per event: event_id (uint64,
unique across workers and resumed runs), bkg_type (index into `BKG_TYPES`) and the seed of the
generator that made it.

In memory a batch is flat (CSR): one array per particle field, plus `offsets` so that event i
owns particles offsets[i]:offsets[i+1]. Padding to [batch, n_max] happens only in `pad_events`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from adaptive_bkg.errors import UserError
from adaptive_bkg.formats import parquet_io
from adaptive_bkg.physics.processes import BKG_TYPES

FLOAT_FIELDS: tuple[str, ...] = ("E", "px", "py", "pz", "x", "y", "z", "t")
PARTICLE_FIELDS: tuple[str, ...] = ("pdg", "mother", *FLOAT_FIELDS)
BASF2_FEATURE_ORDER: tuple[str, ...] = ("t", "x", "y", "z", "E", "px", "py", "pz")
"""Per-particle float features in the order basf2's SmartBackground module feeds them."""

EVENTS_KIND = "events"
EVENTS_SCHEMA_VERSION = 1
DEFAULT_ROW_GROUP = 10_000


# ---------------------------------------------------------------------------------------------
# Event ids: run | worker | counter packed into a uint64, so ids are unique across workers and
# across resumed runs (a resumed run takes a new run number) without any coordination.
RUN_BITS, WORKER_BITS, COUNTER_BITS = 20, 12, 32
MAX_RUN, MAX_WORKER, MAX_COUNTER = (
    (1 << RUN_BITS) - 1,
    (1 << WORKER_BITS) - 1,
    (1 << COUNTER_BITS) - 1,
)


def make_event_ids(run: int, worker: int, first_counter: int, n: int) -> NDArray[np.uint64]:
    if not 0 <= run <= MAX_RUN:
        raise UserError(f"run number {run} outside 0..{MAX_RUN}")
    if not 0 <= worker <= MAX_WORKER:
        raise UserError(f"worker number {worker} outside 0..{MAX_WORKER}")
    if first_counter < 0 or first_counter + n - 1 > MAX_COUNTER:
        raise UserError(f"event counter {first_counter + n} overflows {COUNTER_BITS} bits")
    base = (np.uint64(run) << np.uint64(WORKER_BITS + COUNTER_BITS)) | (
        np.uint64(worker) << np.uint64(COUNTER_BITS)
    )
    return base + np.arange(first_counter, first_counter + n, dtype=np.uint64)


def decode_event_ids(
    ids: NDArray[np.uint64],
) -> tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.uint64]]:
    """Inverse of `make_event_ids`: (run, worker, counter) arrays."""
    ids = np.asarray(ids, dtype=np.uint64)
    counter = ids & np.uint64(MAX_COUNTER)
    worker = (ids >> np.uint64(COUNTER_BITS)) & np.uint64(MAX_WORKER)
    run = ids >> np.uint64(WORKER_BITS + COUNTER_BITS)
    return run, worker, counter


# ---------------------------------------------------------------------------------------------
def offsets_from_counts(counts: NDArray[np.integer]) -> NDArray[np.int64]:
    """CSR offsets [0, c0, c0+c1, ...] (length n+1) for per-event particle counts."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


@dataclass(frozen=True, eq=False)
class EventBatch:
    """A batch of generator-level events in flat (CSR) layout."""

    event_id: NDArray[np.uint64]
    bkg_type: NDArray[np.int8]
    seed: NDArray[np.int64]
    offsets: NDArray[np.int64]
    pdg: NDArray[np.int32]
    mother: NDArray[np.int32]
    E: NDArray[np.float32]
    px: NDArray[np.float32]
    py: NDArray[np.float32]
    pz: NDArray[np.float32]
    x: NDArray[np.float32]
    y: NDArray[np.float32]
    z: NDArray[np.float32]
    t: NDArray[np.float32]

    def __post_init__(self) -> None:
        n = self.event_id.shape[0]
        if self.bkg_type.shape != (n,) or self.seed.shape != (n,) or self.offsets.shape != (n + 1,):
            raise ValueError("EventBatch: per-event arrays and offsets disagree in length")
        n_particles = int(self.offsets[-1]) if n else 0
        for name in PARTICLE_FIELDS:
            if getattr(self, name).shape != (n_particles,):
                raise ValueError(f"EventBatch: particle field {name} has wrong length")

    def __len__(self) -> int:
        return int(self.event_id.shape[0])

    @property
    def n_particles(self) -> NDArray[np.int64]:
        """Particles per event."""
        return np.diff(self.offsets)

    @property
    def particle_event_index(self) -> NDArray[np.int64]:
        """For each particle, the index of its event in this batch."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.n_particles)

    def take(self, index: NDArray[np.integer] | NDArray[np.bool_]) -> EventBatch:
        """Sub-batch of the selected events (boolean mask or integer indices), order kept."""
        index = np.asarray(index)
        sel = np.flatnonzero(index) if index.dtype == np.bool_ else index.astype(np.int64)
        counts = self.n_particles[sel]
        new_offsets = offsets_from_counts(counts)
        # Gather particles: for each new particle, old position = old start + position in event.
        starts = np.repeat(self.offsets[:-1][sel] - new_offsets[:-1], counts)
        gather = starts + np.arange(int(new_offsets[-1]), dtype=np.int64)
        return EventBatch(
            event_id=self.event_id[sel],
            bkg_type=self.bkg_type[sel],
            seed=self.seed[sel],
            offsets=new_offsets,
            **{name: getattr(self, name)[gather] for name in PARTICLE_FIELDS},
        )

    @staticmethod
    def concat(batches: Sequence[EventBatch]) -> EventBatch:
        if not batches:
            return EventBatch.empty()
        if len(batches) == 1:
            return batches[0]
        offsets = offsets_from_counts(np.concatenate([b.n_particles for b in batches]))
        per_event = {
            name: np.concatenate([getattr(b, name) for b in batches])
            for name in ("event_id", "bkg_type", "seed")
        }
        per_particle = {
            name: np.concatenate([getattr(b, name) for b in batches]) for name in PARTICLE_FIELDS
        }
        return EventBatch(offsets=offsets, **per_event, **per_particle)

    @staticmethod
    def empty() -> EventBatch:
        return EventBatch(
            event_id=np.zeros(0, np.uint64),
            bkg_type=np.zeros(0, np.int8),
            seed=np.zeros(0, np.int64),
            offsets=np.zeros(1, np.int64),
            pdg=np.zeros(0, np.int32),
            mother=np.zeros(0, np.int32),
            **{name: np.zeros(0, np.float32) for name in FLOAT_FIELDS},
        )

    def split(self, size: int) -> Iterator[EventBatch]:
        """Consecutive sub-batches of at most `size` events."""
        for start in range(0, len(self), size):
            yield self.take(np.arange(start, min(start + size, len(self))))

    def equals(self, other: EventBatch) -> bool:
        """Bit-exact equality of every field (NaN-safe: compares bytes)."""
        return all(
            getattr(self, f.name).dtype == getattr(other, f.name).dtype
            and getattr(self, f.name).tobytes() == getattr(other, f.name).tobytes()
            for f in fields(self)
        )


# ---------------------------------------------------------------------------------------------
# Parquet: one row per event, list columns per particle field.
_PARTICLE_TYPES: dict[str, pa.DataType] = {
    "pdg": pa.int32(),
    "mother": pa.int32(),
    **{name: pa.float32() for name in FLOAT_FIELDS},
}
EVENT_SCHEMA = parquet_io.with_kind(
    pa.schema(
        [
            pa.field("event_id", pa.uint64(), nullable=False),
            pa.field("bkg_type", pa.int8(), nullable=False),
            pa.field("seed", pa.int64(), nullable=False),
            *[
                pa.field(name, pa.list_(typ), nullable=False)
                for name, typ in _PARTICLE_TYPES.items()
            ],
        ]
    ),
    EVENTS_KIND,
    EVENTS_SCHEMA_VERSION,
    {"bkg_types": ",".join(BKG_TYPES), "units": "GeV, cm, ns"},
)


def _mix64(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser: a bijective avalanche on uint64 arrays (wraps silently)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return np.asarray(z ^ (z >> np.uint64(31)))


def physics_hashes(batch: EventBatch) -> NDArray[np.uint64]:
    """A 64-bit hash of each event's physics content: background type and the ordered list of
    particles (pdg, mother, all float fields, bit for bit). Independent of event id and seed,
    so two events with equal hashes are physics copies whatever their ids say (`check`)."""
    n = len(batch)
    h = _mix64(batch.pdg.astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    h = _mix64(h ^ batch.mother.astype(np.int64).view(np.uint64))
    for k, name in enumerate(FLOAT_FIELDS):
        bits = np.ascontiguousarray(getattr(batch, name), dtype=np.float32).view(np.uint32)
        h = _mix64(h ^ (bits.astype(np.uint64) + np.uint64(k + 1) * np.uint64(1 << 40)))
    counts = batch.n_particles
    position = np.arange(len(h), dtype=np.int64) - np.repeat(batch.offsets[:-1], counts)
    h = _mix64(h ^ (position.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)))
    # Per-event wrap-around sums via a cumulative sum (empty events give 0).
    cumulative = np.zeros(len(h) + 1, dtype=np.uint64)
    np.cumsum(h, out=cumulative[1:])
    sums = cumulative[batch.offsets[1:]] - cumulative[batch.offsets[:-1]]
    header = counts.astype(np.uint64) | (batch.bkg_type.astype(np.uint64) << np.uint64(48))
    return _mix64(sums ^ _mix64(header)) if n else np.zeros(0, np.uint64)


def batch_to_table(batch: EventBatch) -> pa.Table:
    offsets = pa.array(batch.offsets.astype(np.int32), type=pa.int32())
    columns: dict[str, pa.Array] = {
        "event_id": pa.array(batch.event_id, type=pa.uint64()),
        "bkg_type": pa.array(batch.bkg_type, type=pa.int8()),
        "seed": pa.array(batch.seed, type=pa.int64()),
    }
    for name, typ in _PARTICLE_TYPES.items():
        columns[name] = pa.ListArray.from_arrays(offsets, pa.array(getattr(batch, name), type=typ))
    return pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)


def _list_values(column: pa.ChunkedArray) -> tuple[NDArray[np.int64], NDArray[np.generic]]:
    arr = column.combine_chunks()
    if isinstance(arr, pa.ChunkedArray):  # combine_chunks of an empty column
        arr = pa.concat_arrays(arr.chunks) if arr.num_chunks else pa.array([], type=column.type)
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.flatten().to_numpy(zero_copy_only=False)  # flatten() honours a sliced array
    return offsets - offsets[0], values


def table_to_batch(table: pa.Table) -> EventBatch:
    missing = [name for name in EVENT_SCHEMA.names if name not in table.column_names]
    if missing:
        raise UserError(f"event table lacks columns {missing}")
    decoded = {name: _list_values(table.column(name)) for name in PARTICLE_FIELDS}
    offsets = decoded["pdg"][0]
    for name, (column_offsets, _) in decoded.items():
        if not np.array_equal(column_offsets, offsets):
            raise UserError(f"event table: column {name} has inconsistent particle counts")
    particle = {name: np.ascontiguousarray(values) for name, (_, values) in decoded.items()}
    return EventBatch(
        event_id=table.column("event_id").to_numpy().astype(np.uint64, copy=False),
        bkg_type=table.column("bkg_type").to_numpy().astype(np.int8, copy=False),
        seed=table.column("seed").to_numpy().astype(np.int64, copy=False),
        offsets=offsets,
        **particle,
    )


class EventWriter(parquet_io.ShardedParquetWriter):
    """Streams `EventBatch`es to Parquet in row groups of ~10k events, crash-safe (parquet_io)."""

    def __init__(self, path: Path, row_group_size: int = DEFAULT_ROW_GROUP) -> None:
        super().__init__(Path(path), EVENT_SCHEMA, row_group_size=row_group_size)

    def write_batch(self, batch: EventBatch) -> None:
        self.write(batch_to_table(batch))


def write_events(path: Path, batch: EventBatch, row_group_size: int = DEFAULT_ROW_GROUP) -> None:
    with EventWriter(path, row_group_size) as writer:
        writer.write_batch(batch)


def read_events(path: Path) -> EventBatch:
    """Read a whole event file (or folder of shards) into one batch."""
    return table_to_batch(parquet_io.read_table(Path(path), EVENTS_KIND, EVENTS_SCHEMA_VERSION))


def iter_event_batches(path: Path) -> Iterator[EventBatch]:
    """Stream an event file row group by row group."""
    for table in parquet_io.iter_row_groups(Path(path), EVENTS_KIND, EVENTS_SCHEMA_VERSION):
        yield table_to_batch(table)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PaddedEvents:
    """Events padded to a common particle count: the only layout the model sees."""

    features: NDArray[np.float32]  # [B, N, 8] in BASF2_FEATURE_ORDER
    pdg: NDArray[np.int32]  # [B, N], 0 where padded
    mother: NDArray[np.int32]  # [B, N], -1 for none, truncated or padded
    mask: NDArray[np.bool_]  # [B, N], True for real particles
    bkg_type: NDArray[np.int64]  # [B]


def pad_events(
    batch: EventBatch, max_particles: int | None = None, multiple_of: int = 1
) -> PaddedEvents:
    """Pad (and, beyond `max_particles`, truncate) a batch to [B, N] arrays with a mask.

    N is the largest multiplicity in the batch, capped at `max_particles` and rounded up to
    `multiple_of` (fixed shapes help compiled kernels). Truncation keeps the first particles,
    which in generator order are the primaries; mothers that fall off the end become -1.
    """
    counts = batch.n_particles
    n_max = int(counts.max()) if len(batch) else 0
    if max_particles is not None:
        n_max = min(n_max, max_particles)
    n_max = max(1, -(-n_max // multiple_of) * multiple_of)
    position = np.arange(int(batch.offsets[-1]), dtype=np.int64) - np.repeat(
        batch.offsets[:-1], counts
    )
    keep = position < n_max
    row, col = batch.particle_event_index[keep], position[keep]

    size = len(batch)
    features = np.zeros((size, n_max, len(BASF2_FEATURE_ORDER)), dtype=np.float32)
    for k, name in enumerate(BASF2_FEATURE_ORDER):
        features[row, col, k] = getattr(batch, name)[keep]
    pdg = np.zeros((size, n_max), dtype=np.int32)
    pdg[row, col] = batch.pdg[keep]
    mother = np.full((size, n_max), -1, dtype=np.int32)
    mothers = batch.mother[keep]
    mother[row, col] = np.where(mothers < n_max, mothers, -1)
    mask = np.zeros((size, n_max), dtype=np.bool_)
    mask[row, col] = True
    return PaddedEvents(features, pdg, mother, mask, batch.bkg_type.astype(np.int64))
