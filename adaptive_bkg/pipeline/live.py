"""Live progress of a production: a typed metrics record, its JSONL log and a rich live table.

The same `MetricsRecord` feeds the terminal view and one line of `metrics.jsonl` every few
seconds, so what a user watched can be replotted afterwards (plots.py reads the log).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from adaptive_bkg.pipeline.progress import Toward, plain_line
from adaptive_bkg.stats.metrics import RunSummary, speedups_with_learner
from adaptive_bkg.stats.speedup import LearnerCompute


@dataclass(frozen=True)
class SkimMetrics:
    n_eff: float
    eff_hat: float
    speedup: float
    oracle_speedup: float
    fraction_of_oracle: float
    online_auc: float
    # None = not known (yet). speedup_err: delta method (metrics.py). expected_speedup: the
    # current model's expected speedup on the learner's validation stream (± bootstrap).
    speedup_err: float | None = None
    expected_speedup: float | None = None
    expected_speedup_err: float | None = None
    # The speedup with the learner's CPU seconds added to the cost (± σ; docs/statistics.md).
    speedup_with_learner: float | None = None
    speedup_with_learner_err: float | None = None


@dataclass(frozen=True)
class MetricsRecord:
    """One snapshot of a running production (one line of metrics.jsonl)."""

    wall_s: float  # since the start of the run
    spent_s: float  # what the budget counts: emulated compute (virtual clock) or wall seconds
    total_cost_s: float  # emulated compute Σ cost_fast + cost_nn + cost_slow
    n_generated: int
    n_kept: int
    n_simulated: int
    generated_per_s: float  # wall-clock rates over the last interval
    kept_per_s: float
    simulated_per_s: float
    model_version: int
    learner_steps: int
    max_weight: float
    weight_quantiles: tuple[tuple[float, float], ...]
    skims: Mapping[str, SkimMetrics]
    # The learner's replay buffer: training events held and capacity (0 = no report yet).
    # Its fill is what the learner's memory grows with until it is full (docs/reliability.md).
    learner_buffer_events: int = 0
    learner_buffer_capacity: int = 0
    # The learner's compute so far (whole run, earlier segments of a resumed run included).
    learner_train_cpu_s: float = 0.0
    learner_rescore_cpu_s: float = 0.0
    learner_gpu_s: float = 0.0

    @property
    def learner_compute(self) -> LearnerCompute:
        return LearnerCompute(
            self.learner_train_cpu_s, self.learner_rescore_cpu_s, self.learner_gpu_s
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=True)

    @staticmethod
    def from_json(line: str) -> MetricsRecord:
        data: dict[str, Any] = json.loads(line)
        data["skims"] = {k: SkimMetrics(**v) for k, v in data["skims"].items()}
        data["weight_quantiles"] = tuple((float(q), float(w)) for q, w in data["weight_quantiles"])
        return MetricsRecord(**data)


def metrics_record(
    summary: RunSummary,
    wall_s: float,
    spent_s: float,
    rates: tuple[float, float, float],
    model_version: int,
    learner_steps: int,
    online_auc: Mapping[str, float] | None,
    expected_speedup: Mapping[str, tuple[float, float]] | None = None,
    learner_buffer: tuple[int, int] = (0, 0),
    learner_compute: LearnerCompute | None = None,
) -> MetricsRecord:
    auc = online_auc or {}
    expected = expected_speedup or {}
    compute = learner_compute or LearnerCompute()
    with_learner = speedups_with_learner(summary, compute)
    return MetricsRecord(
        wall_s=wall_s,
        spent_s=spent_s,
        total_cost_s=summary.total_cost_s,
        n_generated=summary.n_generated,
        n_kept=summary.n_kept,
        n_simulated=summary.n_kept,
        generated_per_s=rates[0],
        kept_per_s=rates[1],
        simulated_per_s=rates[2],
        model_version=model_version,
        learner_steps=learner_steps,
        max_weight=summary.max_weight,
        weight_quantiles=summary.weight_quantiles,
        skims={
            name: SkimMetrics(
                n_eff=s.n_eff,
                eff_hat=s.eff_hat,
                speedup=s.speedup,
                oracle_speedup=s.oracle_speedup,
                fraction_of_oracle=s.fraction_of_oracle,
                online_auc=float(auc.get(name, math.nan)),
                speedup_err=_known(s.speedup_err),
                expected_speedup=_known(expected.get(name, (math.nan, math.nan))[0]),
                expected_speedup_err=_known(expected.get(name, (math.nan, math.nan))[1]),
                speedup_with_learner=_known(with_learner[name].value),
                speedup_with_learner_err=_known(with_learner[name].error),
            )
            for name, s in summary.skims.items()
        },
        learner_buffer_events=learner_buffer[0],
        learner_buffer_capacity=learner_buffer[1],
        learner_train_cpu_s=compute.train_cpu_s,
        learner_rescore_cpu_s=compute.rescore_cpu_s,
        learner_gpu_s=compute.gpu_s,
    )


def learner_compute_so_far(metrics_path: Path) -> LearnerCompute:
    """The learner's compute in the last record of an existing metrics.jsonl (what earlier
    segments of a resumed run spent, up to their last record); zero without one."""
    records = read_metrics(metrics_path)
    return records[-1].learner_compute if records else LearnerCompute()


def _known(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _pm(value: float | None, error: float | None) -> str:
    """'1.23 ± 0.05', with n/a for what is not known yet."""
    shown = "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"
    return f"{shown} ± {'n/a' if error is None else f'{error:.2f}'}"


def _buffer_fill(record: MetricsRecord) -> str:
    """'12,345 of 50,000 events (25 %)', or n/a before the learner's first report."""
    events, capacity = record.learner_buffer_events, record.learner_buffer_capacity
    if capacity <= 0:
        return "n/a"
    return f"{events:,} of {capacity:,} events ({100 * min(events / capacity, 1.0):.0f} %)"


