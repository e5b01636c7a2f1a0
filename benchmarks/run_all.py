"""Runs every benchmark, each as its own process (one that fails does not stop the others),
then renders docs/benchmarks.md from the JSON results (benchmarks/render.py).

    python benchmarks/run_all.py --quick        # toy sizes, ≤ 5 min on 2 cores, into a temporary
                                                # folder (never over benchmarks/results/); the
                                                # figures only show that everything runs
    python benchmarks/run_all.py --data DIR     # full sizes: ~1.5 h without, hours more with the
                                                # labelled inputs in DIR (see --list)
    python benchmarks/run_all.py --only scaling,stages
    python benchmarks/run_all.py --skip soak,compare
    python benchmarks/run_all.py --render-only  # docs/benchmarks.md from benchmarks/results/*.json
    python benchmarks/run_all.py --list         # names, commands, expected durations, inputs

Full mode writes benchmarks/results/*.json (and the plots in docs/images/) and re-renders
docs/benchmarks.md; quick mode renders <results>/benchmarks.md. Both write
<results>/run_all.json: per benchmark the status (ok, failed, skipped and why), exit code,
wall time and the end of its output. Exit status 1 when any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _machine import describe

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
PY = sys.executable
CLI = [PY, "-m", "adaptive_bkg.cli"]
# Labelled inputs of the full runs (commands in docs/benchmarks.md sections 1, 2 and 4).
NOMINAL, DEGRADED = "lab150k.parquet", "lab150k-degraded.parquet"
HIGH_BKG = "lab150k-high-background.parquet"
TEST_EVENTS, COUNTS, COVARIATE = "test30k-events.parquet", "counts.npz", "tree-covariate.npz"
TRANSFER = "transfer160k.parquet"
BBBAR, GENERIC = "bbbar40k.parquet", "generic20k.parquet"  # literature.py's docstring
FOUR_SKIMS = "leptonic-untagged,fei-hadronic,dstar-d0pi,radiative"

Commands = list[list[str]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    what: str
    full_minutes: str  # expected duration of the full run on the 2-core development machine
    full: Callable[[Path, Path], Commands]  # (results, data) -> commands run in order
    quick: Callable[[Path, Path], Commands] | None  # None: full mode only (why in `what`)
    needs: tuple[str, ...] = ()  # files in --data that the full run reads
    when: Callable[[], str | None] = field(default=lambda: None)  # a reason to skip, or None


def _script(name: str, *args: object) -> list[str]:
    return [PY, str(BENCH / name), *map(str, args)]


def _no_cuda() -> str | None:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    if shutil.which("nvidia-smi") is None or subprocess.run([PY, "-c", probe]).returncode:
        return "no CUDA device on this machine"
    return None


def _optional(name: str) -> Callable[[], str | None]:
    return lambda: None if (BENCH / name).is_file() else f"benchmarks/{name} is not there"


BENCHMARKS = (
    Benchmark(
        "stages",
        "generator and labelled-build rates, one core",
        "3",
        lambda r, d: [_script("stages.py", "--out", r / "stages.json")],
        lambda r, d: [_script("stages.py", "--quick", "--out", r / "stages.json")],
    ),
    Benchmark(
        "emulator",
        "emulator (detector + all skims) rate, one core",
        "2",
        lambda r, d: [_script("emulator.py", "--events", 20_000, "--out", r / "emulator.json")],
        lambda r, d: [
            _script("emulator.py", "--events", 2000, "--repeats", 1, "--out", r / "emulator.json")
        ],
    ),
    Benchmark(
        "model-cpu",
        "filter inference and learner training rates on CPU",
        "6",
        lambda r, d: [_script("model.py", "--device", "cpu", "--out", r / "model-cpu.json")],
        lambda r, d: [
            _script(
                "model.py",
                "--device",
                "cpu",
                "--preset",
                "part-small",
                "--quick",
                "--n-events",
                512,
                "--out",
                r / "model-cpu.json",
            )
        ],
    ),
    Benchmark(
        "model-cuda",
        "the same on the GPU (compile, bf16 too)",
        "5",
        lambda r, d: [_script("model.py", "--device", "cuda", "--out", r / "model-cuda.json")],
        lambda r, d: [
            _script(
                "model.py",
                "--device",
                "cuda",
                "--preset",
                "part-small",
                "--quick",
                "--out",
                r / "model-cuda.json",
            )
        ],
        when=_no_cuda,
    ),
    Benchmark(
        "overhead",
        "Ray pipeline vs the bare source, zero-cost stages",
        "2",
        lambda r, d: [
            _script(
                "pipeline.py",
                "--part",
                "overhead",
                "--events",
                200_000,
                "--batch-size",
                10_000,
                "--out",
                r / "pipeline-overhead.json",
            )
        ],
        lambda r, d: [
            _script(
                "pipeline.py",
                "--quick",
                "--part",
                "overhead",
                "--out",
                r / "pipeline-overhead.json",
            )
        ],
    ),
    Benchmark(
        "scaling",
        "throughput vs 1/2/4/8 simulate actors on a 3-node ray Cluster",
        "8",
        lambda r, d: [_script("scaling.py", "--out", r / "scaling.json")],
        lambda r, d: [
            _script(
                "scaling.py",
                "--quick",
                "--out",
                r / "scaling.json",
                "--png",
                r / "scaling-actors.png",
            )
        ],
    ),
    Benchmark(
        "fail-fast",
        "CPU time of the CLI's answer to bad input",
        "5",
        lambda r, d: [_script("fail_fast.py", "--repeats", 3, "--out", r / "fail_fast.json")],
        lambda r, d: [
            _script(
                "fail_fast.py",
                "--repeats",
                1,
                "--case",
                "unknown-backend",
                "--out",
                r / "fail_fast.json",
            )
        ],
    ),
    Benchmark(
        "tree",
        "tree baseline and part-small on held-out test events",
        "20",
        lambda r, d: [
            _script(
                "baseline_tree.py",
                "--data",
                d / NOMINAL,
                "--train",
                120_000,
                "--test",
                30_000,
                "--out",
                r / "baseline_tree.json",
            )
        ],
        lambda r, d: [
            [
                *CLI,
                "label",
                "--events",
                3000,
                "--seed",
                21,
                "--skims",
                "leptonic-untagged,dstar-d0pi",
                "--out",
                r / "lab-quick.parquet",
            ],
            _script(
                "baseline_tree.py",
                "--data",
                r / "lab-quick.parquet",
                "--train",
                2000,
                "--test",
                1000,
                "--bootstrap",
                5,
                "--out",
                r / "baseline_tree.json",
            ),
        ],
        needs=(NOMINAL,),
    ),
    Benchmark(
        "bayes-limit",
        "Bayes-limit speedup from stored replica counts (R = 400)",
        "2 (+65 for the counts when counts.npz is missing)",
        lambda r, d: [
            [
                *CLI,
                "bayes-limit",
                "--skims",
                FOUR_SKIMS,
                "--events",
                30_000,
                "--replicas",
                400,
                "--data",
                d / TEST_EVENTS,
                "--counts",
                d / COUNTS,
                "--covariate",
                d / COVARIATE,
                "--bootstrap",
                50,
                "--out",
                r / "bayes_limit.json",
            ]
        ],
        lambda r, d: [
            [
                *CLI,
                "bayes-limit",
                "--skims",
                "leptonic-untagged",
                "--events",
                300,
                "--replicas",
                8,
                "--bootstrap",
                5,
                "--out",
                r / "bayes_limit.json",
            ]
        ],
        needs=(TEST_EVENTS, COVARIATE),
    ),
    Benchmark(
        "compare",
        "strategies at equal emulated compute (the headline)",
        "100-200",
        lambda r, d: [
            _script(
                "pipeline.py",
                "--part",
                "compare",
                "--nominal",
                d / NOMINAL,
                "--degraded",
                d / DEGRADED,
                "--high-background",
                d / HIGH_BKG,
                "--budget",
                3_000,
                "--seeds",
                3,
                "--two-step-events",
                10_000,
                "--out",
                r / "pipeline-compare.json",
            )
        ],
        lambda r, d: [
            _script(
                "pipeline.py",
                "--quick",
                "--part",
                "compare",
                "--out",
                r / "pipeline-compare-quick.json",
            )
        ],
        needs=(NOMINAL, DEGRADED, HIGH_BKG),
    ),
    Benchmark(
        "transfer",
        "fine-tuning modes on held-out skims",
        "120",
        lambda r, d: [
            _script(
                "transfer.py",
                "--data",
                d / TRANSFER,
                "--runs",
                "scratch:1000,head:1000,full:1000,scratch:10000,head:10000,full:10000",
                "--out",
                r / "transfer.json",
            )
        ],
        None,  # its --quick alone takes minutes: full mode or --only transfer
        needs=(TRANSFER,),
    ),
    Benchmark(
        "soak",
        "30-minute memory soak of a learning run",
        "40",
        lambda r, d: [_script("soak.py", "--json", r / "soak.json")],
        None,  # a soak needs its minutes; full mode only
    ),
    Benchmark(
        "learner-memory",
        "learner memory per phase (writes results/learner_memory.json)",
        "3",
        lambda r, d: [_script("learner_memory.py")],
        None,  # writes only benchmarks/results/: full mode only
    ),
    Benchmark(
        "closure",
        "closure suite: 50 + 5 replays, pulls of ≥ 20 observables (docs/validation.md)",
        "60-120",
        lambda r, d: [_script("closure_suite.py", "--out", r / "closure.json")],
        lambda r, d: [_script("closure_suite.py", "--quick", "--out", r / "closure.json")],
        when=_optional("closure_suite.py"),
    ),
    Benchmark(
        "literature",
        "the setting of yu2022 with the shipped model (docs/literature.md)",
        "5 (+ labelling the inputs, commands in benchmarks/literature.py)",
        lambda r, d: [
            _script(
                "literature.py",
                "--bbbar",
                d / BBBAR,
                "--generic",
                d / GENERIC,
                "--out",
                r / "literature.json",
            )
        ],
        lambda r, d: [
            [
                *CLI,
                "label",
                "-n",
                3000,
                "--types",
                "charged,mixed",
                "--seed",
                51,
                "--skims",
                "fei-hadronic,fei-semileptonic",
                "-o",
                r / "bbbar-quick.parquet",
            ],
            _script(
                "literature.py",
                "--bbbar",
                r / "bbbar-quick.parquet",
                "--draws",
                2,
                "--bootstrap",
                5,
                "--out",
                r / "literature.json",
            ),
        ],
        needs=(BBBAR, GENERIC),
        when=_optional("literature.py"),
    ),
)


def run_one(bench: Benchmark, quick: bool, results: Path, data: Path, log: Path) -> dict:
    """Runs one benchmark's commands in order; never raises."""
    row: dict = {"name": bench.name, "what": bench.what, "mode": "quick" if quick else "full"}
    make = bench.quick if quick else bench.full
    if make is None:
        return {**row, "status": "skipped", "reason": "full mode only (run without --quick)"}
    missing = [n for n in bench.needs if not quick and not (data / n).exists()]
    if missing:
        return {**row, "status": "skipped", "reason": f"needs {', '.join(missing)} in --data"}
    reason = bench.when()
    if reason:
        return {**row, "status": "skipped", "reason": reason}
    paths = [str(ROOT), str(BENCH), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    start = time.perf_counter()
    commands = [[str(c) for c in cmd] for cmd in make(results, data)]
    row["commands"] = [" ".join(c) for c in commands]
    with log.open("w") as out:
        for cmd in commands:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            if proc.returncode:
                break
    row["wall_s"] = round(time.perf_counter() - start, 1)
    row["returncode"] = proc.returncode
    row["status"] = "ok" if proc.returncode == 0 else "failed"
    row["log"] = str(log)
    if proc.returncode:
        row["output_tail"] = log.read_text()[-2000:]
    return row


QUICK_BANNER = (
    "> **Quick run (`run_all.py --quick`): toy sizes on whatever machine ran it. The figures "
    "below only show that every benchmark runs; they mean nothing.**\n\n"
)


def mark_quick(results: Path) -> None:
    """Tag every JSON of a quick run as such (not every benchmark knows it ran small)."""
    for path in results.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and not data.get("quick"):
            data["quick"] = True
            path.write_text(json.dumps(data, indent=2) + "\n")


def select(only: str | None, skip: str | None) -> list[Benchmark]:
    names = {b.name for b in BENCHMARKS}
    wanted = set(filter(None, (only or "").split(","))) or names
    unwanted = set(filter(None, (skip or "").split(",")))
    unknown = (wanted | unwanted) - names
    if unknown:
        raise SystemExit(
            f"unknown benchmark {', '.join(sorted(unknown))} (known: {', '.join(sorted(names))})"
        )
    return [b for b in BENCHMARKS if b.name in wanted - unwanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, ≤ 5 min on 2 cores")
    parser.add_argument("--only", help="comma list of benchmark names (see --list)")
    parser.add_argument("--skip", help="comma list of benchmark names")
    parser.add_argument("--data", type=Path, default=ROOT, help="folder of the labelled inputs")
    parser.add_argument("--results", type=Path, help="default: results/ (full), a tmp dir (quick)")
    parser.add_argument("--render-only", action="store_true", help="re-render the docs only")
    parser.add_argument("--list", action="store_true", help="what would run, and how long")
    args = parser.parse_args(argv)
    from render import DOC, render  # the renderer reads the same results folder

    benches = select(args.only, args.skip)
    if args.list:
        for b in benches:
            quick = "quick" if b.quick else "full only"
            needs = f"; needs {', '.join(b.needs)}" if b.needs else ""
            print(f"{b.name:15} ~{b.full_minutes} min full, {quick}{needs}: {b.what}")
            for cmd in b.full(RESULTS, args.data):
                print("    " + " ".join(str(c) for c in cmd))
        return 0
    results = args.results or (
        Path(tempfile.mkdtemp(prefix="adaptive-bkg-quick-")) if args.quick else RESULTS
    )
    results.mkdir(parents=True, exist_ok=True)
    doc = results / "benchmarks.md" if args.quick or args.results else DOC
    if args.render_only:
        doc.write_text(render(results))
        print(f"wrote {doc}")
        return 0
    logs = results / "logs"
    logs.mkdir(exist_ok=True)
    rows, started = [], time.perf_counter()
    for b in benches:
        print(f"[{time.perf_counter() - started:7.0f} s] {b.name} …", flush=True)
        row = run_one(b, args.quick, results, args.data.resolve(), logs / f"{b.name}.log")
        rows.append(row)
        detail = row.get("reason") or f"{row.get('wall_s', 0):.0f} s"
        print(f"          {b.name}: {row['status']} ({detail})", flush=True)
    summary = {
        "quick": args.quick,
        "machine": describe(),
        "total_s": round(time.perf_counter() - started, 1),
        "benchmarks": rows,
    }
    (results / "run_all.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.quick:
        mark_quick(results)
    doc.write_text((QUICK_BANNER if args.quick else "") + render(results))
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    skipped = [f"{r['name']} ({r['reason']})" for r in rows if r["status"] == "skipped"]
    print(f"results in {results}; wrote {doc}; {summary['total_s']:.0f} s in all")
    if skipped:
        print("skipped: " + "; ".join(skipped))
    if failed:
        print(f"FAILED: {', '.join(failed)} (logs in {logs})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
