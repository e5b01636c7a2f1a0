"""Counter-based random numbers for the emulator, vectorised.

Every random number is a hash (splitmix64 finaliser) of a key and a stream number: keys derive
from (backend seed, event id) and then from the position of a particle in its event, so the
same event gets the same numbers whatever batch it is simulated in, which is what a
re-simulation after a crash needs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def _mix(x: U64) -> U64:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _offset(k: int) -> np.uint64:
    return np.uint64((k * _GOLDEN) & _MASK64)


def child_keys(keys: U64, slot: NDArray[np.integer] | int, salt: int = 0) -> U64:
    """Keys of sub-objects (particle in an event, daughter of a particle, ...)."""
    slots = np.broadcast_to(np.asarray(slot, dtype=np.uint64), keys.shape)
    slots = slots + np.uint64(1 + (salt << 20))  # array arithmetic wraps mod 2^64 silently
    return _mix(keys ^ _mix(slots * np.uint64(_GOLDEN)))


def uniform(keys: U64, stream: int) -> F64:
    """One U(0, 1) number per key for a given stream; never exactly 0 or 1."""
    bits = _mix(keys + _offset(stream)) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def normal(keys: U64, stream: int) -> F64:
    """One N(0, 1) number per key (Box–Muller on two streams)."""
    u1, u2 = uniform(keys, stream), uniform(keys, stream + 10_000)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def event_keys(event_id: U64, seed: int) -> U64:
    seed_key = _mix(np.asarray([seed & _MASK64], dtype=np.uint64))[0]
    return _mix(np.asarray(event_id, dtype=np.uint64) ^ seed_key)


def poisson(u: F64, mean: float) -> I64:
    """Inverse-CDF Poisson draws from uniforms (mean is a fixed scalar)."""
    if mean <= 0:
        return np.zeros(u.shape, dtype=np.int64)
    k = np.arange(int(mean + 10 * np.sqrt(mean) + 10))
    log_pmf = k * np.log(mean) - mean - np.cumsum(np.log(np.maximum(k, 1)))
    cdf = np.cumsum(np.exp(log_pmf))
    return np.minimum(np.searchsorted(cdf, u), len(k) - 1).astype(np.int64)


# Stream numbers: one per independent random decision.
(
    S_TRACK_EFF,
    S_PT_SMEAR,
    S_PID,
    S_D0,
    S_Z0,
    S_ECL_TRACK,
    S_PHOTON_EFF,
    S_PHOTON_SMEAR,
    S_DECAY_CHANNEL,
    S_DECAY_COS,
    S_DECAY_PHI,
    S_FLIGHT,
    S_V0_FIT,
    S_BKG_COUNT_TRACKS,
    S_BKG_COUNT_CLUSTERS,
    S_BKG_A,
    S_BKG_B,
    S_BKG_C,
    S_BKG_D,
    S_BKG_E,
    S_ANGLE,
) = range(1, 22)
