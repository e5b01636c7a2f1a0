"""The run plan: what a production was asked for, its configuration, and the validated
`RunPlan` both drivers (`orchestrate` on Ray, `replay` in one process) start from.

Nothing here imports torch or Ray at module level: `plan_run` makes every check that needs
neither (skims, stop condition, run directory, machine, policy, backend) before it imports the
stages and loads the model, so bad input costs one line and well under the time of `import
torch` (docs/reliability.md, "Fail fast").
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adaptive_bkg.backends.plugins import resolve_plugins
from adaptive_bkg.config import Config, load_config, with_fresh_seed, with_overrides
from adaptive_bkg.errors import UserError
from adaptive_bkg.interfaces import StageFactory
from adaptive_bkg.pipeline.budget import StopRule, parse_budget
from adaptive_bkg.pipeline.preflight import (
    check_local_ray,
    check_reachable,
    check_run_dir,
    check_stage_inputs,
)


@dataclass(frozen=True)
class ProductionRequest:
    """What `run`, `replay`, `demo` and `sweep` were asked for by their typed options. None
    keeps the configuration's value (defaults, then the config file, then `--set`)."""

    skims: tuple[str, ...] | None = None
    budget: str | None = None  # e.g. 24h, 90m, 30s
    events: int | None = None
    target_neff: float | None = None
    policy: str | None = None
    out: Path | None = None  # run directory
    address: str | None = None  # Ray cluster to join
    plots: bool | None = None


def _with_values(cfg: Config, sections: dict[str, dict[str, Any]]) -> Config:
    """`cfg` with `sections`' values set, validated again as a whole: a bad value is one line
    naming its config key (`with_overrides` with no overrides re-validates)."""
    update = {
        name: getattr(cfg, name).model_copy(update=values)
        for name, values in sections.items()
        if values
    }
    return with_overrides(cfg.model_copy(update=update), ()) if update else cfg


def apply_request(cfg: Config, request: ProductionRequest) -> Config:
    """`cfg` with the request's values (those not None) set, validated."""
    if request.budget is not None:
        parse_budget(request.budget)  # the one-line error names the option's value
    run = {
        "skims": request.skims,
        "budget": request.budget,
        "events": request.events,
        "target_neff": request.target_neff,
        "out": request.out,
        "plots": request.plots,
    }
    sections: dict[str, dict[str, Any]] = {
        "run": {key: value for key, value in run.items() if value is not None},
        "policy": {"name": request.policy} if request.policy is not None else {},
        "ray": {"address": request.address} if request.address is not None else {},
    }
    return _with_values(cfg, sections)


def production_config(
    request: ProductionRequest,
    config: Path | None = None,
    overrides: Sequence[str] = (),
    reproduce: Path | None = None,
) -> Config:
    """The configuration of a new production: defaults, the config file, the `overrides`
    (`--set`), then the request; plugin skims and backends resolved to their names.

    `reproduce`: start from that run directory's config.yaml (its physics and seeds) instead
    of a config file, with a new run directory."""
    if reproduce is not None:
        if config is not None:
            raise UserError("give either --reproduce RUN_DIR or --config, not both")
        config = Path(reproduce) / "config.yaml"
        if not config.is_file():
            raise UserError(f"{reproduce} is not a run directory (no config.yaml)")
    cfg = load_config(config, overrides)
    if reproduce is not None:
        cfg = with_overrides(cfg, ["run.out=null"])  # not the reproduced run's directory
    return resolve_plugins(apply_request(cfg, request))


DEMO_OVERRIDES: tuple[str, ...] = (
    "run.skims=[dstar-d0pi]",
    "run.events=150000",
    "backend.name=emulator",
    "backend.clock=virtual",
    "model.preset=part-small",
    "model.device=cpu",
    "learner.publish_every_steps=10",
    "learner.lr=0.003",
    "run.wait_for_learner=true",
)
"""`adaptive-bkg demo`: a short production on the held-out demo skim, CPU only (before
`--set`, which may change any of them)."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues (all zero for a new run)."""

    n_generated: int = 0  # events already recorded: the stop rule counts on from here
    next_version: int = 0  # the first model version this segment publishes
    first_incarnation: int = 0  # generators start new streams and id fields from here
    resumed: bool = False


@dataclass(frozen=True)
class RunPlan:
    """A validated production request: nothing has been written yet."""

    cfg: Config
    skims: tuple[str, ...]
    run_dir: Path
    stop: StopRule
    learn: bool
    factory: StageFactory
    resume: ResumePoint = ResumePoint()


