"""Model throughput: inference and training events/s per preset, with the naive baselines.

    .venv/bin/python benchmarks/model.py --device cpu --preset part-small --quick
    .venv/bin/python benchmarks/model.py --device cpu --preset part-small,part-phys-small
    .venv/bin/python benchmarks/model.py --device cuda --preset all        # on a GPU machine

Events are real Pythia generic-mixture events when `adaptive_bkg.generators.pythia` works,
else synthetic CSR events with a similar multiplicity. Measured in the same run:
- `infer`: predict_logits with multiplicity bucketing (the production path)
- `infer-nobucket`: same model, batches in arrival order (padding to the batch maximum)
- `infer-naive`: no bucketing and the pair bias recomputed in every block (a literal port)
- `infer-compiled` (--compile, or default on GPU): torch.compile of the production path
- bf16 variants (GPU only): autocast bfloat16
- `train` / `train-nobucket`: AdamW steps on BCE at --train-batch events per step
Writes benchmarks/results/model-<device>.json (one row per measurement, plus the host).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from _machine import describe

from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.model.features import (
    ModelInputs,
    bucket_edges,
    bucketed_batches,
    padding_waste,
    to_model_inputs,
)
from adaptive_bkg.model.part import PRESETS, ParticleTransformer, preset
from adaptive_bkg.model.predict import predict_logits, resolve_device

SKIMS = ("fei-hadronic", "fei-semileptonic", "leptonic-untagged", "tau-generic", "dstar-d0pi")
MAX_PARTICLES = 128


@dataclass(frozen=True)
class Row:
    preset: str
    mode: str
    device: str
    dtype: str
    batch_size: int
    events: int
    seconds: float
    events_per_s: float
    n_parameters: int


def load_events(n: int, source: str) -> tuple[EventBatch, str]:
    if source in ("auto", "pythia"):
        try:
            from adaptive_bkg.config import GeneratorConfig
            from adaptive_bkg.generators.pythia import PythiaGenerator

            return PythiaGenerator(GeneratorConfig(seed=3)).next_batch(n), "pythia generic mixture"
        except Exception as exc:  # generator missing or broken: fall back, say so
            if source == "pythia":
                raise
            print(f"pythia unavailable ({type(exc).__name__}); using synthetic events")
    from adaptive_bkg.model.synthetic import synthetic_events

    return synthetic_events(n, seed=3, mean_particles=26.0), "synthetic, mean 26 particles"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_logits(model: ParticleTransformer, inputs: ModelInputs) -> torch.Tensor:
    """The forward pass with the pair bias recomputed in every block (no sharing)."""
    x, key_mask = model.embed_particles(inputs)
    for block in model.blocks:
        x = block(x, model.pair_bias(inputs, key_mask))
    return model.head_logits(model.pool(x, key_mask, inputs.bkg_type))


def in_order(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


def timed(
    run: Callable[[EventBatch], int], events: EventBatch, device: torch.device, repeats: int
) -> tuple[int, float]:
    # Warm-up on a slice (allocator, kernels; compiled graphs for most bucket shapes).
    run(events.take(np.arange(min(len(events), 256 if device.type == "cpu" else 4096))))
    sync(device)
    start, done = time.perf_counter(), 0
    for _ in range(repeats):
        done += run(events)
    sync(device)
    return done, time.perf_counter() - start


def bench_preset(
    name: str,
    events: EventBatch,
    device: torch.device,
    args: argparse.Namespace,
) -> list[Row]:
    torch.manual_seed(0)
    model = ParticleTransformer(preset(name), SKIMS).to(device).eval()
    n_params = model.n_parameters()
    rows: list[Row] = []
    edges = bucket_edges(MAX_PARTICLES)
    bs = args.infer_batch

    def add(mode: str, dtype: str, batch: int, result: tuple[int, float]) -> None:
        n, seconds = result
        rows.append(Row(name, mode, str(device), dtype, batch, n, seconds, n / seconds, n_params))
        print(f"{name:11s} {mode:22s} {dtype:5s} batch {batch:5d}: {n / seconds:10.0f} events/s")

    dtypes = ["fp32"] + (["bf16"] if device.type == "cuda" else [])
    for dtype in dtypes:
        bf16 = dtype == "bf16"

        def infer(
            edges_: list[int] | None,
            m: ParticleTransformer,
            batch: EventBatch,
            bf16: bool = bf16,
        ) -> int:
            predict_logits(m, batch, bs, device, MAX_PARTICLES, edges_, autocast_bf16=bf16)
            return len(batch)

        def naive(batch: EventBatch, bf16: bool = bf16) -> int:
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                for idx in in_order(len(batch), bs):
                    naive_logits(model, to_model_inputs(batch.take(idx), MAX_PARTICLES, device))
            return len(batch)

        for mode, run in (
            ("infer", functools.partial(infer, edges, model)),
            ("infer-nobucket", functools.partial(infer, None, model)),
            ("infer-naive", naive),
        ):
            add(mode, dtype, bs, timed(run, events, device, args.repeats))
        if args.compile:
            # default dynamic=None: recompiles once with symbolic shapes when the bucket changes
            compiled = cast(ParticleTransformer, torch.compile(model))
            run = functools.partial(infer, edges, compiled)
            add("infer-compiled", dtype, bs, timed(run, events, device, args.repeats))

        for mode, train_edges in (("train", edges), ("train-nobucket", None)):
            add(
                mode,
                dtype,
                args.train_batch,
                bench_train(name, events, device, train_edges, args, bf16),
            )
    return rows


def bench_train(
    name: str,
    events: EventBatch,
    device: torch.device,
    edges: list[int] | None,
    args: argparse.Namespace,
    bf16: bool,
) -> tuple[int, float]:
    torch.manual_seed(0)
    model = ParticleTransformer(preset(name), SKIMS).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.random((len(events), len(SKIMS))) < 0.05).float()
    n = events.n_particles
    if edges is None:
        batches = in_order(len(events), args.train_batch)
    else:
        batches = bucketed_batches(n, args.train_batch, edges, rng)
    batches = batches[: args.train_steps + 1]
    inputs = [to_model_inputs(events.take(b), MAX_PARTICLES, device) for b in batches]
    targets = [labels[b].to(device) for b in batches]

    def step(k: int) -> int:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            logits = model(inputs[k])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets[k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return int(inputs[k].mask.shape[0])

    step(0)  # warm-up
    sync(device)
    start, done = time.perf_counter(), 0
    for k in range(1, len(batches)):
        done += step(k)
    sync(device)
    return done, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--preset", default="all", help=f"all, or a comma list of {', '.join(PRESETS)}"
    )
    parser.add_argument("--quick", action="store_true", help="fewer events and steps")
    parser.add_argument("--events", default="auto", help="auto | pythia | synthetic")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--infer-batch", type=int, default=1024)
    parser.add_argument("--train-batch", type=int, default=256)
    parser.add_argument("--n-events", type=int, default=None, help="override the event count")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.compile is None:
        args.compile = device.type == "cuda"  # inductor on CPU compiles for minutes
    cpu = device.type == "cpu"
    n_events = (2048 if args.quick else 8192) if cpu else (16384 if args.quick else 65536)
    n_events = args.n_events or n_events
    args.repeats = 1 if (args.quick or cpu) else 3
    args.train_steps = 4 if args.quick else (12 if cpu else 50)
    presets = sorted(PRESETS, reverse=True) if args.preset == "all" else args.preset.split(",")
    events, source = load_events(n_events, args.events)
    n = events.n_particles
    waste_plain = padding_waste(n, args.infer_batch, None, MAX_PARTICLES)
    waste_bucketed = padding_waste(n, args.infer_batch, bucket_edges(MAX_PARTICLES), MAX_PARTICLES)
    print(f"{len(events)} events ({source}), particles mean {n.mean():.1f}, max {n.max()}")
    print(f"padding waste (particle, pair slots): plain {waste_plain}, bucketed {waste_bucketed}")
    rows: list[Row] = []
    for name in presets:
        subset, preset_args = events, args
        if name == "part-2m" and cpu:  # ~100 events/s on the 2-core machine: keep it short
            subset = events.take(np.arange(min(len(events), 1024)))
            preset_args = argparse.Namespace(**{**vars(args), "train_steps": 3})
        rows.extend(bench_preset(name, subset, device, preset_args))
    out = args.out or Path(__file__).parent / "results" / f"model-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    host = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_avg_1min": os.getloadavg()[0],
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    report = {
        "events": {
            "source": source,
            "n": len(events),
            "mean_particles": float(n.mean()),
            "max_particles": int(n.max()),
            "padding_waste_plain": waste_plain._asdict(),
            "padding_waste_bucketed": waste_bucketed._asdict(),
        },
        "host": host,
        "machine": describe(device),
        "quick": args.quick,
        "rows": [asdict(r) for r in rows],
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
