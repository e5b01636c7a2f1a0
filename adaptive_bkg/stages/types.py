"""Typed messages that flow between the pipeline stages (DESIGN §1).

generator ─GeneratedBatch─▶ filter ─FilterOutput─▶ simulate ─RecordBatch─▶ recorder
                              ▲                        └──LabelledBatch──▶ learner
                              └──────────── WeightsSnapshot ◀──────────────────┘

Every message is a frozen dataclass of numpy arrays (cheap to pickle, no torch modules), so the
same objects travel through Ray's object store and through the in-process replay loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.stats.sampling import PolicyState

if TYPE_CHECKING:
    import torch  # annotations only: the messages carry tensors, this module never makes one


@dataclass(frozen=True, eq=False)
class WeightsSnapshot:
    """One published model version: weights (CPU tensors) plus the policy fitted with them.

    `state_dict=None` means "keep the current weights, only the policy changed" (used when
    learning is off: the policy is still refitted to the q distribution). Version 0 is the
    learner's starting point (pretrained backbone + any new head), so filter and learner begin
    from identical weights.
    """

    version: int
    state_dict: Mapping[str, torch.Tensor] | None
    policy_state: PolicyState
    online_auc: Mapping[str, float] | None = None


@dataclass(frozen=True, eq=False)
class GeneratedBatch:
    """Generator output: events plus the generation cost each one took (seconds)."""

    events: EventBatch
    cost_fast_s: NDArray[np.float64]  # [n]

    def __post_init__(self) -> None:
        if self.cost_fast_s.shape != (len(self.events),):
            raise ValueError("GeneratedBatch: cost_fast_s length differs from the events")

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True, eq=False)
class Decisions:
    """The filter's verdict on every generated event of one batch (one row per event)."""

    skims: tuple[str, ...]
    event_id: NDArray[np.uint64]  # [n]
    bkg_type: NDArray[np.int8]  # [n]
    model_version: NDArray[np.int32]  # [n] version of the weights that computed q
    q: NDArray[np.float64]  # [n, n_skims] calibrated pass probabilities
    p: NDArray[np.float64]  # [n] keep probability (max over skims, floored)
    kept: NDArray[np.bool_]  # [n] the Bernoulli(p) draw
    cost_fast_s: NDArray[np.float64]  # [n]
    cost_nn_s: NDArray[np.float64]  # [n]
    physics_hash: NDArray[np.uint64]  # [n] events.physics_hashes: proves no physics repeats

    def __len__(self) -> int:
        return int(self.event_id.shape[0])

    def take(self, index: NDArray[np.integer] | NDArray[np.bool_]) -> Decisions:
        return Decisions(
            self.skims,
            self.event_id[index],
            self.bkg_type[index],
            self.model_version[index],
            self.q[index],
            self.p[index],
            self.kept[index],
            self.cost_fast_s[index],
            self.cost_nn_s[index],
            self.physics_hash[index],
        )


@dataclass(frozen=True, eq=False)
class FilterOutput:
    """Decisions on all events, the kept events (same order as `decisions.kept`) and a probe.

    The probe is a small seeded random subsample of ALL generated events (kept or not, no
    labels): the learner scores it with its newest weights to refit the policy on the
    unfiltered q distribution.
    """

    decisions: Decisions
    kept: EventBatch
    probe: EventBatch


@dataclass(frozen=True, eq=False)
class RecordBatch:
    """One complete record row per generated event: decisions plus slow-stage results."""

    decisions: Decisions
    passed: NDArray[np.bool_]  # [n, n_skims]; False where not kept (written as null)
    cost_slow_s: NDArray[np.float64]  # [n]; 0 where not kept

    def __len__(self) -> int:
        return len(self.decisions)


@dataclass(frozen=True, eq=False)
class LabelledBatch:
    """Freshly simulated kept events with their labels: the learner's input."""

    events: EventBatch
    labels: NDArray[np.bool_]  # [n, n_skims]
    p: NDArray[np.float64]  # [n] keep probability at decision time; loss weight 1/p
    q: NDArray[np.float64]  # [n, n_skims] q at decision time (prequential AUC)
    model_version: NDArray[np.int32]  # [n] version that decided to keep the event
    cost_fast_s: NDArray[np.float64]  # [n]
    cost_nn_s: NDArray[np.float64]  # [n]
    cost_slow_s: NDArray[np.float64]  # [n]
    probe: EventBatch  # unlabelled subsample of all generated events (see FilterOutput)

    def __len__(self) -> int:
        return len(self.events)
