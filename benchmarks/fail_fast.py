"""CPU time from `adaptive-bkg run` with bad input to its one error line (docs/reliability.md,
"Time to the error line").

Runs every `run` case of the table in tests/test_cli_errors.py (the same arguments and input
files) in a fresh process, `--repeats` times, and records each run's CPU time (user + sys of
the child, from `resource.getrusage(RUSAGE_CHILDREN)`), wall time, exit status and whether
it said the expected line. The baseline, measured in the same run: a bare interpreter start and
`import torch` (what the cases cost before `run` checked its inputs first). The target is
< 3 CPU-s per case; nothing is asserted here.

    python benchmarks/fail_fast.py --repeats 3 --out benchmarks/results/fail_fast.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from _machine import describe

ROOT = Path(__file__).resolve().parents[1]


def _cases_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cli_cases", ROOT / "tests" / "test_cli_errors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cli_cases"] = module
    spec.loader.exec_module(module)
    return module


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, case: Any, make_inputs: Any, env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        make_inputs(Path(folder))
        cpu0, wall0 = _children_cpu_s(), time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "adaptive_bkg.cli", *case.args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=folder,
            env=env,
            check=False,
        )
        cpu, wall = _children_cpu_s() - cpu0, time.monotonic() - wall0
    lines = result.stderr.strip().splitlines()
    return {
        "case": name,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "exit": result.returncode,
        "one_expected_line": len(lines) == 1 and case.message in lines[0],
    }


def baseline(code: str) -> float:
    """CPU seconds of `python -c code` (a fresh interpreter)."""
    cpu0 = _children_cpu_s()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return round(_children_cpu_s() - cpu0, 3)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", action="append", help="only these cases (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fail_fast.json")
    args = parser.parse_args()
    cases = _cases_module()
    chosen = {
        name: case
        for name, case in cases.CASES.items()
        if case.args[0] == "run" and (args.case is None or name in args.case)
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    load_before = os.getloadavg()
    baselines: dict[str, list[float]] = {"python -c pass": [], "import torch": []}
    runs = []
    for repeat in range(args.repeats):
        baselines["python -c pass"].append(baseline("pass"))
        baselines["import torch"].append(baseline("import torch"))
        for name, case in chosen.items():
            row = measure(name, case, cases._make_inputs, env)
            row["repeat"] = repeat
            runs.append(row)
            print(json.dumps(row), flush=True)
    torch_s = _median(baselines["import torch"])
    per_case = {}
    for name in chosen:
        cpu = [r["cpu_s"] for r in runs if r["case"] == name]
        per_case[name] = {
            "cpu_s_min": min(cpu),
            "cpu_s_max": max(cpu),
            "cpu_s": cpu,
            "median_over_import_torch": round(_median(cpu) / torch_s, 2),
        }
    report = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "repeats": args.repeats,
        "machine": describe(),
        "baseline_cpu_s": baselines,
        "per_case": per_case,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
