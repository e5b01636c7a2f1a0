"""Candidate lists and their combinatorics, vectorised over a batch of events.

A `Candidates` list holds CMS 4-vectors per event in CSR layout (event i owns
offsets[i]:offsets[i+1]), plus the tracks and photons each candidate is made of. All pairs of
two per-event lists are enumerated with CSR index arithmetic (`pair_indices`), without a Python
loop over events, and combinations that share a track or photon are dropped (`combine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.formats.events import offsets_from_counts

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Bool = NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Candidates:
    """A per-event list of particles or composite candidates (CMS 4-vectors), CSR by event."""

    offsets: I64
    event: I64
    energy: F64
    px: F64
    py: F64
    pz: F64
    charge: NDArray[np.int8]
    flavour: NDArray[np.int8]  # +1 for a charm meson with a K-, -1 with a K+, 0 otherwise
    tracks: I64  # [m, w] daughter track indices, -1 padded (for overlap removal)
    photons: I64  # [m, w] daughter cluster indices, -1 padded

    def __len__(self) -> int:
        return int(self.event.shape[0])

    @property
    def p(self) -> F64:
        return np.sqrt(self.px**2 + self.py**2 + self.pz**2)

    @property
    def mass(self) -> F64:
        return np.sqrt(np.maximum(self.energy**2 - self.px**2 - self.py**2 - self.pz**2, 0.0))

    def select(self, mask: Bool) -> Candidates:
        event = self.event[mask]
        return Candidates(
            offsets=offsets_from_counts(np.bincount(event, minlength=len(self.offsets) - 1)),
            event=event,
            energy=self.energy[mask],
            px=self.px[mask],
            py=self.py[mask],
            pz=self.pz[mask],
            charge=self.charge[mask],
            flavour=self.flavour[mask],
            tracks=self.tracks[mask],
            photons=self.photons[mask],
        )

    @staticmethod
    def concat(parts: Sequence[Candidates]) -> Candidates:
        """Merge lists of the same events, keeping CSR order (stable sort by event)."""
        event = np.concatenate([c.event for c in parts])
        order = np.argsort(event, kind="stable")
        width_t = max(c.tracks.shape[1] for c in parts)
        width_g = max(c.photons.shape[1] for c in parts)

        def pad(a: I64, width: int) -> I64:
            return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=-1)

        return Candidates(
            offsets=offsets_from_counts(np.bincount(event, minlength=len(parts[0].offsets) - 1)),
            event=event[order],
            energy=np.concatenate([c.energy for c in parts])[order],
            px=np.concatenate([c.px for c in parts])[order],
            py=np.concatenate([c.py for c in parts])[order],
            pz=np.concatenate([c.pz for c in parts])[order],
            charge=np.concatenate([c.charge for c in parts])[order],
            flavour=np.concatenate([c.flavour for c in parts])[order],
            tracks=np.concatenate([pad(c.tracks, width_t) for c in parts])[order],
            photons=np.concatenate([pad(c.photons, width_g) for c in parts])[order],
        )


def pair_indices(offsets_a: I64, offsets_b: I64, same: bool = False) -> tuple[I64, I64]:
    """All (i, j) with i from list a and j from list b in the same event, event-ordered.

    With `same` (a and b are one list) only i < j is returned. No loop over events: pair k of
    event e is (start_a[e] + k // n_b[e], start_b[e] + k % n_b[e]).
    """
    n_a, n_b = np.diff(offsets_a), np.diff(offsets_b)
    n_pairs = n_a * n_b
    event = np.repeat(np.arange(len(n_a), dtype=np.int64), n_pairs)
    starts = offsets_from_counts(n_pairs)[:-1]
    k = np.arange(len(event), dtype=np.int64) - np.repeat(starts, n_pairs)
    nb = n_b[event]
    i = offsets_a[:-1][event] + k // nb
    j = offsets_b[:-1][event] + k % nb
    if same:
        keep = i < j
        i, j = i[keep], j[keep]
    return i, j


def combine(
    a: Candidates,
    b: Candidates,
    same: bool = False,
    mass_range: tuple[float, float] | None = None,
    charge: Sequence[int] | None = None,
) -> Candidates:
    """All a+b combinations in each event that share no track or photon.

    `mass_range` and `charge` (allowed net charges) are applied before anything else is
    gathered, which keeps wide combinatorics (K 3pi, pi0 from photon pairs) cheap.
    """
    return combine_indexed(a, b, same, mass_range, charge)[0]


def combine_indexed(
    a: Candidates,
    b: Candidates,
    same: bool = False,
    mass_range: tuple[float, float] | None = None,
    charge: Sequence[int] | None = None,
) -> tuple[Candidates, I64, I64]:
    """`combine`, plus the index in a and in b of each combination's two parts."""
    i, j = pair_indices(a.offsets, b.offsets, same)
    if charge is not None:
        keep = np.isin(a.charge[i] + b.charge[j], charge)
        i, j = i[keep], j[keep]
    energy, px, py, pz = (
        a.energy[i] + b.energy[j],
        a.px[i] + b.px[j],
        a.py[i] + b.py[j],
        a.pz[i] + b.pz[j],
    )
    if mass_range is not None:
        m2 = energy**2 - px**2 - py**2 - pz**2
        keep = (m2 > mass_range[0] ** 2) & (m2 < mass_range[1] ** 2)
        i, j, energy, px, py, pz = i[keep], j[keep], energy[keep], px[keep], py[keep], pz[keep]
    # Each list is overlap-free by construction, so compare a's parts with b's only.
    ok = ~(_overlap(a.tracks[i], b.tracks[j]) | _overlap(a.photons[i], b.photons[j]))
    i, j = i[ok], j[ok]
    event = a.event[i]
    combined = Candidates(
        offsets=offsets_from_counts(np.bincount(event, minlength=len(a.offsets) - 1)),
        event=event,
        energy=energy[ok],
        px=px[ok],
        py=py[ok],
        pz=pz[ok],
        charge=(a.charge[i] + b.charge[j]).astype(np.int8),
        flavour=np.where(a.flavour[i] != 0, a.flavour[i], b.flavour[j]).astype(np.int8),
        tracks=np.concatenate([a.tracks[i], b.tracks[j]], axis=1),
        photons=np.concatenate([a.photons[i], b.photons[j]], axis=1),
    )
    return combined, i, j


def _overlap(x: I64, y: I64) -> Bool:
    """Rows where a non-negative index of x [m, wx] also appears in y [m, wy]."""
    hit = np.zeros(x.shape[0], dtype=np.bool_)
    for a in range(x.shape[1]):
        for b in range(y.shape[1]):
            hit |= (x[:, a] == y[:, b]) & (x[:, a] >= 0)
    return hit


def any_per_event(event: I64, mask: Bool, n: int) -> Bool:
    out = np.zeros(n, dtype=np.bool_)
    out[event[mask]] = True
    return out
