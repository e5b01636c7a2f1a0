"""The generator-level final state, and the decays the emulator does itself.

Pythia leaves K_S, Lambda (tau0 > 10 mm) undecayed and may leave pi0s, so the emulator decays
them (two-body, isotropic in the parent's rest frame, exponential flight) before the detector
step. Daughters of a K_S / Lambda remember it (`v0_parent`) so that reconstruction can pair them
into a V0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.conditions import PI, SPECIES_MASS_GEV, P
from adaptive_bkg.backends.emulator.randomness import (
    S_DECAY_CHANNEL,
    S_DECAY_COS,
    S_DECAY_PHI,
    S_FLIGHT,
    child_keys,
    uniform,
)
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.physics.beams import boost
from adaptive_bkg.physics.pdg import PDG, ctau_cm, mass_gev

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]
Bool = NDArray[np.bool_]

M_KS, M_LAMBDA = mass_gev(PDG.K_S0), mass_gev(PDG.LAMBDA)
M_PI0, M_NEUTRON = mass_gev(PDG.PI0), mass_gev(PDG.NEUTRON)
CTAU_CM = {PDG.K_S0: ctau_cm(PDG.K_S0), PDG.LAMBDA: ctau_cm(PDG.LAMBDA)}
BR_KS_PIPI, BR_LAMBDA_PPI = 0.692, 0.639  # PDG; the rest goes to the neutral-pion channel


@dataclass(frozen=True, eq=False)
class Particles:
    """Flat list of final-state particles (generator + emulator decays), for the detector."""

    event: I64
    pdg: NDArray[np.int32]
    energy: F64
    px: F64
    py: F64
    pz: F64
    x: F64
    y: F64
    z: F64
    key: U64
    uid: I64  # global index in the batch of a generator particle; -1 for emulator daughters
    v0_parent: I64  # uid of the K_S / Lambda this came from, else -1

    def select(self, mask: Bool | I64) -> Particles:
        return Particles(**{f: getattr(self, f)[mask] for f in PARTICLE_FIELDS})

    @staticmethod
    def concat(parts: list[Particles]) -> Particles:
        return Particles(
            **{f: np.concatenate([getattr(p, f) for p in parts]) for f in PARTICLE_FIELDS}
        )


PARTICLE_FIELDS = (
    "event",
    "pdg",
    "energy",
    "px",
    "py",
    "pz",
    "x",
    "y",
    "z",
    "key",
    "uid",
    "v0_parent",
)


def final_state(batch: EventBatch, keys: U64) -> Particles:
    """The particles that are nobody's mother, keyed by their position in their event."""
    n_part = int(batch.offsets[-1])
    event = batch.particle_event_index
    start = batch.offsets[:-1][event]
    local = np.arange(n_part, dtype=np.int64) - start
    mother = batch.mother.astype(np.int64)
    valid = (mother >= 0) & (mother < batch.n_particles[event])
    mother_global = np.where(valid, start + mother, -1)
    has_daughter = np.zeros(n_part, dtype=np.bool_)
    has_daughter[mother_global[valid]] = True
    final = ~has_daughter
    mother_pdg = np.where(valid, batch.pdg[np.maximum(mother_global, 0)], 0)
    # Daughters of a K_S / Lambda that the generator decayed itself still make a V0.
    from_v0 = valid & np.isin(np.abs(mother_pdg), (PDG.K_S0, PDG.LAMBDA))
    sel = np.flatnonzero(final)
    return Particles(
        event=event[sel],
        pdg=batch.pdg[sel],
        energy=batch.E[sel].astype(np.float64),
        px=batch.px[sel].astype(np.float64),
        py=batch.py[sel].astype(np.float64),
        pz=batch.pz[sel].astype(np.float64),
        x=batch.x[sel].astype(np.float64),
        y=batch.y[sel].astype(np.float64),
        z=batch.z[sel].astype(np.float64),
        key=child_keys(keys[event[sel]], local[sel]),
        uid=sel.astype(np.int64),
        v0_parent=np.where(from_v0, mother_global, -1)[sel],
    )


