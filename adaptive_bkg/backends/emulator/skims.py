"""Skims: selections modelled on Belle II skims, on the emulator's reconstructed events.

Every skim reads one shared `SkimContext` per batch. The context computes, once and only when
first asked for, everything in the e+e- centre-of-mass (CMS) frame: event-level variables
(track count, visible energy, thrust, Fox–Wolfram R2, missing momentum, lepton p*) and
particle lists built like basf2's (pi, K, e, mu, gamma, pi0, K_S, D0, D+, D*+). Candidate
combinatorics is vectorised: all pairs of two per-event lists are enumerated with CSR index
arithmetic, without a Python loop over events.

The selections approximate the basf2 skims named in each docstring (codes from basf2
skim/scripts/skim/registry.py, see references/belle2_reference_numbers.md §1); they are simpler,
but they keep what makes each skim a different physics question.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.conditions import (
    MU,
    PI,
    SPECIES_MASS_GEV,
    E,
    K,
)
from adaptive_bkg.backends.emulator.detector import KSHORT, RecoEvents
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import offsets_from_counts

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Bool = NDArray[np.bool_]

M_PI, M_K, M_E, M_MU = (SPECIES_MASS_GEV[i] for i in (PI, K, E, MU))
M_D0, M_DPLUS, M_B = 1.86484, 1.86966, 5.27966  # PDG
M_PI0, M_ETA = 0.134977, 0.547862


@dataclass(frozen=True)
class Beams:
    """Beam energies and crossing angle (basf2 Y4S preset, references §2 Beams).

    Both beams are tilted by half the crossing angle towards +x, so the z axis (the solenoid)
    bisects the HER and the reversed LER directions.
    """

    e_her_gev: float = 7.004
    e_ler_gev: float = 4.002
    crossing_angle_rad: float = 0.083

    @cached_property
    def four_momentum(self) -> tuple[float, float, float, float]:
        half = self.crossing_angle_rad / 2
        px = (self.e_her_gev + self.e_ler_gev) * math.sin(half)
        pz = (self.e_her_gev - self.e_ler_gev) * math.cos(half)
        return self.e_her_gev + self.e_ler_gev, px, 0.0, pz

    @cached_property
    def sqrt_s(self) -> float:
        e, px, py, pz = self.four_momentum
        return math.sqrt(e**2 - px**2 - py**2 - pz**2)

    @cached_property
    def boost(self) -> tuple[float, float, float]:
        """beta of the CMS in the lab."""
        e, px, py, pz = self.four_momentum
        return px / e, py / e, pz / e

    def to_cms(self, energy: F64, px: F64, py: F64, pz: F64) -> tuple[F64, F64, F64, F64]:
        """Lorentz-transform lab 4-vectors into the CMS."""
        bx, by, bz = self.boost
        b2 = bx**2 + by**2 + bz**2
        gamma = 1.0 / math.sqrt(1.0 - b2)
        bp = bx * px + by * py + bz * pz
        coef = (gamma - 1.0) * bp / b2 - gamma * energy
        return gamma * (energy - bp), px + coef * bx, py + coef * by, pz + coef * bz


# ---------------------------------------------------------------------------------------------
def _bincount(event: I64, weights: F64 | None, n: int) -> F64:
    """Per-event sums; bincount adds in input order, so sums do not depend on the batch."""
    return np.bincount(event, weights=weights, minlength=n).astype(np.float64)


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


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class EventVariables:
    """Event-level quantities in the CMS frame, computed once per batch for all skims."""

    n_tracks: I64  # good tracks
    charge_sum: I64
    n_photons: I64  # neutral clusters above 0.1 GeV in the CDC acceptance
    e_vis: F64  # CMS visible energy: good tracks (pion mass) + neutral clusters
    p_miss: F64  # CMS missing momentum magnitude
    e_ecl: F64  # lab ECL energy: neutral + track-matched clusters
    max_pt: F64  # lab, good tracks
    thrust: F64
    thrust_axis: F64  # [n, 3], unit
    r2: F64  # Fox–Wolfram H2/H0
    lepton_pstar: F64  # highest CMS momentum of an e/mu-identified good track, 0 if none


class SkimContext:
    """Everything the skims share for one batch, computed lazily and at most once."""

    # Good-track cuts of the online-book FEI example (references §2 Acceptances).
    GOOD_D0_CM = 0.5
    GOOD_Z0_CM = 2.0
    PHOTON_E_MIN = 0.1  # photons counted in event shape selections (GeV)

    def __init__(self, reco: RecoEvents, beams: Beams | None = None) -> None:
        self.reco = reco
        self.beams = beams or Beams()
        self.n = len(reco)

    # -- objects in the CMS ---------------------------------------------------------------------
    @cached_property
    def good_track(self) -> Bool:
        t = self.reco.tracks
        return (np.abs(t.d0) < self.GOOD_D0_CM) & (np.abs(t.z0) < self.GOOD_Z0_CM)

    def track_list(self, mask: Bool, mass: float, flavour_from_charge: bool = False) -> Candidates:
        """Selected tracks with a mass hypothesis, as CMS candidates."""
        t = self.reco.tracks
        idx = np.flatnonzero(mask)
        px, py, pz = t.px[idx], t.py[idx], t.pz[idx]
        energy = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
        e, cx, cy, cz = self.beams.to_cms(energy, px, py, pz)
        charge = t.charge[idx]
        event = t.event[idx]
        return Candidates(
            offsets=offsets_from_counts(np.bincount(event, minlength=self.n)),
            event=event,
            energy=e,
            px=cx,
            py=cy,
            pz=cz,
            charge=charge,
            flavour=(-charge if flavour_from_charge else np.zeros_like(charge)).astype(np.int8),
            tracks=idx[:, None],
            photons=np.full((len(idx), 1), -1, dtype=np.int64),
        )

    def _pid_list(self, species: int, mass: float, flavour: bool = False) -> Candidates:
        return self.track_list(self.good_track & (self.reco.tracks.pid == species), mass, flavour)

    @cached_property
    def pions(self) -> Candidates:
        return self._pid_list(PI, M_PI)

    @cached_property
    def kaons(self) -> Candidates:
        """Kaons carry flavour -charge: a K- makes its charm parent a D0 / D+ (flavour +1)."""
        return self._pid_list(K, M_K, flavour=True)

    @cached_property
    def electrons(self) -> Candidates:
        return self._pid_list(E, M_E)

    @cached_property
    def muons(self) -> Candidates:
        return self._pid_list(MU, M_MU)

    @cached_property
    def leptons(self) -> Candidates:
        return Candidates.concat([self.electrons, self.muons])

    @cached_property
    def all_pions(self) -> Candidates:
        """Every good track as a pion: for event shapes."""
        return self.track_list(self.good_track, M_PI)

    @cached_property
    def photons(self) -> Candidates:
        c = self.reco.clusters
        e, px, py, pz = self.beams.to_cms(c.energy, c.px, c.py, c.pz)
        idx = np.arange(len(c.energy), dtype=np.int64)
        return Candidates(
            offsets=c.offsets,
            event=c.event,
            energy=e,
            px=px,
            py=py,
            pz=pz,
            charge=np.zeros(len(idx), dtype=np.int8),
            flavour=np.zeros(len(idx), dtype=np.int8),
            tracks=np.full((len(idx), 1), -1, dtype=np.int64),
            photons=idx[:, None],
        )

    @cached_property
    def cluster_theta_deg(self) -> F64:
        c = self.reco.clusters
        return np.degrees(np.arctan2(np.hypot(c.px, c.py), c.pz))

    @cached_property
    def pi0s(self) -> Candidates:
        """gamma gamma with 0.120 < M < 0.145 GeV (a basf2 pi0:eff40-like window)."""
        return combine(self.photons, self.photons, same=True, mass_range=(0.120, 0.145))

    @cached_property
    def kshort_v0s(self) -> Bool:
        """V0s that are K_S in the Belle goodKshort window 0.468–0.528 GeV (references §2 K_S)."""
        v = self.reco.v0s
        return (v.kind == KSHORT) & (v.mass > 0.468) & (v.mass < 0.528)

    @cached_property
    def kshorts(self) -> Candidates:
        """The `kshort_v0s`, as CMS candidates in V0 order."""
        v = self.reco.v0s
        sel = self.kshort_v0s
        e, px, py, pz = self.beams.to_cms(v.energy[sel], v.px[sel], v.py[sel], v.pz[sel])
        event = v.event[sel]
        return Candidates(
            offsets=offsets_from_counts(np.bincount(event, minlength=self.n)),
            event=event,
            energy=e,
            px=px,
            py=py,
            pz=pz,
            charge=np.zeros(len(event), dtype=np.int8),
            flavour=np.zeros(len(event), dtype=np.int8),
            tracks=np.stack([v.track_a[sel], v.track_b[sel]], axis=1),
            photons=np.full((len(event), 1), -1, dtype=np.int64),
        )

    # -- charm ---------------------------------------------------------------------------------
    @cached_property
    def kpi(self) -> Candidates:
        """K- pi+ and c.c. (any mass)."""
        return combine(self.kaons, self.pions, charge=(0,), mass_range=(0.0, 1.885))

    @cached_property
    def pipi_neutral(self) -> Candidates:
        return combine(self.pions, self.pions, same=True, charge=(0,), mass_range=(0.0, 1.6))

    @cached_property
    def d0s(self) -> Candidates:
        """D0 -> K-pi+, K-pi+pi0, K-pi+pi+pi-, K_S pi+pi- (and c.c.), |M - m_D0| windows."""
        kpi = self.kpi
        m = kpi.mass
        narrow = (M_D0 - 0.02, M_D0 + 0.02)
        kspipi = combine(self.kshorts, self.pipi_neutral, mass_range=narrow)
        return Candidates.concat(
            [
                kpi.select((m > narrow[0]) & (m < narrow[1])),
                combine(kpi.select(m < 1.75), self.pi0s, mass_range=(M_D0 - 0.03, M_D0 + 0.03)),
                combine(kpi.select(m < 1.60), self.pipi_neutral, mass_range=narrow),
                replace(kspipi, flavour=np.zeros(len(kspipi), np.int8)),
            ]
        )

    @cached_property
    def dpluses(self) -> Candidates:
        """D+ -> K- pi+ pi+ (and c.c.), |M - m_D+| < 20 MeV."""
        same_sign = combine(self.pions, self.pions, same=True, charge=(-2, 2), mass_range=(0, 1.4))
        window = (M_DPLUS - 0.02, M_DPLUS + 0.02)
        return combine(self.kaons, same_sign, charge=(-1, 1), mass_range=window)

    @cached_property
    def dstars(self) -> Candidates:
        """D*+ -> D0 pi+ (and c.c.) with 0.1430 < Δm < 0.1480 GeV; the slow pion has the D0's
        flavour sign (D0 from D*+ contains a K-). K_S pi pi D0s (no flavour) take either."""
        slow = self.track_list(self.good_track & (self.reco.tracks.pid != K), M_PI)
        d0 = self.d0s
        c, i, j = combine_indexed(d0, slow)
        dm = c.mass - d0.mass[i]
        slow_charge = slow.charge[j]
        right_sign = (d0.flavour[i] == 0) | (slow_charge == d0.flavour[i])
        return c.select(right_sign & (dm > 0.1430) & (dm < 0.1480))

    @cached_property
    def d_mesons(self) -> Candidates:
        return Candidates.concat([self.d0s, self.dpluses])

    # -- event variables ----------------------------------------------------------------------
    @cached_property
    def variables(self) -> EventVariables:
        n = self.n
        trk, gam = self.all_pions, self.photons
        t = self.reco.tracks
        good = self.good_track
        n_tracks = np.bincount(trk.event, minlength=n).astype(np.int64)
        charge_sum = np.bincount(trk.event, weights=trk.charge, minlength=n).astype(np.int64)
        photon_ok = (self.reco.clusters.energy > self.PHOTON_E_MIN) & (
            (self.cluster_theta_deg > 17.0) & (self.cluster_theta_deg < 150.0)
        )
        n_photons = np.bincount(gam.event[photon_ok], minlength=n).astype(np.int64)
        # Event shapes use good tracks and all neutral clusters (CMS 3-vectors).
        ev = np.concatenate([trk.event, gam.event])
        px = np.concatenate([trk.px, gam.px])
        py = np.concatenate([trk.py, gam.py])
        pz = np.concatenate([trk.pz, gam.pz])
        energy = np.concatenate([trk.energy, gam.energy])
        p = np.maximum(np.sqrt(px**2 + py**2 + pz**2), 1e-9)
        e_vis = _bincount(ev, energy, n)
        sx, sy, sz = _bincount(ev, px, n), _bincount(ev, py, n), _bincount(ev, pz, n)
        p_sum = _bincount(ev, p, n)
        # Fox–Wolfram: sum_ij |p_i||p_j| P2(cos θ_ij) = 1.5 ||T||_F^2 - 0.5 (sum |p|)^2 with the
        # tensor T_ab = sum_i p_ia p_ib / |p_i|, so R2 costs O(n) per event instead of O(n^2).
        comps = (px, py, pz)
        tensor = np.empty((n, 3, 3))
        for a in range(3):
            for b in range(a, 3):
                tensor[:, a, b] = tensor[:, b, a] = _bincount(ev, comps[a] * comps[b] / p, n)
        h0 = np.maximum(p_sum**2, 1e-12)
        r2 = np.where(p_sum > 0, (1.5 * (tensor**2).sum(axis=(1, 2)) - 0.5 * p_sum**2) / h0, 0.0)
        # Thrust: start from the principal axis of T, then the standard iteration
        # n <- sum sign(p·n) p, which climbs to the nearest maximum of sum |p·n|.
        axis = np.linalg.eigh(tensor + 1e-12 * np.eye(3))[1][:, :, 2]
        for _ in range(4):
            sign = np.sign(px * axis[ev, 0] + py * axis[ev, 1] + pz * axis[ev, 2])
            new = np.stack([_bincount(ev, sign * c, n) for c in comps], axis=1)
            norm = np.linalg.norm(new, axis=1, keepdims=True)
            axis = np.where(norm > 0, new / np.maximum(norm, 1e-12), axis)
        proj = np.abs(px * axis[ev, 0] + py * axis[ev, 1] + pz * axis[ev, 2])
        thrust = np.where(p_sum > 0, _bincount(ev, proj, n) / np.maximum(p_sum, 1e-12), 0.0)
        e_ecl = _bincount(self.reco.clusters.event, self.reco.clusters.energy, n) + _bincount(
            t.event, t.ecl_energy, n
        )
        pt = np.hypot(t.px, t.py)
        max_pt = np.zeros(n)
        np.maximum.at(max_pt, t.event[good], pt[good])
        lep = self.leptons
        lepton_pstar = np.zeros(n)
        np.maximum.at(lepton_pstar, lep.event, lep.p)
        return EventVariables(
            n_tracks=n_tracks,
            charge_sum=charge_sum,
            n_photons=n_photons,
            e_vis=e_vis,
            p_miss=np.sqrt(sx**2 + sy**2 + sz**2),
            e_ecl=e_ecl,
            max_pt=max_pt,
            thrust=thrust,
            thrust_axis=axis,
            r2=r2,
            lepton_pstar=lepton_pstar,
        )

    @cached_property
    def hemispheres(self) -> tuple[I64, I64, F64, F64]:
        """Good tracks and invariant masses per thrust hemisphere (+ side, - side)."""
        n = self.n
        axis = self.variables.thrust_axis
        trk, gam = self.all_pions, self.photons
        out = []
        for cands in (trk, gam):
            side = (
                cands.px * axis[cands.event, 0]
                + cands.py * axis[cands.event, 1]
                + cands.pz * axis[cands.event, 2]
            ) > 0
            out.append(cands.event * 2 + side)
        n_side = np.bincount(out[0], minlength=2 * n).astype(np.int64)
        n_pos, n_neg = n_side[1::2], n_side[0::2]
        idx = np.concatenate(out)
        sums = [
            np.bincount(
                idx, weights=np.concatenate([getattr(trk, f), getattr(gam, f)]), minlength=2 * n
            )
            for f in ("energy", "px", "py", "pz")
        ]
        m2 = sums[0] ** 2 - sums[1] ** 2 - sums[2] ** 2 - sums[3] ** 2
        mass = np.sqrt(np.maximum(m2, 0.0))
        return n_pos, n_neg, mass[1::2], mass[0::2]

    def mbc_de(self, c: Candidates) -> tuple[F64, F64]:
        """Beam-constrained mass and energy difference of B candidates (CMS)."""
        e_beam = self.beams.sqrt_s / 2
        mbc = np.sqrt(np.maximum(e_beam**2 - (c.px**2 + c.py**2 + c.pz**2), 0.0))
        return mbc, c.energy - e_beam


# ---------------------------------------------------------------------------------------------
class Skim(ABC):
    """A selection on reconstructed events. Subclasses set `name` and `approximates`."""

    name: ClassVar[str]
    approximates: ClassVar[str]

    @property
    def description(self) -> str:
        doc = (type(self).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.name

    @abstractmethod
    def select(self, ctx: SkimContext) -> Bool:
        """Per-event pass flags."""


class LeptonicUntagged(Skim):
    """Hard lepton from B -> l nu: lepton p* > 2.0 GeV, >= 3 good tracks.

    Cuts: an e- or mu-identified good track with CMS momentum > 2.0 GeV, at least 3 good
    tracks (references §1 LeptonicUntagged: p*_l > 2.0 GeV, electronID/muonID > 0.5,
    nTracks >= 3).
    """

    name = "leptonic-untagged"
    approximates = "LeptonicUntagged (11130300)"

    def select(self, ctx: SkimContext) -> Bool:
        v = ctx.variables
        return (v.lepton_pstar > 2.0) & (v.n_tracks >= 3)


class FEIHadronic(Skim):
    """Hadronic B tag: FEI precuts plus a B -> D(*) pi (pi / pi0) candidate, Mbc > 5.24 GeV.

    Event precuts: >= 3 good tracks, >= 3 photons > 0.1 GeV, E_vis* > 4 GeV, R2 < 0.4
    (feiHadronic precuts, references §1). Tag: B -> D pi, D pi pi, D pi pi0 where D is a D0
    (K pi, K pi pi0, K 3pi, K_S pi pi) or a D+ (K pi pi), pi0 p* > 0.4 GeV; Mbc > 5.24 GeV,
    |ΔE| < 0.2 GeV (the FEI tag-side cuts; the FEI's sigProb > 0.001 is not modelled).
    """

    name = "fei-hadronic"
    approximates = "feiHadronic (11180500)"

    def select(self, ctx: SkimContext) -> Bool:
        v = ctx.variables
        pre = (v.n_tracks >= 3) & (v.n_photons >= 3) & (v.e_vis > 4.0) & (v.r2 < 0.4)
        if not pre.any():
            return pre
        charm = ctx.d_mesons.select(pre[ctx.d_mesons.event])
        # B -> D pi, D pi pi, D pi pi0 (B -> D*+ pi is inside D pi pi); the mass prefilter keeps
        # only combinations that can still reach the Mbc / ΔE signal box.
        box = (4.9, 5.6)
        d_pi = combine(charm, ctx.pions, mass_range=(0.0, 5.6))
        pi0 = ctx.pi0s.select(ctx.pi0s.p > 0.4)  # rho-like pi0s only: limits combinatorics
        b = Candidates.concat(
            [
                d_pi.select(d_pi.mass > box[0]),
                combine(d_pi, ctx.pions, mass_range=box),
                combine(d_pi, pi0, mass_range=box),
            ]
        )
        mbc, de = ctx.mbc_de(b)
        tag = (mbc > 5.24) & (np.abs(de) < 0.2)
        return pre & any_per_event(b.event, tag, ctx.n)


class FEISemileptonic(Skim):
    """Semileptonic B tag: D lepton with p*_l > 1.0 GeV and a physical cos θ_BY.

    D0 / D+ candidate plus an e/mu-identified track of the charge expected from b -> c l nu
    (lepton charge = kaon charge), p*_l > 1.0 GeV, |cos θ_B,Dl| < 1.1 computed with the beam
    energy, >= 4 good tracks and R2 < 0.4 (feiSL precuts and signal-side cuts, simplified).
    """

    name = "fei-semileptonic"
    approximates = "feiSL (11180600)"

    def select(self, ctx: SkimContext) -> Bool:
        v = ctx.variables
        pre = (v.n_tracks >= 4) & (v.r2 < 0.4)
        lep = ctx.leptons
        lep = lep.select((lep.p > 1.0) & pre[lep.event])
        d = ctx.d_mesons
        y, _, j = combine_indexed(d.select(pre[d.event] & (d.flavour != 0)), lep)
        e_beam = ctx.beams.sqrt_s / 2
        p_b = math.sqrt(e_beam**2 - M_B**2)
        m_y = y.mass
        cos_by = (2 * e_beam * y.energy - M_B**2 - m_y**2) / np.maximum(2 * p_b * y.p, 1e-9)
        # Right sign (b -> c -> s): the lepton has the kaon's charge, i.e. -flavour.
        ok = (lep.charge[j] == -y.flavour) & (np.abs(cos_by) < 1.1) & (m_y < M_B)
        return pre & any_per_event(y.event, ok, ctx.n)


class Charmless2Body(Skim):
    """Charmless B -> h+ h-: two tracks with Mbc > 5.2 GeV, |ΔE| < 0.3 GeV, R2 < 0.7.

    Opposite-charge good tracks, kaon or pion mass by PID (others skipped), each p* > 1.0 GeV;
    Mbc > 5.2 GeV, |ΔE| < 0.3 GeV (signal box plus sidebands, as skims keep them); loose
    continuum suppression R2 < 0.7 and >= 3 good tracks (BtoHadTracks, reduced to two bodies).
    Continuum pairs dominate, as in the real skim.
    """

    name = "charmless-2body"
    approximates = "BtoHadTracks (19130201)"

    def select(self, ctx: SkimContext) -> Bool:
        v = ctx.variables
        hadrons = Candidates.concat([ctx.pions, ctx.kaons])
        hadrons = hadrons.select((hadrons.p > 1.0) & (v.r2 < 0.7)[hadrons.event])
        b = combine(hadrons, hadrons, same=True, charge=(0,))
        mbc, de = ctx.mbc_de(b)
        ok = (mbc > 5.2) & (np.abs(de) < 0.3)
        return (v.n_tracks >= 3) & any_per_event(b.event, ok, ctx.n)


class Radiative(Skim):
    """B -> X_s gamma: a photon with 1.6 < E*γ < 3.4 GeV in the barrel, not from a pi0 / eta.

    The photon must be in the barrel ECL (32.2°–128.7°) and must not form a pi0
    (0.115–0.150 GeV) with any other photon above 30 MeV or an eta (0.50–0.58 GeV) with any
    other photon above 100 MeV; >= 3 good tracks and R2 < 0.5 (BtoXgamma: E*γ > 1.6 GeV,
    two-photon veto, continuum suppression).
    """

    name = "radiative"
    approximates = "BtoXgamma (12160100)"

    def select(self, ctx: SkimContext) -> Bool:
        v = ctx.variables
        g = ctx.photons
        theta = ctx.cluster_theta_deg
        hard = (g.energy > 1.6) & (g.energy < 3.4) & (theta > 32.2) & (theta < 128.7)
        hard &= ((v.n_tracks >= 3) & (v.r2 < 0.5))[g.event]
        if not hard.any():
            return np.zeros(ctx.n, dtype=np.bool_)
        cand = g.select(hard)
        i, j = pair_indices(cand.offsets, g.offsets)
        partner = g.photons[j, 0]
        pair_e = cand.energy[i] + g.energy[j]
        pair_p2 = (
            (cand.px[i] + g.px[j]) ** 2 + (cand.py[i] + g.py[j]) ** 2 + (cand.pz[i] + g.pz[j]) ** 2
        )
        m = np.sqrt(np.maximum(pair_e**2 - pair_p2, 0.0))
        e_lab = ctx.reco.clusters.energy[partner]
        vetoed_pair = (cand.photons[i, 0] != partner) & (
            ((m > 0.115) & (m < 0.150) & (e_lab > 0.03)) | ((m > 0.50) & (m < 0.58) & (e_lab > 0.1))
        )
        vetoed = np.zeros(len(cand), dtype=np.bool_)
        vetoed[i[vetoed_pair]] = True
        return any_per_event(cand.event, ~vetoed, ctx.n)


class DstarD0Pi(Skim):
    """D*+ -> D0 pi+ with p*(D*) > 1.5 GeV and 0.1430 < Δm < 0.1480 GeV.

    D0 -> K-pi+ (±20 MeV), K-pi+pi0 (±30 MeV), K-pi+pi+pi- (±20 MeV), K_S pi+pi- (±20 MeV);
    slow pion of the D0's flavour sign. p*(D*) > 1.5 GeV keeps the continuum charm and the
    hardest D* from B decays (the DstToD0Pi_D0ToHpJm family uses Δm windows around 145.4 MeV
    and p*(D*) cuts of 0–2.5 GeV depending on the sibling skim).
    """

    name = "dstar-d0pi"
    approximates = "DstToD0Pi_D0ToHpJm (17240100) and siblings"

    def select(self, ctx: SkimContext) -> Bool:
        d = ctx.dstars
        return any_per_event(d.event, d.p > 1.5, ctx.n)


class JpsiLL(Skim):
    """J/psi -> l+ l-: an identified e+e- or mu+mu- pair in the J/psi mass window.

    Both legs lepton-identified good tracks of opposite charge, 2.8 < M(ee) < 3.2 GeV (radiative
    tail) or 2.95 < M(mumu) < 3.2 GeV, >= 3 good tracks (CharmoniumPsi).
    """

    name = "jpsi-ll"
    approximates = "CharmoniumPsi (16460200)"

    def select(self, ctx: SkimContext) -> Bool:
        ee = combine(ctx.electrons, ctx.electrons, same=True)
        mm = combine(ctx.muons, ctx.muons, same=True)
        m_ee, m_mm = ee.mass, mm.mass
        ok_ee = (ee.charge == 0) & (m_ee > 2.8) & (m_ee < 3.2)
        ok_mm = (mm.charge == 0) & (m_mm > 2.95) & (m_mm < 3.2)
        has = any_per_event(ee.event, ok_ee, ctx.n) | any_per_event(mm.event, ok_mm, ctx.n)
        return has & (ctx.variables.n_tracks >= 3)


class TauGeneric(Skim):
    """Generic tau pairs: 2–6 good tracks, 1 or 3 tracks in a thrust hemisphere, light masses.

    2 <= nTracks <= 6, |net charge| < 2, E_vis* < 10 GeV, E_ECL < 6 GeV, E_vis* > 3 GeV or max
    pT > 1 GeV, one thrust hemisphere with 1 or 3 tracks, hemisphere masses < 1.8 (tag) and
    < 2.3 GeV (signal) (TauGeneric, references §1).
    """

    name = "tau-generic"
    approximates = "TauGeneric (18570600)"

    def select(self, ctx: SkimContext) -> Bool:
        v = ctx.variables
        n_pos, n_neg, m_pos, m_neg = ctx.hemispheres
        tag_pos = np.isin(n_pos, (1, 3)) & (m_pos < 1.8) & (m_neg < 2.3)
        tag_neg = np.isin(n_neg, (1, 3)) & (m_neg < 1.8) & (m_pos < 2.3)
        return (
            (v.n_tracks >= 2)
            & (v.n_tracks <= 6)
            & (np.abs(v.charge_sum) < 2)
            & (v.e_vis < 10.0)
            & (v.e_ecl < 6.0)
            & ((v.e_vis > 3.0) | (v.max_pt > 1.0))
            & (tag_pos | tag_neg)
        )


class Tau3Prong(Skim):
    """Tau 1-3 prong topology: exactly 4 tracks split 1 + 3 by the thrust plane.

    Exactly 4 good tracks with zero net charge, 1 and 3 tracks in the two thrust hemispheres,
    3-prong hemisphere mass < 1.8 GeV, thrust > 0.85, E_vis* < 10 GeV (TauThrust-like).
    """

    name = "tau-3prong"
    approximates = "TauThrust (18570700), 1-3 prong"

    def select(self, ctx: SkimContext) -> Bool:
        v = ctx.variables
        n_pos, n_neg, m_pos, m_neg = ctx.hemispheres
        split = ((n_pos == 1) & (n_neg == 3) & (m_neg < 1.8)) | (
            (n_pos == 3) & (n_neg == 1) & (m_pos < 1.8)
        )
        return (
            (v.n_tracks == 4) & (v.charge_sum == 0) & split & (v.thrust > 0.85) & (v.e_vis < 10.0)
        )


class LowMult2Track(Skim):
    """Two-track low multiplicity: exactly 2 opposite-charge tracks and little else.

    Exactly 2 good tracks of opposite charge, at most 2 photons above 0.1 GeV, E_vis* < 9 GeV,
    the two tracks not back-to-back within 2° (removes radiative Bhabha / mu pairs)
    (LowMassTwoTrack-like, without the ISR photon requirement).
    """

    name = "low-mult-2trk"
    approximates = "LowMassTwoTrack (18520500), loosened"

    def select(self, ctx: SkimContext) -> Bool:
        v = ctx.variables
        base = (v.n_tracks == 2) & (v.charge_sum == 0) & (v.n_photons <= 2) & (v.e_vis < 9.0)
        trk = ctx.all_pions
        i, j = pair_indices(trk.offsets, trk.offsets, same=True)
        cos = (trk.px[i] * trk.px[j] + trk.py[i] * trk.py[j] + trk.pz[i] * trk.pz[j]) / (
            np.maximum(trk.p[i] * trk.p[j], 1e-12)
        )
        acollinear = any_per_event(trk.event[i], cos > -math.cos(math.radians(2.0)), ctx.n)
        return base & acollinear


class KsRich(Skim):
    """K_S-rich events: a K_S -> pi+ pi- candidate with displaced vertex and >= 3 tracks.

    A V0 in the goodKshort window 0.468–0.528 GeV with flight radius > 0.5 cm and p* > 0.5 GeV,
    plus >= 3 good tracks (SystematicsKshort-like).
    """

    name = "ks-rich"
    approximates = "SystematicsKshort (10611100)"

    def select(self, ctx: SkimContext) -> Bool:
        ks = ctx.kshorts
        ok = (ctx.reco.v0s.flight_radius[ctx.kshort_v0s] > 0.5) & (ks.p > 0.5)
        return any_per_event(ks.event, ok, ctx.n) & (ctx.variables.n_tracks >= 3)


# ---------------------------------------------------------------------------------------------
SKIMS: dict[str, Skim] = {
    s.name: s
    for s in (
        LeptonicUntagged(),
        FEIHadronic(),
        FEISemileptonic(),
        Charmless2Body(),
        Radiative(),
        DstarD0Pi(),
        JpsiLL(),
        TauGeneric(),
        Tau3Prong(),
        LowMult2Track(),
        KsRich(),
    )
}
HELD_OUT_SKIMS: tuple[str, ...] = ("radiative", "dstar-d0pi")
"""Skims kept out of pretraining (transfer study and demo)."""


PLUGIN_SKIMS: dict[str, Skim] = {}
"""Plugin skims loaded in this process (`backends.plugins`), by their `name`."""


def register_skim(skim: Skim) -> None:
    """Make a plugin skim known by its `name` in this process (a catalogue name may not be
    taken: one name, one skim)."""
    if skim.name in SKIMS and SKIMS[skim.name] is not skim:
        raise UserError(
            f"plugin skim {type(skim).__name__} is named '{skim.name}', which is a catalogue "
            "skim; give it another name"
        )
    PLUGIN_SKIMS[skim.name] = skim


def get_skims(names: Sequence[str] | None = None) -> tuple[Skim, ...]:
    """Skims by name (None = the catalogue), by a loaded plugin's name, or by import path
    `my_module:MySkim`."""
    if names is None:
        return tuple(SKIMS.values())
    out: list[Skim] = []
    for name in names:
        if name in PLUGIN_SKIMS:
            out.append(PLUGIN_SKIMS[name])
        elif ":" in name:
            from adaptive_bkg.backends import load_object

            obj = load_object(name, "skim")
            skim = obj() if isinstance(obj, type) else obj
            if not isinstance(skim, Skim):
                raise UserError(
                    f"skim '{name}' is a {type(skim).__name__}, not an "
                    "adaptive_bkg.backends.emulator.skims.Skim subclass"
                )
            out.append(skim)
        elif name in SKIMS:
            out.append(SKIMS[name])
        else:
            raise UserError(
                f"unknown skim '{name}' (allowed: {', '.join(SKIMS)}; or my_module:MySkim)"
            )
    if len({s.name for s in out}) != len(out):
        raise UserError(f"skims {list(names)} name the same skim twice")
    return tuple(out)


def evaluate_skims(
    reco: RecoEvents, skims: Sequence[Skim], beams: Beams | None = None
) -> NDArray[np.bool_]:
    """[n_events, n_skims] pass flags, sharing one context across skims."""
    ctx = SkimContext(reco, beams)
    flags = np.zeros((len(reco), len(skims)), dtype=np.bool_)
    for k, skim in enumerate(skims):
        flags[:, k] = skim.select(ctx)
    return flags
