"""Generator-truth helpers on `EventBatch`: charges, final state, charged multiplicity.

Vectorised over the flat particle arrays: a per-code lookup is built once for the distinct pdg
codes of a batch (a few hundred) and broadcast with `np.unique(..., return_inverse=True)`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.physics.pdg import PDG, charge

STABLE_CHARGED = frozenset({PDG.E_MINUS, PDG.MU_MINUS, PDG.PI_PLUS, PDG.K_PLUS, PDG.PROTON})
"""|pdg| of the charged particles a tracker sees as tracks: e, mu, pi, K, p."""

# Charged tracks per undecayed long-lived particle, for comparing with 4π measurements (ARGUS,
# CLEO) that count K_S and hyperon decay products. Pythia leaves these undecayed because of
# ParticleDecays:tau0Max = 10 mm (as Belle II's generator does; Geant4 decays them).
# Branching fractions (PDG): K_S -> pi+pi- 69.20 %, Lambda -> p pi- 64.1 %. A charged hyperon
# counts as one track (itself or its one charged daughter); Xi and Omega add their Lambda's.
_LAMBDA_TRACKS = 2 * 0.641
V0_TRACKS: dict[int, float] = {
    PDG.K_S0: 2 * 0.6920,
    PDG.LAMBDA: _LAMBDA_TRACKS,
    PDG.SIGMA_PLUS: 1.0,
    PDG.SIGMA_MINUS: 1.0,
    PDG.XI_MINUS: 1.0 + _LAMBDA_TRACKS,  # -> Lambda pi-
    PDG.XI0: _LAMBDA_TRACKS,  # -> Lambda pi0
    PDG.OMEGA_MINUS: 1.0 + _LAMBDA_TRACKS,  # -> Lambda K- (and Xi pi, same count)
}


def _lookup(pdg: NDArray[np.int32], table: dict[int, float] | None) -> NDArray[np.float64]:
    codes, inverse = np.unique(pdg, return_inverse=True)
    if table is None:
        values = np.array([charge(int(c)) for c in codes], dtype=np.float64)
    else:
        values = np.array([table.get(abs(int(c)), 0.0) for c in codes], dtype=np.float64)
    return values[inverse.reshape(-1)]


def pdg_charge(pdg: NDArray[np.int32]) -> NDArray[np.float64]:
    """Electric charge (units of e) per particle."""
    return _lookup(np.asarray(pdg), None)


def final_state_mask(batch: EventBatch) -> NDArray[np.bool_]:
    """True for particles that are nobody's mother in their event (the stable final state)."""
    has_daughter = np.zeros(int(batch.offsets[-1]), dtype=np.bool_)
    is_child = batch.mother >= 0
    start = np.repeat(batch.offsets[:-1], batch.n_particles)
    has_daughter[(start + batch.mother)[is_child]] = True
    return ~has_daughter


def per_event_sum(batch: EventBatch, values: NDArray[np.generic]) -> NDArray[np.float64]:
    """Sum a per-particle quantity over each event."""
    sums = np.bincount(
        batch.particle_event_index, weights=values.astype(np.float64), minlength=len(batch)
    )
    return sums.astype(np.float64, copy=False)


def charged_multiplicity(
    batch: EventBatch, count_v0_daughters: bool = False
) -> NDArray[np.float64]:
    """Stable charged final-state particles (e, mu, pi, K, p) per event.

    With `count_v0_daughters`, undecayed K_S, Lambda and hyperons add their expected number of
    charged decay products (`V0_TRACKS`), which is what 4π measurements such as ARGUS count.
    """
    final = final_state_mask(batch)
    stable = np.isin(np.abs(batch.pdg), list(STABLE_CHARGED)) & final
    values = stable.astype(np.float64)
    if count_v0_daughters:
        values += _lookup(batch.pdg, V0_TRACKS) * final
    return per_event_sum(batch, values)


def final_state_momentum_sum(batch: EventBatch) -> NDArray[np.float64]:
    """Per event (E, px, py, pz) summed over final-state particles, in float64: [n, 4]."""
    final = final_state_mask(batch).astype(np.float64)
    return np.stack(
        [per_event_sum(batch, getattr(batch, name) * final) for name in ("E", "px", "py", "pz")],
        axis=1,
    )
