"""What the learner's memory is made of: one process, no Ray, the soak's production config.

Builds generator, filter, simulate and learner stages as the actors do (`plan.factory`, the
soak's overrides on the virtual clock), makes a few labelled batches, then measures phase by
phase the process's RSS before and after and its PEAK during (VmHWM, reset through
/proc/self/clear_refs before each phase), and glibc's bytes in use (mallinfo2), with the
allocator settings the actors get (orchestrate.ACTOR_MALLOC_ENV; set them in the environment):

  * filling the validation (4096), probe (2048) and replay (50k events) buffers: retained;
  * learner training steps (256-event batches): the transient of the forward/backward pass;
  * the publish: probe scoring for the policy refit, validation evaluation;
  * repeated steps and publishes afterwards: anything retained would show as growth.

Writes benchmarks/results/learner_memory.json. Not run in CI (minutes of CPU).
Run:  MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=131072 \\
        .venv/bin/python benchmarks/learner_memory.py
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from _machine import describe

ROOT = Path(__file__).resolve().parent.parent
OUT_JSON = ROOT / "benchmarks" / "results" / "learner_memory.json"
MIB = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def rss_mib() -> float:
    return float(psutil.Process().memory_info().rss / MIB)


def peak_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))


def malloc_in_use_mib() -> float:
    info = _libc.mallinfo2()
    return float((info.uordblks + info.hblkhd) / MIB)


def phase(name: str, action: Callable[[], Any], repeat: int = 1) -> dict[str, Any]:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS
    rss0, used0, t0 = rss_mib(), malloc_in_use_mib(), time.monotonic()
    for _ in range(repeat):
        action()
    row = {
        "phase": name,
        "repeat": repeat,
        "rss_before_mib": rss0,
        "rss_after_mib": rss_mib(),
        "peak_mib": peak_mib(),
        "peak_above_before_mib": peak_mib() - rss0,
        "malloc_in_use_before_mib": used0,
        "malloc_in_use_after_mib": malloc_in_use_mib(),
        "seconds": time.monotonic() - t0,
    }
    print(
        f"{name:36s} RSS {row['rss_before_mib']:.0f} -> {row['rss_after_mib']:.0f} MiB, peak "
        f"{row['peak_mib']:.0f} (+{row['peak_above_before_mib']:.0f}); malloc in use "
        f"{used0:.0f} -> {row['malloc_in_use_after_mib']:.0f} MiB; {row['seconds']:.1f} s",
        flush=True,
    )
    return row


def main() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from soak import OVERRIDES

    from adaptive_bkg.config import load_config
    from adaptive_bkg.pipeline.runbook import plan_run
    from adaptive_bkg.stages.learner import _Chunk, _FifoBuffer

    out = Path(tempfile.mkdtemp(prefix="adaptive-bkg-learner-memory-")) / "run"
    overrides = [o for o in OVERRIDES if not o.startswith("backend.clock")]
    plan = plan_run(load_config(None, [*overrides, "run.budget=1h", f"run.out={out}"]))
    factory, cfg = plan.factory, plan.cfg
    generator, filt = factory.generator(0, cfg.run.run_number), factory.filter()
    simulate = factory.simulator(0)
    learner = factory.learner()
    first = generator.next_batch(cfg.run.batch_size)
    learner.observe_probe(first.events, max_events=learner.probes.capacity)
    filt.swap(learner.initial_snapshot())
    batches = [simulate.simulate(filt.filter(first))[1]]
    for _ in range(2):
        batches.append(simulate.simulate(filt.filter(generator.next_batch(cfg.run.batch_size)))[1])
    del generator, filt, simulate
    n_particles = np.concatenate([np.diff(b.events.offsets) for b in batches])
    print(
        f"kept per batch {[len(b) for b in batches]}; particles per event mean "
        f"{n_particles.mean():.0f}, p99 {np.percentile(n_particles, 99):.0f}, max "
        f"{n_particles.max()}; baseline RSS {rss_mib():.0f} MiB",
        flush=True,
    )

    def fill(buffer: _FifoBuffer) -> None:
        while buffer.n < buffer.capacity:
            for b in batches:
                buffer.add(_Chunk(b.events.take(np.arange(len(b))), b.labels, 1.0 / b.p))

    rng = np.random.default_rng(0)

    def step() -> None:
        chunk = learner.buffer.sample(cfg.learner.batch_size, rng)
        learner.trainer.train_step(chunk.events, chunk.labels, chunk.weights)

    def probe_scoring() -> None:
        learner._q(learner.probes.all().events)

    def evaluate() -> None:
        learner.trainer.evaluate(*learner.validation.all())

    rows = [
        phase("fill validation buffer", lambda: fill(learner.validation)),
        phase("fill probe buffer", lambda: fill(learner.probes)),
        phase("fill replay buffer", lambda: fill(learner.buffer)),
        phase("train step", step),
        phase("train step", step),
        phase("train steps", step, 8),
        phase("probe scoring (policy refit)", probe_scoring),
        phase("validation evaluation", evaluate),
        phase("publish", learner.publish),
        phase("train steps", step, 8),
        phase("publish", learner.publish),
        phase("train steps", step, 8),
    ]
    report = {
        "benchmark": "learner_memory",
        "malloc_env": {
            k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")
        },
        "overrides": overrides,
        "batch_size": cfg.learner.batch_size,
        "buffer_events": {
            "replay": learner.buffer.n,
            "validation": learner.validation.n,
            "probes": learner.probes.n,
        },
        "particles_per_event": {
            "mean": float(n_particles.mean()),
            "p99": float(np.percentile(n_particles, 99)),
            "max": int(n_particles.max()),
        },
        "phases": rows,
        "machine": describe(),
    }
    OUT_JSON.write_text(json.dumps(report, indent=1))
    print(f"wrote {OUT_JSON}")


if __name__ == "__main__":
    main()