def _learner_compute(compute: LearnerCompute) -> str:
    """'123 CPU s (train 100, re-score 23)', with the GPU seconds where there are any."""
    text = (
        f"{compute.cpu_s:,.1f} CPU s (train {compute.train_cpu_s:,.1f}, "
        f"re-score {compute.rescore_cpu_s:,.1f})"
    )
    return text + (f"; GPU {compute.gpu_s:,.1f} s" if compute.gpu_s > 0 else "")


def read_metrics(path: Path) -> list[MetricsRecord]:
    path = Path(path)
    if not path.exists():
        return []
    return [MetricsRecord.from_json(line) for line in path.read_text().splitlines() if line.strip()]


def render(
    record: MetricsRecord, title: str = "adaptive-bkg", toward: Toward | None = None
) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [("progress", toward.describe())] if toward is not None else []
    rows += [
        ("wall time", f"{record.wall_s:,.0f} s"),
        (
            "budget spent",
            f"{record.spent_s:,.0f} s (emulated compute {record.total_cost_s:,.0f} s)",
        ),
        ("generated", f"{record.n_generated:,} ({record.generated_per_s:,.0f}/s)"),
        ("kept", f"{record.n_kept:,} ({record.kept_per_s:,.0f}/s)"),
        ("simulated", f"{record.n_simulated:,} ({record.simulated_per_s:,.0f}/s)"),
        ("model version", f"{record.model_version} ({record.learner_steps} steps)"),
        ("learner replay buffer", _buffer_fill(record)),
        ("learner compute", _learner_compute(record.learner_compute)),
        ("max weight", f"{record.max_weight:.1f}"),
        (
            "weight quantiles",
            " ".join(f"q{100 * q:g}={w:.1f}" for q, w in record.weight_quantiles),
        ),
    ]
    for skim, s in record.skims.items():
        name = escape(f"[{skim}]")  # skim names in brackets are not rich markup
        rows += [
            (f"{name} online AUC", f"{s.online_auc:.3f}"),
            (f"{name} N_eff", f"{s.n_eff:,.0f}"),
            (f"{name} ε̂", f"{s.eff_hat:.4f}"),
            (
                f"{name} speedup",
                f"{_pm(s.speedup, s.speedup_err)} (oracle {s.oracle_speedup:.2f}, "
                f"{100 * s.fraction_of_oracle:.0f} % of it)",
            ),
            (
                f"{name} speedup incl. learner",
                f"{_pm(s.speedup_with_learner, s.speedup_with_learner_err)} "
                "(its CPU seconds added to the cost)",
            ),
            (
                f"{name} expected speedup now",
                f"{_pm(s.expected_speedup, s.expected_speedup_err)} "
                "(current model on the validation stream)",
            ),
        ]
    for name, value in rows:
        table.add_row(name, value)
    return table


class LiveView:
    """Appends records to metrics.jsonl and shows them.

    `show=None` (the CLI default): a rich Live table on stderr when stdout is a terminal, else
    one plain line per record on stdout (batch jobs, `| tee`); True: the table; False: nothing
    (`--quiet`, tests). Notices (degraded states) are always printed.
    """

    def __init__(self, metrics_path: Path, title: str, show: bool | None = None) -> None:
        self.metrics_path = Path(metrics_path)
        self.title = title
        console = Console(stderr=True)
        self.console = console
        self.plain = (
            Console(soft_wrap=True, highlight=False, markup=False) if show is None else None
        )
        if show is None:
            show = self.plain is not None and self.plain.is_terminal
            if show:
                self.plain = None
        self.show = show
        self._live = (
            Live(console=console, refresh_per_second=2, transient=False) if self.show else None
        )
        self.last: MetricsRecord | None = None

    def __enter__(self) -> LiveView:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def update(self, record: MetricsRecord, toward: Toward | None = None) -> None:
        self.last = record
        with self.metrics_path.open("a") as out:
            out.write(record.to_json() + "\n")
        if self._live is not None:
            self._live.update(render(record, self.title, toward))
        elif self.plain is not None:
            self.plain.print(
                plain_line(
                    record.wall_s,
                    record.n_generated,
                    record.n_kept,
                    record.model_version,
                    {k: s.n_eff for k, s in record.skims.items()},
                    {k: s.speedup for k, s in record.skims.items()},
                    toward,
                )
            )

    def notice(self, text: str) -> None:
        """Say something the user must see now (a degraded state, a restart): one line on
        stderr, above the live table when there is one, and in plain text otherwise (and in
        the plain log on stdout too, so that a `| tee` log holds it)."""
        self.console.print(escape(text), highlight=False, soft_wrap=True)
        if self.plain is not None and not self.console.is_terminal:
            self.plain.print(f"note: {text}")
