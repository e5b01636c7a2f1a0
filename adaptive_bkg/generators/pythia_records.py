"""Pythia's event records -> `EventBatch`, keeping what basf2's smart background filter keeps."""

from __future__ import annotations

import awkward as ak
import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.formats.events import FLOAT_FIELDS, EventBatch, offsets_from_counts
from adaptive_bkg.physics.pdg import PDG

MM_PER_NS = 299.792458  # c in mm/ns: Pythia times are in mm/c
CM_PER_MM = 0.1


def _is_hadron(abs_pdg: NDArray[np.int64]) -> NDArray[np.bool_]:
    """PDG numbering: hadrons have |pdg| >= 100 and a non-zero quark digit in the tens place
    (diquarks such as 2203 have 0 there); codes >= 10^7 are generator-specific."""
    return (abs_pdg >= 100) & (abs_pdg < 10_000_000) & ((abs_pdg // 10) % 10 != 0)


def select_particles(prt: ak.Array, bkg_code: int) -> EventBatch:
    """Convert Pythia's event records (from `nextBatch`) into an `EventBatch` of kept particles.

    Kept: hadrons, leptons and photons that are final (status > 0, E > 0; zero-energy
    beam-remnant photons are dropped) or decayed in a particle decay (their first daughter has
    status ±91-99), plus hadrons of the hard process (Υ(4S), B). Everything else (system and
    beam entries, partons, diquarks, γ*/Z, shower copies) is dropped. Each kept particle's
    mother is its nearest kept ancestor along mother1, or -1.
    """
    counts = ak.to_numpy(ak.num(prt, axis=1)).astype(np.int64)
    flat = ak.flatten(prt, axis=1)
    pdg = ak.to_numpy(flat["id"]).astype(np.int64)
    status = ak.to_numpy(flat["status"]).astype(np.int64)
    mother1 = ak.to_numpy(flat["mother1"]).astype(np.int64)
    daughter1 = ak.to_numpy(flat["daughter1"]).astype(np.int64)
    energy = ak.to_numpy(flat["p", "e"])

    start = np.repeat(offsets_from_counts(counts)[:-1], counts)

    abs_pdg = np.abs(pdg)
    lepton = (abs_pdg >= PDG.E_MINUS) & (abs_pdg <= PDG.NU_TAU)
    physical = _is_hadron(abs_pdg) | lepton | (abs_pdg == PDG.GAMMA)
    first_daughter = np.where(daughter1 > 0, start + daughter1, 0)
    daughter_status = np.abs(np.where(daughter1 > 0, status[first_daughter], 0))
    decayed = (status < 0) & (daughter_status >= 91) & (daughter_status <= 99)
    final = (status > 0) & (energy > 0)
    hard_hadron = (np.abs(status) >= 21) & (np.abs(status) <= 29) & _is_hadron(abs_pdg)
    keep = physical & (final | decayed | hard_hadron)

    # Nearest kept ancestor: walk mother1 (index 0 is Pythia's system entry = no mother).
    parent = np.where(mother1 > 0, start + mother1, -1)
    kept_index = np.flatnonzero(keep)
    ancestor = parent[kept_index]
    for _ in range(256):  # mother chains are short; the bound only guards against a cycle
        pending = ancestor >= 0
        pending[pending] = ~keep[ancestor[pending]]
        if not pending.any():
            break
        ancestor[pending] = parent[ancestor[pending]]
    ancestor = np.where((ancestor >= 0) & keep[np.maximum(ancestor, 0)], ancestor, -1)

    new_position = np.cumsum(keep) - 1  # position among kept particles, batch-wide
    event_index = np.repeat(np.arange(len(counts)), counts)
    kept_counts = np.bincount(event_index[keep], minlength=len(counts))
    new_offsets = offsets_from_counts(kept_counts)
    event_of_kept = np.repeat(np.arange(len(counts)), kept_counts)
    mother = np.where(
        ancestor >= 0, new_position[ancestor] - new_offsets[:-1][event_of_kept], -1
    ).astype(np.int32)

    def column(*path: str) -> NDArray[np.float64]:
        return ak.to_numpy(ak.fill_none(flat[path], 0.0))[kept_index]

    floats = {
        "E": column("p", "e"),
        "px": column("p", "px"),
        "py": column("p", "py"),
        "pz": column("p", "pz"),
        "x": column("vProd", "px") * CM_PER_MM,
        "y": column("vProd", "py") * CM_PER_MM,
        "z": column("vProd", "pz") * CM_PER_MM,
        "t": column("vProd", "e") / MM_PER_NS,
    }
    n = len(counts)
    return EventBatch(
        event_id=np.zeros(n, np.uint64),
        bkg_type=np.full(n, bkg_code, np.int8),
        seed=np.zeros(n, np.int64),
        offsets=new_offsets,
        pdg=pdg[kept_index].astype(np.int32),
        mother=mother,
        **{name: floats[name].astype(np.float32) for name in FLOAT_FIELDS},
    )
