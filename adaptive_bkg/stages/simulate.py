"""Simulate stage: runs the slow backend on kept events only and joins its labels back.

Returns the complete per-event records (for the recorder) and the labelled kept events (for
the learner). Discarded events cost nothing here: cost_slow = 0 and their flags are unknown.
"""

from __future__ import annotations

import numpy as np

from adaptive_bkg.errors import UserError
from adaptive_bkg.interfaces import SimulationBackend
from adaptive_bkg.stages.types import FilterOutput, LabelledBatch, RecordBatch


class SimulateStage:
    def __init__(self, backend: SimulationBackend, skims: tuple[str, ...]) -> None:
        missing = [s for s in skims if s not in backend.skims]
        if missing:
            raise UserError(
                f"backend does not provide skim(s) {', '.join(missing)} "
                f"(it has: {', '.join(backend.skims)})"
            )
        self.backend = backend
        self.skims = tuple(skims)
        # Column of each requested skim in the backend's flags (the backend may evaluate more).
        self._columns = np.array([backend.skims.index(s) for s in self.skims], dtype=np.int64)

    def simulate(self, filtered: FilterOutput) -> tuple[RecordBatch, LabelledBatch]:
        decisions, kept = filtered.decisions, filtered.kept
        n, n_skims = len(decisions), len(self.skims)
        kept_idx = np.flatnonzero(decisions.kept)
        passed = np.zeros((n, n_skims), dtype=np.bool_)
        cost_slow = np.zeros(n, dtype=np.float64)
        labels = np.zeros((len(kept_idx), n_skims), dtype=np.bool_)
        kept_cost = np.zeros(len(kept_idx), dtype=np.float64)
        if len(kept_idx):
            result = self.backend.simulate(kept)
            if not np.array_equal(np.asarray(result.event_id, np.uint64), kept.event_id):
                raise RuntimeError("backend returned event ids that differ from its input batch")
            labels = np.asarray(result.flags, dtype=np.bool_)[:, self._columns]
            kept_cost = np.asarray(result.cost_s, dtype=np.float64)
            passed[kept_idx] = labels
            cost_slow[kept_idx] = kept_cost
        records = RecordBatch(decisions, passed, cost_slow)
        labelled = LabelledBatch(
            events=kept,
            labels=labels,
            p=decisions.p[kept_idx],
            q=decisions.q[kept_idx],
            model_version=decisions.model_version[kept_idx],
            cost_fast_s=decisions.cost_fast_s[kept_idx],
            cost_nn_s=decisions.cost_nn_s[kept_idx],
            cost_slow_s=kept_cost,
            probe=filtered.probe,
        )
        return records, labelled
