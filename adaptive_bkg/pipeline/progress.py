"""What a user reads while a production runs: the first line, progress toward the stop, ETA.

`start_line` is printed at once, before inputs are validated and Ray starts (which takes
seconds); `toward_stop` measures how far the run is along whichever stop condition it will
meet first (budget, events or target N_eff) and extrapolates the wall time to go; `plain_line`
is the one-line log written every `run.metrics_every_s` when stdout is not a terminal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaptive_bkg.config import Config
from adaptive_bkg.pipeline.budget import Progress, StopRule, parse_budget


@dataclass(frozen=True)
class Toward:
    """How far a run is along the stop condition it will meet first."""

    fraction: float  # 0..1
    what: str  # e.g. "budget 2.1 h of 24 h"
    eta_s: float  # wall seconds to go, extrapolated linearly (nan: not yet known)

    def describe(self) -> str:
        eta = "ETA unknown" if math.isnan(self.eta_s) else f"ETA {format_duration(self.eta_s)}"
        return f"{100 * self.fraction:.0f} % ({self.what}), {eta}"


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def toward_stop(
    rule: StopRule, progress: Progress, wall_s: float, origin: tuple[float, float] = (0.0, 0.0)
) -> Toward:
    """Progress toward the stop condition closest to being met (max fraction over them).

    `origin` = (wall_s, fraction) of the first progress report: the ETA extrapolates the rate
    since then, so the seconds Ray takes to start do not inflate it.
    """
    options: list[tuple[float, str]] = []
    if rule.budget_s is not None:
        options.append(
            (
                progress.spent_s / rule.budget_s,
                f"budget {format_duration(progress.spent_s)} of {format_duration(rule.budget_s)}",
            )
        )
    if rule.events is not None and rule.events < 2**61:  # replay: "until the file ends"
        options.append(
            (
                progress.n_generated / rule.events,
                f"{progress.n_generated:,} of {rule.events:,} events",
            )
        )
    if rule.target_neff is not None:
        options.append(
            (
                progress.min_n_eff / rule.target_neff,
                f"N_eff {progress.min_n_eff:,.0f} of {rule.target_neff:,.0f}",
            )
        )
    if not options:
        return Toward(0.0, "until the input ends", math.nan)
    fraction, what = max(options)
    fraction = min(max(fraction, 0.0), 1.0)
    t0, f0 = origin
    rate = (fraction - f0) / (wall_s - t0) if wall_s > t0 and fraction > f0 else 0.0
    eta = (1 - fraction) / rate if rate > 0 else (0.0 if fraction >= 1 else math.nan)
    return Toward(fraction, what, eta)


def stop_text(cfg: Config) -> str:
    parts = []
    if cfg.run.budget is not None:
        parts.append(f"budget {format_duration(parse_budget(cfg.run.budget))}")
    if cfg.run.events is not None and cfg.run.events < 2**61:
        parts.append(f"{cfg.run.events:,} events")
    if cfg.run.target_neff is not None:
        parts.append(f"N_eff {cfg.run.target_neff:,.0f}")
    return " or ".join(parts) if parts else "the end of the input"


def start_line(cfg: Config, learn: bool, driver: str) -> str:
    """The first line of `run` / `replay`, printed before anything slow happens."""
    learning = "learning online" if learn and cfg.learner.enabled else "model fixed (--no-learn)"
    return (
        f"adaptive-bkg: producing for {', '.join(cfg.run.skims)} with the {cfg.backend.name} "
        f"backend, policy {cfg.policy.name}, {learning}; stops at {stop_text(cfg)}. "
        f"Checking inputs, then {driver}…"
    )


def plain_line(
    wall_s: float,
    n_generated: int,
    n_kept: int,
    model_version: int,
    n_eff: dict[str, float],
    speedup: dict[str, float],
    toward: Toward | None,
) -> str:
    """One log line for non-terminal output (batch jobs, `| tee`)."""
    skims = "; ".join(
        f"[{name}] N_eff {n_eff[name]:,.0f} speedup {speedup[name]:.2f}" for name in n_eff
    )
    where = f" | {toward.describe()}" if toward is not None else ""
    return (
        f"{format_duration(wall_s)}: {n_generated:,} generated, {n_kept:,} kept, "
        f"model v{model_version}; {skims}{where}"
    )