def _two_body(
    parent: Particles,
    mass: F64,
    m1: F64,
    m2: F64,
    pdg1: NDArray[np.int32],
    pdg2: NDArray[np.int32],
    flight_ctau_cm: F64,
    v0_uid: I64,
) -> Particles:
    """Isotropic two-body decays in the parent rest frame, boosted; exponential flight."""
    key = parent.key
    p_mag = np.sqrt(parent.px**2 + parent.py**2 + parent.pz**2)
    energy = np.sqrt(p_mag**2 + mass**2)
    flight = p_mag / mass * flight_ctau_cm * -np.log(uniform(key, S_FLIGHT))
    unit = 1.0 / np.maximum(p_mag, 1e-12)
    vx = parent.x + flight * parent.px * unit
    vy = parent.y + flight * parent.py * unit
    vz = parent.z + flight * parent.pz * unit
    q = np.sqrt(np.maximum((mass**2 - (m1 + m2) ** 2) * (mass**2 - (m1 - m2) ** 2), 0)) / (2 * mass)
    cos_t = 2.0 * uniform(key, S_DECAY_COS) - 1.0
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = 2.0 * np.pi * uniform(key, S_DECAY_PHI)
    qx, qy, qz = q * sin_t * np.cos(phi), q * sin_t * np.sin(phi), q * cos_t
    beta = (parent.px / energy, parent.py / energy, parent.pz / energy)
    gamma = energy / mass  # more precise than 1/sqrt(1 - beta^2) for fast parents
    daughters = []
    for sign, m_d, pdg_d, slot in ((1.0, m1, pdg1, 0), (-1.0, m2, pdg2, 1)):
        e_lab, px, py, pz = boost(
            np.sqrt(q**2 + m_d**2), sign * qx, sign * qy, sign * qz, beta, gamma
        )
        daughters.append(
            Particles(
                event=parent.event,
                pdg=pdg_d,
                energy=e_lab,
                px=px,
                py=py,
                pz=pz,
                x=vx,
                y=vy,
                z=vz,
                key=child_keys(key, slot, salt=1),
                uid=np.full(len(key), -1, dtype=np.int64),
                v0_parent=v0_uid,
            )
        )
    return Particles.concat(daughters)


def decay_unstable(parts: Particles) -> Particles:
    """Decay the K_S, Lambda and pi0 that the generator left undecayed."""
    decay = np.isin(np.abs(parts.pdg), (PDG.K_S0, PDG.LAMBDA, PDG.PI0))
    if not decay.any():
        return parts
    parent = parts.select(decay)
    apdg = np.abs(parent.pdg)
    sign = np.sign(parent.pdg).astype(np.int32)
    u = uniform(parent.key, S_DECAY_CHANNEL)
    is_ks, is_lambda = apdg == PDG.K_S0, apdg == PDG.LAMBDA
    charged = np.where(is_ks, u < BR_KS_PIPI, is_lambda & (u < BR_LAMBDA_PPI))
    m_pi, m_p = SPECIES_MASS_GEV[PI], SPECIES_MASS_GEV[P]
    mass = np.select([is_ks, is_lambda], [M_KS, M_LAMBDA], M_PI0)
    # Daughter 1 / 2: K_S -> pi+ pi- | pi0 pi0;  Lambda -> p pi- | n pi0;  pi0 -> gamma gamma.
    channel = [is_ks & charged, is_ks, is_lambda & charged, is_lambda]
    m1 = np.select(channel, [m_pi, M_PI0, m_p, M_NEUTRON], 0.0)
    m2 = np.select(channel, [m_pi, M_PI0, m_pi, M_PI0], 0.0)
    pi, pi0, proton, neutron = PDG.PI_PLUS, PDG.PI0, PDG.PROTON, PDG.NEUTRON
    pdg1 = np.select(channel, [pi, pi0, proton * sign, neutron * sign], PDG.GAMMA)
    pdg2 = np.select(channel, [-pi, pi0, -pi * sign, pi0], PDG.GAMMA)
    ctau = np.select([is_ks, is_lambda], [CTAU_CM[PDG.K_S0], CTAU_CM[PDG.LAMBDA]], 0.0)
    v0_uid = np.where(is_ks | is_lambda, parent.uid, parent.v0_parent)
    daughters = _two_body(
        parent, mass, m1, m2, pdg1.astype(np.int32), pdg2.astype(np.int32), ctau, v0_uid
    )
    return Particles.concat([parts.select(~decay), daughters])
