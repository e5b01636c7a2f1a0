"""Tiny stand-ins for the generator, model, trainer and backend, for pipeline-stage tests.

The "physics": every event has a latent x = mean particle energy; it passes the skim with
probability pi(x) = sigmoid(SLOPE·(x − CUT)). The pass draw is a hash of the event id, so the
label of an event is the same in every run (needed for closure tests). The fake scorer's
logit is w·(x − b) with (w, b) in its state dict: at (SLOPE, CUT) it is perfectly calibrated.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray

from adaptive_bkg.config import fresh_seed
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import FLOAT_FIELDS, EventBatch, make_event_ids
from adaptive_bkg.generators.pythia import stream_seed
from adaptive_bkg.interfaces import SimResult

SLOPE, CUT = 6.0, 1.5
SKIM = "fake-skim"


def latent_x(batch: EventBatch) -> NDArray[np.float64]:
    sums = np.bincount(batch.particle_event_index, weights=batch.E, minlength=len(batch))
    return sums / np.maximum(batch.n_particles, 1)


def true_pass_probability(batch: EventBatch) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-SLOPE * (latent_x(batch) - CUT)))


def event_uniform(event_id: NDArray[np.uint64]) -> NDArray[np.float64]:
    """A uniform number in [0, 1) fixed per event id (splitmix-style hash)."""
    z = event_id.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z ^= z >> np.uint64(31)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(29)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class FakeSource:
    """EventSource: Poisson multiplicities, exponential energies; ids via make_event_ids.
    Seeded like the Pythia generator: by (seed, run, worker, incarnation)."""

    def __init__(
        self,
        seed: int | None = 1,
        worker: int = 0,
        run: int = 0,
        incarnation: int = 0,
        n_workers: int = 1,
    ) -> None:
        stream = stream_seed(fresh_seed() if seed is None else seed, run, worker, incarnation)
        self.rng = np.random.default_rng(stream)
        self.worker, self.run, self.counter = worker + incarnation * n_workers, run, 0

    def next_batch(self, n: int) -> EventBatch:
        counts = 1 + self.rng.poisson(8, size=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        n_part = int(offsets[-1])
        floats = {f: self.rng.normal(size=n_part).astype(np.float32) for f in FLOAT_FIELDS}
        floats["E"] = self.rng.exponential(1.0, size=n_part).astype(np.float32)
        batch = EventBatch(
            event_id=make_event_ids(self.run, self.worker, self.counter, n),
            bkg_type=self.rng.integers(0, 7, size=n).astype(np.int8),
            seed=np.full(n, self.worker, dtype=np.int64),
            offsets=offsets,
            pdg=np.full(n_part, 211, dtype=np.int32),
            mother=np.full(n_part, -1, dtype=np.int32),
            **floats,
        )
        self.counter += n
        return batch


class FakeScorer:
    """logit = w·(x − b); weights travel in a state dict like a torch model's."""

    def __init__(self, w: float = SLOPE, b: float = CUT) -> None:
        self.w, self.b = w, b

    def logits(self, batch: EventBatch) -> NDArray[np.float64]:
        return (self.w * (latent_x(batch) - self.b))[:, None]

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.w, self.b = float(state["w"]), float(state["b"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"w": torch.tensor(self.w), "b": torch.tensor(self.b)}


class FakeBackend:
    """SimulationBackend: label = event_uniform(id) < pi(x); cost grows with multiplicity."""

    skims = (SKIM,)

    def __init__(self, delay_s: float = 0.0, fail_from: int | None = None) -> None:
        self.simulated_ids: list[NDArray[np.uint64]] = []
        self.delay_s = delay_s  # wall seconds per batch: paces a run for fault tests
        self.fail_from = fail_from  # batches from this one on fail for good

    def simulate(self, batch: EventBatch) -> SimResult:
        time.sleep(self.delay_s)
        if self.fail_from is not None and len(self.simulated_ids) >= self.fail_from:
            raise UserError("fake simulation failed for good (3 attempts)")
        self.simulated_ids.append(batch.event_id.copy())
        flags = (event_uniform(batch.event_id) < true_pass_probability(batch))[:, None]
        return SimResult(batch.event_id, flags, 0.05 + 0.01 * batch.n_particles)


class StepResult(NamedTuple):
    loss: float
    n_events: int
    step: int


class EvalResult(NamedTuple):
    loss: float
    auc: dict[str, float]
    logits: NDArray[np.float64]


class FakeTrainer:
    """Moves the scorer's (w, b) a little towards the truth per step; remembers what it saw."""

    def __init__(self, scorer: FakeScorer) -> None:
        self.scorer = scorer
        self.step = 0
        self.seen_ids: list[NDArray[np.uint64]] = []

    def train_step(
        self, batch: EventBatch, labels: NDArray[np.bool_], weights: NDArray[np.float64]
    ) -> StepResult:
        self.seen_ids.append(batch.event_id.copy())
        self.scorer.w += 0.1 * (SLOPE - self.scorer.w)
        self.scorer.b += 0.1 * (CUT - self.scorer.b)
        self.step += 1
        return StepResult(loss=1.0 / self.step, n_events=len(batch), step=self.step)

    def evaluate(
        self, batch: EventBatch, labels: NDArray[np.bool_], weights: NDArray[np.float64]
    ) -> EvalResult:
        logits = self.scorer.logits(batch)
        score, y = logits[:, 0], labels[:, 0]
        pos, neg = score[y], score[~y]
        auc = float((pos[:, None] > neg[None, :]).mean()) if pos.size and neg.size else float("nan")
        return EvalResult(loss=0.0, auc={SKIM: auc}, logits=logits)

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        return self.scorer.state_dict()


class FakeStages:
    """StageFactory on the fakes (same constructor as the default factory: cfg, skims, learn)."""

    virtual_clock = True

    def __init__(self, cfg, skims, learn=True):  # type: ignore[no-untyped-def]
        self.cfg, self.skims, self.learn = cfg, tuple(skims), learn

    def validate(self) -> None:
        from adaptive_bkg.stats.sampling import make_policy

        make_policy(self.cfg.policy, self.skims)

    def generator(self, worker, run, incarnation=0):  # type: ignore[no-untyped-def]
        from adaptive_bkg.stages import GeneratorStage

        source = FakeSource(
            self.cfg.generator.seed, worker, run, incarnation, self.cfg.ray.generators
        )
        return GeneratorStage(source, lambda b: np.full(len(b), 0.001))

    def filter(self):  # type: ignore[no-untyped-def]
        from adaptive_bkg.stages import FilterStage

        return FilterStage(
            FakeScorer(0.0, 0.0),
            self.skims,
            seed=self.cfg.run.seed,
            nn_cost=lambda b: np.full(len(b), 0.001),
            probe_size=self.cfg.run.probe_events,
        )

    def simulator(self, index):  # type: ignore[no-untyped-def]
        from adaptive_bkg.stages import SimulateStage

        # On the wall clock the fake simulation takes 50 ms a batch (fault tests kill mid-run).
        delay = 0.05 if self.cfg.backend.clock == "wall" else 0.0
        # backend.name "fail-from-N": every batch from the N-th on fails (a broken backend).
        name = self.cfg.backend.name
        fail_from = int(name.rpartition("-")[2]) if name.startswith("fail-from-") else None
        return SimulateStage(FakeBackend(delay, fail_from), self.skims)

    # What the learner starts from: a poor model (w, b), prior mean stage times, learning on.
    learner_start: tuple[float, float] = (2.0, 0.5)
    learner_times: tuple[float, float, float] = (0.001, 0.001, 0.1)
    trains = True

    def learner(self):  # type: ignore[no-untyped-def]
        from adaptive_bkg.stages import LearnerStage, MeanTimes
        from adaptive_bkg.stats.sampling import make_policy

        scorer = FakeScorer(*self.learner_start)
        return LearnerStage(
            FakeTrainer(scorer),
            scorer.logits,
            make_policy(self.cfg.policy, self.skims),
            self.skims,
            self.cfg.learner,
            MeanTimes(*self.learner_times),
            learn=self.learn and self.trains,
            seed=self.cfg.run.seed,
            keep_training_log=True,
        )

    def save_checkpoint(self, path, snapshot):  # type: ignore[no-untyped-def]
        torch.save(dict(snapshot.state_dict), path)


RUN_DIR_FILES: tuple[str, ...] = (
    "config.yaml",
    "metrics.jsonl",
    "summary.json",
    "checkpoints/v0000.pt",
    "checkpoints/final.pt",
    "plots/progress.png",
    "plots/weights_by_version.png",
    "plots/keep_probability.png",
    "plots/roc_by_version.png",
)
"""What every finished run directory holds (docs/pipeline.md, "Run directory")."""
