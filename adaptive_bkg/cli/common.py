"""What every command shares: the typer app, the consoles, the `--config`/`--set` options, the
user-error wrapper and config resolution. The commands live in the modules beside this one;
`cli/__init__.py` registers them on `app` in the order `--help` lists them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from adaptive_bkg import __version__
from adaptive_bkg.backends.plugins import resolve_plugins, resolve_skims
from adaptive_bkg.config import Config, load_config
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
    return resolve_plugins(load_config(config, overrides or ()))


def split_skims(value: str | None) -> list[str] | None:
    """A `--skims` comma list as names (None: not given)."""
    if value is None:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    if not names:
        raise UserError(f"--skims '{value}' names no skim; give a comma list such as tau-generic")
    return names


def chosen_skims(skim: str | None, skims: str | None) -> tuple[str, ...] | None:
    """`--skim NAME` or `--skims A,B` as skim names (None: neither given)."""
    if skim is not None and skims is not None:
        raise UserError("give either --skim or --skims, not both")
    if skims is None:
        return None if skim is None else (skim,)
    names = tuple(s.strip() for s in skims.split(",") if s.strip())
    if not names:
        raise UserError(f"--skims '{skims}' names no skim; e.g. --skims dstar-d0pi,radiative")
    return names


def resolve_skim_specs(cfg: Config, specs: list[str] | None) -> tuple[Config, list[str] | None]:
    """Names for --skim/--skims given as catalogue names or import paths (plugins recorded)."""
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
