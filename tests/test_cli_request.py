"""The typed hand-off from the production commands to the run plan: `ProductionRequest` and
`apply_request` set typed values on the config (no round trip through `--set` strings), the
options win over `--set`, and a bad value is still one line naming its config key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptive_bkg.cli import app
from adaptive_bkg.config import load_config
from adaptive_bkg.errors import UserError
from adaptive_bkg.pipeline.plan import (
    ProductionRequest,
    apply_request,
    production_config,
    resume_config,
)

runner = CliRunner()


def test_request_sets_typed_values_and_keeps_the_rest() -> None:
    base = load_config(None, ["run.batch_size=500", "policy.p_min=0.02"])
    request = ProductionRequest(
        skims=("dstar-d0pi", "radiative"),
        budget="90m",
        events=1234,
        target_neff=50.5,
        policy="basf2-exp",
        out=Path("somewhere/run"),
        address="auto",
        plots=False,
    )
    cfg = apply_request(base, request)
    assert cfg.run.skims == ("dstar-d0pi", "radiative")
    assert (cfg.run.budget, cfg.run.events, cfg.run.target_neff) == ("90m", 1234, 50.5)
    assert cfg.policy.name == "basf2-exp"
    assert cfg.run.out == Path("somewhere/run")
    assert cfg.ray.address == "auto"
    assert cfg.run.plots is False
    assert (cfg.run.batch_size, cfg.policy.p_min) == (500, 0.02)  # untouched
    assert apply_request(base, ProductionRequest()) == base  # nothing given: nothing changes


def test_request_gives_the_config_the_old_string_overrides_gave() -> None:
    """The same config as the `--set`-string route it replaces (`run.key=<json>` overrides)."""
    request = ProductionRequest(("dstar-d0pi",), "24h", 2000, 10.0, "sqrt-optimal", Path("o"))
    strings = [
        f"run.skims={json.dumps(list(request.skims or ()))}",
        f"run.budget={json.dumps(request.budget)}",
        f"run.events={request.events}",
        f"run.target_neff={request.target_neff}",
        f"policy.name={json.dumps(request.policy)}",
        f"run.out={json.dumps(str(request.out))}",
    ]
    overrides = ["run.batch_size=300"]
    assert apply_request(load_config(None, overrides), request) == load_config(
        None, [*overrides, *strings]
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (ProductionRequest(events=0), "invalid config value run.events = 0"),
        (ProductionRequest(target_neff=-1.0), "invalid config value run.target_neff = -1.0"),
        (ProductionRequest(policy="nosuch"), "invalid config value policy.name = 'nosuch'"),
        (ProductionRequest(budget="soon"), "bad budget 'soon'"),
        (ProductionRequest(budget="0h"), "bad budget '0h': it must be positive"),
    ],
)
def test_bad_request_value_is_one_line_naming_it(request_: ProductionRequest, message: str) -> None:
    with pytest.raises(UserError) as info:
        apply_request(load_config(), request_)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_options_win_over_set(tmp_path: Path) -> None:
    cfg = production_config(
        ProductionRequest(events=5, out=tmp_path / "a"),
        overrides=["run.events=7", f"run.out={tmp_path / 'b'}", "run.seed=9"],
    )
    assert (cfg.run.events, cfg.run.out, cfg.run.seed) == (5, tmp_path / "a", 9)


def test_reproduce_takes_the_run_config_without_its_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "earlier"
    run_dir.mkdir()
    earlier = load_config(None, ["generator.seed=123", f"run.out={run_dir}", "run.events=9"])
    (run_dir / "config.yaml").write_text(earlier.to_yaml())
    cfg = production_config(ProductionRequest(events=20), reproduce=run_dir)
    assert (cfg.generator.seed, cfg.run.out, cfg.run.events) == (123, None, 20)
    with pytest.raises(UserError, match="either --reproduce RUN_DIR or --config"):
        production_config(ProductionRequest(), config=run_dir / "config.yaml", reproduce=run_dir)
    with pytest.raises(UserError, match="is not a run directory"):
        production_config(ProductionRequest(), reproduce=tmp_path)


def test_resume_keeps_the_run_directory_and_takes_the_newest_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(load_config(None, ["run.events=10"]).to_yaml())
    for name in ("v0001.pt", "v0012.pt", "v0003.pt", "final.pt"):
        (run_dir / "checkpoints" / name).write_bytes(b"")
    request = ProductionRequest(events=40, budget="2h", address="auto")
    cfg = resume_config(run_dir, request, ["run.seed=5"])
    assert (cfg.run.events, cfg.run.budget, cfg.ray.address, cfg.run.seed) == (40, "2h", "auto", 5)
    assert cfg.run.out == run_dir
    assert cfg.model.checkpoint == run_dir / "checkpoints" / "v0012.pt"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--skim", "a", "--skims", "b,c"], "give either --skim or --skims, not both"),
        (["--skims", " , "], "--skims ' , ' names no skim"),
        (["--events", "0"], "invalid config value run.events = 0"),
        (["--budget", "lots"], "bad budget 'lots'"),
        (["--resume", "x", "--skim", "a"], "--resume continues a run with its own settings"),
    ],
)
def test_run_option_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
