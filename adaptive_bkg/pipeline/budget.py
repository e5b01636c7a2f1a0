"""Budgets and stopping: `--budget 24h|90m|30s|1d`, `--events N`, `--target-neff N`, signals.

With the emulator on its virtual clock the budget counts EMULATED compute (Σ cost_fast +
cost_nn + cost_slow over generated events), so a "24h" production finishes as fast as the
machine allows; on a wall clock (or any real backend) it counts wall-clock seconds.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from adaptive_bkg.errors import UserError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$")


def parse_budget(text: str) -> float:
    """'24h' -> 86400.0 seconds; accepts s, m, h, d (a bare number means seconds)."""
    match = _BUDGET.match(text)
    if not match:
        raise UserError(f"bad budget '{text}': use a number with unit s, m, h or d, e.g. 24h, 90m")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise UserError(f"bad budget '{text}': it must be positive")
    return seconds


@dataclass(frozen=True)
class Progress:
    """What the stop rule looks at."""

    n_generated: int
    spent_s: float  # emulated compute (virtual clock) or wall seconds
    min_n_eff: float  # smallest N_eff over the skims


@dataclass(frozen=True)
class StopRule:
    budget_s: float | None = None
    events: int | None = None
    target_neff: float | None = None

    def reason(self, progress: Progress) -> str | None:
        """Why to stop now, or None to go on."""
        if self.events is not None and progress.n_generated >= self.events:
            return f"events: {progress.n_generated} generated"
        if self.budget_s is not None and progress.spent_s >= self.budget_s:
            return f"budget: {progress.spent_s:.0f} s of {self.budget_s:.0f} s spent"
        if self.target_neff is not None and progress.min_n_eff >= self.target_neff:
            return f"target N_eff {self.target_neff:g} reached ({progress.min_n_eff:.0f})"
        return None

    def to_generate(self, launched: int, batch_size: int) -> int:
        """Size of the next batch to launch (0: the event count is exhausted)."""
        if self.events is None:
            return batch_size
        return max(0, min(batch_size, self.events - launched))


class StopFlag:
    """Set by SIGINT/SIGTERM (or by hand); the driver polls it between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """Turn the first SIGINT/SIGTERM into a clean stop; a second SIGINT interrupts hard."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.set(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
