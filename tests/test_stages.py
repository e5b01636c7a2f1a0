"""Pipeline stages without Ray, on the fakes in pipeline_fakes.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pipeline_fakes import SKIM, FakeBackend, FakeScorer, FakeSource, FakeTrainer

from adaptive_bkg.config import LearnerConfig, PolicyConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.stages import (
    FilterStage,
    GeneratorStage,
    LearnerStage,
    MeanTimes,
    SimulateStage,
    WeightsSnapshot,
)
from adaptive_bkg.stats.sampling import make_policy

SKIMS = (SKIM,)
TIMES = MeanTimes(0.001, 0.001, 0.1)


def snapshot(
    version: int, w: float = 6.0, b: float = 1.5, policy: str = "sqrt-optimal"
) -> WeightsSnapshot:
    pol = make_policy(PolicyConfig(name=policy), SKIMS)
    state = {"w": torch.tensor(w), "b": torch.tensor(b)}
    return WeightsSnapshot(version, state, pol.state)


def fast_cost(batch):  # type: ignore[no-untyped-def]
    return np.full(len(batch), 0.001)


def make_filter(seed: int = 3) -> FilterStage:
    return FilterStage(FakeScorer(0.0, 0.0), SKIMS, seed=seed, nn_cost=fast_cost)


def test_generator_stage_attaches_costs() -> None:
    gen = GeneratorStage(FakeSource(seed=1), fast_cost=fast_cost).next_batch(500)
    assert len(gen) == 500
    np.testing.assert_array_equal(gen.cost_fast_s, 0.001)
    measured = GeneratorStage(FakeSource(seed=1)).next_batch(100)
    assert np.all(measured.cost_fast_s >= 0)
    assert np.ptp(measured.cost_fast_s) == 0


def test_filter_keep_rate_matches_mean_p() -> None:
    filt = make_filter()
    filt.swap(snapshot(0))
    gen = GeneratorStage(FakeSource(seed=2), fast_cost=fast_cost)
    kept, p_sum, var = 0, 0.0, 0.0
    for _ in range(10):
        out = filt.filter(gen.next_batch(2000))
        d = out.decisions
        kept += int(d.kept.sum())
        p_sum += float(d.p.sum())
        var += float((d.p * (1 - d.p)).sum())
        assert len(out.kept) == int(d.kept.sum())
        np.testing.assert_array_equal(out.kept.event_id, d.event_id[d.kept])
        assert np.all(d.p >= 0.01)
        assert np.all(d.p <= 1.0)  # floor p_min = 0.01
    # Sum of independent Bernoulli(p): 4 standard deviations, fails by chance with prob ~6e-5.
    assert abs(kept - p_sum) < 4 * math.sqrt(var)
    assert 0.02 < kept / 20000 < 0.9  # the fake policy really filters


def test_filter_refuses_before_snapshot_and_tags_versions() -> None:
    filt = make_filter()
    gen = GeneratorStage(FakeSource(seed=3), fast_cost=fast_cost)
    with pytest.raises(RuntimeError, match="before the first WeightsSnapshot"):
        filt.filter(gen.next_batch(10))
    with pytest.raises(ValueError, match="must carry weights"):
        filt.swap(WeightsSnapshot(0, None, snapshot(0).policy_state))
    assert filt.swap(snapshot(0)) == 0
    batch = gen.next_batch(1000)
    first = filt.filter(batch)
    np.testing.assert_array_equal(first.decisions.model_version, 0)
    # Newer snapshot: different weights -> different q; every record carries the new version.
    assert filt.swap(snapshot(3, w=2.0, b=0.5)) == 3
    second = filt.filter(batch)
    np.testing.assert_array_equal(second.decisions.model_version, 3)
    assert not np.allclose(first.decisions.q, second.decisions.q)
    # A stale or repeated snapshot (at-least-once delivery) is ignored.
    assert filt.swap(snapshot(2, w=0.1)) == 3
    assert filt.scorer.w == 2.0  # type: ignore[attr-defined]
    # Policy-only snapshot keeps the weights.
    filt.swap(WeightsSnapshot(4, None, snapshot(0, policy="none").policy_state))
    assert filt.scorer.w == 2.0  # type: ignore[attr-defined]
    assert filt.filter(batch).decisions.kept.all()  # policy none: p = 1


def test_filter_decisions_are_reproducible_per_batch() -> None:
    batch = GeneratorStage(FakeSource(seed=4), fast_cost=fast_cost).next_batch(3000)
    a, b = make_filter(seed=9), make_filter(seed=9)
    a.swap(snapshot(0))
    b.swap(snapshot(0))
    b.filter(GeneratorStage(FakeSource(seed=5, worker=1)).next_batch(100))  # other traffic first
    np.testing.assert_array_equal(a.filter(batch).decisions.kept, b.filter(batch).decisions.kept)
    c = make_filter(seed=10)
    c.swap(snapshot(0))
    assert not np.array_equal(a.filter(batch).decisions.kept, c.filter(batch).decisions.kept)


def test_simulate_only_kept_events() -> None:
    filt = make_filter()
    filt.swap(snapshot(0))
    backend = FakeBackend()
    sim = SimulateStage(backend, SKIMS)
    out = filt.filter(GeneratorStage(FakeSource(seed=6), fast_cost=fast_cost).next_batch(2000))
    records, labelled = sim.simulate(out)
    d = out.decisions
    np.testing.assert_array_equal(np.concatenate(backend.simulated_ids), d.event_id[d.kept])
    assert np.all(records.cost_slow_s[~d.kept] == 0)
    assert np.all(records.cost_slow_s[d.kept] > 0)
    assert not records.passed[~d.kept].any()
    np.testing.assert_array_equal(labelled.labels, records.passed[d.kept])
    np.testing.assert_array_equal(labelled.p, d.p[d.kept])
    np.testing.assert_array_equal(labelled.model_version, d.model_version[d.kept])
    assert len(labelled.probe) == 128


def test_simulate_rejects_unknown_skim() -> None:
    with pytest.raises(UserError, match="does not provide skim"):
        SimulateStage(FakeBackend(), ("no-such-skim",))


def _learner(publish_every_steps: int = 2, learn: bool = True) -> tuple[LearnerStage, FakeTrainer]:
    scorer = FakeScorer(w=2.0, b=0.5)  # a poor start: the fake trainer moves it to the truth
    trainer = FakeTrainer(scorer)
    cfg = LearnerConfig(batch_size=64, publish_every_steps=publish_every_steps, publish_every_s=1e9)
    learner = LearnerStage(
        trainer,
        scorer.logits,
        make_policy(PolicyConfig(), SKIMS),
        SKIMS,
        cfg,
        TIMES,
        learn=learn,
        keep_training_log=True,
    )
    return learner, trainer


def test_learner_trains_only_on_decided_events_and_publishes() -> None:
    learner, trainer = _learner()
    filt = make_filter()
    gen = GeneratorStage(FakeSource(seed=7), fast_cost=fast_cost)
    sim = SimulateStage(FakeBackend(), SKIMS)
    first = gen.next_batch(2000)
    learner.observe_probe(first.events.take(np.arange(256)))
    v0 = learner.initial_snapshot()
    assert v0.version == 0
    assert v0.state_dict is not None
    assert v0.policy_state.n_fits == 1
    filt.swap(v0)
    decided: dict[int, int] = {}
    for i in range(8):
        out = filt.filter(first if i == 0 else gen.next_batch(2000))
        decided.update(
            zip(out.decisions.event_id.tolist(), out.decisions.model_version.tolist(), strict=True)
        )
        _, labelled = sim.simulate(out)
        status = learner.ingest(labelled)
        filt.swap(learner.latest_snapshot())
    assert status.version >= 2
    assert status.steps > 0
    assert filt.version == status.version
    # Causality: every event the trainer ever saw was decided, by a version the learner had
    # already published when it first trained on the event.
    assert learner.training_log
    for ids, version_at_training in learner.training_log:
        for event_id in ids.tolist():
            assert decided[event_id] <= version_at_training
    seen = np.concatenate(trainer.seen_ids)
    assert set(seen.tolist()) <= set(decided)
    # Validation events are never trained on.
    val_ids = set(learner.validation.all().events.event_id.tolist())
    assert val_ids
    assert not val_ids & set(seen.tolist())
    assert status.online_auc is not None
    assert status.online_auc[SKIM] > 0.7
    # The policy was refitted on the probe q distribution and travels with the snapshot.
    assert learner.latest_snapshot().policy_state.n_fits == status.version + 1
    # Trained towards the truth: the learner's weights moved.
    assert abs(float(learner.latest_snapshot().state_dict["w"]) - 6.0) < 1.0  # type: ignore[index]


def test_learner_rejects_events_from_an_unpublished_version() -> None:
    learner, _ = _learner()
    filt = make_filter()
    gen = GeneratorStage(FakeSource(seed=8), fast_cost=fast_cost)
    with pytest.raises(RuntimeError, match="before initial_snapshot"):
        learner.ingest(SimulateStage(FakeBackend(), SKIMS).simulate(filt_after(filt, gen))[1])
    learner.initial_snapshot()
    filt.swap(snapshot(5))  # a version the learner never published
    _, labelled = SimulateStage(FakeBackend(), SKIMS).simulate(filt.filter(gen.next_batch(500)))
    with pytest.raises(RuntimeError, match="only published up to 0"):
        learner.ingest(labelled)


def filt_after(filt: FilterStage, gen: GeneratorStage):  # type: ignore[no-untyped-def]
    filt.swap(snapshot(0))
    return filt.filter(gen.next_batch(200))


def test_learner_without_learning_refits_policy_only() -> None:
    learner, trainer = _learner(publish_every_steps=2, learn=False)
    filt = make_filter()
    gen = GeneratorStage(FakeSource(seed=9), fast_cost=fast_cost)
    sim = SimulateStage(FakeBackend(), SKIMS)
    filt.swap(learner.initial_snapshot())
    for _ in range(4):
        learner.ingest(sim.simulate(filt.filter(gen.next_batch(1000)))[1])
    assert trainer.step == 0
    snap = learner.latest_snapshot()
    assert snap.version == 2
    assert snap.state_dict is None
    assert learner.full_snapshot().state_dict is not None
