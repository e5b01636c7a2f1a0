"""`adaptive-bkg check`: prove that one run, or several runs to be merged, can be trusted.

For each run directory: the records are readable; generated = kept + discarded; summary.json
exists and equals the summary recomputed from the records. Over all the given runs together:
event ids are unique, and no two events have the same physics content (`physics_hash`, a hash
of the particle list: a restarted generator or a second production that replayed a random
stream would show here even under fresh event ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.errors import UserError
from adaptive_bkg.stages.recorder import (
    RECORDS_DIR,
    SUMMARY_FILE,
    load_summary,
    read_records,
    summaries_close,
    summarize_records,
)

_SHOWN = 3


@dataclass(frozen=True)
class RunCheck:
    run_dir: Path
    n_generated: int
    n_kept: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class CheckReport:
    runs: tuple[RunCheck, ...]
    problems: tuple[str, ...]  # every problem found, each naming its run where it has one

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        lines = [
            f"{r.run_dir}: {r.n_generated:,} generated = {r.n_kept:,} kept + "
            f"{r.n_generated - r.n_kept:,} discarded"
            for r in self.runs
        ]
        total = sum(r.n_generated for r in self.runs)
        if self.ok:
            what = "run" if len(self.runs) == 1 else f"{len(self.runs)} runs"
            lines.append(
                f"OK: {what}, {total:,} events: ids unique, no repeated physics, counts "
                "reconcile, summary recomputed from the records"
            )
        else:
            lines += [f"FAILED: {p}" for p in self.problems]
        return lines


def _repeats(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    ordered = np.sort(values)
    return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])


def _shown(values: NDArray[np.uint64]) -> str:
    head = ", ".join(f"{int(v):#x}" for v in values[:_SHOWN])
    return head + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")


def _check_one(run_dir: Path) -> tuple[RunCheck, NDArray[np.uint64], NDArray[np.uint64]]:
    if not (run_dir / RECORDS_DIR).is_dir():
        raise UserError(f"{run_dir} is not a run directory (no {RECORDS_DIR}/ folder)")
    table = read_records(run_dir, ["event_id", "physics_hash", "kept"])
    ids = table.column("event_id").to_numpy()
    hashes = table.column("physics_hash").to_numpy()
    kept = table.column("kept").to_numpy()
    n, n_kept = len(ids), int(kept.sum())
    problems: list[str] = []
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.exists():
        problems.append(
            f"{run_dir}: no {SUMMARY_FILE} (the run did not finish); continue it with "
            f"`adaptive-bkg run --resume {run_dir}`"
        )
    else:
        summary = load_summary(summary_path)
        if summary.n_generated != n or summary.n_kept != n_kept:
            problems.append(
                f"{run_dir}: summary says {summary.n_generated:,} generated / "
                f"{summary.n_kept:,} kept, the records hold {n:,} / {n_kept:,}"
            )
        elif not summaries_close(summary, summarize_records(run_dir)):
            problems.append(f"{run_dir}: {SUMMARY_FILE} differs from the records' summary")
    return RunCheck(run_dir, n, n_kept, tuple(problems)), ids, hashes


def check_runs(run_dirs: Sequence[Path]) -> CheckReport:
    """Check `run_dirs` singly and together (see the module docstring)."""
    if not run_dirs:
        raise UserError("give at least one run directory to check")
    runs, all_ids, all_hashes = [], [], []
    for run_dir in run_dirs:
        run, ids, hashes = _check_one(Path(run_dir))
        runs.append(run)
        all_ids.append(ids)
        all_hashes.append(hashes)
    problems = [p for r in runs for p in r.problems]
    where = "across the runs" if len(runs) > 1 else f"in {runs[0].run_dir}"
    repeated_ids = _repeats(np.concatenate(all_ids))
    if len(repeated_ids):
        problems.append(
            f"{len(repeated_ids):,} event ids recorded twice {where}: {_shown(repeated_ids)}"
        )
    repeated_physics = _repeats(np.concatenate(all_hashes))
    if len(repeated_physics):
        problems.append(
            f"{len(repeated_physics):,} events with repeated physics {where} (same particle "
            f"list under different ids; physics hashes {_shown(repeated_physics)}): the runs "
            "share a random stream (same generator.seed and run number?)"
        )
    return CheckReport(tuple(runs), tuple(problems))
