"""The `adaptive-bkg` command line: a thin typer layer over library functions.

Each command parses options, calls one library function that returns a typed result, and
renders it. A `UserError` anywhere becomes one red line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from adaptive_bkg import __version__
from adaptive_bkg.config import Config, load_config, with_fresh_seed
from adaptive_bkg.errors import UserError

app = typer.Typer(
    name="adaptive-bkg",
    help="Smart background simulation with an online-learning importance-sampling filter.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (see configs/).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: section.key=value (repeatable)."),
]


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Report `UserError` as one line and exit 2; Ctrl-C as one line and exit 130."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def resolve_config(config: Path | None, overrides: list[str] | None) -> Config:
    """The validated config, with plugin skims/backends resolved to their names (once)."""
    from adaptive_bkg.backends.plugins import resolve_plugins

    return resolve_plugins(load_config(config, overrides or ()))


def _resolve_skims(cfg: Config, specs: list[str] | None) -> tuple[Config, list[str] | None]:
    """Names for --skim/--skims given as catalogue names or import paths (plugins recorded)."""
    from adaptive_bkg.backends.plugins import resolve_skims

    if specs is None:
        return cfg, None
    cfg, names = resolve_skims(cfg, specs)
    return cfg, list(names)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"adaptive-bkg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """Smart background simulation with an online-learning importance-sampling filter."""


@app.command("config")
@user_errors
def show_config(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Print the resolved configuration as YAML."""
    sys.stdout.write(resolve_config(config, set_).to_yaml())


@app.command("calibrate")
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
    from rich.table import Table

    from adaptive_bkg.backends.emulator.cost import CostModel
    from adaptive_bkg.backends.emulator.cost_fit import fit_cost_table, write_cost_file
    from adaptive_bkg.config import BackendConfig, CostConfig

    fit = fit_cost_table(timings, events=events, features=feature or None)
    table = Table(title=f"t_slow fit to {fit.n_events} events from {timings}")
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
    path = write_cost_file(fit, out)
    model = CostModel.from_config(BackendConfig(cost=CostConfig(file=path)))
    t_fast, t_nn, t_slow = model.mean_times
    console.print(
        f"wrote {path}; on the generic mixture mean t_slow = {t_slow:.4g} s, "
        f"t_fast = {t_fast:.3g} s, t_NN = {t_nn:.3g} s (use --set backend.cost.file={path})"
    )