def _checkpoint_versions(run_dir: Path) -> dict[int, Path]:
    found = {}
    for path in (run_dir / "checkpoints").glob("v*.pt"):
        with contextlib.suppress(ValueError):
            found[int(path.stem[1:])] = path
    return found


def resume_config(
    run_dir: Path, request: ProductionRequest = ProductionRequest(), overrides: Sequence[str] = ()
) -> Config:
    """The configuration to continue `run_dir` with: its own config.yaml (seeds included),
    starting from its newest checkpoint, with `overrides` and then `request` (e.g. a larger
    `events`); its run directory stays `run_dir`."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml): nothing to resume")
    cfg = load_config(run_dir / "config.yaml", overrides)
    cfg = apply_request(cfg, dataclasses.replace(request, out=run_dir))
    versions = _checkpoint_versions(run_dir)
    if versions:
        cfg = _with_values(cfg, {"model": {"checkpoint": versions[max(versions)]}})
    return cfg


def resume_point(run_dir: Path, n_generators: int) -> ResumePoint:
    """Read what a run directory already holds: recorded events, versions, generator ids."""
    # Imported here: the stages package imports torch, which `plan_run` defers (fail fast).
    import pyarrow.compute as pc

    from adaptive_bkg.formats.events import decode_event_ids
    from adaptive_bkg.stages.recorder import RECORDS_DIR, read_records, record_files

    records = Path(run_dir) / RECORDS_DIR
    versions = _checkpoint_versions(Path(run_dir))
    last_version = max(versions) if versions else -1
    if not record_files(records):
        return ResumePoint(0, last_version + 1, 0, resumed=True)
    table = read_records(Path(run_dir), ["event_id", "model_version"])
    _, id_worker, _ = decode_event_ids(table.column("event_id").to_numpy())
    last_version = max(last_version, int(pc.max(table.column("model_version")).as_py()))
    return ResumePoint(
        n_generated=table.num_rows,
        next_version=last_version + 1,
        first_incarnation=int(id_worker.max()) // max(n_generators, 1) + 1,
        resumed=True,
    )


def plan_run(
    cfg: Config,
    learn: bool = True,
    factory: StageFactory | None = None,
    tag: str = "",
    resume: bool = False,
    local_ray: bool = False,
) -> RunPlan:
    """Validate every user input (skims, budget, policy, backend, checkpoint, out dir) up front,
    the checks that need no model first, before torch is imported.

    `resume`: continue the run directory `run.out` (config from `resume_config`).
    `local_ray`: the run goes through Ray: check now that a local instance fits the machine, or
    that the cluster at `ray.address` answers (`orchestrate` checks both again)."""
    cfg = with_fresh_seed(resolve_plugins(cfg))  # plugin skims go by their name from here on
    skims = tuple(cfg.run.skims)
    if not skims:
        raise UserError("no skim given: use --skim NAME (e.g. --skim dstar-d0pi)")
    if len(set(skims)) != len(skims):
        raise UserError(f"skims given twice in {list(skims)}")
    budget_s = parse_budget(cfg.run.budget) if cfg.run.budget is not None else None
    stop = StopRule(budget_s=budget_s, events=cfg.run.events, target_neff=cfg.run.target_neff)
    if budget_s is None and cfg.run.events is None and cfg.run.target_neff is None:
        raise UserError(
            "no stop condition: give --budget (e.g. 24h), --events N or --target-neff N"
        )
    if cfg.run.out is not None:
        run_dir = Path(cfg.run.out)
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = "+".join(s.replace(":", "_").replace("/", "_") for s in skims)[:80]
        run_dir = Path("runs") / f"{stamp}-{tag}{name}"
    if not resume:
        check_run_dir(run_dir)
    if local_ray and cfg.ray.address is not None:
        check_reachable(cfg.ray.address)
    elif local_ray:
        check_local_ray(cfg.ray)
    learn = learn and cfg.learner.enabled
    if factory is None and cfg.run.stages == "default":
        check_stage_inputs(cfg, skims)
    # The stages import torch: only now, after the checks above (CLI start-up stays fast).
    from adaptive_bkg.stages.build import DefaultStages, make_factory

    if factory is None:
        factory = make_factory(cfg, skims, learn)
    elif isinstance(factory, DefaultStages):  # e.g. replay's: checked here, as the others
        check_stage_inputs(cfg, skims)
    factory.validate()  # the default stages: device and checkpoint
    if resume:
        point = resume_point(run_dir, cfg.ray.generators)
        return RunPlan(cfg, skims, run_dir, stop, learn, factory, point)
    return RunPlan(cfg, skims, run_dir, stop, learn, factory)
