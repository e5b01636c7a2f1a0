"""The shipped notebooks run top to bottom on the small inputs shipped beside them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
DATA = NOTEBOOKS / "data"
NAMES = ("01_weights_over_time.ipynb", "02_strategies.ipynb", "03_closure.ipynb")


def execute(name: str, tmp_path: Path) -> list[nbformat.NotebookNode]:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = {
        "ADAPTIVE_BKG_RUN": str(DATA / "run-tau"),
        "ADAPTIVE_BKG_DATA": str(DATA / "labelled.parquet"),
        "ADAPTIVE_BKG_WORK": str(tmp_path / "work"),
        "MPLBACKEND": "Agg",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment of this process
    try:
        NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},  # the kernel writes nothing here
        ).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def text(outputs: list[nbformat.NotebookNode]) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    raw = json.loads((NOTEBOOKS / name).read_text())
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == []
            assert cell["execution_count"] is None


def test_shipped_inputs_are_small() -> None:
    sizes = [p.stat().st_size for p in DATA.rglob("*") if p.is_file()]
    assert sum(sizes) < 20 * 1024 * 1024


def test_weights_over_time_notebook(tmp_path: Path) -> None:
    table = text(execute(NAMES[0], tmp_path))
    # More than one model version decided events: the table has a row for each.
    rows = [line for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) >= 2, table
    assert "AUC" in table


def test_strategies_notebook(tmp_path: Path) -> None:
    out = text(execute(NAMES[1], tmp_path))
    for name in ("run-tau", "static-sqrt-optimal", "static-identity"):
        assert name in out
    assert (tmp_path / "work" / "static-identity" / "summary.json").exists()


def test_closure_notebook(tmp_path: Path) -> None:
    out = text(execute(NAMES[2], tmp_path))
    assert "passing events" in out
    assert "thrust" in out
    assert "chi2/ndf" in out
