"""Pre-start checks (pipeline/preflight.py) and a user's backend plugin failing to build."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptive_bkg.backends import make_backend
from adaptive_bkg.config import BackendConfig, RayConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.pipeline import preflight


class ExplodingBackend:
    """A plugin whose constructor fails the way user code does (not with a UserError)."""

    def __init__(self, cfg: BackendConfig, skims: object) -> None:
        raise ValueError("cannot open /nonexistent/basf2.conf\nsecond line of detail")


def test_plugin_failing_to_build_is_one_line() -> None:
    cfg = BackendConfig(name=f"{__name__}:ExplodingBackend")
    with pytest.raises(UserError) as info:
        make_backend(cfg, ["dstar-d0pi"])
    message = str(info.value)
    assert message == (
        f"backend '{__name__}:ExplodingBackend' failed to build: ValueError: "
        "cannot open /nonexistent/basf2.conf"
    )


def test_run_dir_checks(tmp_path: Path) -> None:
    preflight.check_run_dir(tmp_path / "new" / "deeper")  # may be created: fine
    (tmp_path / "empty").mkdir()
    preflight.check_run_dir(tmp_path / "empty")  # an empty folder is fine too
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is an existing file"):
        preflight.check_run_dir(tmp_path / "file")
    with pytest.raises(UserError, match="is a file, not a directory"):
        preflight.check_run_dir(tmp_path / "file" / "a" / "b")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "records").mkdir()
    with pytest.raises(UserError, match=r"use --resume .*full to continue it"):
        preflight.check_run_dir(tmp_path / "full")


def test_local_ray_fits_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "machine_cpus", lambda: 4)
    monkeypatch.setattr(preflight, "available_memory_mb", lambda: 8000.0)
    preflight.check_local_ray(RayConfig())  # defaults: 1.5 CPUs of actors, 256 MiB store
    preflight.check_local_ray(RayConfig(num_cpus=4, object_store_mb=4000))  # at the limits
    with pytest.raises(UserError, match=r"ray\.num_cpus = 5 exceeds the 4 CPUs"):
        preflight.check_local_ray(RayConfig(num_cpus=5))
    with pytest.raises(UserError, match=r"the actors ask for 2\.5 CPUs .* instance has 2"):
        preflight.check_local_ray(RayConfig(num_cpus=2, simulators=5))
    with pytest.raises(UserError, match=r"the actors ask for 4\.5 CPUs .* instance has 4"):
        preflight.check_local_ray(RayConfig(generators=13))  # unset num_cpus: the machine's
    with pytest.raises(UserError, match=r"ray\.object_store_mb = 4001 exceeds 4000 MiB"):
        preflight.check_local_ray(RayConfig(object_store_mb=4001))


def test_available_memory_is_read() -> None:
    memory = preflight.available_memory_mb()
    assert memory is None or memory > 64  # /proc/meminfo where it exists, in MiB
