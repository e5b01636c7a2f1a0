"""Producing samples: `run` (on Ray), `replay` (one process, recorded events), `demo`, and
`check` of the run directories they write (library code in pipeline/ and workflows/check.py).

`run` checks everything that needs no model before it imports torch or Ray
(`pipeline.plan.plan_run`), so such a bad input costs one line and half of what `import torch`
alone would (docs/reliability.md); the heavy modules are imported in the commands, after those
checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adaptive_bkg.cli.common import ConfigOption, SetOption, chosen_skims, console, user_errors
from adaptive_bkg.cli.render import print_lines, print_result
from adaptive_bkg.errors import UserError
from adaptive_bkg.pipeline.progress import start_line

SkimOption = Annotated[str | None, typer.Option("--skim", help="Skim to produce for.")]
SkimsOption = Annotated[str | None, typer.Option("--skims", help="Several skims, comma-separated.")]
PolicyOption = Annotated[str | None, typer.Option("--policy", help="Keep policy.")]
NoLearnOption = Annotated[bool, typer.Option("--no-learn", help="Keep the pretrained model fixed.")]
OutOption = Annotated[Path | None, typer.Option("--out", help="Run directory.")]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No live view.")]


@user_errors
def run(
    skim: SkimOption = None,
    skims: SkimsOption = None,
    budget: Annotated[
        str | None,
        typer.Option("--budget", help="24h, 90m, 30s: emulated compute on the virtual clock."),
    ] = None,
    events: Annotated[int | None, typer.Option("--events", help="Events to generate.")] = None,
    target_neff: Annotated[
        float | None, typer.Option("--target-neff", help="Stop at this N_eff.")
    ] = None,
    policy: PolicyOption = None,
    no_learn: NoLearnOption = False,
    out: OutOption = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Join a Ray cluster: auto or ray://host:port.")
    ] = None,
    quiet: QuietOption = False,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue this run directory (after a crash or a stop)."),
    ] = None,
    reproduce: Annotated[
        Path | None,
        typer.Option("--reproduce", help="Repeat this run's physics: its config and seeds."),
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Produce a filtered, weighted background sample on Ray, learning online (docs/pipeline.md)."""
    # The plan imports scipy (policies): here, not at CLI start-up; it defers torch itself.
    from adaptive_bkg.pipeline.plan import (
        ProductionRequest,
        plan_run,
        production_config,
        resume_config,
    )

    if resume is not None:
        if (
            reproduce is not None
            or config is not None
            or any(x is not None for x in (skim, skims, policy, out))
        ):
            raise UserError(
                "--resume continues a run with its own settings: only --events, --budget, "
                "--target-neff, --address, --no-learn and --set may be given with it"
            )
        request = ProductionRequest(
            budget=budget, events=events, target_neff=target_neff, address=address
        )
        cfg = resume_config(resume, request, set_ or ())
    else:
        request = ProductionRequest(
            chosen_skims(skim, skims), budget, events, target_neff, policy, out, address
        )
        cfg = production_config(request, config, set_ or (), reproduce=reproduce)
    where = f"joining the Ray cluster at {cfg.ray.address}" if cfg.ray.address else "starting Ray"
    console.print(start_line(cfg, not no_learn, where), highlight=False, soft_wrap=True)
    plan = plan_run(cfg, learn=not no_learn, resume=resume is not None, local_ray=True)
    # Ray: imported only once the plan is valid (bad input fails fast without it).
    from adaptive_bkg.pipeline.orchestrate import run_pipeline

    print_result(run_pipeline(plan, show_live=False if quiet else None))


@user_errors
def replay(
    data: Annotated[Path, typer.Argument(help="Recorded labelled-events (or events) file.")],
    skim: SkimOption = None,
    skims: SkimsOption = None,
    budget: Annotated[str | None, typer.Option("--budget", help="Stop at this budget.")] = None,
    events: Annotated[int | None, typer.Option("--events", help="Events to replay.")] = None,
    policy: PolicyOption = None,
    no_learn: NoLearnOption = False,
    out: OutOption = None,
    quiet: QuietOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Replay a recorded dataset through the same stages, offline, without Ray."""
    from adaptive_bkg.backends.plugins import resolve_plugins  # scipy: start-up
    from adaptive_bkg.pipeline.plan import ProductionRequest, production_config
    from adaptive_bkg.pipeline.preflight import check_replayable

    request = ProductionRequest(chosen_skims(skim, skims), budget, events, None, policy, out)
    cfg = production_config(request, config, set_ or ())
    check_replayable(resolve_plugins(cfg), data)  # a missing or foreign file: before torch
    where = f"replaying {data} in this process"
    console.print(start_line(cfg, not no_learn, where), highlight=False, soft_wrap=True)
    # The replay driver imports the stages (torch): after the options are checked.
    from adaptive_bkg.pipeline.replay import replay_run

    print_result(replay_run(cfg, data, learn=not no_learn, show_live=False if quiet else None))


@user_errors
def demo(out: OutOption = None, quiet: QuietOption = False, set_: SetOption = None) -> None:
    """A short production on the held-out skim dstar-d0pi (CPU, emulator, a few minutes)."""
    # scipy (policies): imported when the command runs, not at CLI start-up.
    from adaptive_bkg.pipeline.plan import (
        DEMO_OVERRIDES,
        ProductionRequest,
        plan_run,
        production_config,
    )

    cfg = production_config(ProductionRequest(out=out), None, [*DEMO_OVERRIDES, *(set_ or [])])
    console.print(start_line(cfg, True, "starting Ray"), highlight=False, soft_wrap=True)
    plan = plan_run(cfg, tag="demo-", local_ray=True)
    from adaptive_bkg.pipeline.orchestrate import run_pipeline  # Ray: after the checks

    print_result(run_pipeline(plan, show_live=False if quiet else None))


@user_errors
def check(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (several: to merge).")],
) -> None:
    """Verify run directories: unique event ids, no repeated physics, counts, summary."""
    from adaptive_bkg.workflows.check import check_runs  # the stages (torch): start-up

    report = check_runs(run_dirs)
    print_lines(report.lines())
    if not report.ok:
        raise typer.Exit(1)
