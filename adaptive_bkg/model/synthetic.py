"""Synthetic generator-level events for model tests and benchmarks (no Pythia needed).

Shapes and value ranges mimic Pythia output at Belle II (multiplicities ~20-80 including the
decay tree, GeV momenta, cm vertices, ns times) but there is no physics in them.
"""

from __future__ import annotations

import numpy as np

from adaptive_bkg.formats.events import EventBatch, make_event_ids, offsets_from_counts
from adaptive_bkg.physics.processes import BKG_TYPES

_CODES = np.array(
    [211, -211, 111, 22, 321, -321, 310, 130, 11, -11, 13, -13, 2212, -2212, 2112, -2112, 421,
     -421, 411, -411, 313, 113, 223, 221, 511, -511, 521, -521, 300553, 3122, 15, -15, 16, -16],
    dtype=np.int32,
)  # fmt: skip
_WEIGHTS = np.array(
    [12, 12, 8, 20, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, .5, .5, .5, .5, 1, 2, 1, 1, .2, .2, .2,
     .2, .1, .3, .3, .3, .3, .3],
)  # fmt: skip
_MASSES = {211: 0.1396, 111: 0.135, 321: 0.4937, 310: 0.4976, 130: 0.4976, 11: 0.000511,
           13: 0.1057, 2212: 0.9383, 2112: 0.9396, 421: 1.865, 411: 1.870, 313: 0.892,
           113: 0.775, 223: 0.783, 221: 0.548, 511: 5.2797, 521: 5.2793, 300553: 10.58,
           3122: 1.1157, 15: 1.777, 16: 0.0}  # fmt: skip


def synthetic_events(
    n: int,
    seed: int = 0,
    mean_particles: float = 45.0,
    min_particles: int = 4,
    max_particles: int = 110,
) -> EventBatch:
    """`n` random events with multiplicity ~ Normal(mean, mean/3) clipped to the given range."""
    rng = np.random.default_rng(seed)
    counts = np.clip(
        np.rint(rng.normal(mean_particles, mean_particles / 3, n)), min_particles, max_particles
    ).astype(np.int64)
    offsets = offsets_from_counts(counts)
    total = int(offsets[-1])
    event_of = np.repeat(np.arange(n), counts)
    position = np.arange(total) - offsets[:-1][event_of]
    kind = rng.choice(len(_CODES), total, p=_WEIGHTS / _WEIGHTS.sum())
    pdg = _CODES[kind]
    mass = np.array([_MASSES.get(abs(int(c)), 0.0) for c in _CODES])[kind]
    # The first two particles of an event are primaries; later ones decay from an earlier one.
    mother = np.where(position < 2, -1, (rng.random(total) * position).astype(np.int64))
    p = rng.exponential(0.6, (total, 3)) * rng.choice([-1.0, 1.0], (total, 3))
    p[:, 2] += 0.3  # the boost of the Belle II centre-of-mass frame
    energy = np.sqrt((p**2).sum(1) + mass**2)
    displaced = rng.random(total) < 0.15
    vertex = rng.normal(0.0, 2e-3, (total, 3)) + displaced[:, None] * rng.normal(
        0.0, 1.0, (total, 3)
    )
    time = np.where(displaced, rng.exponential(0.05, total), rng.exponential(1e-3, total))
    return EventBatch(
        event_id=make_event_ids(run=0, worker=0, first_counter=0, n=n),
        bkg_type=rng.integers(0, len(BKG_TYPES), n).astype(np.int8),
        seed=np.full(n, seed, np.int64),
        offsets=offsets,
        pdg=pdg,
        mother=mother.astype(np.int32),
        E=energy.astype(np.float32),
        px=p[:, 0].astype(np.float32),
        py=p[:, 1].astype(np.float32),
        pz=p[:, 2].astype(np.float32),
        x=vertex[:, 0].astype(np.float32),
        y=vertex[:, 1].astype(np.float32),
        z=vertex[:, 2].astype(np.float32),
        t=time.astype(np.float32),
    )
