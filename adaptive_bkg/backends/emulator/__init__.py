"""The embedded slow stage: a parametric Belle II-like detector followed by a skim catalogue.

`EmulatorBackend(cfg, skims, beams)` turns generator-level events into skim pass flags
(`detector.simulate_detector` then `skims.evaluate_skims` in the CMS frame of `beams`, which
`make_backend` builds from `cfg.generator`) and charges each event the
calibrated slow-stage cost of `cost.CostModel` on the configured clock (virtual: accounting
only; wall: the call really takes that long). Flags are deterministic per (backend seed, event
id): an event re-simulated after a crash, in any batch, gets the same flags.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.conditions import DetectorParams, detector_params
from adaptive_bkg.backends.emulator.cost import CostModel, make_clock
from adaptive_bkg.backends.emulator.detector import RecoEvents, simulate_detector
from adaptive_bkg.backends.emulator.skims import Skim, evaluate_skims, get_skims
from adaptive_bkg.config import BackendConfig, GeneratorConfig
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.interfaces import SimResult
from adaptive_bkg.physics.beams import Beams

__all__ = ["EmulatorBackend"]


class EmulatorBackend:
    """`SimulationBackend` running the emulated detector and skims in-process."""

    def __init__(
        self, cfg: BackendConfig, skims: Sequence[str] | None = None, beams: Beams | None = None
    ) -> None:
        self.cfg = cfg
        self.params: DetectorParams = detector_params(cfg.conditions)
        chosen = tuple(skims) if skims is not None else cfg.skims
        self._skims: tuple[Skim, ...] = get_skims(chosen)
        # No beams given: the configuration's default (nominal Belle II) beams.
        self.beams = beams or Beams.of(GeneratorConfig())
        self.cost_model = CostModel.from_config(cfg)
        self.clock = make_clock(cfg)

    @property
    def skims(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._skims)

    def reconstruct(self, batch: EventBatch) -> RecoEvents:
        """The detector step alone (for studies and tests)."""
        return simulate_detector(batch, self.params, self.cfg.seed)

    def flags(self, batch: EventBatch) -> NDArray[np.bool_]:
        """[n, n_skims] pass flags without charging any cost."""
        return evaluate_skims(self.reconstruct(batch), self._skims, self.beams)

    def simulate(self, batch: EventBatch) -> SimResult:
        flags = self.flags(batch)
        cost = self.cost_model.slow_cost(batch)  # float64, also for an empty batch
        self.clock.spend(float(cost.sum()))
        return SimResult(event_id=batch.event_id.copy(), flags=flags, cost_s=cost)
