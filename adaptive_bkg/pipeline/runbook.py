"""Everything about a running production that is not Ray: the run directory, progress,
metrics, checkpoints and the final summary. Shared by `orchestrate` (Ray) and `replay`; the
validated `RunPlan` they start from is made in `plan.py`.

Run directory (`runs/<UTC time>-<skim>/` or `--out DIR`):

    config.yaml        the resolved configuration
    records/           part-*.parquet, one row per generated event (stages/recorder.py)
    checkpoints/       v0000.pt … one per published model version, final.pt
    metrics.jsonl      one `live.MetricsRecord` every run.metrics_every_s
    summary.json       RunSummary (metrics.py) + a "run" block (stop reason, versions …)
    plots/             N_eff and speedup vs time, weights per model version
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from adaptive_bkg.errors import UserError
from adaptive_bkg.pipeline.budget import Progress, StopFlag
from adaptive_bkg.pipeline.live import LiveView, learner_compute_so_far, metrics_record
from adaptive_bkg.pipeline.plan import RunPlan
from adaptive_bkg.pipeline.progress import Toward, toward_stop
from adaptive_bkg.stages.learner import LearnerStatus
from adaptive_bkg.stages.recorder import (
    RECORDS_DIR,
    SUMMARY_FILE,
    RecorderStatus,
    summarize_by_version,
    summary_to_json,
)
from adaptive_bkg.stages.types import WeightsSnapshot
from adaptive_bkg.stats.metrics import RunSummary, speedups_with_learner
from adaptive_bkg.stats.speedup import LearnerCompute


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    summary: RunSummary
    stop_reason: str
    wall_s: float
    n_versions: int
    first_version: RunSummary | None
    last_version: RunSummary | None
    n_dropped_for_learner: int
    learn: bool = True
    online_auc: dict[str, float] | None = None
    failure: str | None = None  # the run stopped on an error (records and summary are whole)
    learner_failure: str | None = None
    # (value, σ) per skim: the last version's expected speedup on the validation stream
    expected_speedup: dict[str, tuple[float, float]] | None = None
    # The learner's compute, and per skim the speedup (value, σ) with it added to the cost.
    learner_compute: LearnerCompute = field(default_factory=LearnerCompute)
    speedup_with_learner: dict[str, tuple[float, float]] | None = None


@dataclass
class RunBook:
    """Live bookkeeping of one production (driver side)."""

    plan: RunPlan
    show_live: bool | None = None
    flag: StopFlag = field(default_factory=StopFlag)

    def __post_init__(self) -> None:
        self.run_dir = self.plan.run_dir
        try:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run directory {self.run_dir}: {exc.strerror}") from None
        # A resumed run keeps the config.yaml that started it (what --reproduce repeats); the
        # settings of the newest segment go beside it.
        name = "config.resumed.yaml" if self.plan.resume.resumed else "config.yaml"
        (self.run_dir / name).write_text(self.plan.cfg.to_yaml())
        self.records_dir = self.run_dir / RECORDS_DIR
        self.start = time.monotonic()
        self.failure: str | None = None
        self.recorder: RecorderStatus | None = None
        self.learner: LearnerStatus | None = None
        self.filter_version = -1
        self.n_dropped_for_learner = 0
        self.learner_failure: str | None = None
        self._eta_origin: tuple[float, float] | None = None
        self._told_dropped = 0
        self._last_drop_notice = -math.inf
        self._last_log = -math.inf
        self._last_counts = (self.plan.resume.n_generated, 0, self.start)
        self._rates = (0.0, 0.0, 0.0)  # generated, kept, simulated per wall second
        # A resumed run's learner starts from zero: add what earlier segments spent.
        self.learner_compute_before = (
            learner_compute_so_far(self.run_dir / "metrics.jsonl")
            if self.plan.resume.resumed
            else LearnerCompute()
        )
        self.live = LiveView(
            self.run_dir / "metrics.jsonl", f"adaptive-bkg run {self.run_dir.name}", self.show_live
        )

    # -- progress ------------------------------------------------------------------------------
    def on_recorder(self, status: RecorderStatus) -> None:
        self.recorder = status

    def on_learner(self, status: LearnerStatus) -> None:
        self.learner = status

    def learner_compute(self) -> LearnerCompute:
        now = self.learner.compute if self.learner else LearnerCompute()
        return self.learner_compute_before.plus(now)

    def wall_s(self) -> float:
        return time.monotonic() - self.start

    def progress(self) -> Progress:
        status = self.recorder
        if status is None:
            return Progress(0, 0.0 if self.plan.factory.virtual_clock else self.wall_s(), 0.0)
        spent = status.total_cost_s if self.plan.factory.virtual_clock else self.wall_s()
        n_effs = [s.n_eff for s in status.summary.skims.values()]
        return Progress(status.n_generated, spent, min(n_effs) if n_effs else 0.0)

    def stop_reason(self) -> str | None:
        if self.flag.is_set():
            return self.flag.reason
        return self.plan.stop.reason(self.progress())

    def adopt(self, snapshot: WeightsSnapshot) -> None:
        """The filter now decides with `snapshot`: note its version and checkpoint it."""
        self.filter_version = snapshot.version
        self.save_snapshot(snapshot)

    def save_snapshot(self, snapshot: WeightsSnapshot, name: str | None = None) -> None:
        if snapshot.state_dict is None:
            return  # policy-only version: the weights are those of an earlier checkpoint
        path = self.run_dir / "checkpoints" / (name or f"v{snapshot.version:04d}.pt")
        self.plan.factory.save_checkpoint(path, snapshot)

    def _tell_degraded(self) -> None:
        """Say on screen when batches go untrained, as it happens (not only in summary.json).
        (A learner failure is told by the driver where it catches it.)"""
        dropped = self.n_dropped_for_learner
        if (
            self.plan.learn
            and dropped > self._told_dropped
            and (time.monotonic() - self._last_drop_notice >= self.plan.cfg.run.metrics_every_s * 5)
        ):
            self.live.notice(
                f"learner busy: {dropped} batch(es) so far recorded but not trained on "
                "(production never waits for it; run.wait_for_learner=true makes it wait)"
            )
            self._told_dropped = dropped
            self._last_drop_notice = time.monotonic()

    def _toward(self) -> Toward:
        wall = self.wall_s()
        toward = toward_stop(self.plan.stop, self.progress(), wall, self._eta_origin or (0, 0))
        if self._eta_origin is None:
            self._eta_origin = (wall, toward.fraction)
        return toward

    def log(self, force: bool = False) -> None:
        self._tell_degraded()
        now = time.monotonic()
        if self.recorder is None or (
            not force and now - self._last_log < self.plan.cfg.run.metrics_every_s
        ):
            return
        n_gen, n_kept, t0 = self._last_counts
        dt = max(now - t0, 1e-9)
        status = self.recorder
        if status.n_generated > n_gen:  # else (final forced line): keep the last rates
            kept_rate = (status.n_kept - n_kept) / dt
            self._rates = ((status.n_generated - n_gen) / dt, kept_rate, kept_rate)
        rates = self._rates
        learner = self.learner
        self.live.update(
            metrics_record(
                status.summary,
                wall_s=self.wall_s(),
                spent_s=self.progress().spent_s,
                rates=rates,
                model_version=self.filter_version,
                learner_steps=learner.steps if learner else 0,
                online_auc=learner.online_auc if learner else None,
                expected_speedup=learner.expected_speedup if learner else None,
                learner_buffer=(learner.buffer_events, learner.buffer_capacity)
                if learner
                else (0, 0),
                learner_compute=self.learner_compute(),
            ),
            self._toward(),
        )
        self._last_log = now
        self._last_counts = (status.n_generated, status.n_kept, now)

    # -- the end -------------------------------------------------------------------------------
    def finish(
        self, final: RecorderStatus, stop_reason: str, final_snapshot: WeightsSnapshot | None
    ) -> RunResult:
        self.recorder = final
        self.log(force=True)
        if final_snapshot is not None:
            self.save_snapshot(final_snapshot, "final.pt")
        by_version = summarize_by_version(self.run_dir) if final.n_generated else {}
        versions = sorted(by_version)
        learner = self.learner
        online_auc = dict(learner.online_auc) if learner and learner.online_auc else None
        expected = dict(learner.expected_speedup) if learner and learner.expected_speedup else None
        compute = self.learner_compute()
        with_learner = {
            k: (v.value, v.error) for k, v in speedups_with_learner(final.summary, compute).items()
        }
        extra = {
            "stop_reason": stop_reason,
            "wall_s": self.wall_s(),
            "skims": list(self.plan.skims),
            "learn": self.plan.learn,
            "policy": self.plan.cfg.policy.name,
            "virtual_clock": self.plan.factory.virtual_clock,
            "n_duplicates": final.n_duplicates,
            "n_dropped_for_learner": self.n_dropped_for_learner,
            "learner_failure": self.learner_failure,
            "failure": self.failure,
            "resumed_from": (
                dataclasses.asdict(self.plan.resume) if self.plan.resume.resumed else None
            ),
            "model_versions": versions,
            "final_model_version": self.filter_version,
            "learner_steps": learner.steps if learner else 0,
            "online_auc": online_auc,
            "speedup_by_version": {
                str(v): {k: s.speedup for k, s in by_version[v].skims.items()} for v in versions
            },
            "speedup_err_by_version": {
                str(v): {k: s.speedup_err for k, s in by_version[v].skims.items()} for v in versions
            },
            "expected_speedup_validation": expected,
            "learner_compute": compute.to_dict(),
            "speedup_with_learner": with_learner,
        }
        (self.run_dir / SUMMARY_FILE).write_text(summary_to_json(final.summary, extra))
        if self.plan.cfg.run.plots and final.n_generated:
            from adaptive_bkg.pipeline.plots import plot_run  # lazy: matplotlib only to draw

            plot_run(self.run_dir)
        return RunResult(
            run_dir=self.run_dir,
            summary=final.summary,
            stop_reason=stop_reason,
            wall_s=self.wall_s(),
            n_versions=len(versions),
            first_version=by_version[versions[0]] if versions else None,
            last_version=by_version[versions[-1]] if versions else None,
            n_dropped_for_learner=self.n_dropped_for_learner,
            learn=self.plan.learn,
            online_auc=online_auc,
            failure=self.failure,
            learner_failure=self.learner_failure,
            expected_speedup=expected,
            learner_compute=compute,
            speedup_with_learner=with_learner,
        )


def result_lines(result: RunResult) -> list[str]:
    """What `run`, `replay` and `demo` print at the end."""
    s = result.summary
    lines = [
        f"run directory: {result.run_dir}",
        f"stopped ({result.stop_reason}) after {result.wall_s:.0f} s wall time: "
        f"{s.n_generated:,} generated = {s.n_kept:,} kept + {s.n_generated - s.n_kept:,} "
        f"discarded; emulated compute {s.total_cost_s:,.0f} s",
    ]
    for name, skim in s.skims.items():
        lines.append(
            f"[{name}] N_eff {skim.n_eff:,.0f}, ε̂ = {skim.eff_hat:.4f} ± {skim.eff_hat_err:.4f}; "
            f"speedup {skim.speedup:.2f} ± {skim.speedup_err:.2f} = "
            f"{100 * skim.fraction_of_oracle:.0f} % of the oracle {skim.oracle_speedup:.2f}"
        )
        first, last = result.first_version, result.last_version
        if first is not None and last is not None and result.n_versions > 1:
            a, b = first.skims[name], last.skims[name]
            lines.append(
                f"[{name}] speedup went from {a.speedup:.2f} ± {a.speedup_err:.2f} (first model "
                f"version, {a.n_pass_kept} passing events) to {b.speedup:.2f} ± "
                f"{b.speedup_err:.2f} (last of {result.n_versions} versions, "
                f"{b.n_pass_kept} passing events)"
            )
        if result.speedup_with_learner and name in result.speedup_with_learner:
            value, error = result.speedup_with_learner[name]
            lines.append(
                f"[{name}] speedup including the learner's compute "
                f"({result.learner_compute.counted_s:,.1f} CPU s): {value:.2f} ± {error:.2f} "
                f"(stages only: {skim.speedup:.2f} ± {skim.speedup_err:.2f})"
            )
        if result.expected_speedup and name in result.expected_speedup:
            value, error = result.expected_speedup[name]
            lines.append(
                f"[{name}] expected speedup of the final model on the validation stream: "
                f"{value:.2f} ± {error:.2f} (measured cumulative: {skim.speedup:.2f} ± "
                f"{skim.speedup_err:.2f})"
            )
    if result.online_auc:
        lines.append(
            "validation AUC at the last published version (held-out fresh events, 1/p-weighted): "
            + ", ".join(f"{k} {v:.3f}" for k, v in result.online_auc.items())
        )
    if result.learner_failure:
        lines.append(
            f"WARNING: the learner failed ({result.learner_failure}); the run finished with the "
            "last weights it had published"
        )
    if result.n_dropped_for_learner and result.learn:
        lines.append(
            f"note: {result.n_dropped_for_learner} batches were recorded but not sent to the "
            "learner (it was busy; production never waits for it)"
        )
    return lines
