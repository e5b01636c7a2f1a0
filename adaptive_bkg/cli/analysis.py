"""Looking at runs: `plot`, `compare`, `sweep`, `validate` and `bayes-limit` (library code in
workflows/: plots, closure, compare, sweep, validate, bayes_limit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from adaptive_bkg.cli.common import (
    ConfigOption,
    SetOption,
    chosen_skims,
    console,
    resolve_config,
    split_skims,
    user_errors,
)
from adaptive_bkg.cli.render import print_comparison, print_lines, progress_bar
from adaptive_bkg.errors import UserError
from adaptive_bkg.workflows.sweep import grid_points, run_sweep


@user_errors
def plot(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (runs/<name>).")],
    closure: Annotated[
        Path | None,
        typer.Option("--closure", help="Labelled file the run replayed: closure plots too."),
    ] = None,
) -> None:
    """Write a run's plots to RUN_DIR/plots (N_eff, speedup, weights, p, ROC, closure)."""
    from adaptive_bkg.pipeline.plots import plot_run  # matplotlib: start-up
    from adaptive_bkg.workflows.closure import write_closure_plots

    written = plot_run(run_dir)
    if closure is not None:
        written += write_closure_plots(run_dir, closure)
    for path in written:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _show_comparison(comparison: Any, out: Path) -> None:
    """Print a `compare.Comparison` and write its files (compare imports torch)."""
    from adaptive_bkg.workflows.compare import write_comparison  # torch: start-up

    print_comparison(comparison)
    written = write_comparison(comparison, out)
    console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)


@user_errors
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the table files and overlay plots.")
    ] = Path("compare"),
) -> None:
    """A table per skim of several runs (speedup ± error, oracle, time to speedup) and overlays."""
    from adaptive_bkg.workflows.compare import compare_runs  # torch: start-up

    _show_comparison(compare_runs(run_dirs), out)


@user_errors
def sweep(
    data: Annotated[Path, typer.Argument(help="Labelled-events file to replay.")],
    grid: Annotated[
        list[str],
        typer.Option("--grid", help="key=v1,v2 (repeatable): config key, policy or learn=on,off."),
    ],
    skim: Annotated[str | None, typer.Option("--skim", help="Skim to produce for.")] = None,
    skims: Annotated[
        str | None, typer.Option("--skims", help="Several skims, comma-separated.")
    ] = None,
    events: Annotated[int | None, typer.Option("--events", help="Events per replay.")] = None,
    budget: Annotated[str | None, typer.Option("--budget", help="Budget per replay.")] = None,
    no_learn: Annotated[
        bool, typer.Option("--no-learn", help="Static model (unless the grid sets learn).")
    ] = False,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Parallel replays (default: cores).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Sweep folder.")] = Path("sweep"),
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Replay DATA over a grid of settings in parallel processes, then compare the replays."""
    # The plan (scipy) and the replay driver (torch): imported when the command runs.
    from adaptive_bkg.pipeline.plan import ProductionRequest, production_config
    from adaptive_bkg.pipeline.preflight import check_replayable
    from adaptive_bkg.workflows.compare import compare_runs

    request = ProductionRequest(
        chosen_skims(skim, skims), budget=budget, events=events, plots=False
    )
    cfg = production_config(request, config, set_ or ())
    points = grid_points(cfg, grid, learn=not no_learn)
    check_replayable(cfg, data)
    console.print(
        f"adaptive-bkg sweep: {len(points)} replays of {data} for {', '.join(cfg.run.skims)} "
        f"into {out}/ …",
        highlight=False,
        soft_wrap=True,
    )

    def done(k: int, result: Any) -> None:
        what = result.error or ", ".join(f"{s} speedup {v:.2f}" for s, v in result.speedups.items())
        console.print(f"[{k}/{len(points)}] {result.point.name}: {what}", highlight=False,
                      markup=False, soft_wrap=True)  # fmt: skip

    results = run_sweep(cfg, data, points, out, jobs=jobs, on_done=done)
    finished = [r.run_dir for r in results if r.error is None]
    if not finished:
        raise UserError(f"no replay of the sweep finished: {results[0].error}")
    _show_comparison(compare_runs(finished), out)


@user_errors
def bayes_limit(
    skims: Annotated[str, typer.Option("--skims", help="Comma list of skims.")],
    events: Annotated[int, typer.Option("--events", "-n", help="Events to re-simulate.")] = 20_000,
    replicas: Annotated[
        int, typer.Option("--replicas", "-r", help="Backend seeds per event (R).")
    ] = 200,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Events or labelled file; default: generate with Pythia."),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", help="Bootstrap resamples for the uncertainty.")
    ] = 100,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write JSON here.")] = None,
    covariate: Annotated[
        Path | None,
        typer.Option("--covariate", help="npz of per-event scores per skim (prior mean)."),
    ] = None,
    counts: Annotated[
        Path | None,
        typer.Option("--counts", help="npz of replica counts: reused if present, else written."),
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Estimate each skim's Bayes-limit speedup by re-simulating events with R backend seeds."""
    # scipy and Pythia: imported when the command runs, not at CLI start-up.
    from adaptive_bkg.workflows.bayes_limit import (
        bayes_limit_events,
        check_request,
        estimate_bayes_limit,
        read_covariate,
        result_lines,
    )

    check_request(events, replicas, bootstrap)
    cfg = resolve_config(config, set_)
    names = split_skims(skims) or []
    if out is not None and out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as limit.json")
    scores = None if covariate is None else read_covariate(covariate, names, events)
    batch = bayes_limit_events(cfg, events, data)
    bar, update = progress_bar("replicas", replicas)
    with bar:
        result = estimate_bayes_limit(
            cfg, batch, names, replicas, bootstrap, progress=update, covariate=scores,
            covariate_source=None if covariate is None else str(covariate), counts_file=counts,
        )  # fmt: skip
    print_lines(result_lines(result))
    if out is not None:
        out.write_text(result.to_json())
        console.print(f"wrote {out}", highlight=False, soft_wrap=True)


@user_errors
def validate(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Replays of DATA (several: one per keep-draw seed).")
    ],
    data: Annotated[Path, typer.Option("--data", help="Labelled file the runs replayed.")],
    skim: Annotated[
        str | None, typer.Option("--skim", help="Only this skim (default: every skim of the runs).")
    ] = None,
    min_count: Annotated[
        float, typer.Option("--min-count", help="Merge bins until as Gaussian as Poisson(this).")
    ] = 10.0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write JSON here.")] = None,
    plots: Annotated[
        Path | None, typer.Option("--plots", help="Folder for the pull and p-value plots.")
    ] = None,
) -> None:
    """Closure suite: weighted kept vs all passing events in ≥ 20 observables; exit 1 if biased."""
    # scipy and the emulator: imported when the command runs, not at CLI start-up.
    from adaptive_bkg.workflows.validate import ClosureCriteria, result_lines, validate_runs

    if out is not None and out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as closure.json")
    criteria = ClosureCriteria(min_count=min_count)
    bar, update = progress_bar("runs", len(run_dirs))
    with bar:
        result = validate_runs(run_dirs, data, None if skim is None else [skim], criteria, update)
    print_lines(result_lines(result))
    if out is not None:
        out.write_text(result.to_json())
        console.print(f"wrote {out}", highlight=False, soft_wrap=True)
    if plots is not None:
        from adaptive_bkg.workflows.validate_plots import write_validation_plots  # matplotlib

        for path in write_validation_plots(result, plots):
            console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if not result.passed:
        raise typer.Exit(1)