@app.command("generate")
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
    from adaptive_bkg.generators import check_output, generate_to_file

    check_output(out, events, overwrite=force)
    overrides = list(set_ or [])
    if types is not None:
        overrides.append(f"generator.types={types}")
    if seed is not None:
        overrides.append(f"generator.seed={seed}")
    cfg = with_fresh_seed(resolve_config(config, overrides)).generator
    bar, update = _progress_bar("generating", events)
    with bar:
        summary = generate_to_file(
            cfg, events, out, progress=update, worker=worker, run=run, overwrite=force
        )
    table = _per_type_table(
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


@app.command("info")
@user_errors
def info(
    path: Annotated[Path, typer.Argument(help="Event file (or folder of shards).")],
) -> None:
    """Summarise an event file: events per type, multiplicities, schema, row groups."""
    from rich.table import Table

    from adaptive_bkg.generators import inspect_event_file

    result = inspect_event_file(path)
    console.print(
        f"{result.path}: {result.n_events} events, schema version {result.schema_version}, "
        f"{result.n_row_groups} row groups in {result.n_files} file(s)",
        highlight=False,
        soft_wrap=True,  # one line however long the path: no wrap inside the sentence
    )
    console.print(_per_type_table("events per type", result.per_type, result.n_events))
    quantiles = Table(title="multiplicity quantiles per event")
    quantiles.add_column("quantity")
    for q in result.quantiles:
        quantiles.add_column(f"q{q:g}", justify="right")
    quantiles.add_row("charged final state", *[f"{v:g}" for v in result.charged_quantiles])
    quantiles.add_row("all kept particles", *[f"{v:g}" for v in result.particle_quantiles])
    console.print(quantiles)


@app.command("run")
@user_errors
def run(
    skim: Annotated[str | None, typer.Option("--skim", help="Skim to produce for.")] = None,
    skims: Annotated[
        str | None, typer.Option("--skims", help="Several skims, comma-separated.")
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option("--budget", help="24h, 90m, 30s: emulated compute on the virtual clock."),
    ] = None,
    events: Annotated[int | None, typer.Option("--events", help="Events to generate.")] = None,
    target_neff: Annotated[
        float | None, typer.Option("--target-neff", help="Stop at this N_eff.")
    ] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Keep policy.")] = None,
    no_learn: Annotated[
        bool, typer.Option("--no-learn", help="Keep the pretrained model fixed.")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory.")] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Join a Ray cluster: auto or ray://host:port.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live view.")] = False,
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
    from adaptive_bkg.pipeline.progress import start_line
    from adaptive_bkg.pipeline.runbook import plan_run, production_overrides, resume_config

    stop = production_overrides(budget=budget, events=events, target_neff=target_neff)
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
        cfg = resume_config(resume, [*(set_ or []), *stop, *production_overrides(address=address)])
    else:
        overrides = production_overrides(
            skim, skims, budget, events, target_neff, policy, out, address
        )
        if reproduce is not None:
            if config is not None:
                raise UserError("give either --reproduce RUN_DIR or --config, not both")
            config = Path(reproduce) / "config.yaml"
            if not config.is_file():
                raise UserError(f"{reproduce} is not a run directory (no config.yaml)")
            overrides = ["run.out=null", *overrides]
        cfg = resolve_config(config, [*(set_ or []), *overrides])
    where = f"joining the Ray cluster at {cfg.ray.address}" if cfg.ray.address else "starting Ray"
    console.print(start_line(cfg, not no_learn, where), highlight=False, soft_wrap=True)
    plan = plan_run(cfg, learn=not no_learn, resume=resume is not None)
    from adaptive_bkg.pipeline.orchestrate import run_pipeline

    _print_result(run_pipeline(plan, show_live=False if quiet else None))


@app.command("replay")
@user_errors
def replay(
    data: Annotated[Path, typer.Argument(help="Recorded labelled-events (or events) file.")],
    skim: Annotated[str | None, typer.Option("--skim", help="Skim to produce for.")] = None,
    skims: Annotated[
        str | None, typer.Option("--skims", help="Several skims, comma-separated.")
    ] = None,
    budget: Annotated[str | None, typer.Option("--budget", help="Stop at this budget.")] = None,
    events: Annotated[int | None, typer.Option("--events", help="Events to replay.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Keep policy.")] = None,
    no_learn: Annotated[
        bool, typer.Option("--no-learn", help="Keep the pretrained model fixed.")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live view.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Replay a recorded dataset through the same stages, offline, without Ray."""
    from adaptive_bkg.pipeline.progress import start_line
    from adaptive_bkg.pipeline.replay import replay_run
    from adaptive_bkg.pipeline.runbook import production_overrides

    overrides = production_overrides(skim, skims, budget, events, None, policy, out)
    cfg = resolve_config(config, [*(set_ or []), *overrides])
    where = f"replaying {data} in this process"
    console.print(start_line(cfg, not no_learn, where), highlight=False, soft_wrap=True)
    _print_result(replay_run(cfg, data, learn=not no_learn, show_live=False if quiet else None))


@app.command("demo")
@user_errors
def demo(
    out: Annotated[Path | None, typer.Option("--out", help="Run directory.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live view.")] = False,
    set_: SetOption = None,
) -> None:
    """A short production on the held-out skim dstar-d0pi (CPU, emulator, a few minutes)."""
    from adaptive_bkg.pipeline.orchestrate import run_pipeline
    from adaptive_bkg.pipeline.progress import start_line
    from adaptive_bkg.pipeline.runbook import DEMO_OVERRIDES, plan_run, production_overrides

    cfg = resolve_config(None, [*DEMO_OVERRIDES, *(set_ or []), *production_overrides(out=out)])
    console.print(start_line(cfg, True, "starting Ray"), highlight=False, soft_wrap=True)
    _print_result(run_pipeline(plan_run(cfg, tag="demo-"), show_live=False if quiet else None))


def _print_result(result: Any) -> None:
    """Print a run's `runbook.result_lines` (typed Any: run results are imported lazily);
    exit 1 if the run stopped on an error (its records and summary are whole)."""
    from adaptive_bkg.pipeline.runbook import result_lines

    for line in result_lines(result):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    if result.failure:
        err_console.print(
            f"[bold red]error:[/] the run stopped early: {result.failure}; its records and "
            f"summary are complete. Fix the cause, then continue with "
            f"`adaptive-bkg run --resume {result.run_dir}`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command("check")
@user_errors
def check_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (several: to merge).")],
) -> None:
    """Verify run directories: unique event ids, no repeated physics, counts, summary."""
    from adaptive_bkg.workflows.check import check_runs

    report = check_runs(run_dirs)
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    if not report.ok:
        raise typer.Exit(1)


# --- training (owner: training engineer; library code in datasets.py / training.py) ---------
def _progress_bar(description: str, total: int) -> tuple[Any, Callable[[int], None]]:
    """A transient rich progress bar on stderr (typed Any: rich is imported lazily here)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

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


def _epoch_progress(bar: Any) -> Callable[[Any], None]:
    """Training progress callback: events done in the epoch, with epoch number and loss."""

    def progress(p: Any) -> None:
        bar.update(
            0, total=p.events_total, completed=p.events_done,
            description=f"epoch {p.epoch + 1} loss {p.loss:.4f}",
        )  # fmt: skip

    return progress


def _per_type_table(title: str, rows: Sequence[Any], n_events: int) -> Any:
    """Events, fraction and mean multiplicities per background type (`generators.TypeCount`)."""
    from rich.table import Table

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


def _split_skims(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    if not names:
        raise UserError(f"--skims '{value}' names no skim; give a comma list such as tau-generic")
    return names


@app.command("label")
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
    from rich.table import Table

    from adaptive_bkg.generators import check_output
    from adaptive_bkg.workflows.label import label_events

    check_output(out, events, overwrite=force)
    overrides = [*(set_ or []), f"generator.types={types}"]
    if seed is not None:
        overrides.append(f"generator.seed={seed}")
    cfg = with_fresh_seed(resolve_config(config, overrides))
    cfg, names = _resolve_skims(cfg, _split_skims(skims))
    bar, update = _progress_bar("labelling", events)
    with bar:
        summary = label_events(cfg.generator, cfg.backend, events, out, names, progress=update)
    table = Table(title=f"{summary.n_events} labelled events -> {summary.path}")
    table.add_column("skim")
    table.add_column("pass rate", justify="right")
    table.add_column("passing events", justify="right")
    for name, rate in zip(summary.skims, summary.pass_rate, strict=True):
        table.add_row(name, f"{rate:.4f}", str(round(rate * summary.n_events)))
    table.caption = (
        f"{summary.wall_s:.1f} s, {summary.n_events / max(summary.wall_s, 1e-9):,.0f} events/s; "
        f"mean slow-stage cost {summary.mean_cost_slow_s:.3g} s/event; generator seed "
        f"{cfg.generator.seed} (--seed {cfg.generator.seed} repeats these events)"
    )
    console.print(table)


def _render_training(run: Any) -> None:
    """Rich table of a `recipes.TrainRun` (typed Any: recipes imports torch lazily)."""
    import math

    from rich.table import Table

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


def _training_overrides(
    set_: list[str] | None,
    epochs: int | None,
    loss: str | None,
    seed: int | None,
    preset: str | None = None,
) -> list[str]:
    overrides = list(set_ or [])
    if epochs is not None:
        overrides.append(f"learner.epochs={epochs}")
    if loss is not None:
        overrides.append(f"learner.loss={loss}")
    if seed is not None:
        overrides.append(f"learner.seed={seed}")
    if preset is not None:
        overrides.append(f"model.preset={preset}")
    return overrides


EpochsOption = Annotated[int | None, typer.Option("--epochs", help="learner.epochs")]
LossOption = Annotated[
    str | None,
    typer.Option("--loss", help="bce | weighted-bce | focal | speedup | entropeedup"),
]
TrainSeedOption = Annotated[int | None, typer.Option("--seed", help="learner.seed")]


@app.command("pretrain")
@user_errors
def pretrain_command(
    data: Annotated[Path, typer.Option("--data", help="labelled-events (or events) file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write (.pt).")],
    skims: Annotated[
        str | None, typer.Option("--skims", help="Comma list; default: all in --data.")
    ] = None,
    self_supervised: Annotated[
        bool,
        typer.Option(
            "--self-supervised", help="Masked-PDG pretraining on unlabelled events (no labels)."
        ),
    ] = False,
    epochs: EpochsOption = None,
    loss: LossOption = None,
    seed: TrainSeedOption = None,
    preset: Annotated[str | None, typer.Option("--preset", help="model.preset")] = None,
    max_events: Annotated[
        int | None, typer.Option("--max-events", help="Use only the first N events.")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Pretrain a model: multi-skim on labelled events, or self-supervised on events."""
    from adaptive_bkg.workflows.recipes import pretrain, pretrain_masked_pdg

    cfg = resolve_config(config, _training_overrides(set_, epochs, loss, seed, preset))
    if max_events is not None and max_events <= 0:
        raise UserError(f"--max-events must be positive, got {max_events}")
    bar, _ = _progress_bar("training", 1)
    progress = _epoch_progress(bar)
    with bar:
        if self_supervised:
            if skims is not None or loss is not None:
                raise UserError("--self-supervised uses no labels: drop --skims and --loss")
            ssl = pretrain_masked_pdg(cfg, data, out, max_events=max_events, progress=progress)
        else:
            cfg, names = _resolve_skims(cfg, _split_skims(skims))
            run = pretrain(cfg, data, out, names, max_events=max_events,
                           progress=progress)  # fmt: skip
    if self_supervised:
        last = ssl.epochs[-1]
        console.print(
            f"masked-PDG pretraining: {ssl.n_train} training / {ssl.n_val} validation events, "
            f"{last.epoch} epochs; validation masked-token accuracy {last.val_accuracy:.3f} "
            f"(train {last.train_accuracy:.3f}), loss {last.val_loss:.3f}; {ssl.wall_s:.0f} s"
        )
        console.print(f"wrote {ssl.checkpoint}, {ssl.metrics_json}")
    else:
        _render_training(run)


@app.command("finetune")
@user_errors
def finetune_command(
    skim: Annotated[str, typer.Option("--skim", help="Skim (or comma list) to add heads for.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write (.pt).")],
    source: Annotated[
        Path | None, typer.Option("--from", help="Checkpoint to start from (not for scratch).")
    ] = None,
    events: Annotated[
        int, typer.Option("--events", "-n", help="Labelled training events.")
    ] = 10_000,
    mode: Annotated[str, typer.Option("--mode", help="full | head | scratch")] = "full",
    data: Annotated[
        Path | None,
        typer.Option("--data", help="labelled-events file; default: generate and label."),
    ] = None,
    val_data: Annotated[
        Path | None, typer.Option("--val-data", help="labelled-events file for validation.")
    ] = None,
    val_events: Annotated[
        int | None, typer.Option("--val-events", help="Validation events (without --val-data).")
    ] = None,
    epochs: EpochsOption = None,
    loss: LossOption = None,
    seed: TrainSeedOption = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Refuse a checkpoint of another architecture.")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Fine-tune a checkpoint for new skims (new heads): full, head-only or from scratch."""
    from adaptive_bkg.workflows.recipes import finetune

    cfg = resolve_config(config, _training_overrides(set_, epochs, loss, seed, preset))
    cfg, names = _resolve_skims(cfg, _split_skims(skim))
    skims = names or []
    bar, _ = _progress_bar("preparing", 1)
    progress = _epoch_progress(bar)

    def label_progress(done: int) -> None:
        bar.update(0, total=events, completed=done, description="labelling")

    with bar:
        run = finetune(
            cfg, source, skims, mode, events, out, data=data, val_data=val_data,
            val_events=val_events, expect_preset=preset, progress=progress,
            label_progress=label_progress,
        )  # fmt: skip
    _render_training(run)


@app.command("skims")
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
    from rich.table import Table

    from adaptive_bkg.backends.emulator.skims import HELD_OUT_SKIMS, get_skims

    overrides = list(set_ or [])
    if seed is not None:
        overrides.append(f"generator.seed={seed}")
    cfg = resolve_config(config, overrides)
    chosen = get_skims(skim or cfg.backend.skims)
    from adaptive_bkg.backends.emulator.retention import measure_retention, reference_retention

    if not measure:
        reference = reference_retention()
        measured = dict(zip(reference.skims, reference.weighted, strict=True)) if reference else {}
        listing = Table(title="emulator skims")
        for name in ("skim", "approximates", "selection", "retention %"):
            listing.add_column(name, justify="right" if name == "retention %" else "left")
        for s in chosen:
            held = " (held out)" if s.name in HELD_OUT_SKIMS else ""
            rate = f"{100 * measured[s.name]:.2f}" if s.name in measured else "-"
            listing.add_row(s.name + held, s.approximates, s.description, rate)
        if reference:
            listing.caption = (
                f"retention: cross-section-weighted, {reference.n_events[0]:,} events per type "
                "(--measure for the table per background type)"
            )
        console.print(listing)
        return

    with err_console.status(f"generating and emulating {events} events per type"):
        result = measure_retention(cfg, events, skim or cfg.backend.skims)
    table = Table(
        title=f"retention in %, {events} events per type (conditions {cfg.backend.conditions})"
    )
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
    if out is not None:
        out.write_text(result.to_json() if out.suffix == ".json" else result.to_markdown())
        console.print(f"wrote {out}")


@app.command("export-onnx")
@user_errors
def export_onnx_command(
    checkpoint: Annotated[Path, typer.Argument(help="Model checkpoint (.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 17,
) -> None:
    """Export a checkpoint to ONNX with basf2-like inputs (see docs/model.md)."""
    from adaptive_bkg.model.checkpoint import load_checkpoint
    from adaptive_bkg.model.onnx_export import export_onnx

    loaded = load_checkpoint(checkpoint)
    path = export_onnx(loaded.model, out, opset=opset)
    console.print(
        f"wrote {path}: inputs features[B,N,8] (t,x,y,z,E,px,py,pz), pdg[B,N] (0 = empty), "
        f"mother[B,N], bkg_type[B] -> logits[B,{len(loaded.skims)}] for {', '.join(loaded.skims)}"
    )


# --- analysis: plot, compare, sweep (library code in plots.py, closure.py, compare.py, sweep.py)
@app.command("plot")
@user_errors
def plot_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (runs/<name>).")],
    closure: Annotated[
        Path | None,
        typer.Option("--closure", help="Labelled file the run replayed: closure plots too."),
    ] = None,
) -> None:
    """Write a run's plots to RUN_DIR/plots (N_eff, speedup, weights, p, ROC, closure)."""
    from adaptive_bkg.workflows.plots import plot_run

    for path in plot_run(run_dir, closure_data=closure):
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _print_comparison(comparison: Any) -> None:
    from rich.table import Table

    from adaptive_bkg.workflows.compare import COLUMNS, table_cells

    for skim in comparison.skims:
        table = Table(title=f"[{skim}]")
        for name in COLUMNS:
            table.add_column(name, justify="left" if name in ("run", "policy") else "right")
        for row in comparison.for_skim(skim):
            table.add_row(*table_cells(row))
        table.caption = "speedup ± its statistical error; time to 90 %: compute until the "
        table.caption += "speedup reached 90 % of its final value for good"
        Console(width=max(console.width, 150)).print(table)


@app.command("compare")
@user_errors
def compare_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the table files and overlay plots.")
    ] = Path("compare"),
) -> None:
    """A table per skim of several runs (speedup ± error, oracle, time to speedup) and overlays."""
    from adaptive_bkg.workflows.compare import compare_runs

    comparison = compare_runs(run_dirs)
    _show_comparison(comparison, out)


def _show_comparison(comparison: Any, out: Path) -> None:
    """Print a `compare.Comparison` and write its files (typed Any: imported lazily)."""
    from adaptive_bkg.workflows.compare import write_comparison

    _print_comparison(comparison)
    written = write_comparison(comparison, out)
    console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)


@app.command("sweep")
@user_errors
def sweep_command(
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
    from adaptive_bkg.pipeline.replay import check_replayable
    from adaptive_bkg.pipeline.runbook import production_overrides
    from adaptive_bkg.workflows.compare import compare_runs
    from adaptive_bkg.workflows.sweep import grid_points, run_sweep

    overrides = production_overrides(skim, skims, budget, events)
    cfg = resolve_config(config, [*(set_ or []), *overrides, "run.plots=false"])
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
    comparison = compare_runs(finished)
    _show_comparison(comparison, out)


@app.command("bayes-limit")
@user_errors
def bayes_limit_command(
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
    from adaptive_bkg.workflows.bayes_limit import (
        bayes_limit_events,
        check_request,
        estimate_bayes_limit,
        read_covariate,
        result_lines,
    )

    check_request(events, replicas, bootstrap)
    cfg = resolve_config(config, set_)
    names = _split_skims(skims) or []
    if out is not None and out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as limit.json")
    scores = None if covariate is None else read_covariate(covariate, names, events)
    batch = bayes_limit_events(cfg, events, data)
    bar, update = _progress_bar("replicas", replicas)
    with bar:
        result = estimate_bayes_limit(
            cfg, batch, names, replicas, bootstrap, progress=update, covariate=scores,
            covariate_source=None if covariate is None else str(covariate), counts_file=counts,
        )  # fmt: skip
    for line in result_lines(result):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    if out is not None:
        out.write_text(result.to_json())
        console.print(f"wrote {out}", highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
