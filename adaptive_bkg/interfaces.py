"""The pluggable seams of adaptive-bkg, in one place.

Everything that can be swapped (event sources, slow-stage backends) is a Protocol here, with
the typed result it returns. Stages depend on these, never on a concrete implementation.
(Keep-probability policies are one concrete class, `sampling.Policy`.)
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.events import EventBatch


class SimResult(NamedTuple):
    """What the slow stage reports for a batch of kept events, in the batch's order."""

    event_id: NDArray[np.uint64]  # [n]
    flags: NDArray[np.bool_]  # [n, n_skims], True = event passes that skim
    cost_s: NDArray[np.float64]  # [n], slow-stage seconds spent on each event


@runtime_checkable
class SimulationBackend(Protocol):
    """Detector simulation + reconstruction + skims for kept events (or a stand-in)."""

    @property
    def skims(self) -> tuple[str, ...]:
        """Skim names, the column order of `SimResult.flags`."""
        ...

    def simulate(self, batch: EventBatch) -> SimResult: ...


@runtime_checkable
class EventSource(Protocol):
    """Produces generator-level events: Pythia, or a recorded file."""

    def next_batch(self, n: int) -> EventBatch:
        """Up to n events; an empty batch means the source is exhausted."""
        ...
