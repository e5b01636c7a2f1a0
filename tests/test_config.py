"""Configuration: defaults, YAML files, overrides and one-line errors (library and CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptive_bkg.cli import app
from adaptive_bkg.config import GeneratorConfig, load_config, with_overrides
from adaptive_bkg.errors import UserError
from adaptive_bkg.physics.processes import BKG_TYPES

runner = CliRunner()


def test_defaults_are_belle2():
    cfg = load_config()
    assert cfg.generator.types == BKG_TYPES
    assert cfg.generator.e_minus_gev == 7.004
    assert cfg.generator.e_plus_gev == 4.002
    assert cfg.generator.crossing_angle_rad == 0.083
    mixture = cfg.generator.mixture()
    assert sum(mixture.values()) == pytest.approx(1.0)
    assert mixture["uubar"] == pytest.approx(1.61 / 5.71)


def test_file_then_overrides(tmp_path: Path):
    path = tmp_path / "cfg.yaml"
    path.write_text("generator:\n  seed: 7\n  types: charged,mixed\n  energy_spread: false\n")
    cfg = load_config(path, ["generator.seed=9"])
    assert cfg.generator.seed == 9  # --set wins over the file
    assert cfg.generator.types == ("charged", "mixed")
    assert cfg.generator.energy_spread is False
    again = with_overrides(cfg, ["generator.types=[taupair, uubar]"])
    assert again.generator.types == ("uubar", "taupair")  # canonical order
    assert again.generator.seed == 9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["generator.seed=0"], "invalid config value generator.seed = 0"),
        (["generator.seed=9223372036854775808"], "invalid config value generator.seed"),
        (["generator.seed=abc"], "invalid config value generator.seed = 'abc'"),
        (["generator.types=bbbar"], "unknown background type 'bbbar'"),
        (["generator.fractions={charm: 1}"], "unknown background types ['charm']"),
        (["generator.tau_decays=slow"], "invalid config value generator.tau_decays"),
        (["generator.colour=red"], "unknown config key 'generator.colour'"),
        (["nosection.key=1"], "unknown config key 'nosection'"),
        (["generator.seed"], "expected section.key=value"),
    ],
)
def test_bad_values_are_one_line_user_errors(overrides: list[str], message: str):
    with pytest.raises(UserError) as error:
        load_config(None, overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_yaml_and_missing_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generator:\n  seed: [1,\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping of sections"):
        load_config(listing)
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_generator_config_is_frozen_and_validates_directly():
    cfg = GeneratorConfig()
    with pytest.raises(ValueError, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown background type"):
        GeneratorConfig(types=["bbbar"])
    with pytest.raises(ValueError, match="positive sum"):
        GeneratorConfig(fractions={"charged": 0.0})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "generator.seed=abc"], "invalid config value generator.seed"),
        (["--set", "generator.nokey=1"], "unknown config key 'generator.nokey'"),
        (["--config", "BAD"], "not valid YAML"),
        (["--config", "MISSING"], "not found"),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generator: {seed: 1\n")
    args = [
        str(bad) if a == "BAD" else str(tmp_path / "missing.yaml") if a == "MISSING" else a
        for a in args
    ]
    result = runner.invoke(app, ["config", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output + result.stderr


def test_cli_config_prints_resolved_yaml():
    result = runner.invoke(app, ["config", "--set", "generator.seed=42"])
    assert result.exit_code == 0
    assert "seed: 42" in result.stdout
