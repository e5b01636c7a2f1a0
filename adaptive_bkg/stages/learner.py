"""Learner stage: continual fine-tuning on freshly labelled events, publishing snapshots.

- Starts from the weights it is given (in production: the shipped pretrained checkpoint with a
  new head per unseen skim, see `build_learner_stage`) and publishes them as version 0, so
  filter and learner begin identical.
- Trains on kept events only, with per-event loss weight 1/p so that q stays calibrated for
  the full (unfiltered) distribution (DESIGN §2). A bounded replay buffer mixes old and new.
- Holds out a deterministic slice of fresh events (by event-id hash) for validation: the
  online AUC is measured on events the learner never trains on.
- Publishes `WeightsSnapshot(version, state_dict, policy_state)` every K steps or T seconds,
  after refitting the policy (e.g. sqrt-optimal k) on the q distribution of a reservoir of
  unfiltered "probe" events scored with the new weights.
- Causality: an event's label exists only after its keep decision; `ingest` additionally
  refuses a batch decided by a version the learner has not published yet, and (optionally)
  logs which version each event was first trained into, for tests.
- Accounts for its own compute (`LearnerCompute`, in every status): process CPU seconds of the
  training steps and of each publish (re-scoring the probe and validation reservoirs), and with
  `device_sync` (a GPU) the wall seconds between synchronisations around the same work.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.config import LearnerConfig
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.interfaces import TrainerLike
from adaptive_bkg.stages.filter import Calibrator, calibrate
from adaptive_bkg.stages.types import LabelledBatch, WeightsSnapshot
from adaptive_bkg.stats.sampling import Policy
from adaptive_bkg.stats.speedup import LearnerCompute, bootstrap_expected_speedup

MIN_EVENTS_FOR_TIMES = 200  # below this many labelled events the prior mean times are used


class MeanTimes(NamedTuple):
    t_fast: float
    t_nn: float
    t_slow: float


@dataclass(frozen=True)
class LearnerStatus:
    """Small progress report returned after every ingest (travels to the driver)."""

    version: int  # newest published version
    steps: int
    n_ingested: int  # labelled events received
    n_trained_events: int  # events that entered the training buffer
    n_validation: int
    last_loss: float
    online_auc: Mapping[str, float] | None
    k: tuple[float, ...]  # fitted policy parameters of the newest snapshot (first per skim)
    # Expected speedup (value, bootstrap σ) of the newest version's weights and policy on the
    # validation stream, per skim: what the current model would reach from now on.
    expected_speedup: Mapping[str, tuple[float, float]] | None = None
    # Training events held in the replay buffer and its capacity: the learner's memory grows
    # with the fill, so an operator (and the soak's warm-up) sees when it is full.
    buffer_events: int = 0
    buffer_capacity: int = 0
    # CPU (and GPU) seconds spent so far on training and publish-time re-scoring.
    compute: LearnerCompute = field(default_factory=LearnerCompute)


class _Chunk(NamedTuple):
    events: EventBatch
    labels: NDArray[np.bool_]
    weights: NDArray[np.float64]


class _FifoBuffer:
    """Bounded FIFO of labelled chunks; drops the oldest chunk(s) beyond `capacity` events."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.chunks: deque[_Chunk] = deque()
        self.n = 0

    def add(self, chunk: _Chunk) -> None:
        if len(chunk.events) == 0:
            return
        self.chunks.append(chunk)
        self.n += len(chunk.events)
        while self.n - len(self.chunks[0].events) >= self.capacity and len(self.chunks) > 1:
            self.n -= len(self.chunks.popleft().events)

    def all(self) -> _Chunk:
        return _concat(self.chunks)

    def sample(self, size: int, rng: np.random.Generator) -> _Chunk:
        """`size` events drawn uniformly without replacement across chunks."""
        size = min(size, self.n)
        chosen = np.sort(rng.choice(self.n, size=size, replace=False))
        bounds = np.cumsum([0] + [len(c.events) for c in self.chunks])
        parts = []
        for i, chunk in enumerate(self.chunks):
            local = chosen[(chosen >= bounds[i]) & (chosen < bounds[i + 1])] - bounds[i]
            if local.size:
                parts.append(
                    _Chunk(chunk.events.take(local), chunk.labels[local], chunk.weights[local])
                )
        return _concat(parts)


