"""Filter stage: score every generated event, decide keep ~ Bernoulli(p), weight 1/p.

logits = scorer(events) -> q = calibrator(logits) (sigmoid by default) -> p = policy(q)
-> keep ~ Bernoulli(p). The weights and the policy come from the learner as a
`WeightsSnapshot` and are swapped only between batches, so every decision is made by exactly
one model version, which is written next to it. The keep draw uses a generator seeded by
(seed, first event id of the batch): a batch re-delivered after a crash gets the same
decisions, and no draw can depend on a label (labels do not exist yet).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.formats.events import EventBatch, physics_hashes
from adaptive_bkg.interfaces import Scorer
from adaptive_bkg.stages.generator import CostFunction, per_event_cost
from adaptive_bkg.stages.types import Decisions, FilterOutput, GeneratedBatch, WeightsSnapshot
from adaptive_bkg.stats.sampling import Policy, draw_keep, sigmoid

Calibrator = Callable[[NDArray[np.float64]], NDArray[np.float64]]


def calibrate(logits: NDArray[np.float64], calibrator: Calibrator | None) -> NDArray[np.float64]:
    """q from logits: the calibrator if there is one, else the sigmoid."""
    return calibrator(logits) if calibrator is not None else sigmoid(logits)


class FilterStage:
    """Holds the scorer (model) and the policy; turns a GeneratedBatch into a FilterOutput."""

    def __init__(
        self,
        scorer: Scorer,
        skims: tuple[str, ...],
        seed: int = 0,
        nn_cost: CostFunction | None = None,
        calibrator: Calibrator | None = None,
        probe_size: int = 128,
    ) -> None:
        self.scorer = scorer
        self.skims = tuple(skims)
        self.seed = seed
        self.nn_cost = nn_cost
        self.calibrator = calibrator
        self.probe_size = probe_size
        self.policy: Policy | None = None
        self.version = -1  # no weights yet: filter() refuses until the first swap

    def swap(self, snapshot: WeightsSnapshot) -> int:
        """Adopt a newer snapshot (older or repeated versions are ignored); returns the version."""
        if snapshot.version <= self.version:
            return self.version
        if snapshot.state_dict is not None:
            self.scorer.load_state_dict(snapshot.state_dict)
        elif self.version < 0:
            raise ValueError("the first WeightsSnapshot must carry weights (state_dict)")
        # refit=False: the filter applies the learner's fitted parameters, it never refits.
        self.policy = Policy(snapshot.policy_state, refit=False)
        self.version = snapshot.version
        return self.version

    def _rng(self, events: EventBatch) -> np.random.Generator:
        first = int(events.event_id[0]) if len(events) else 0
        return np.random.default_rng([self.seed, first >> 32, first & 0xFFFFFFFF])

    def filter(self, generated: GeneratedBatch) -> FilterOutput:
        if self.policy is None:
            raise RuntimeError("FilterStage.filter() before the first WeightsSnapshot")
        events = generated.events
        n = len(events)
        start = time.perf_counter()
        logits = np.asarray(self.scorer.logits(events), dtype=np.float64).reshape(
            n, len(self.skims)
        )
        q = calibrate(logits, self.calibrator)
        p = self.policy.keep_probability(q)
        elapsed = time.perf_counter() - start
        rng = self._rng(events)
        kept = draw_keep(p, rng)
        probe_idx = np.sort(rng.choice(n, size=min(self.probe_size, n), replace=False))
        cost_nn = per_event_cost(self.nn_cost, events, elapsed)
        decisions = Decisions(
            skims=self.skims,
            event_id=events.event_id,
            bkg_type=events.bkg_type,
            model_version=np.full(n, self.version, dtype=np.int32),
            q=q,
            p=p,
            kept=kept,
            cost_fast_s=generated.cost_fast_s,
            cost_nn_s=cost_nn,
            physics_hash=physics_hashes(events),
        )
        return FilterOutput(decisions, events.take(kept), events.take(probe_idx))
