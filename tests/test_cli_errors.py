"""Bad input to the production commands: one line, exit 2, found before anything starts, and
nothing damaged (docs/reliability.md, "Fail fast").

Every case runs the real command line in a fresh process, in a folder that holds only its input
files. It must print exactly one line (on stderr), exit 2, print no traceback, and leave the
folder exactly as it was: no run directory, every existing file with the same bytes and mtime.

Cases marked `pre_ray` must fail before `import ray`: they run with a poisoned `ray` package
first on the path, so reaching Ray at all would end in an ImportError traceback instead of the
expected line. The others (cluster address) are checked in `orchestrate.run_pipeline` after Ray
is imported but before it starts. Cases not marked `needs_torch` must also fail before `import
torch` (which costs seconds of CPU): `test_bad_input_fails_before_torch` checks it in the same
process as the error. Wall times are printed (`pytest -s`), not asserted: docs/reliability.md
has the figures (benchmarks/fail_fast.py measures them).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

RUN = ("run", "--events", "100", "--quiet", "--out", "out")
POISON = 'raise ImportError("ray imported before the bad input was found")\n'


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    message: str
    pre_ray: bool = True
    needs_torch: bool = False  # found by reading a checkpoint, an event file or Ray


def _set(*assignments: str) -> tuple[str, ...]:
    return tuple(a for assignment in assignments for a in ("--set", assignment))


CASES: dict[str, Case] = {
    "unknown-backend": Case((*RUN, *_set("backend.name=nosuch")), "unknown backend 'nosuch'"),
    "plugin-no-module": Case(
        (*RUN, *_set("backend.name=no_such_module:Backend")),
        "cannot import module no_such_module",
    ),
    "plugin-no-class": Case(
        (*RUN, *_set("backend.name=json:NoSuchBackend")), "module json has no attribute"
    ),
    "plugin-wrong-signature": Case(
        (*RUN, *_set("backend.name=collections:OrderedDict")),
        "cannot be called as collections:OrderedDict(cfg, skims)",
    ),
    "external-no-input": Case(
        (*RUN, *_set("backend.name=external", "backend.external.command=cp x {output}")),
        "must contain {input} and {output}",
    ),
    "external-no-output": Case(
        (*RUN, *_set("backend.name=external", "backend.external.command=cat {input}")),
        "must contain {input} and {output}",
    ),
    "out-is-a-file": Case(
        ("run", "--events", "100", "--out", "existing.txt"), "is an existing file, not a directory"
    ),
    "out-below-a-file": Case(
        ("run", "--events", "100", "--out", "existing.txt/run"), "is a file, not a directory"
    ),
    "out-not-empty": Case(
        ("run", "--events", "100", "--out", "earlier-run"), "use --resume earlier-run"
    ),
    "object-store-1e12": Case((*RUN, *_set("ray.object_store_mb=1e12")), "ray.object_store_mb"),
    "object-store-too-big": Case(
        (*RUN, *_set("ray.object_store_mb=1000000000000")),
        "of memory available on this machine",
    ),
    "num-cpus-too-many": Case((*RUN, *_set("ray.num_cpus=100000")), "CPUs of this machine"),
    "actors-exceed-cpus": Case(
        (*RUN, *_set("ray.num_cpus=1", "ray.simulators=8")), "the actors ask for 3.25 CPUs"
    ),
    "huge-run-batch": Case(
        (*RUN, *_set("run.batch_size=1000000000")), "run.batch_size = 1000000000"
    ),
    "huge-generator-batch": Case(
        (*RUN, *_set("generator.batch_size=1000000000")), "less than or equal to 100000"
    ),
    "malformed-yaml": Case((*RUN, "--config", "broken.yaml"), "is not valid YAML at line"),
    "unknown-key-in-file": Case((*RUN, "--config", "typo.yaml"), "unknown config key 'run.evnts'"),
    "unknown-key-set": Case((*RUN, *_set("ray.cpus=2")), "unknown config key 'ray.cpus'"),
    "wrong-type": Case((*RUN, *_set("run.batch_size=lots")), "run.batch_size = 'lots'"),
    "info-corrupt-parquet": Case(("info", "corrupt.parquet"), "not a readable Parquet file"),
    "info-foreign-parquet": Case(("info", "foreign.parquet"), "not an adaptive-bkg file"),
    "replay-corrupt-parquet": Case(
        ("replay", "corrupt.parquet", "--quiet", "--out", "out"),
        "not a readable Parquet file",
    ),
    "replay-foreign-parquet": Case(
        ("replay", "foreign.parquet", "--quiet", "--out", "out"),
        "expected an events or labelled-events file",
    ),
    "checkpoint-not-torch": Case(
        (*RUN, *_set("model.checkpoint=garbage.pt")),
        "garbage.pt is not an adaptive-bkg",
    ),
    "checkpoint-foreign": Case(
        (*RUN, *_set("model.checkpoint=foreign.pt")),
        "foreign.pt is not an adaptive-bkg",
    ),
    "unreachable-address": Case(
        (*RUN, "--address", "127.0.0.1:1"),
        "cannot reach the Ray cluster at '127.0.0.1:1'",
        pre_ray=False,
    ),
    "unreachable-ray-client": Case(
        (*RUN, "--address", "ray://127.0.0.1:1"),
        "cannot reach the Ray cluster",
        pre_ray=False,
    ),
    "bad-address": Case(
        (*RUN, "--address", "not-an-address"),
        "bad Ray address 'not-an-address'",
        pre_ray=False,
    ),
}


def _make_inputs(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    (folder / "existing.txt").write_text("results of last week; do not touch\n")
    (folder / "earlier-run").mkdir()
    (folder / "earlier-run" / "summary.json").write_text('{"n_generated": 30000}\n')
    (folder / "broken.yaml").write_text("run:\n  events: [1,\n")
    (folder / "typo.yaml").write_text("run:\n  evnts: 100\n")
    (folder / "corrupt.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 8)
    pq.write_table(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), folder / "foreign.parquet")
    (folder / "garbage.pt").write_bytes(bytes(range(256)) * 4)
    torch.save({"state_dict": {}, "note": "someone else's model"}, folder / "foreign.pt")


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every path below `folder` with its mtime and content hash (folders: mtime only)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(folder))] = (path.stat().st_mtime_ns, digest)
    return state


@pytest.fixture(scope="module")
def poisoned_ray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("poisoned-ray")
    (folder / "ray").mkdir()
    (folder / "ray" / "__init__.py").write_text(POISON)
    return folder


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_damages_nothing(
    name: str, tmp_path: Path, poisoned_ray: Path
) -> None:
    case = CASES[name]
    _make_inputs(tmp_path)
    before = _snapshot(tmp_path)
    env = dict(os.environ)
    if case.pre_ray:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(poisoned_ray), env.get("PYTHONPATH")])
        )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "adaptive_bkg.cli", *case.args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    wall_s = time.monotonic() - start
    print(f"{name}: exit {result.returncode} after {wall_s:.1f} s: {result.stderr.strip()}")
    assert "Traceback" not in result.stderr + result.stdout
    # stdout holds at most the line `run`/`replay` print at once, saying what starts.
    assert result.stdout == "" or (
        result.stdout.startswith("adaptive-bkg: ") and result.stdout.count("\n") == 1
    ), result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert case.message in lines[0]
    assert result.returncode == 2
    assert _snapshot(tmp_path) == before  # nothing created, nothing touched


# Runs the command line's `main` with the given arguments and, when it exits, says on the last
# line of stdout its exit status and whether torch had been imported by then.
TORCH_PROBE = """
import sys
from adaptive_bkg.cli import main
sys.argv = ["adaptive-bkg", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    print(f"exit {exc.code} torch imported: {'torch' in sys.modules}")
"""


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if not case.needs_torch])
def test_bad_input_fails_before_torch(name: str, tmp_path: Path) -> None:
    """Every bad input that needs no model, event file or Ray is found before `import torch`:
    a second or so of CPU instead of the 3-5 s that importing torch and the stages costs."""
    case = CASES[name]
    _make_inputs(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", TORCH_PROBE, *case.args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert case.message in result.stderr, result.stderr
    assert result.stdout.splitlines()[-1] == "exit 2 torch imported: False", result.stdout


def test_fail_fast_benchmark_measures_a_case(tmp_path: Path) -> None:
    """`benchmarks/fail_fast.py` runs a case of this table and records what it saw."""
    out = tmp_path / "fail_fast.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fail_fast.py"
    subprocess.run(
        [
            sys.executable,
            str(script),
            "--repeats",
            "1",
            "--case",
            "out-is-a-file",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert (run["case"], run["exit"], run["one_expected_line"]) == ("out-is-a-file", 2, True)
    assert run["cpu_s"] > 0
    assert len(report["baseline_cpu_s"]["import torch"]) == 1
    assert report["per_case"]["out-is-a-file"]["cpu_s"] == [run["cpu_s"]]
