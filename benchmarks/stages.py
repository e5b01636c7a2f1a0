"""Throughput of the cheap stages on one core: Pythia generation (the σ-weighted background
mixture, after initialisation) and building a labelled dataset (`adaptive-bkg label`:
generate + emulator + Parquet, initialisation included), repeated to give a spread.

    .venv/bin/python benchmarks/stages.py                       # 20,000 events × 3, ~1 min
    .venv/bin/python benchmarks/stages.py --quick --out /tmp/stages.json   # toy sizes

Writes benchmarks/results/stages.json. The emulator, filter (inference) and learner (training)
rates come from emulator.py and model.py.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: per-core rates (before numpy loads its BLAS)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _machine import describe  # noqa: E402

from adaptive_bkg.config import load_config  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "stages.json"
SKIMS = ("leptonic-untagged", "fei-hadronic", "dstar-d0pi", "radiative")


def _spread(cpu_rates: list[float], wall_rates: list[float]) -> dict[str, Any]:
    """Per CPU-second of this process (what a dedicated core would do; the shared machine's
    load does not enter) and per wall-second, mean ± sd over the repeats."""
    return {
        "events_per_cpu_s": statistics.mean(cpu_rates),
        "events_per_cpu_s_sd": statistics.stdev(cpu_rates) if len(cpu_rates) > 1 else math.nan,
        "events_per_wall_s": statistics.mean(wall_rates),
        "repeats_cpu": cpu_rates,
        "repeats_wall": wall_rates,
    }


def generator_rate(events: int, repeats: int, seed: int) -> dict[str, Any]:
    from adaptive_bkg.generators.pythia import PythiaGenerator

    cfg = load_config(None, [f"generator.seed={seed}"])
    cpu, wall = [], []
    for r in range(repeats):
        gen = PythiaGenerator(cfg.generator, worker=r, run=0, incarnation=0, n_workers=repeats)
        gen.next_batch(2000)  # builds the Pythia instance of every type (~0.2 s each)
        start, start_cpu, n = time.perf_counter(), time.process_time(), 0
        while n < events:
            n += len(gen.next_batch(min(2000, events - n)))
        cpu.append(n / (time.process_time() - start_cpu))
        wall.append(n / (time.perf_counter() - start))
    return {**_spread(cpu, wall), "events": events, "includes_init": False}


def labelled_rate(events: int, repeats: int, seed: int, work: Path) -> dict[str, Any]:
    from adaptive_bkg.workflows.label import label_events

    cfg = load_config(None, [f"generator.seed={seed}"])
    cpu, wall = [], []
    for r in range(repeats):
        out = work / f"labelled-{r}.parquet"
        start, start_cpu = time.perf_counter(), time.process_time()
        label_events(cfg.generator, cfg.backend, events, out, list(SKIMS))
        cpu.append(events / (time.process_time() - start_cpu))
        wall.append(events / (time.perf_counter() - start))
    return {**_spread(cpu, wall), "events": events, "skims": list(SKIMS), "includes_init": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="1,000 events × 2: a check only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeats = 1_000, 2
    work = Path(tempfile.mkdtemp(prefix="adaptive-bkg-stages-"))
    result = {
        "benchmark": "stages: generator and labelled-dataset build, one core",
        "quick": args.quick,
        "command": " ".join(["benchmarks/stages.py", *sys.argv[1:]]),
        "generator": generator_rate(args.events, args.repeats, args.seed),
        "labelled_build": labelled_rate(args.events, args.repeats, args.seed, work),
        "machine": describe(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
