"""Transfer study: how many labelled events does a new skim need, per way of starting?

For the skims held out of pretraining (`adaptive_bkg.checkpoints.HELD_OUT_SKIMS`), train new
heads on N labelled events in each mode and score them on one fixed validation set:

- scratch:  fresh initialisation of the same architecture
- head:     shipped multi-skim checkpoint, frozen backbone (feature extraction)
- full:     shipped checkpoint, all parameters (backbone lr x learner.backbone_lr_factor)
- ssl-full: self-supervised (masked-PDG) checkpoint, all parameters, like `full`
- tree:     the tree baseline (benchmarks/baseline_tree.py: its 56 event features and its
            HistGradientBoostingClassifier settings) on the same N events; added beside every
            N of --runs unless --no-tree (needs the `bench` extra, scikit-learn)

Both held-out skims are trained together (one head each, shared backbone), which halves the
compute; every figure is per skim. Validation: AUC, and the expected speedup of the
sqrt-optimal policy fitted on the validation q and scored on the validation labels (as in
`adaptive-bkg finetune`), with its fraction of the oracle bound.

    .venv/bin/python benchmarks/transfer.py --data transfer.parquet --ssl ssl.pt \\
        --runs scratch:1000,head:1000,full:1000,ssl-full:1000 --out part.json
    .venv/bin/python benchmarks/transfer.py --merge a.json b.json --out results/transfer.json
    .venv/bin/python benchmarks/transfer.py --quick --out /tmp/transfer-quick.json   # toy sizes

`--quick` labels its own 3000 Pythia events (held-out skims) and runs head:1000 and tree:1000
with one epoch on 1000 validation events: a check that the study runs, not a measurement.

Several processes can run disjoint --runs lists into separate files; --merge joins them and
prints the markdown table for docs/training.md.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from _machine import describe

from adaptive_bkg.backends.emulator.cost import CostModel
from adaptive_bkg.checkpoints import HELD_OUT_SKIMS, default_checkpoint
from adaptive_bkg.config import load_config
from adaptive_bkg.formats.labelled import LabelledEvents, read_labelled
from adaptive_bkg.model.fitting import fit, validate_skims
from adaptive_bkg.model.training import init_heads_from_prior
from adaptive_bkg.workflows.recipes import build_trainer, finetune_model

MODES = ("scratch", "head", "full", "ssl-full", "tree")
DEFAULT_EPOCHS = {1_000: 20, 10_000: 6, 100_000: 2}  # ~equal wall time per decade below 1e5


@dataclass(frozen=True)
class TransferRow:
    mode: str
    head_init: str
    n_train: int
    epochs: int
    steps: int
    wall_s: float
    source: str
    skims: dict[str, dict[str, float]]  # skim -> auc, speedup, oracle_speedup, fraction...


@functools.lru_cache(maxsize=1)
def _read(path: Path, skims: tuple[str, ...]) -> LabelledEvents:
    return read_labelled(path, skims)


def run_one(
    mode: str,
    n_train: int,
    data_path: Path,
    pretrained: Path,
    ssl: Path | None,
    skims: tuple[str, ...],
    val_events: int,
    overrides: list[str],
    seed: int,
    epochs: int | None = None,
    head_init: str = "prior",
) -> TransferRow:
    cfg = load_config(None, overrides)
    data = _read(data_path, skims)
    order = np.random.default_rng(seed).permutation(len(data))
    if val_events + n_train > len(data):
        raise SystemExit(f"{data_path}: {len(data)} events < {val_events} val + {n_train} train")
    val = data.take(np.sort(order[:val_events]))
    # Nested training sets: the first n_train of one fixed order, the same for every mode.
    train = data.take(np.sort(order[val_events : val_events + n_train]))
    if mode == "tree":
        return tree_row(cfg, train, val, skims, seed)
    epochs = epochs or DEFAULT_EPOCHS.get(n_train, max(1, round(2e5 / n_train)))
    if mode == "ssl-full":
        if ssl is None:
            raise SystemExit("mode ssl-full needs --ssl checkpoint")
        source: Path | None = ssl
    else:
        source = None if mode == "scratch" else pretrained
    base_mode = "full" if mode == "ssl-full" else mode
    model, _ = finetune_model(cfg, source, skims, base_mode)
    if head_init == "prior":
        init_heads_from_prior(model, train.labels)  # as `adaptive-bkg finetune` does
    trainer = build_trainer(
        cfg,
        model,
        train.batch.n_particles,
        epochs,
        backbone_lr_factor=cfg.learner.backbone_lr_factor if base_mode == "full" else 1.0,
        freeze_backbone=base_mode == "head",
    )
    start = time.perf_counter()
    times = (trainer.times.t_fast, trainer.times.t_nn, trainer.times.t_slow)
    fit(trainer, train, None, epochs, batch_size=cfg.learner.batch_size, times=times, seed=seed)
    wall = time.perf_counter() - start
    result = trainer.evaluate(val.batch, val.labels)
    per_skim = validate_skims(result.logits, val.labels, skims, times, cfg.policy)
    return TransferRow(
        mode,
        head_init,
        n_train,
        epochs,
        trainer.step,
        wall,
        str(source) if source else "none",
        {s: {k: float(v) for k, v in asdict(r).items()} for s, r in per_skim.items()},
    )


def tree_row(
    cfg: Any, train: LabelledEvents, val: LabelledEvents, skims: tuple[str, ...], seed: int
) -> TransferRow:
    """The tree baseline on the same training events, scored like the transformer modes."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    event_features = _baseline_tree().event_features
    start = time.perf_counter()
    x_train, _ = event_features(train.batch)
    x_val, _ = event_features(val.batch)
    logits = np.zeros(val.labels.shape, dtype=np.float64)
    for s in range(len(skims)):
        y = train.labels[:, s]
        if y.all() or not y.any():
            logits[:, s] = 20.0 if y.all() else -20.0  # one class only: a constant score
            continue
        # The settings of benchmarks/baseline_tree.py.
        clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, random_state=seed)
        clf.fit(x_train, y)
        q = np.clip(clf.predict_proba(x_val)[:, 1], 1e-7, 1 - 1e-7)
        logits[:, s] = np.log(q / (1 - q))
    wall = time.perf_counter() - start
    times = CostModel.from_config(cfg.backend).mean_times
    per_skim = validate_skims(logits, val.labels, skims, times, cfg.policy)
    return TransferRow(
        "tree", "none", len(train), 0, 0, wall, "HistGradientBoostingClassifier",
        {s: {k: float(v) for k, v in asdict(r).items()} for s, r in per_skim.items()},
    )  # fmt: skip


