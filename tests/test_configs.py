"""The YAML files shipped under configs/ stay valid and default.yaml stays the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptive_bkg.config import Config, load_config

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_default_yaml_equals_builtin_defaults() -> None:
    # If this fails, a default changed: regenerate with `adaptive-bkg config > configs/default.yaml`
    # (keeping the two comment lines at the top).
    assert load_config(CONFIGS / "default.yaml") == Config()
