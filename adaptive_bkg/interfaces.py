"""The pluggable seams of adaptive-bkg, in one place.

Everything that can be swapped is a Protocol here, with the typed result it returns: event
sources and slow-stage backends, the network that scores events (`Scorer`) and the trainer
that fine-tunes it (`TrainerLike`), the factory that builds every stage in the process that
runs it (`StageFactory`, `run.stages=module:Factory`), and where simulated seconds go
(`Clock`). Stages depend on these, never on a concrete implementation. (Keep-probability
policies are one concrete class, `stats.sampling.Policy`; emulator skims subclass the abstract
`backends.emulator.skims.Skim`, which holds behaviour and the catalogue, so it stays there.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.formats.labelled import SimResult

if TYPE_CHECKING:  # annotations only: torch loads where a model runs; stages are a layer above
    import torch

    from adaptive_bkg.stages.filter import FilterStage
    from adaptive_bkg.stages.generator import GeneratorStage
    from adaptive_bkg.stages.learner import LearnerStage
    from adaptive_bkg.stages.simulate import SimulateStage
    from adaptive_bkg.stages.types import WeightsSnapshot

__all__ = [
    "Clock",
    "EventSource",
    "Scorer",
    "SimResult",
    "SimulationBackend",
    "StageFactory",
    "TrainerLike",
]


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


class Scorer(Protocol):
    """Anything that turns events into per-skim logits and accepts new weights."""

    def logits(self, batch: EventBatch) -> NDArray[np.floating]:
        """[n, n_skims] raw logits."""
        ...

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None: ...


class TrainerLike(Protocol):
    """The part of `model.training.Trainer` the learner stage uses."""

    def train_step(
        self, batch: EventBatch, labels: NDArray[np.bool_], weights: NDArray[np.float64]
    ) -> Any: ...

    def evaluate(
        self, batch: EventBatch, labels: NDArray[np.bool_], weights: NDArray[np.float64]
    ) -> Any: ...

    def state_dict_cpu(self) -> dict[str, torch.Tensor]: ...


class StageFactory(Protocol):
    """What the drivers (orchestrate, replay) need to build a pipeline (stages/build.py)."""

    @property
    def virtual_clock(self) -> bool:
        """True: the budget counts emulated compute (cost model); False: wall seconds."""
        ...

    def validate(self) -> None:
        """Cheap checks in the driver before any file is written (UserError on bad input)."""
        ...

    def generator(self, worker: int, run: int, incarnation: int = 0) -> GeneratorStage:
        """Generator `worker` of run `run`; `incarnation` counts its restarts (and resumes):
        every incarnation must give new physics and new event ids."""
        ...

    def filter(self) -> FilterStage: ...

    def simulator(self, index: int) -> SimulateStage: ...

    def learner(self) -> LearnerStage: ...

    def save_checkpoint(self, path: Path, snapshot: WeightsSnapshot) -> None: ...


class Clock(Protocol):
    """Where simulated seconds go: counted only (virtual) or really waited (wall)."""

    @property
    def spent_s(self) -> float:
        """Total cost-model seconds passed to `spend` so far."""
        ...

    def spend(self, seconds: float) -> None: ...