def _concat(chunks: Iterable[_Chunk]) -> _Chunk:
    chunks = list(chunks)
    return _Chunk(
        EventBatch.concat([c.events for c in chunks]),
        np.concatenate([c.labels for c in chunks]),
        np.concatenate([c.weights for c in chunks]),
    )


def is_validation(event_id: NDArray[np.uint64], fraction: float) -> NDArray[np.bool_]:
    """Deterministic hold-out by a hash of the event id (independent of keep decisions)."""
    if fraction <= 0:
        return np.zeros(event_id.shape, dtype=np.bool_)
    mixed = (event_id.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    return np.asarray(mixed.astype(np.float64) / float(1 << 24) < fraction)


class LearnerStage:
    """See the module docstring. `score` returns logits of the trainer's current model."""

    def __init__(
        self,
        trainer: TrainerLike,
        score: Callable[[EventBatch], NDArray[np.floating]],
        policy: Policy,
        skims: tuple[str, ...],
        cfg: LearnerConfig,
        prior_times: MeanTimes,
        learn: bool = True,
        seed: int = 0,
        calibrator: Calibrator | None = None,
        # Both reservoirs are re-scored at every publish: on a CPU that is ~1.5 s and ~3 s.
        probe_capacity: int = 2048,
        validation_capacity: int = 4096,
        keep_training_log: bool = False,
        clock: Callable[[], float] = time.monotonic,
        # Compute accounting: process CPU time (all threads of this process: in the Ray actor
        # the learner alone; in the serial driver only the measured calls count), and on a GPU
        # a device synchronisation (torch.cuda.synchronize) around each measured piece of work.
        cpu_clock: Callable[[], float] = time.process_time,
        device_sync: Callable[[], None] | None = None,
    ) -> None:
        self.trainer = trainer
        self.score = score
        self.policy = policy
        self.skims = tuple(skims)
        self.cfg = cfg
        self.prior_times = prior_times
        self.learn = learn and cfg.enabled
        self.calibrator = calibrator
        self.rng = np.random.default_rng(seed)
        self.clock = clock
        self.buffer = _FifoBuffer(cfg.replay_buffer_events)
        self.validation = _FifoBuffer(validation_capacity)
        self.probes = _FifoBuffer(probe_capacity)
        self.version = -1
        self.steps = 0
        self.steps_at_publish = 0
        self.ingests_since_publish = 0
        self.time_at_publish = clock()
        self.n_ingested = 0
        self.n_trained_events = 0
        self.last_loss = math.nan
        self.online_auc: dict[str, float] | None = None
        self.expected_speedup: dict[str, tuple[float, float]] | None = None
        self.training_log: list[tuple[NDArray[np.uint64], int]] | None = (
            [] if keep_training_log else None
        )
        self._latest: WeightsSnapshot | None = None
        self.cpu_clock = cpu_clock
        self.device_sync = device_sync
        self.compute = LearnerCompute()
        # Running 1/p-weighted sums of kept-event costs: unbiased means over ALL events.
        self._sum_w = 0.0
        self._sum_w_costs = np.zeros(3, dtype=np.float64)
        self._n_cost_events = 0

    # -- inputs ------------------------------------------------------------------------------
    def observe_probe(self, probe: EventBatch, max_events: int | None = None) -> None:
        """Add unfiltered, unlabelled events to the reservoir used to refit the policy.

        `max_events`: take a random subsample of at most this many (e.g. of a whole batch).
        """
        if max_events is not None and len(probe) > max_events:
            probe = probe.take(np.sort(self.rng.choice(len(probe), max_events, replace=False)))
        empty = np.zeros((len(probe), 0), dtype=np.bool_)
        self.probes.add(_Chunk(probe, empty, np.ones(len(probe))))

    def ingest(self, labelled: LabelledBatch) -> LearnerStatus:
        """Take freshly simulated kept events, train on them, maybe publish a new version."""
        if self.version < 0:
            raise RuntimeError("LearnerStage.ingest() before initial_snapshot()")
        if len(labelled) and int(labelled.model_version.max()) > self.version:
            # Impossible by construction (decisions use published versions only): guard anyway.
            raise RuntimeError(
                f"labelled events decided by version {int(labelled.model_version.max())} "
                f"arrived at a learner that has only published up to {self.version}"
            )
        self.observe_probe(labelled.probe)
        self.n_ingested += len(labelled)
        weights = 1.0 / labelled.p
        costs = np.stack([labelled.cost_fast_s, labelled.cost_nn_s, labelled.cost_slow_s], axis=1)
        self._sum_w += float(weights.sum())
        self._sum_w_costs += weights @ costs
        self._n_cost_events += len(labelled)
        held_out = is_validation(labelled.events.event_id, self.cfg.validation_fraction)
        for mask, target in ((held_out, self.validation), (~held_out, self.buffer)):
            idx = np.flatnonzero(mask)
            target.add(_Chunk(labelled.events.take(idx), labelled.labels[idx], weights[idx]))
        n_train_new = int((~held_out).sum())
        self.ingests_since_publish += 1
        if self.learn and n_train_new:
            self.n_trained_events += n_train_new
            if self.training_log is not None:
                # The weights these events first shape descend from `self.version`.
                self.training_log.append((labelled.events.event_id[~held_out], self.version))
            with self._measured("train"):
                for _ in range(max(1, math.ceil(n_train_new / self.cfg.batch_size))):
                    chunk = self.buffer.sample(self.cfg.batch_size, self.rng)
                    result = self.trainer.train_step(chunk.events, chunk.labels, chunk.weights)
                    self.last_loss = float(result.loss)
                    self.steps += 1
        if self._publish_due():
            self.publish()
        return self.status()

    # -- outputs -----------------------------------------------------------------------------
    def _publish_due(self) -> bool:
        elapsed = self.clock() - self.time_at_publish
        if self.learn:
            new_steps = self.steps - self.steps_at_publish
            return new_steps >= self.cfg.publish_every_steps or (
                new_steps > 0 and elapsed >= self.cfg.publish_every_s
            )
        # Learning off: the weights never change, but the policy is still refitted as the
        # probe reservoir grows (every K ingested batches or T seconds).
        return self.ingests_since_publish >= self.cfg.publish_every_steps or (
            self.ingests_since_publish > 0 and elapsed >= self.cfg.publish_every_s
        )

    def mean_times(self) -> MeanTimes:
        if self._n_cost_events < MIN_EVENTS_FOR_TIMES or self._sum_w <= 0:
            return self.prior_times
        t_fast, t_nn, t_slow = (self._sum_w_costs / self._sum_w).tolist()
        return MeanTimes(t_fast, t_nn, t_slow)

    def _q(self, events: EventBatch) -> NDArray[np.float64]:
        logits = np.asarray(self.score(events), dtype=np.float64).reshape(len(events), -1)
        return calibrate(logits, self.calibrator)

    def initial_snapshot(self, version: int = 0) -> WeightsSnapshot:
        """The starting weights, with the policy fitted to the probes seen so far, published as
        `version`: 0 for a new run, the next free version for a resumed one."""
        if self.version >= 0:
            raise RuntimeError("initial_snapshot() called twice")
        self.version = version - 1
        return self._publish(with_weights=True)

    def publish(self) -> WeightsSnapshot:
        """Refit the policy with the current weights, evaluate, and publish a new version."""
        return self._publish(with_weights=self.learn)

    @contextmanager
    def _measured(self, kind: Literal["train", "rescore"]) -> Iterator[None]:
        """Add the CPU (and, with `device_sync`, GPU wall) seconds of the block to `compute`:
        kind "train" (training steps) or "rescore" (a publish)."""
        if self.device_sync is not None:
            self.device_sync()  # work queued before the block is not the block's
        cpu, wall = self.cpu_clock(), time.perf_counter()
        try:
            yield
        finally:
            gpu = 0.0
            if self.device_sync is not None:
                self.device_sync()
                gpu = time.perf_counter() - wall
            spent = self.cpu_clock() - cpu
            c = self.compute
            self.compute = LearnerCompute(
                c.train_cpu_s + (spent if kind == "train" else 0.0),
                c.rescore_cpu_s + (spent if kind == "rescore" else 0.0),
                c.gpu_s + gpu,
            )

    def _publish(self, with_weights: bool) -> WeightsSnapshot:
        with self._measured("rescore"):
            return self._publish_measured(with_weights)

    def _publish_measured(self, with_weights: bool) -> WeightsSnapshot:
        if self.probes.n:
            t_fast, t_nn, t_slow = self.mean_times()
            self.policy.fit(self._q(self.probes.all().events), t_fast, t_nn, t_slow)
        if self.validation.n and self.version >= 0:
            val = self.validation.all()
            result = self.trainer.evaluate(val.events, val.labels, val.weights)
            self.online_auc = {k: float(v) for k, v in result.auc.items()}
            self.expected_speedup = self._expected_speedup(val, result.logits)
        self.version += 1
        self.steps_at_publish = self.steps
        self.ingests_since_publish = 0
        self.time_at_publish = self.clock()
        self._latest = WeightsSnapshot(
            version=self.version,
            state_dict=self.trainer.state_dict_cpu() if with_weights else None,
            policy_state=self.policy.state,
            online_auc=dict(self.online_auc) if self.online_auc else None,
        )
        return self._latest

    def _expected_speedup(
        self, val: _Chunk, logits: NDArray[np.floating]
    ) -> dict[str, tuple[float, float]]:
        """Per skim: expected speedup of the current weights + policy on the validation stream.

        The stream holds kept events with w = 1/p of the version that kept them, so the means
        over all events are 1/p-weighted (`speedup.expected_speedup_weighted`); the keep
        probability is the policy's p = max over skims, as in production.
        """
        q = calibrate(
            np.asarray(logits, dtype=np.float64).reshape(len(val.events), -1), self.calibrator
        )
        p = self.policy.keep_probability(q)
        t = self.mean_times()
        out = {}
        for s, skim in enumerate(self.skims):
            estimate = bootstrap_expected_speedup(
                val.labels[:, s], p, val.weights, (t.t_fast, t.t_nn, t.t_slow), seed=self.version
            )
            out[skim] = (estimate.value, estimate.error)
        return out

    def latest_snapshot(self) -> WeightsSnapshot:
        if self._latest is None:
            raise RuntimeError("no snapshot published yet")
        return self._latest

    def full_snapshot(self) -> WeightsSnapshot:
        """The newest version with its weights always attached (for final checkpoints)."""
        latest = self.latest_snapshot()
        if latest.state_dict is not None:
            return latest
        return WeightsSnapshot(
            latest.version, self.trainer.state_dict_cpu(), latest.policy_state, latest.online_auc
        )

    def status(self) -> LearnerStatus:
        params = tuple(float(p[0]) if p else math.nan for p in self.policy.state.params)
        return LearnerStatus(
            version=self.version,
            steps=self.steps,
            n_ingested=self.n_ingested,
            n_trained_events=self.n_trained_events,
            n_validation=self.validation.n,
            last_loss=self.last_loss,
            online_auc=dict(self.online_auc) if self.online_auc else None,
            k=params,
            expected_speedup=dict(self.expected_speedup) if self.expected_speedup else None,
            buffer_events=self.buffer.n,
            buffer_capacity=self.buffer.capacity,
            compute=self.compute,
        )
