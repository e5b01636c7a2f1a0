"""Measured skim retention per background type, and the cross-section-weighted total.

Retention = fraction of generated events of a type that pass a skim (basf2's
b2skim-stats-print definition); the total weights the types by their cross sections
(references §4), as the "Combined MC" column there does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator import EmulatorBackend
from adaptive_bkg.config import Config
from adaptive_bkg.errors import UserError
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.physics.processes import CROSS_SECTIONS_NB


@dataclass(frozen=True)
class RetentionTable:
    skims: tuple[str, ...]
    types: tuple[str, ...]
    n_events: tuple[int, ...]  # per type
    retention: NDArray[np.float64]  # [types, skims]
    weighted: NDArray[np.float64]  # [skims], cross-section-weighted over `types`
    weighted_error: NDArray[np.float64]  # [skims], binomial standard error of `weighted`
    emulator_events_per_s: float  # detector + all skims, per CPU second (one core)

    def to_markdown(self) -> str:
        header = "| skim | " + " | ".join(self.types) + " | weighted |"
        rule = "|---|" + "---:|" * (len(self.types) + 1)
        lines = [header, rule]
        for k, skim in enumerate(self.skims):
            cells = [_percent(self.retention[t, k]) for t in range(len(self.types))]
            total = f"**{_percent(self.weighted[k])}** ± {_percent(self.weighted_error[k])}"
            lines.append(f"| {skim} | " + " | ".join(cells) + f" | {total} |")
        n = ", ".join(f"{t} {m}" for t, m in zip(self.types, self.n_events, strict=True))
        lines.append("")
        lines.append(f"Retention in %; events per type: {n}.")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps(
            {
                "skims": list(self.skims),
                "types": list(self.types),
                "n_events": list(self.n_events),
                "retention": self.retention.tolist(),
                "weighted": self.weighted.tolist(),
                "weighted_error": self.weighted_error.tolist(),
                "emulator_events_per_s": self.emulator_events_per_s,
            },
            indent=1,
        )

    @staticmethod
    def from_json(text: str) -> RetentionTable:
        data = json.loads(text)
        return RetentionTable(
            skims=tuple(data["skims"]),
            types=tuple(data["types"]),
            n_events=tuple(data["n_events"]),
            retention=np.asarray(data["retention"], dtype=np.float64),
            weighted=np.asarray(data["weighted"], dtype=np.float64),
            weighted_error=np.asarray(data["weighted_error"], dtype=np.float64),
            emulator_events_per_s=float(data["emulator_events_per_s"]),
        )


REFERENCE_PATH = Path(__file__).with_name("retention_reference.json")
"""Retention measured with `adaptive-bkg skims --measure -n 20000 --seed 1 --out <this file>`;
shown by plain `adaptive-bkg skims`. tests/test_skims.py checks it still matches the emulator."""


def reference_retention() -> RetentionTable | None:
    """The shipped reference table, or None if it is missing (e.g. a trimmed install)."""
    if not REFERENCE_PATH.is_file():
        return None
    return RetentionTable.from_json(REFERENCE_PATH.read_text())


def _percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def measure_retention(
    cfg: Config, n_per_type: int, skims: Sequence[str] | None = None
) -> RetentionTable:
    """Generate `n_per_type` events of each configured type, emulate, and count passes."""
    # lazy: Pythia and awkward load only when retention is measured, not with the CLI
    from adaptive_bkg.generators.pythia import generate_events

    if n_per_type <= 0:
        raise UserError(f"--events must be > 0, got {n_per_type}")
    backend = EmulatorBackend(cfg.backend, skims, Beams.of(cfg.generator))
    types = cfg.generator.types
    rows, counts = [], []
    elapsed, n_total = 0.0, 0
    for worker, bkg_type in enumerate(types):
        # One worker number per type keeps event ids (and so the detector randomness) distinct.
        batch = generate_events(cfg.generator, n_per_type, worker=worker, types=[bkg_type])
        passed = np.zeros(len(backend.skims), dtype=np.int64)
        for part in batch.split(cfg.run.batch_size):
            start = time.process_time()  # CPU time: per-core rate, robust to load
            passed += backend.flags(part).sum(axis=0)
            elapsed += time.process_time() - start
        n_total += len(batch)
        rows.append(passed / max(len(batch), 1))
        counts.append(len(batch))
    retention = np.asarray(rows, dtype=np.float64)
    xs = np.asarray([CROSS_SECTIONS_NB[t] for t in types], dtype=np.float64)
    w = xs / xs.sum()
    weighted = w @ retention
    n = np.asarray(counts, dtype=np.float64)[:, None]
    weighted_error = np.sqrt((w[:, None] ** 2 * retention * (1 - retention) / n).sum(axis=0))
    return RetentionTable(
        skims=backend.skims,
        types=tuple(types),
        n_events=tuple(counts),
        retention=retention,
        weighted=weighted,
        weighted_error=weighted_error,
        emulator_events_per_s=n_total / max(elapsed, 1e-9),
    )
