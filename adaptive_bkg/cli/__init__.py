"""The `adaptive-bkg` command line: a thin typer layer over library functions.

Each command parses options, calls one library function that returns a typed result, and
renders it (render.py). A `UserError` anywhere becomes one red line on stderr and exit status
2 (common.user_errors). Commands by what users do: production.py (run, replay, demo, check),
data.py (generate, info, label, skims, calibrate), model.py (pretrain, finetune,
export-onnx), analysis.py (plot, compare, sweep, validate, bayes-limit).
"""

from __future__ import annotations

import sys

from adaptive_bkg.cli import analysis, data, model, production
from adaptive_bkg.cli.common import ConfigOption, SetOption, app, resolve_config, user_errors


@user_errors
def show_config(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Print the resolved configuration as YAML."""
    sys.stdout.write(resolve_config(config, set_).to_yaml())


# In the order `adaptive-bkg --help` lists them.
for _name, _command in (
    ("config", show_config),
    ("calibrate", data.calibrate),
    ("generate", data.generate),
    ("info", data.info),
    ("run", production.run),
    ("replay", production.replay),
    ("demo", production.demo),
    ("check", production.check),
    ("label", data.label),
    ("pretrain", model.pretrain_command),
    ("finetune", model.finetune_command),
    ("skims", data.skims_command),
    ("export-onnx", model.export_onnx_command),
    ("plot", analysis.plot),
    ("compare", analysis.compare),
    ("sweep", analysis.sweep),
    ("validate", analysis.validate),
    ("bayes-limit", analysis.bayes_limit),
):
    app.command(_name)(_command)


def main() -> None:
    app()


__all__ = ["app", "main"]
