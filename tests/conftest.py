"""Shared fixtures. Heavy fixtures are session-scoped so the suite stays fast on 2 cores."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from adaptive_bkg.formats.events import EventBatch, make_event_ids
from adaptive_bkg.physics.processes import BKG_TYPES

# --- backends engineer: hand-built events that need no generator ------------------------------

_SYNTHETIC_PDG = np.array(
    [211, -211, 321, -321, 2212, 11, -11, 13, -13, 22, 22, 22, 111, 130, 310, 12, -14], np.int32
)


def synthetic_events(n: int, seed: int = 0, first_counter: int = 0) -> EventBatch:
    """n random but well-formed events (decay tree, momenta, vertices); deterministic per seed."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(25, n).astype(np.int64) + 2
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    position = np.arange(total) - np.repeat(offsets[:-1], counts)
    # The first two particles are primaries; every later one has an earlier mother.
    mother = np.where(position < 2, -1, (rng.random(total) * np.maximum(position, 1)).astype(int))
    p = rng.exponential(0.6, total)
    cos_theta, phi = rng.uniform(-1, 1, total), rng.uniform(0, 2 * np.pi, total)
    sin_theta = np.sqrt(1 - cos_theta**2)
    momentum = np.stack([p * sin_theta * np.cos(phi), p * sin_theta * np.sin(phi), p * cos_theta])
    f32 = np.float32
    return EventBatch(
        event_id=make_event_ids(0, seed % 4096, first_counter, n),
        bkg_type=rng.integers(0, len(BKG_TYPES), n).astype(np.int8),
        seed=np.full(n, seed, np.int64),
        offsets=offsets,
        pdg=rng.choice(_SYNTHETIC_PDG, total).astype(np.int32),
        mother=mother.astype(np.int32),
        E=np.sqrt(p**2 + 0.14**2).astype(f32),
        px=momentum[0].astype(f32),
        py=momentum[1].astype(f32),
        pz=momentum[2].astype(f32),
        x=rng.normal(0, 0.01, total).astype(f32),
        y=rng.normal(0, 0.01, total).astype(f32),
        z=rng.normal(0, 0.5, total).astype(f32),
        t=np.zeros(total, f32),
    )


@pytest.fixture(scope="session")
def synthetic_batch() -> EventBatch:
    """200 hand-built events (no generator needed), for backend and cost-model tests."""
    return synthetic_events(200, seed=11)


@pytest.fixture(scope="session")
def make_synthetic_events() -> Callable[..., EventBatch]:
    """The `synthetic_events(n, seed, first_counter)` builder, for tests that need other sizes."""
    return synthetic_events


# --- pipeline engineer: one local Ray instance for the whole test session ----------------------


@pytest.fixture(scope="session")
def ray_session():  # type: ignore[no-untyped-def]
    """A fresh local Ray (2 CPUs, no dashboard, 256 MiB object store), shut down at the end.

    Started by `orchestrate.init_ray`, the path `adaptive-bkg run` takes, so it is the same
    loopback-only instance (tests/test_local_ray.py checks its sockets). Every Ray test shares
    it (a Ray start costs ~5 s and ~470 MiB). `adaptive_bkg.pipeline.orchestrate` sees
    `ray.is_initialized()` and reuses it instead of starting its own.
    """
    import ray

    from adaptive_bkg.pipeline.orchestrate import init_ray

    started = init_ray(None, 2, 256)
    yield ray
    if started:
        ray.shutdown()


# --- generator engineer: real Pythia events, generated once per session ---------------------


@pytest.fixture(scope="session")
def small_events() -> EventBatch:
    """1400 Pythia events, all seven types (cross-section mixture, seed 1, worker 0), ~3 s."""
    from adaptive_bkg.config import GeneratorConfig
    from adaptive_bkg.generators.pythia import PythiaGenerator

    return PythiaGenerator(GeneratorConfig(seed=1)).next_batch(1400)


# --- emulator engineer: per-type Pythia samples for retention checks -------------------------


@pytest.fixture(scope="session")
def events_by_type() -> dict[str, EventBatch]:
    """2000 Pythia events each of charged, ccbar, uubar and taupair (seed 3), ~6 s once."""
    from adaptive_bkg.config import GeneratorConfig
    from adaptive_bkg.generators.pythia import generate_events

    cfg = GeneratorConfig(seed=3)
    return {
        t: generate_events(cfg, 2000, worker=i, types=[t])
        for i, t in enumerate(("charged", "ccbar", "uubar", "taupair"))
    }


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: a second intra-op thread only adds sync cost (and, on a shared machine,
    waits for a busy core). Restored afterwards so other test modules keep their setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