def _baseline_tree() -> ModuleType:
    """benchmarks/baseline_tree.py, the sibling script (benchmarks/ is not a package)."""
    path = Path(__file__).with_name("baseline_tree.py")
    spec = importlib.util.spec_from_file_location("baseline_tree", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def with_tree_runs(runs: list[str]) -> list[str]:
    """Every training size of `runs` also gets the tree baseline (once), after the others."""
    sizes = [spec.partition(":")[2] for spec in runs]
    trees = [f"tree:{n}" for n in dict.fromkeys(sizes) if f"tree:{n}" not in runs]
    return [*runs, *trees]


def markdown(rows: list[dict[str, Any]], skims: list[str]) -> str:
    """One row per run; the tree baseline on the same number of events sits beside each."""
    header = "| labelled events | mode | seed | epochs | " + " | ".join(
        f"{s} AUC | {s} speedup (frac. of oracle) | {s} tree AUC / speedup" for s in skims
    )
    lines = [header + " |", "|" + "---|" * (4 + 3 * len(skims))]
    trees = {(r["n_train"], r.get("seed", 0)): r for r in rows if r["mode"] == "tree"}
    order = sorted(rows, key=lambda r: (r["n_train"], MODES.index(r["mode"]), r.get("seed", 0)))
    for row in order:
        cells = [f"{row['n_train']:,}", row["mode"], str(row.get("seed", 0)), str(row["epochs"])]
        tree = trees.get((row["n_train"], row.get("seed", 0)))
        for s in skims:
            v = row["skims"][s]
            cells.append("n/a" if math.isnan(v["auc"]) else f"{v['auc']:.3f}")
            cells.append(f"{v['speedup']:.2f} ({v['fraction_of_oracle']:.2f})")
            t = tree["skims"][s] if tree is not None else None
            cells.append("–" if t is None else f"{t['auc']:.3f} / {t['speedup']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _quick_data(work: Path) -> Path:
    """3000 labelled Pythia events with the held-out skims (about half a minute)."""
    from adaptive_bkg.workflows.label import label_events

    path = work / "transfer-quick.parquet"
    cfg = load_config(None, ["generator.seed=31"])
    label_events(cfg.generator, cfg.backend, 3000, path, list(HELD_OUT_SKIMS))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="labelled-events file with the held-out skims")
    parser.add_argument("--pretrained", type=Path, default=None, help="default: shipped")
    parser.add_argument("--ssl", type=Path, default=None, help="masked-PDG checkpoint")
    parser.add_argument("--skims", default=",".join(HELD_OUT_SKIMS))
    parser.add_argument("--runs", default="", help="comma list of mode:n_train")
    parser.add_argument("--val-events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="default: by size")
    parser.add_argument(
        "--head-init", choices=("prior", "random"), default="prior", help="new heads start at"
    )
    parser.add_argument("--no-tree", action="store_true", help="skip the tree baseline rows")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a check that it runs")
    parser.add_argument("--merge", nargs="*", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    skims = tuple(s for s in args.skims.split(",") if s)

    if args.merge is not None:
        parts = [json.loads(p.read_text()) for p in args.merge]
        rows = [{**row, "seed": part["seed"]} for part in parts for row in part["rows"]]
        merged = {**parts[0], "rows": rows}
        merged.pop("seed", None)  # per row now
        args.out.write_text(json.dumps(merged, indent=2) + "\n")
        print(markdown(merged["rows"], list(merged["skims"])))
        return

    if args.quick:
        work = Path(tempfile.mkdtemp(prefix="transfer-quick-"))
        args.data = _quick_data(work)
        args.runs, args.val_events, args.epochs = "head:1000", 1000, 1
    if args.data is None:
        raise SystemExit("give --data (a labelled file with the held-out skims) or --quick")
    runs = [r for r in args.runs.split(",") if r]
    if not args.no_tree:
        runs = with_tree_runs(runs)
    torch.set_num_threads(args.threads)
    pretrained = args.pretrained or default_checkpoint("part-small")
    overrides = [
        f"learner.lr={args.lr}",
        f"learner.batch_size={args.batch_size}",
        f"learner.seed={args.seed}",
        "learner.warmup_steps=20",
    ]
    payload: dict[str, Any] = {
        "benchmark": "transfer",
        "data": str(args.data),
        "pretrained": str(pretrained),
        "ssl": str(args.ssl) if args.ssl else None,
        "skims": list(skims),
        "val_events": args.val_events,
        "seed": args.seed,
        "overrides": overrides,
        "head_init": args.head_init,
        "host": {"machine": platform.machine(), "torch_threads": args.threads},
        "machine": describe(),
        "rows": [],
    }
    for spec in runs:
        mode, _, n = spec.partition(":")
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode} (allowed: {', '.join(MODES)})")
        row = run_one(
            mode, int(n), args.data, pretrained, args.ssl, skims, args.val_events, overrides,
            args.seed, args.epochs, args.head_init,
        )  # fmt: skip
        payload["rows"].append(asdict(row))
        args.out.write_text(json.dumps(payload, indent=2) + "\n")  # after every run
        summary = ", ".join(
            f"{s} AUC {v['auc']:.3f} speedup {v['speedup']:.2f}" for s, v in row.skims.items()
        )
        print(
            f"{mode:9s} n={row.n_train:>7,} epochs={row.epochs:>2} {row.wall_s:6.0f} s  {summary}"
        )
    print(markdown([{**r, "seed": args.seed} for r in payload["rows"]], list(skims)))


if __name__ == "__main__":
    main()
