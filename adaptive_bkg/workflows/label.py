"""Labelled datasets made here: generate events with Pythia, simulate them with a backend.

`label_events` writes a labelled-events file (`adaptive-bkg label`); `label_in_memory` keeps a
small one in memory (fine-tuning sets). The format itself lives in `formats.labelled`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptive_bkg.backends import make_backend
from adaptive_bkg.config import BackendConfig, GeneratorConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.formats.labelled import LabelledEvents, LabelledWriter, SimResult
from adaptive_bkg.generators.pythia import PythiaGenerator
from adaptive_bkg.physics.beams import Beams


@dataclass(frozen=True)
class LabelSummary:
    """What `label_events` wrote."""

    path: Path
    n_events: int
    skims: tuple[str, ...]
    pass_rate: tuple[float, ...]  # per skim
    mean_cost_slow_s: float
    wall_s: float


def _labelled_chunks(
    generator_cfg: GeneratorConfig,
    backend_cfg: BackendConfig,
    n_events: int,
    skims: Sequence[str] | None,
    chunk: int,
) -> tuple[tuple[str, ...], Iterator[tuple[EventBatch, SimResult]]]:
    """(skims, iterator of (events, their SimResult)) for `n_events` generated events."""
    if n_events <= 0:
        raise UserError(f"--events must be positive, got {n_events}")
    backend = make_backend(backend_cfg, skims, Beams.of(generator_cfg))
    generator = PythiaGenerator(generator_cfg)

    def chunks() -> Iterator[tuple[EventBatch, SimResult]]:
        done = 0
        while done < n_events:
            batch = generator.next_batch(min(chunk, n_events - done))
            if len(batch) == 0:
                return
            yield batch, backend.simulate(batch)
            done += len(batch)

    return tuple(backend.skims), chunks()


def label_in_memory(
    generator_cfg: GeneratorConfig,
    backend_cfg: BackendConfig,
    n_events: int,
    skims: Sequence[str] | None = None,
    chunk: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> LabelledEvents:
    """Generate and simulate `n_events`; keep them in memory (small fine-tuning sets)."""
    names, chunks = _labelled_chunks(generator_cfg, backend_cfg, n_events, skims, chunk)
    parts, done = [], 0
    for batch, result in chunks:
        parts.append(LabelledEvents(batch, result.flags.astype(np.bool_), names, result.cost_s))
        done += len(batch)
        if progress is not None:
            progress(done)
    return LabelledEvents.concat(parts)


def label_events(
    generator_cfg: GeneratorConfig,
    backend_cfg: BackendConfig,
    n_events: int,
    out: Path,
    skims: Sequence[str] | None = None,
    chunk: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> LabelSummary:
    """Generate `n_events` with Pythia, simulate them with the backend, write labelled events.

    `progress(n_done)` is called after every chunk. Deterministic for a given generator seed
    and backend seed (both in the configs). Crash-safe: see `LabelledWriter`.
    """
    start = time.perf_counter()
    names, chunks = _labelled_chunks(generator_cfg, backend_cfg, n_events, skims, chunk)
    passes = np.zeros(len(names), dtype=np.int64)
    cost_sum = 0.0
    done = 0
    with LabelledWriter(Path(out), names) as writer:
        for batch, result in chunks:
            writer.write_batch(batch, result)
            passes += result.flags.sum(axis=0)
            cost_sum += float(result.cost_s.sum())
            done += len(batch)
            if progress is not None:
                progress(done)
    return LabelSummary(
        path=Path(out),
        n_events=done,
        skims=names,
        pass_rate=tuple(float(p) / max(done, 1) for p in passes),
        mean_cost_slow_s=cost_sum / max(done, 1),
        wall_s=time.perf_counter() - start,
    )
