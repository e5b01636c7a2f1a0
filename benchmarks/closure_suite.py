"""Closure suite benchmark: is an adaptive (online-learning) production unbiased?

Labels an events file (Pythia + emulator; or takes --data), replays it `--seeds` times with
the default policy (sqrt-optimal) and online learning, each replay with its own keep-draw and
learner seed (`run.seed`) on the same events, then `--hard-cut-seeds` times with the biased
`hard-cut` policy, and runs `adaptive_bkg.workflows.validate.validate_runs` on each set:
pulls of every merged bin of ≥ 20 generator- and reconstructed-level observables per skim,
χ² p-values per observable and their KS test against uniform (docs/validation.md).

    .venv/bin/python benchmarks/closure_suite.py                       # full: 50 + 5 replays
    .venv/bin/python benchmarks/closure_suite.py --quick --out /tmp/closure-quick.json   # CI

Writes --out (benchmarks/results/closure.json: n_observables, n_seeds, pull_mean, pull_width,
ks_pvalue, … and the same under hard_cut) and the figures of docs/validation.md into
--images (docs/images/validation-*.png). Replays are kept in --workdir and reused when the
benchmark is run again with the same settings (an interrupted run resumes). `--quick` replays
the shipped notebooks/data/labelled.parquet 3 + 1 times at 2000 events: it checks that the
benchmark works; its figures carry little weight.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "notebooks" / "data" / "labelled.parquet"
# Online learning that adapts within a few thousand events: small learner batches, frequent
# publishing (the default publishes after 20 steps of 256 events: no new model in 20k events).
LEARNER = ["learner.batch_size=64", "learner.publish_every_steps=4"]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def label(path: Path, n_events: int, skims: list[str], seed: int) -> None:
    from adaptive_bkg.config import load_config
    from adaptive_bkg.workflows.label import label_events

    cfg = load_config(None, [f"generator.seed={seed}"])
    summary = label_events(cfg.generator, cfg.backend, n_events, path, skims)
    print(f"labelled {summary.n_events} events into {path} ({summary.wall_s:.0f} s)", flush=True)


def replay(data: Path, out: Path, skims: list[str], events: int, seed: int, policy: str) -> None:
    """One replay into `out` (kept if it finished before: resumable)."""
    from adaptive_bkg.config import load_config
    from adaptive_bkg.pipeline.replay import replay_run

    if (out / "summary.json").is_file():
        return
    cfg = load_config(
        None,
        [f"run.skims=[{','.join(skims)}]", "run.plots=false", f"run.events={events}",
         "run.batch_size=500", f"run.seed={seed}", f"run.out={out}", f"policy.name={policy}",
         *LEARNER],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hard-cut's BiasedPolicyWarning: intended here
        replay_run(cfg, data, learn=True, show_live=False)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from adaptive_bkg.workflows.validate import result_lines, validate_runs

    work = Path(args.workdir or tempfile.mkdtemp(prefix="closure-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    skims = [s.strip() for s in args.skims.split(",") if s.strip()]
    data = args.data
    if data is None:
        data = work / f"labelled-{args.label_events}-seed{args.label_seed}.parquet"
        if not data.is_file():
            label(data, args.label_events, skims, args.label_seed)
    start, cpu0 = time.perf_counter(), cpu_s()
    sets: dict[str, list[Path]] = {"adaptive": [], "hard_cut": []}
    plan = [("adaptive", "sqrt-optimal", s) for s in range(1, args.seeds + 1)] + [
        ("hard_cut", "hard-cut", s) for s in range(1, args.hard_cut_seeds + 1)
    ]
    for k, (name, policy, seed) in enumerate(plan):
        out = work / f"{name}-{args.events}-seed{seed}"
        t, c = time.perf_counter(), cpu_s()
        replay(data, out, skims, args.events, seed, policy)
        sets[name].append(out)
        print(f"[{k + 1}/{len(plan)}] {out.name}: {time.perf_counter() - t:.0f} s wall, "
              f"{cpu_s() - c:.0f} CPU-s", flush=True)  # fmt: skip
    replay_wall, replay_cpu = time.perf_counter() - start, cpu_s() - cpu0
    t, c = time.perf_counter(), cpu_s()
    adaptive = validate_runs(sets["adaptive"], data)
    hard_cut = validate_runs(sets["hard_cut"], data)
    validate_wall, validate_cpu = time.perf_counter() - t, cpu_s() - c
    for v in (adaptive, hard_cut):
        print("\n".join(result_lines(v)), flush=True)
    if args.images is not None:
        write_images(adaptive, hard_cut, sets["adaptive"][0], data, Path(args.images))
    return {
        "benchmark": "closure suite: weighted kept vs all skim-passing events, many seeds",
        **adaptive.to_dict(),
        "hard_cut": hard_cut.to_dict(),
        "setup": {
            "data": str(data),
            "label_events": None if args.data else args.label_events,
            "label_seed": None if args.data else args.label_seed,
            "skims": skims,
            "events_per_replay": args.events,
            "learner": LEARNER,
            "quick": args.quick,
        },
        "timing": {
            "replay_wall_s": replay_wall,
            "replay_cpu_s": replay_cpu,
            "validate_wall_s": validate_wall,
            "validate_cpu_s": validate_cpu,
        },
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
    }


def write_images(adaptive: Any, hard_cut: Any, first_run: Path, data: Path, out: Path) -> None:
    from adaptive_bkg.pipeline.plots import save_figure
    from adaptive_bkg.workflows.closure import closure_histograms, plot_closure
    from adaptive_bkg.workflows.validate_plots import write_validation_plots

    for path in write_validation_plots(adaptive, out, other=hard_cut):
        print(f"wrote {path}")
    for skim in adaptive.skims:
        fig = plot_closure(closure_histograms(first_run, data, skim))
        print(f"wrote {save_figure(fig, out / f'validation-closure-{skim}.png', tight=False)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size on the shipped file")
    parser.add_argument("--data", type=Path, help="labelled file to replay (default: label one)")
    parser.add_argument("--label-events", type=int, default=20_000)
    parser.add_argument("--label-seed", type=int, default=11)
    parser.add_argument("--skims", default="tau-generic,dstar-d0pi")
    parser.add_argument("--events", type=int, default=4000, help="events per replay")
    parser.add_argument("--seeds", type=int, default=50, help="adaptive replays")
    parser.add_argument("--hard-cut-seeds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="replays (reused); default: a temp dir")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/closure.json")
    parser.add_argument("--images", type=Path, help="figures; default: docs/images (not --quick)")
    args = parser.parse_args()
    if args.quick:  # never overwrites the shipped results or figures unless told to
        args.data = args.data or SHIPPED
        args.skims, args.events, args.seeds, args.hard_cut_seeds = "tau-generic", 2000, 3, 1
        args.out = args.out or Path(tempfile.gettempdir()) / "closure-quick.json"
    else:
        args.out = args.out or ROOT / "benchmarks/results/closure.json"
        args.images = args.images or ROOT / "docs/images"
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
