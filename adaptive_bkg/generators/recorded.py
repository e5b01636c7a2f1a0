"""Recorded events as an `EventSource`, and a summary of an event file (`adaptive-bkg info`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.errors import UserError
from adaptive_bkg.formats import parquet_io
from adaptive_bkg.formats.events import (
    EVENTS_KIND,
    EVENTS_SCHEMA_VERSION,
    EventBatch,
    iter_event_batches,
)
from adaptive_bkg.formats.labelled import LABELLED_KIND, iter_labelled
from adaptive_bkg.generators.truth import charged_multiplicity
from adaptive_bkg.physics.processes import BKG_TYPES


class RecordedSource:
    """Streams events back from a Parquet event file (or a folder of shards, e.g. the
    `.partial/` folder a crashed writer left), row group by row group.

    `next_batch(n)` returns exactly n events while the file has them (re-chunking across row
    groups), then the remainder, then empty batches. With `loop=True` it starts over at the end
    of the file, forever; the replayed events keep their recorded event ids.
    """

    def __init__(self, path: Path, loop: bool = False) -> None:
        self.path = Path(path)
        self.loop = loop
        self.passes = 0  # completed passes over the file
        # Opening checks kind and schema version now, so a bad file fails at construction.
        parquet_io.checked_files(self.path, EVENTS_KIND, EVENTS_SCHEMA_VERSION)
        self._groups: Iterator[EventBatch] = iter_event_batches(self.path)
        self._group = EventBatch.empty()  # the row group being served
        self._position = 0  # next event within it
        self._events_this_pass = 0
        self._exhausted = False

    def _advance(self) -> bool:
        """Load the next non-empty row group; False when the source is exhausted."""
        while not self._exhausted:
            group = next(self._groups, None)
            if group is None:
                self.passes += 1
                if not self.loop or self._events_this_pass == 0:
                    self._exhausted = True
                    break
                self._groups = iter_event_batches(self.path)
                self._events_this_pass = 0
                continue
            if len(group):
                self._events_this_pass += len(group)
                self._group, self._position = group, 0
                return True
        return False

    def next_batch(self, n: int) -> EventBatch:
        if n < 0:
            raise UserError(f"number of events must be >= 0, got {n}")
        pieces: list[EventBatch] = []
        need = n
        while need > 0:
            if self._position >= len(self._group) and not self._advance():
                break
            stop = min(len(self._group), self._position + need)
            pieces.append(self._group.take(np.arange(self._position, stop)))
            need -= stop - self._position
            self._position = stop
        return EventBatch.concat(pieces)


# ---------------------------------------------------------------------------------------------
QUANTILES: tuple[float, ...] = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


class FileSource:
    """EventSource over a recorded file: `events` (via `RecordedSource`) or `labelled-events`
    (the events of a labelled set, row group by row group; the labels stay in the file for
    the replay backend)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            first = parquet_io.pq.ParquetFile(parquet_io._shard_files(self.path)[0])
        except (parquet_io.pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{self.path}: not a readable Parquet file ({exc})") from None
        kind = (first.schema_arrow.metadata or {}).get(parquet_io.KIND_KEY, b"").decode()
        self._recorded: RecordedSource | None = None
        self._chunks: Iterator[EventBatch] = iter(())
        if kind == LABELLED_KIND:
            self._chunks = (labelled.batch for labelled in iter_labelled(self.path))
        elif kind == EVENTS_KIND:
            self._recorded = RecordedSource(self.path)
        else:
            raise UserError(f"{self.path}: expected an events or labelled-events file")
        self._rest = EventBatch.empty()

    def next_batch(self, n: int) -> EventBatch:
        if self._recorded is not None:
            return self._recorded.next_batch(n)
        parts = [self._rest]
        have = len(self._rest)
        while have < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        merged = EventBatch.concat(parts)
        take = min(n, len(merged))
        self._rest = merged.take(np.arange(take, len(merged)))
        return merged.take(np.arange(take))


@dataclass(frozen=True)
class TypeCount:
    name: str
    n_events: int
    mean_particles: float
    mean_charged: float


class TypeTally:
    """Running per-type sums of events, particles and charged particles -> `TypeCount` rows."""

    def __init__(self) -> None:
        self.events = np.zeros(len(BKG_TYPES), np.int64)
        self.particles = np.zeros(len(BKG_TYPES), np.float64)
        self.charged = np.zeros(len(BKG_TYPES), np.float64)

    def add(self, bkg_type: np.ndarray, n_particles: np.ndarray, n_charged: np.ndarray) -> None:
        codes = bkg_type.astype(np.int64)
        self.events += np.bincount(codes, minlength=len(BKG_TYPES))
        self.particles += np.bincount(codes, weights=n_particles, minlength=len(BKG_TYPES))
        self.charged += np.bincount(codes, weights=n_charged, minlength=len(BKG_TYPES))

    def rows(self) -> tuple[TypeCount, ...]:
        return tuple(
            TypeCount(
                name,
                int(self.events[i]),
                float(self.particles[i] / self.events[i]),
                float(self.charged[i] / self.events[i]),
            )
            for i, name in enumerate(BKG_TYPES)
            if self.events[i]
        )


@dataclass(frozen=True)
class EventFileInfo:
    """What `adaptive-bkg info` prints about an event file."""

    path: Path
    schema_version: int
    n_files: int
    n_row_groups: int
    n_events: int
    per_type: tuple[TypeCount, ...]
    quantiles: tuple[float, ...]
    charged_quantiles: NDArray[np.float64]  # stable charged final state (e, mu, pi, K, p)
    particle_quantiles: NDArray[np.float64]  # all kept particles


def inspect_event_file(path: Path) -> EventFileInfo:
    """Counts per type and multiplicity quantiles, streaming one row group at a time."""
    path = Path(path)
    files = parquet_io.checked_files(path, EVENTS_KIND, EVENTS_SCHEMA_VERSION)
    n_row_groups = sum(pf.num_row_groups for _, pf in files)
    tally = TypeTally()
    charged: list[NDArray[np.float64]] = []
    particles: list[NDArray[np.int64]] = []
    for batch in iter_event_batches(path):
        bkg = batch.bkg_type
        if len(bkg) and (bkg.min() < 0 or bkg.max() >= len(BKG_TYPES)):
            raise UserError(f"{path}: background type codes outside 0..{len(BKG_TYPES) - 1}")
        charged.append(charged_multiplicity(batch))
        particles.append(batch.n_particles)
        tally.add(bkg, particles[-1], charged[-1])
    n_charged = np.concatenate(charged) if charged else np.zeros(0)
    n_particles = np.concatenate(particles) if particles else np.zeros(0, np.int64)
    n_events = len(n_particles)
    empty = np.full(len(QUANTILES), np.nan)
    return EventFileInfo(
        path=path,
        schema_version=EVENTS_SCHEMA_VERSION,
        n_files=len(files),
        n_row_groups=n_row_groups,
        n_events=n_events,
        per_type=tally.rows(),
        quantiles=QUANTILES,
        charged_quantiles=np.quantile(n_charged, QUANTILES) if n_events else empty,
        particle_quantiles=np.quantile(n_particles, QUANTILES) if n_events else empty,
    )
