"""Bad input to the production commands ends in one line and exit 2, not a traceback or a hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adaptive_bkg.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:1", "cannot reach the Ray cluster at '127.0.0.1:1'"),
        ("ray://127.0.0.1:1", "cannot reach the Ray cluster"),
        ("not-an-address", "bad Ray address 'not-an-address'"),
    ],
)
def test_unreachable_cluster_is_one_line_error(tmp_path: Path, address: str, message: str) -> None:
    # A fresh process, so no Ray instance of the test session is already connected.
    result = run_cli("run", "--events", "100", "--address", address, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
