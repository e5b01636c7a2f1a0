"""Generator stage: pulls events from an `EventSource` and attaches their generation cost."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.interfaces import EventSource
from adaptive_bkg.stages.types import GeneratedBatch

CostFunction = Callable[[EventBatch], NDArray[np.float64]]


def per_event_cost(
    cost: CostFunction | None, events: EventBatch, elapsed_s: float
) -> NDArray[np.float64]:
    """Each event priced by `cost`, or without one the measured `elapsed_s` shared equally."""
    if cost is not None:
        return np.asarray(cost(events), dtype=np.float64)
    return np.full(len(events), elapsed_s / max(len(events), 1), dtype=np.float64)


class GeneratorStage:
    """Wraps an event source; `fast_cost` (e.g. `CostModel.fast_cost`) prices each event.

    Without a cost function the measured wall time of the call is shared equally among the
    events of the batch (a real generator on a real clock).
    """

    def __init__(self, source: EventSource, fast_cost: CostFunction | None = None) -> None:
        self.source = source
        self.fast_cost = fast_cost

    def next_batch(self, n: int) -> GeneratedBatch:
        start = time.perf_counter()
        events = self.source.next_batch(n)
        elapsed = time.perf_counter() - start
        return GeneratedBatch(events, per_event_cost(self.fast_cost, events, elapsed))
