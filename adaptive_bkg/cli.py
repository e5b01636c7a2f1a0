"""The `adaptive-bkg` command line: a thin typer layer over library functions.

Each command parses options, calls one library function that returns a typed result, and
renders it. A `UserError` anywhere becomes one red line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from adaptive_bkg import __version__
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
    return load_config(config, overrides or ())


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
