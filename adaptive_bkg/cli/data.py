"""Events and labels: `generate`, `info`, `label`, `skims` and `calibrate` (library code in
generators/, workflows/label.py and backends/emulator/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adaptive_bkg.backends.emulator.cost import CostModel
from adaptive_bkg.backends.emulator.retention import measure_retention, reference_retention
from adaptive_bkg.backends.emulator.skims import HELD_OUT_SKIMS, get_skims
from adaptive_bkg.cli.common import (
    ConfigOption,
    SetOption,
    console,
    err_console,
    resolve_config,
    resolve_skim_specs,
    split_skims,
    user_errors,
)
from adaptive_bkg.cli.render import (
    per_type_table,
    print_cost_fit,
    print_event_file,
    print_labelled,
    print_retention,
    print_skim_list,
    progress_bar,
)
from adaptive_bkg.config import BackendConfig, CostConfig, with_fresh_seed


@user_errors
def calibrate(
    timings: Annotated[
        Path,
        typer.Argument(
            help="CSV of measured per-event times: t_slow_s, n_particles, e_visible_gev"
            "[, n_tracks, n_final]."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="cost config YAML to write.")] = Path(
        "sims/cost-calibration.yaml"
    ),
    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            help="events Parquet file: compute the features from it for the table's event_id "
            "(then the table needs only event_id, t_slow_s).",
        ),
    ] = None,
    feature: Annotated[
        list[str] | None,
        typer.Option(
            "--feature",
            "-f",
            help="feature term to fit (repeatable): n_particles, n_final, n_tracks, "
            "e_visible_gev. Default: all columns present (with --events: n_particles, "
            "e_visible_gev).",
        ),
    ] = None,
) -> None:
    """Fit the slow-stage cost model to measured timings (robust least squares)."""
    # scipy: imported when the command runs, not at CLI start-up.
    from adaptive_bkg.backends.emulator.cost_fit import fit_cost_table, write_cost_file

    fit = fit_cost_table(timings, events=events, features=feature or None)
    print_cost_fit(fit, timings)
    path = write_cost_file(fit, out)
    model = CostModel.from_config(BackendConfig(cost=CostConfig(file=path)))
    t_fast, t_nn, t_slow = model.mean_times
    console.print(
        f"wrote {path}; on the generic mixture mean t_slow = {t_slow:.4g} s, "
        f"t_fast = {t_fast:.3g} s, t_NN = {t_nn:.3g} s (use --set backend.cost.file={path})"
    )


@user_errors
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")],
    events: Annotated[int, typer.Option("--events", "-n", help="Number of events.")] = 10_000,
    types: Annotated[
        str | None,
        typer.Option("--types", "-t", help="'all' or a comma list, e.g. charged,mixed,ccbar."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Base seed (generator.seed).")] = None,
    worker: Annotated[int, typer.Option(help="Worker number (part of seeds and ids).")] = 0,
    run: Annotated[int, typer.Option(help="Run number (part of event ids).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Generate generic Belle II background with Pythia 8 into a Parquet event file."""
    from adaptive_bkg.generators import check_output, generate_to_file  # Pythia: start-up

    check_output(out, events, overwrite=force)
    overrides = list(set_ or [])
    if types is not None:
        overrides.append(f"generator.types={types}")
    if seed is not None:
        overrides.append(f"generator.seed={seed}")
    cfg = with_fresh_seed(resolve_config(config, overrides)).generator
    bar, update = progress_bar("generating", events)
    with bar:
        summary = generate_to_file(
            cfg, events, out, progress=update, worker=worker, run=run, overwrite=force
        )
    table = per_type_table(
        f"{summary.n_events} events -> {summary.out}", summary.per_type, summary.n_events
    )
    table.caption = (
        f"{summary.elapsed_s:.1f} s, {summary.events_per_s:,.0f} events/s "
        "(charged = stable e, μ, π, K, p in the final state); "
        f"generator seed {cfg.seed} (--seed {cfg.seed} repeats these events)"
    )
    console.print(table)
    if summary.interrupted:
        err_console.print(
            f"[yellow]interrupted:[/] wrote the {summary.n_events} of {summary.n_requested} "
            f"events generated so far to {summary.out}"
        )
        raise typer.Exit(130)


@user_errors
def info(
    path: Annotated[Path, typer.Argument(help="Event file (or folder of shards).")],
) -> None:
    """Summarise an event file: events per type, multiplicities, schema, row groups."""
    from adaptive_bkg.generators import inspect_event_file  # Pythia, awkward: start-up

    print_event_file(inspect_event_file(path))


@user_errors
def label(
    out: Annotated[Path, typer.Option("--out", "-o", help="labelled-events Parquet to write.")],
    events: Annotated[int, typer.Option("--events", "-n", help="Number of events.")] = 10_000,
    types: Annotated[str, typer.Option("--types", "-t", help="'all' or a comma list.")] = "all",
    seed: Annotated[int | None, typer.Option("--seed", help="generator.seed")] = None,
    skims: Annotated[
        str | None, typer.Option("--skims", help="Comma list of skims; default: all.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Generate events and run them through the backend: a labelled training set."""
    # Pythia and the emulator: imported when the command runs, not at CLI start-up.
    from adaptive_bkg.generators import check_output
    from adaptive_bkg.workflows.label import label_events

    check_output(out, events, overwrite=force)
    overrides = [*(set_ or []), f"generator.types={types}"]
    if seed is not None:
        overrides.append(f"generator.seed={seed}")
    cfg = with_fresh_seed(resolve_config(config, overrides))
    cfg, names = resolve_skim_specs(cfg, split_skims(skims))
    bar, update = progress_bar("labelling", events)
    with bar:
        summary = label_events(cfg.generator, cfg.backend, events, out, names, progress=update)
    print_labelled(summary, cfg.generator.seed)


@user_errors
def skims_command(
    measure: Annotated[
        bool, typer.Option("--measure", help="Generate events and measure retention.")
    ] = False,
    events: Annotated[
        int, typer.Option("--events", "-n", help="Events per background type (--measure).")
    ] = 20_000,
    seed: Annotated[int | None, typer.Option("--seed", help="Generator seed.")] = None,
    skim: Annotated[
        list[str] | None, typer.Option("--skim", help="Only these skims (repeatable).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Also write the table: .json, else markdown."),
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """List the emulator's skims; with --measure, their retention per background type."""
    overrides = list(set_ or [])
    if seed is not None:
        overrides.append(f"generator.seed={seed}")
    cfg = resolve_config(config, overrides)
    chosen = get_skims(skim or cfg.backend.skims)
    if not measure:
        print_skim_list(chosen, HELD_OUT_SKIMS, reference_retention())
        return
    with err_console.status(f"generating and emulating {events} events per type"):
        result = measure_retention(cfg, events, skim or cfg.backend.skims)
    print_retention(result, events, cfg.backend.conditions)
    if out is not None:
        out.write_text(result.to_json() if out.suffix == ".json" else result.to_markdown())
        console.print(f"wrote {out}")
