"""How the commands show their typed results: rich tables, progress bars and result lines.

Results are typed `Any` where their classes live in modules that import torch or other heavy
libraries lazily (training runs, run results, comparisons): importing them here for the
annotation would slow every command's start-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn
from rich.table import Table

from adaptive_bkg.cli.common import console, err_console


def print_lines(lines: Sequence[str]) -> None:
    """Plain lines, exactly as given (no markup, no wrapping inside a line)."""
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True, markup=False)


def progress_bar(description: str, total: int) -> tuple[Progress, Callable[[int], None]]:
    """A transient rich progress bar on stderr, and a callback setting its completed count."""
    bar = Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task(description, total=total)
    return bar, lambda done: bar.update(task, completed=done)


def epoch_progress(bar: Progress) -> Callable[[Any], None]:
    """Training progress callback: events done in the epoch, with epoch number and loss."""

    def progress(p: Any) -> None:
        bar.update(
            TaskID(0), total=p.events_total, completed=p.events_done,
            description=f"epoch {p.epoch + 1} loss {p.loss:.4f}",
        )  # fmt: skip

    return progress


def print_result(result: Any) -> None:
    """Print a run's `runbook.result_lines` (a `RunResult`; runbook imports torch);
    exit 1 if the run stopped on an error (its records and summary are whole)."""
    from adaptive_bkg.pipeline.runbook import result_lines  # after the run: torch is loaded

    print_lines(result_lines(result))
    if result.failure:
        err_console.print(
            f"[bold red]error:[/] the run stopped early: {result.failure}; its records and "
            f"summary are complete. Fix the cause, then continue with "
            f"`adaptive-bkg run --resume {result.run_dir}`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def per_type_table(title: str, rows: Sequence[Any], n_events: int) -> Table:
    """Events, fraction and mean multiplicities per background type (`generators.TypeCount`)."""
    table = Table(title=title)
    for name in ("type", "events", "fraction", "particles/event", "charged/event"):
        table.add_column(name, justify="left" if name == "type" else "right")
    for row in rows:
        table.add_row(
            row.name,
            str(row.n_events),
            f"{row.n_events / max(n_events, 1):.3f}",
            f"{row.mean_particles:.1f}",
            f"{row.mean_charged:.2f}",
        )
    return table


def print_event_file(result: Any) -> None:
    """`info`: an `generators.EventFileInfo`, its types and multiplicity quantiles."""
    console.print(
        f"{result.path}: {result.n_events} events, schema version {result.schema_version}, "
        f"{result.n_row_groups} row groups in {result.n_files} file(s)",
        highlight=False,
        soft_wrap=True,  # one line however long the path: no wrap inside the sentence
    )
    console.print(per_type_table("events per type", result.per_type, result.n_events))
    quantiles = Table(title="multiplicity quantiles per event")
    quantiles.add_column("quantity")
    for q in result.quantiles:
        quantiles.add_column(f"q{q:g}", justify="right")
    quantiles.add_row("charged final state", *[f"{v:g}" for v in result.charged_quantiles])
    quantiles.add_row("all kept particles", *[f"{v:g}" for v in result.particle_quantiles])
    console.print(quantiles)


def print_cost_fit(fit: Any, source: Any) -> None:
    """`calibrate`: the fitted t_slow coefficients of a `cost_fit` result."""
    table = Table(title=f"t_slow fit to {fit.n_events} events from {source}")
    table.add_column("term")
    table.add_column("coefficient [s/unit]", justify="right")
    table.add_column("std. error", justify="right")
    table.add_row("intercept", f"{fit.intercept_s:.6g}", f"{fit.intercept_err_s:.2g}")
    for name, value in fit.coefficients.items():
        table.add_row(name, f"{value:.6g}", f"{fit.errors[name]:.2g}")
    console.print(table)
    console.print(
        f"R² = {fit.r2:.4f} (without outliers); {fit.n_outliers} of {fit.n_events} events are "
        "outliers (> 5σ, down-weighted by the Huber loss)"
        + (f"; ignored columns: {', '.join(fit.ignored_columns)}" if fit.ignored_columns else "")
    )


def print_labelled(summary: Any, seed: int | None) -> None:
    """`label`: pass rates of a `workflows.label` summary."""
    table = Table(title=f"{summary.n_events} labelled events -> {summary.path}")
    table.add_column("skim")
    table.add_column("pass rate", justify="right")
    table.add_column("passing events", justify="right")
    for name, rate in zip(summary.skims, summary.pass_rate, strict=True):
        table.add_row(name, f"{rate:.4f}", str(round(rate * summary.n_events)))
    table.caption = (
        f"{summary.wall_s:.1f} s, {summary.n_events / max(summary.wall_s, 1e-9):,.0f} events/s; "
        f"mean slow-stage cost {summary.mean_cost_slow_s:.3g} s/event; generator seed "
        f"{seed} (--seed {seed} repeats these events)"
    )
    console.print(table)


def print_skim_list(chosen: Sequence[Any], held_out: Sequence[str], reference: Any) -> None:
    """`skims`: each skim with what it approximates and its reference retention, if any."""
    measured = dict(zip(reference.skims, reference.weighted, strict=True)) if reference else {}
    listing = Table(title="emulator skims")
    for name in ("skim", "approximates", "selection", "retention %"):
        listing.add_column(name, justify="right" if name == "retention %" else "left")
    for s in chosen:
        held = " (held out)" if s.name in held_out else ""
        rate = f"{100 * measured[s.name]:.2f}" if s.name in measured else "-"
        listing.add_row(s.name + held, s.approximates, s.description, rate)
    if reference:
        listing.caption = (
            f"retention: cross-section-weighted, {reference.n_events[0]:,} events per type "
            "(--measure for the table per background type)"
        )
    console.print(listing)


def print_retention(result: Any, events: int, conditions: str) -> None:
    """`skims --measure`: retention per skim and background type, and weighted."""
    table = Table(title=f"retention in %, {events} events per type (conditions {conditions})")
    table.add_column("skim", no_wrap=True)
    for t in result.types:
        table.add_column(t, justify="right", no_wrap=True)
    table.add_column("weighted", justify="right", no_wrap=True)
    for k, name in enumerate(result.skims):
        cells = [f"{100 * result.retention[i, k]:.2f}" for i in range(len(result.types))]
        total = f"{100 * result.weighted[k]:.2f} ± {100 * result.weighted_error[k]:.2f}"
        table.add_row(name, *cells, total)
    table.caption = (
        f"weighted by cross section; emulator {result.emulator_events_per_s:,.0f} events per CPU s"
    )
    Console(width=max(console.width, 130)).print(table)  # wide: one column per type


def print_training(run: Any) -> None:
    """Rich table of a `recipes.TrainRun` (recipes imports torch lazily)."""
    last = run.history.last
    table = Table(
        title=f"{run.mode}: {run.n_train} training / {run.n_val} validation events, "
        f"{last.epoch} epochs, {last.step} steps"
    )
    for column in ("skim", "val pass rate", "AUC", "speedup", "oracle", "fraction of oracle"):
        table.add_column(column, justify="left" if column == "skim" else "right")

    def fmt(value: float, spec: str) -> str:
        return "n/a" if math.isnan(value) else format(value, spec)

    for skim, v in last.skims.items():
        table.add_row(
            skim,
            fmt(v.eff, ".4f"),
            fmt(v.auc, ".3f"),
            fmt(v.speedup, ".2f"),
            fmt(v.oracle_speedup, ".2f"),
            fmt(v.fraction_of_oracle, ".2f"),
        )
    table.caption = (
        f"train loss {last.train_loss:.4f}, val loss {last.val_loss:.4f}, {run.wall_s:.0f} s; "
        f"speedup of the sqrt-optimal policy fitted on the validation q, scored on its labels"
    )
    console.print(table)
    console.print(
        f"wrote {run.checkpoint}, {run.curve_png}, {run.metrics_json} "
        f"({run.n_trainable:,} of {run.n_parameters:,} parameters trained)"
    )


def print_masked_pdg(ssl: Any) -> None:
    """`pretrain --self-supervised`: the last epoch of masked-PDG pretraining."""
    last = ssl.epochs[-1]
    console.print(
        f"masked-PDG pretraining: {ssl.n_train} training / {ssl.n_val} validation events, "
        f"{last.epoch} epochs; validation masked-token accuracy {last.val_accuracy:.3f} "
        f"(train {last.train_accuracy:.3f}), loss {last.val_loss:.3f}; {ssl.wall_s:.0f} s"
    )
    console.print(f"wrote {ssl.checkpoint}, {ssl.metrics_json}")


def print_comparison(comparison: Any) -> None:
    """A table per skim of a `compare.Comparison`."""
    from adaptive_bkg.workflows.compare import COLUMNS, table_cells  # imports torch: start-up

    for skim in comparison.skims:
        table = Table(title=f"[{skim}]")
        for name in COLUMNS:
            table.add_column(name, justify="left" if name in ("run", "policy") else "right")
        for row in comparison.for_skim(skim):
            table.add_row(*table_cells(row))
        table.caption = "speedup ± its statistical error; time to 90 %: compute until the "
        table.caption += "speedup reached 90 % of its final value for good"
        Console(width=max(console.width, 150)).print(table)
