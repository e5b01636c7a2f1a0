"""Replays over a grid of settings, in parallel processes (`adaptive-bkg sweep`).

    adaptive-bkg sweep labelled.parquet --skim dstar-d0pi \\
        --grid policy=sqrt-optimal,basf2-exp --grid learner.lr=1e-4,3e-4,1e-3

Every grid point replays the same recorded events (same file, same `run.seed`) with its own
settings into `OUT/<point>/`; the points run in separate processes, at most one per core
(`--jobs`), each with one torch thread, so a point's records do not depend on how many run
side by side (deterministic per seed). At the end the points are compared (compare.py).

Grid keys are config keys (`section.key`, see `adaptive-bkg config`) plus two short forms:
`policy` (= policy.name) and `learn` (on/off: learning vs a static model). Every point's config
is validated before the first one starts.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from adaptive_bkg.config import Config, with_overrides
from adaptive_bkg.errors import UserError
from adaptive_bkg.pipeline.replay import replay_run

ALIASES = {"policy": "policy.name"}
_BOOL = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


@dataclass(frozen=True)
class GridPoint:
    name: str  # folder name, e.g. "policy=basf2-exp,learner.lr=0.001"
    overrides: tuple[str, ...]
    learn: bool


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`key=v1,v2` strings -> [(config key, values)] (aliases expanded; `learn` kept)."""
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not sep or not key or not values:
            raise UserError(
                f"bad --grid '{spec}': use key=v1,v2 (e.g. policy=identity,sqrt-optimal)"
            )
        key = ALIASES.get(key, key)
        if key != "learn" and key.count(".") < 1:
            raise UserError(
                f"bad --grid key '{key}': use a config key section.key (adaptive-bkg config lists "
                "them), policy or learn"
            )
        if key in (k for k, _ in axes):
            raise UserError(f"--grid key '{key}' given twice")
        if key == "learn" and any(v.lower() not in _BOOL for v in values):
            raise UserError(f"bad --grid '{spec}': learn takes on,off")
        axes.append((key, values))
    if not axes:
        raise UserError("no --grid given: e.g. --grid policy=sqrt-optimal,basf2-exp")
    return axes


def grid_points(cfg: Config, specs: Sequence[str], learn: bool = True) -> list[GridPoint]:
    """Every combination, each validated against the config now (a bad key or value: one line)."""
    axes = parse_grid(specs)
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        overrides, point_learn = [], learn
        for (key, _), value in zip(axes, combo, strict=True):
            if key == "learn":
                point_learn = _BOOL[value.lower()]
            else:
                overrides.append(f"{key}={value}")
        try:
            with_overrides(cfg, overrides)
        except UserError as exc:
            raise UserError(f"--grid point {', '.join(overrides)}: {exc}") from None
        name = ",".join(f"{k}={v}" for (k, _), v in zip(axes, combo, strict=True))
        points.append(GridPoint(re.sub(r"[^\w.,=+-]", "_", name), tuple(overrides), point_learn))
    return points


@dataclass(frozen=True)
class PointResult:
    point: GridPoint
    run_dir: Path
    speedups: dict[str, float]
    error: str | None = None


def _run_point(cfg_json: str, data: str, point: GridPoint, run_dir: str) -> PointResult:
    """One replay in a worker process (module-level: it is pickled by reference)."""
    torch.set_num_threads(1)  # one core per point; also what makes points independent
    cfg = with_overrides(Config.model_validate(json.loads(cfg_json)), point.overrides)
    cfg = with_overrides(cfg, [f"run.out={json.dumps(run_dir)}"])
    try:
        result = replay_run(cfg, Path(data), learn=point.learn, show_live=False)
    except UserError as exc:
        return PointResult(point, Path(run_dir), {}, str(exc))
    return PointResult(
        point, result.run_dir, {k: s.speedup for k, s in result.summary.skims.items()}
    )


def run_sweep(
    cfg: Config,
    data: Path,
    points: Sequence[GridPoint],
    out: Path,
    jobs: int | None = None,
    on_done: Callable[[int, PointResult], None] | None = None,
) -> list[PointResult]:
    """Replay `data` once per point into `out/<point.name>/`, `jobs` processes at a time."""
    data = Path(data)
    if not data.exists():
        raise UserError(f"sweep data {data} not found")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"sweep directory {out} already exists and is not empty; pick a new --out")
    cores = os.cpu_count() or 1
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    workers = min(jobs or cores, cores, len(points))
    out.mkdir(parents=True, exist_ok=True)
    cfg_json = cfg.model_dump_json()
    results: list[PointResult] = []
    # spawn: a fresh interpreter per worker (torch and fork do not mix).
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(_run_point, cfg_json, str(data), p, str(out / p.name)) for p in points
        ]
        for done in as_completed(futures):
            result = done.result()
            results.append(result)
            if on_done is not None:
                on_done(len(results), result)
    order = {p.name: i for i, p in enumerate(points)}
    return sorted(results, key=lambda r: order[r.point.name])
