"""CLI foundation: --version, `generate` -> `info` end to end, bad inputs, Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from adaptive_bkg import __version__
from adaptive_bkg.cli import app
from adaptive_bkg.config import GeneratorConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import read_events, write_events
from adaptive_bkg.generators import generate_to_file
from adaptive_bkg.generators.pythia import stream_seed
from adaptive_bkg.physics.processes import BKG_TYPES

runner = CliRunner()


def _assert_one_line_error(result: object, message: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    stderr = result.stderr.strip()  # type: ignore[attr-defined]
    assert message in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cli") / "events.parquet"
    args = ["generate", "--types", "all", "--events", "200", "--seed", "4", "--out", str(out)]
    result = runner.invoke(app, [*args, "--set", "generator.batch_size=64"])
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_generate_writes_what_it_reports(generated: tuple[Path, str]):
    out, stdout = generated
    events = read_events(out)
    assert len(events) == 200
    assert np.all(events.seed == stream_seed(4, 0, 0, 0))
    assert len(np.unique(events.event_id)) == 200
    assert "200 events" in stdout
    for code in np.unique(events.bkg_type):
        count = int(np.sum(events.bkg_type == code))
        assert any(
            BKG_TYPES[code] in line and f" {count} " in line for line in stdout.splitlines()
        ), f"summary lacks {BKG_TYPES[code]} = {count}"


def test_info_on_generated_file(generated: tuple[Path, str]):
    out, _ = generated
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "200 events, schema version 1" in result.stdout
    assert "charged final state" in result.stdout
    assert "all kept particles" in result.stdout
    # batch_size 64 -> writes of 64 events, one row group (the file is smaller than 10k).
    assert "1 row groups in 1 file(s)" in result.stdout


def test_generate_refuses_to_overwrite(generated: tuple[Path, str]):
    out, _ = generated
    result = runner.invoke(app, ["generate", "--events", "5", "--out", str(out)])
    _assert_one_line_error(result, "exists")
    assert len(read_events(out)) == 200  # untouched


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--types", "bbbar", "--events", "5"], "unknown background type 'bbbar'"),
        (["--types", "", "--events", "5"], "expected a list of background types"),
        (["--events", "-3"], "--events must be a positive number"),
        (["--events", "0"], "--events must be a positive number"),
        (["--events", "5", "--seed", "0"], "invalid config value generator.seed = 0"),
        (["--events", "5", "--worker", "5000"], "worker number 5000"),
    ],
)
def test_generate_bad_inputs(tmp_path: Path, args: list[str], message: str):
    result = runner.invoke(app, ["generate", *args, "--out", str(tmp_path / "x.parquet")])
    _assert_one_line_error(result, message)
    assert not (tmp_path / "x.parquet").exists()


def test_generate_unwritable_paths(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["generate", "--events", "5", "--out", str(blocker / "x.parquet")])
    _assert_one_line_error(result, "cannot write to")
    result = runner.invoke(app, ["generate", "--events", "5", "--out", str(tmp_path)])
    _assert_one_line_error(result, "is a directory")


def test_info_bad_files(tmp_path: Path):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 garbage")
    _assert_one_line_error(runner.invoke(app, ["info", str(corrupt)]), "not a readable Parquet")
    _assert_one_line_error(
        runner.invoke(app, ["info", str(tmp_path / "missing.parquet")]), "no such file"
    )


def test_info_on_empty_file(tmp_path: Path):
    from adaptive_bkg.formats.events import EventBatch

    path = tmp_path / "empty.parquet"
    write_events(path, EventBatch.empty())
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "0 events" in result.stdout


def test_ctrl_c_flushes_what_was_generated(tmp_path: Path):
    out = tmp_path / "interrupted.parquet"
    cfg = GeneratorConfig(types=["uubar"], batch_size=30)

    def interrupt_after_two_batches(done: int) -> None:
        if done >= 60:
            raise KeyboardInterrupt

    summary = generate_to_file(cfg, 1000, out, progress=interrupt_after_two_batches)
    assert summary.interrupted
    assert summary.n_events == 60
    assert len(read_events(out)) == 60  # closed cleanly: a normal file, no .partial/ left
    assert not (tmp_path / "interrupted.parquet.partial").exists()
    with pytest.raises(UserError, match="exists"):
        generate_to_file(cfg, 10, out)
