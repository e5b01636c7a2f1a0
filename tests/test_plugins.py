"""A user's own skim, written as docs/skims.md says, end to end: label, finetune, run, replay.

The skim module lives in a temporary folder (not installed, not on sys.path of the Ray
workers): the run must find it through the plugins recorded in the resolved config.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from adaptive_bkg.cli import app
from adaptive_bkg.formats.labelled import labelled_skims
from adaptive_bkg.stages.recorder import load_summary, read_records

SKIM_MODULE = textwrap.dedent(
    '''
    """A user's skim: low-multiplicity events with a hard track."""
    import numpy as np

    from adaptive_bkg.backends.emulator.skims import Skim


    class MySkim(Skim):
        """2-4 good tracks and one with pT > 1 GeV."""

        name = "my-skim"
        approximates = "nothing: a user's own selection"

        def select(self, ctx):
            v = ctx.variables
            return (v.n_tracks >= 2) & (v.n_tracks <= 4) & (v.max_pt > 1.0)
    '''
)
SPEC = "user_skim_mod:MySkim"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "user_skim_mod.py").write_text(SKIM_MODULE)
    sys.path.append(str(folder))  # as PYTHONPATH=folder would; the Ray workers do not get it
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("user_skim_mod", None)


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def labelled(plugin_dir: Path) -> Path:
    out = plugin_dir / "labelled.parquet"
    invoke(["label", "-o", str(out), "-n", "1500", "--seed", "3", "--skims", SPEC])
    return out


def test_label_writes_the_skims_name(labelled: Path) -> None:
    assert labelled_skims(labelled) == ("my-skim",)


def test_finetune_with_the_import_path(labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft.pt"
    from adaptive_bkg.checkpoints import default_checkpoint

    args = ["finetune", "--skim", SPEC, "--data", str(labelled), "--mode", "head"]
    args += ["--from", str(default_checkpoint("part-small"))]
    output = invoke([*args, "-o", str(out), "-n", "1200", "--epochs", "1", "--seed", "1"])
    assert "my-skim" in output
    from adaptive_bkg.model.checkpoint import load_checkpoint

    assert load_checkpoint(out).skims == ("my-skim",)


@pytest.mark.parametrize("skim", [SPEC, "my-skim"])
def test_replay_with_the_import_path_or_the_name(labelled: Path, tmp_path: Path, skim: str) -> None:
    out = tmp_path / "replay"
    args = ["replay", str(labelled), "--skim", skim, "--out", str(out), "--quiet", "--no-learn"]
    output = invoke([*args, "--set", "run.batch_size=500", "--set", "run.plots=false"])
    assert "[my-skim]" in output
    assert set(load_summary(out / "summary.json").skims) == {"my-skim"}
    assert "pass_my-skim" in read_records(out).column_names


def test_run_on_ray_with_the_import_path(ray_session, plugin_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    args = ["run", "--skim", SPEC, "--events", "2000", "--out", str(out), "--quiet", "--no-learn"]
    output = invoke([*args, "--set", "run.batch_size=1000", "--set", "run.plots=false"])
    assert "[my-skim]" in output
    summary = load_summary(out / "summary.json")
    assert summary.n_generated == 2000
    assert set(summary.skims) == {"my-skim"}
    # The resolved config names the skim and records where its code came from.
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["run"]["skims"] == ["my-skim"]
    assert written["backend"]["plugins"] == [SPEC]
    assert written["backend"]["plugin_path"] == [str(plugin_dir.resolve())]
    table = read_records(out)
    kept = table.column("kept").to_numpy()
    passed = table.column("pass_my-skim").to_numpy(zero_copy_only=False)[kept]
    assert kept.sum() > 0
    assert 0 < passed.sum() < kept.sum()  # real labels from the user's skim


def test_a_plugin_may_not_take_a_catalogue_name(plugin_dir: Path, tmp_path: Path) -> None:
    (plugin_dir / "clash_mod.py").write_text(
        SKIM_MODULE.replace('"my-skim"', '"tau-generic"').replace("MySkim", "Clash")
    )
    args = ["label", "-o", str(tmp_path / "x.parquet"), "-n", "10", "--skims", "clash_mod:Clash"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "catalogue skim" in result.output
    assert not (tmp_path / "x.parquet").exists()


BACKEND_MODULE = textwrap.dedent(
    '''
    from adaptive_bkg.backends.emulator import EmulatorBackend


    class ToyBackend(EmulatorBackend):
        """The emulator under another name: stands in for a user's production backend."""

        name = "toy-backend"
    '''
)


def test_backend_plugin_goes_by_its_name(plugin_dir: Path, synthetic_batch) -> None:  # type: ignore[no-untyped-def]
    from adaptive_bkg.backends import make_backend
    from adaptive_bkg.backends.plugins import resolve_plugins
    from adaptive_bkg.config import load_config

    (plugin_dir / "toy_backend_mod.py").write_text(BACKEND_MODULE)
    cfg = resolve_plugins(
        load_config(None, ["backend.name=toy_backend_mod:ToyBackend", f"run.skims=[{SPEC}]"])
    )
    assert cfg.backend.name == "toy-backend"
    assert cfg.run.skims == ("my-skim",)
    assert set(cfg.backend.plugins) == {SPEC, "toy_backend_mod:ToyBackend"}
    backend = make_backend(cfg.backend, cfg.run.skims)
    assert type(backend).__name__ == "ToyBackend"
    assert backend.skims == ("my-skim",)
    assert backend.simulate(synthetic_batch).flags.shape == (len(synthetic_batch), 1)
    assert resolve_plugins(cfg) == cfg  # resolving twice changes nothing
