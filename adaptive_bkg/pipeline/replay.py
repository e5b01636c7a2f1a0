"""The pipeline in one process, without Ray: offline replay and strategy studies.

`run_serial` chains the very same stages as `orchestrate` (generator → filter → simulate →
recorder, learner → filter) one batch at a time, and writes the same run directory. With
`replay_run` the events come from a recorded file and, for a labelled file, the labels from
the `replay` backend looking them up in that same file: a policy or learning strategy can be
compared on identical events without regenerating or resimulating anything.
"""

from __future__ import annotations

from pathlib import Path

from adaptive_bkg.backends.labelled import recorded_skims
from adaptive_bkg.backends.plugins import resolve_plugins
from adaptive_bkg.config import Config, with_overrides
from adaptive_bkg.errors import UserError
from adaptive_bkg.generators.recorded import FileSource
from adaptive_bkg.pipeline.budget import stop_on_signals
from adaptive_bkg.pipeline.runbook import RunBook, RunPlan, RunResult, plan_run
from adaptive_bkg.pipeline.step import DriverStep, prime_learner
from adaptive_bkg.stages.build import DefaultStages
from adaptive_bkg.stages.recorder import RecorderStage
from adaptive_bkg.stages.types import GeneratedBatch


def run_serial(plan: RunPlan, show_live: bool | None = None) -> RunResult:
    """Run `plan` in this process; stops like `orchestrate.run_pipeline` (and on exhaustion).

    One batch at a time, each decided, recorded and learned from before the next starts: what
    `orchestrate` does in lockstep (`run.wait_for_learner`, one batch in flight)."""
    cfg, factory = plan.cfg, plan.factory
    book = RunBook(plan, show_live=show_live)
    step = DriverStep(plan, book)
    generators = [factory.generator(w, cfg.run.run_number) for w in range(cfg.ray.generators)]
    filt = factory.filter()
    simulator = factory.simulator(0)
    learner = factory.learner()
    recorder = RecorderStage(book.records_dir, plan.skims)
    with stop_on_signals(book.flag), book.live:
        try:
            n = step.next_size()
            pending: GeneratedBatch | None = generators[0].next_batch(n) if n else None
            if pending is not None:
                prime_learner(learner, pending)
            snapshot = learner.initial_snapshot(step.first_version)
            filt.swap(snapshot)
            step.adopt(snapshot)
            while True:
                if pending is None:
                    n = step.next_size()
                    if n == 0:
                        break
                    pending = generators[step.generator_index(len(generators))].next_batch(n)
                if len(pending) == 0:
                    step.source_exhausted()
                    break
                step.launched_batch(len(pending))
                records, labelled = simulator.simulate(filt.filter(pending))
                pending = None
                step.recorded(recorder.record(records))
                if step.learned(learner.ingest(labelled)):
                    snapshot = learner.latest_snapshot()
                    filt.swap(snapshot)
                    step.adopt(snapshot)
                if step.check_stop():
                    break
        finally:
            final = recorder.close()
    return step.finish(final, learner.full_snapshot())


def check_replayable(cfg: Config, data: Path) -> None:
    """Fail before anything is written when `data` is missing, not an event file, or (with
    labels from the file) lacks labels for a requested skim."""

    data = Path(data)
    if not data.exists():
        raise UserError(f"replay data {data} not found")
    FileSource(data)  # not Parquet, or neither events nor labelled events: one line
    if cfg.backend.name != "emulator":
        return  # labels come from the configured backend
    available = recorded_skims(data)
    absent = [s for s in cfg.run.skims if s not in available]
    if absent:
        raise UserError(
            f"{data} has no labels for skim(s) {', '.join(absent)} (it has: "
            f"{', '.join(available) or 'none'}); pick one of those with --skim, or label events "
            f"for it: adaptive-bkg label --skims {','.join(absent)} -o FILE"
        )


def replay_run(
    cfg: Config, data: Path, learn: bool = True, show_live: bool | None = None
) -> RunResult:
    """Replay a recorded (labelled) dataset through the stages; same outputs as `run`."""

    data = Path(data)
    if not data.exists():
        raise UserError(f"replay data {data} not found")
    cfg = resolve_plugins(cfg)  # `--skim my_module:MySkim` reads the column pass_<its name>
    check_replayable(cfg, data)
    if cfg.backend.name == "emulator":
        # Labels from the file itself (the replay backend), not a fresh simulation.
        cfg = with_overrides(cfg, ["backend.name=replay", f"backend.replay.path={data}"])
    # One reader of the file; the learner publishes by steps only: a wall-clock trigger
    # (learner.publish_every_s) would make a replay's records depend on the machine's speed.
    cfg = with_overrides(cfg, ["ray.generators=1", "learner.publish_every_s=.inf"])
    if cfg.run.events is None and cfg.run.budget is None and cfg.run.target_neff is None:
        cfg = with_overrides(cfg, [f"run.events={2**62}"])  # stop when the file is exhausted
    learn = learn and cfg.learner.enabled
    factory = DefaultStages(cfg, tuple(cfg.run.skims), learn, source_path=data)
    plan = plan_run(cfg, learn=learn, factory=factory, tag="replay-")
    return run_serial(plan, show_live=show_live)
