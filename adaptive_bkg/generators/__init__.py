"""Event sources (Pythia 8 generation, recorded Parquet files) and `generate_to_file`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adaptive_bkg.config import GeneratorConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats import parquet_io
from adaptive_bkg.formats.events import EventWriter
from adaptive_bkg.generators.pythia import PythiaGenerator, beam_four_momentum
from adaptive_bkg.generators.recorded import (
    EventFileInfo,
    RecordedSource,
    TypeCount,
    TypeTally,
    inspect_event_file,
)
from adaptive_bkg.generators.truth import charged_multiplicity

__all__ = [
    "EventFileInfo",
    "GenerateSummary",
    "PythiaGenerator",
    "RecordedSource",
    "TypeCount",
    "beam_four_momentum",
    "check_output",
    "generate_to_file",
    "inspect_event_file",
]


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate_to_file` did: per-type counts and multiplicities, and its speed."""

    out: Path
    n_requested: int
    n_events: int
    elapsed_s: float
    interrupted: bool
    per_type: tuple[TypeCount, ...]

    @property
    def events_per_s(self) -> float:
        return self.n_events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def check_output(out: Path, n_events: int, overwrite: bool = False) -> Path:
    """Fail early, with one line, on a bad event count or an output that cannot be written."""
    out = Path(out)
    if n_events <= 0:
        raise UserError(f"--events must be a positive number of events, got {n_events}")
    if out.is_dir():
        raise UserError(f"output {out} is a directory; give a file name such as events.parquet")
    if out.exists() and not overwrite:
        raise UserError(f"output {out} exists; remove it, choose another name or pass --force")
    partial = parquet_io.partial_dir(out)
    if partial.exists():
        raise UserError(
            f"{partial}/ holds shards of an interrupted earlier run; remove it (or read it with "
            "'adaptive-bkg info') before writing to the same name"
        )
    if not out.parent.is_dir():
        raise UserError(f"cannot write to {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"cannot write to {out}: folder {out.parent} is not writable")
    return out


def generate_to_file(
    cfg: GeneratorConfig,
    n_events: int,
    out: Path,
    progress: Callable[[int], None] | None = None,
    worker: int = 0,
    run: int = 0,
    overwrite: bool = False,
) -> GenerateSummary:
    """Generate `n_events` with Pythia in batches of `cfg.batch_size` and write them to `out`.

    Crash-safe through `EventWriter`; on Ctrl-C the events generated so far are flushed and
    the summary says `interrupted=True`. `progress(n_done)` is called after every batch.
    """
    out = check_output(out, n_events, overwrite)
    generator = PythiaGenerator(cfg, worker=worker, run=run)
    tally = TypeTally()
    done, interrupted = 0, False
    start = time.perf_counter()
    writer = EventWriter(out)
    with writer:
        try:
            while done < n_events:
                batch = generator.next_batch(min(cfg.batch_size, n_events - done))
                writer.write_batch(batch)
                tally.add(batch.bkg_type, batch.n_particles, charged_multiplicity(batch))
                done += len(batch)
                if progress is not None:
                    progress(done)
        except KeyboardInterrupt:
            interrupted = True  # the writer's exit flushes and closes: nothing written is lost
    return GenerateSummary(
        out=out,
        n_requested=n_events,
        n_events=done,
        elapsed_s=time.perf_counter() - start,
        interrupted=interrupted,
        per_type=tally.rows(),
    )
