"""The pluggable seams of adaptive-bkg, in one place.

Everything that can be swapped (event sources, slow-stage backends) is a Protocol here, with
the typed result it returns. Stages depend on these, never on a concrete implementation.
(Keep-probability policies are one concrete class, `sampling.Policy`.)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.formats.labelled import SimResult

__all__ = ["EventSource", "SimResult", "SimulationBackend"]


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
