"""The shipped notebooks run top to bottom on a real (small) run directory."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from typer.testing import CliRunner

from adaptive_bkg.backends.emulator import EmulatorBackend
from adaptive_bkg.cli import app
from adaptive_bkg.config import BackendConfig
from adaptive_bkg.datasets import write_labelled
from adaptive_bkg.events import EventBatch

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


@pytest.fixture(scope="module")
def learning_run_dir(tmp_path_factory: pytest.TempPathFactory, small_events: EventBatch) -> Path:
    """A replayed run that publishes several model versions, so there is evolution to show."""
    tmp = tmp_path_factory.mktemp("nb")
    skims = ("tau-generic",)
    result = EmulatorBackend(BackendConfig(), skims).simulate(small_events)
    write_labelled(tmp / "labelled.parquet", small_events, result, skims)
    out = tmp / "run"
    args = ["replay", str(tmp / "labelled.parquet"), "--skim", "tau-generic", "--out", str(out)]
    args += ["--quiet", "--set", "run.batch_size=200", "--set", "run.plots=false"]
    args += ["--set", "learner.publish_every_steps=1", "--set", "learner.batch_size=64"]
    cli = CliRunner().invoke(app, args)
    assert cli.exit_code == 0, cli.output
    return out


def test_weight_evolution_notebook_executes(learning_run_dir: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOKS / "weight_evolution.ipynb", as_version=4)
    env = {"ADAPTIVE_BKG_RUN": str(learning_run_dir), "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment of this process
    try:
        NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    table = next(o["text"] for o in outputs if o.output_type == "stream" and "version" in o["text"])
    # More than one model version decided events: the table has a row for each.
    rows = [line for line in table.splitlines()[1:] if line.strip()]
    assert len(rows) >= 2, table
