"""The driver's decisions (pipeline/step.py), shared by the Ray and the serial driver: batch sizes
and the stop rule, lockstep and a busy learner, failures, and the version the filter gets."""

from __future__ import annotations

import math
from pathlib import Path

from test_replay import fake_plan

from adaptive_bkg.config import PolicyConfig
from adaptive_bkg.pipeline.runbook import RunBook
from adaptive_bkg.pipeline.step import ALL_GENERATED, SOURCE_EXHAUSTED, DriverStep
from adaptive_bkg.stages.learner import LearnerStatus
from adaptive_bkg.stages.types import WeightsSnapshot
from adaptive_bkg.stats.sampling import make_policy

POLICY = make_policy(PolicyConfig()).state


def _step(tmp_path: Path, *overrides: str) -> DriverStep:
    plan = fake_plan(tmp_path / "run", *overrides)
    return DriverStep(plan, RunBook(plan, show_live=False))


def _status(version: int) -> LearnerStatus:
    return LearnerStatus(version, 0, 0, 0, 0, math.nan, None, ())


def test_batches_follow_the_stop_rule_and_the_generators_in_turn(tmp_path: Path) -> None:
    step = _step(tmp_path, "run.events=2500", "ray.generators=2")
    sizes, generators = [], []
    while n := step.next_size():
        generators.append(step.generator_index(2))
        sizes.append(n)
        step.launched_batch(n)
    assert sizes == [1000, 1000, 500]
    assert generators == [0, 1, 0]
    assert step.exhausted
    assert not step.stopping
    assert step.final_reason() == ALL_GENERATED


def test_a_busy_learner_gets_no_more_batches_unless_production_waits(tmp_path: Path) -> None:
    free = _step(tmp_path / "free", "run.events=10000", "run.learner_max_pending=2")
    assert free.may_launch(n_in_flight=0, n_learning=2)  # production never waits ...
    assert not free.learns_from_next(n_learning=2)  # ... and the batch goes untrained
    free.launched_batch(1000, to_learner=False)
    assert free.book.n_dropped_for_learner == 1
    assert not free.may_launch(n_in_flight=4, n_learning=0)  # ray.max_in_flight = 4

    lockstep = _step(
        tmp_path / "lockstep", "run.events=10000", "run.learner_max_pending=2",
        "run.wait_for_learner=true",
    )  # fmt: skip
    assert not lockstep.may_launch(n_in_flight=0, n_learning=2)
    assert lockstep.may_launch(n_in_flight=0, n_learning=1)
    lockstep.learner_lost("RayActorError: gone")  # a dead learner is waited for no more
    assert lockstep.may_launch(n_in_flight=0, n_learning=2)
    assert not lockstep.learns_from_next(n_learning=0)
    assert lockstep.book.learner_failure == "RayActorError: gone"


def test_the_filter_gets_each_newer_version_once(tmp_path: Path) -> None:
    step = _step(tmp_path, "run.events=10000")
    step.adopt(WeightsSnapshot(0, None, POLICY))  # policy-only: nothing is checkpointed
    assert step.version == 0
    assert not step.learned(_status(0))
    assert step.learned(_status(1))
    step.adopt(WeightsSnapshot(1, None, POLICY))
    assert not step.learned(_status(1))
    assert step.book.learner == _status(1)


def test_the_first_failure_stops_the_run_and_names_the_cause(tmp_path: Path) -> None:
    step = _step(tmp_path, "run.events=10000")
    step.batch_failed("backend exited 3")
    step.batch_failed("a later failure")
    assert step.stopping
    assert not step.may_launch(0, 0)
    assert step.final_reason() == step.book.failure == "error: backend exited 3"
    empty = _step(tmp_path / "empty", "run.events=10000")
    empty.source_exhausted()
    assert empty.final_reason() == SOURCE_EXHAUSTED
