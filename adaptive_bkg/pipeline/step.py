"""The driver's decisions, shared by both drivers: `orchestrate` (Ray) and `replay` (serial).

A driver moves batches (generate → filter → simulate → record, and labelled events to the
learner); `DriverStep` decides everything else, so the two drivers cannot drift apart:
how many events the next batch asks for and from which generator, whether the learner gets a
batch or production waits for it, what a recorder or learner result changes (progress, a newer
model version for the filter, a failure), and when and why the run stops. It holds no stage
and imports no Ray: the serial driver hands it results at once, the Ray driver as they arrive.
"""

from __future__ import annotations

from adaptive_bkg.pipeline.runbook import RunBook, RunPlan, RunResult
from adaptive_bkg.stages.learner import LearnerStage, LearnerStatus
from adaptive_bkg.stages.recorder import RecorderStatus
from adaptive_bkg.stages.types import GeneratedBatch, WeightsSnapshot

ALL_GENERATED = "events: all requested events generated"
SOURCE_EXHAUSTED = "source exhausted"


def prime_learner(learner: LearnerStage, first: GeneratedBatch) -> None:
    """Show the learner the first generated batch, unfiltered: the initial policy fit."""
    learner.observe_probe(first.events, max_events=learner.probes.capacity)


class DriverStep:
    """Per-batch bookkeeping and decisions of one production (see the module docstring)."""

    def __init__(self, plan: RunPlan, book: RunBook) -> None:
        self.plan = plan
        self.book = book
        self.launched = plan.resume.n_generated  # events asked for so far (the stop rule's count)
        self.n_batches = 0
        self.version = -1  # the model version the filter decides the next batch with
        self.reason = ""
        self.stopping = False  # a stop was decided: launch nothing more, finish what is running
        self.exhausted = False  # every requested event is launched
        self.learner_alive = True

    @property
    def first_version(self) -> int:
        """The version the learner publishes its starting weights as (a resumed run goes on)."""
        return self.plan.resume.next_version

    # -- launching -----------------------------------------------------------------------------
    def next_size(self) -> int:
        """Events for the next batch; 0 once the stop rule has every event it asked for."""
        n = self.plan.stop.to_generate(self.launched, self.plan.cfg.run.batch_size)
        if n == 0:
            self.exhausted = True
        return n

    def generator_index(self, n_generators: int) -> int:
        """Batch k comes from generator k mod G in both drivers: same config, same events."""
        return self.n_batches % n_generators

    def waits_for_learner(self, n_learning: int) -> bool:
        """Lockstep (`run.wait_for_learner`): production waits while the learner is full. Also
        without learning the learner refits the policy, and waiting for each refit decides
        exactly as the serial replay of the same events."""
        run = self.plan.cfg.run
        return self.learner_alive and run.wait_for_learner and n_learning >= run.learner_max_pending

    def may_launch(self, n_in_flight: int, n_learning: int) -> bool:
        """Room for one more batch in the pipeline (`ray.max_in_flight`)."""
        return (
            not self.stopping
            and not self.exhausted
            and n_in_flight < self.plan.cfg.ray.max_in_flight
            and not self.waits_for_learner(n_learning)
        )

    def learns_from_next(self, n_learning: int) -> bool:
        """Whether the next batch goes to the learner: a learner slower than production never
        stalls it; beyond `run.learner_max_pending` queued batches, batches are not trained on."""
        return self.learner_alive and n_learning < self.plan.cfg.run.learner_max_pending

    def launched_batch(self, n_events: int, to_learner: bool = True) -> None:
        self.launched += n_events
        self.n_batches += 1
        if not to_learner:
            self.book.n_dropped_for_learner += 1

    # -- results -------------------------------------------------------------------------------
    def adopt(self, snapshot: WeightsSnapshot) -> None:
        """The filter decides the next batches with `snapshot` (its version is checkpointed)."""
        self.version = snapshot.version
        self.book.adopt(snapshot)

    def recorded(self, status: RecorderStatus) -> None:
        self.book.on_recorder(status)

    def batch_failed(self, cause: str) -> None:
        """A batch failed for good: stop cleanly and keep what is recorded."""
        if self.stopping:
            return
        self.stopping, self.reason = True, f"error: {cause}"
        self.book.failure = self.reason
        self.book.live.notice(f"ERROR: a batch failed ({cause}); stopping")

    def learned(self, status: LearnerStatus) -> bool:
        """Note the learner's progress; True when it has published a version newer than the
        filter's, which the driver then fetches and `adopt`s."""
        self.book.on_learner(status)
        return status.version > self.version

    def learner_lost(self, description: str) -> None:
        """The learner failed: production goes on with the newest published weights."""
        self.learner_alive = False
        self.book.learner_failure = description
        self.book.live.notice(
            f"WARNING: the learner failed ({description}); production continues with "
            f"model version {self.version} and no further learning"
        )

    def source_exhausted(self) -> None:
        self.stopping, self.reason = True, SOURCE_EXHAUSTED

    def check_stop(self) -> bool:
        """Log progress and apply the stop rule (budget, events, N_eff, signals); True once the
        run is stopping."""
        self.book.log()
        stop = self.book.stop_reason()
        if stop and not self.stopping:
            self.stopping, self.reason = True, stop
        return self.stopping

    def final_reason(self) -> str:
        """Why the run ended, once nothing is left in flight."""
        return self.reason or (ALL_GENERATED if self.exhausted else "stopped")

    def finish(self, final: RecorderStatus, snapshot: WeightsSnapshot | None) -> RunResult:
        return self.book.finish(final, self.final_reason(), snapshot)
