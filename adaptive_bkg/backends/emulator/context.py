"""`SkimContext`: everything the skims share for one batch, in the e+e- CMS frame.

The context computes, once and only when first asked for, event-level variables (track count,
visible energy, thrust, Fox–Wolfram R2, missing momentum, lepton p*) and particle lists built
like basf2's (pi, K, e, mu, gamma, pi0, K_S, D0, D+, D*+) from the emulator's reconstructed
events. The CMS frame is that of the `Beams` the context is given (the backend's, from
`cfg.generator`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.candidates import Candidates, combine, combine_indexed
from adaptive_bkg.backends.emulator.conditions import (
    MU,
    PI,
    SPECIES_MASS_GEV,
    E,
    K,
)
from adaptive_bkg.backends.emulator.detector import KSHORT, RecoEvents
from adaptive_bkg.formats.events import offsets_from_counts
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.physics.geometry import BELLE2_ACCEPTANCE
from adaptive_bkg.physics.pdg import PDG, mass_gev
from adaptive_bkg.physics.shapes import (
    event_sums,
    fox_wolfram_r2,
    momentum_tensor,
    thrust_about,
    thrust_axis,
)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Bool = NDArray[np.bool_]

M_PI, M_K, M_E, M_MU = (SPECIES_MASS_GEV[i] for i in (PI, K, E, MU))
M_D0, M_DPLUS = mass_gev(PDG.D0), mass_gev(PDG.D_PLUS)


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

    def __init__(self, reco: RecoEvents, beams: Beams) -> None:
        self.reco = reco
        self.beams = beams
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
        cdc_lo, cdc_hi = BELLE2_ACCEPTANCE.cdc_theta_deg
        photon_ok = (self.reco.clusters.energy > self.PHOTON_E_MIN) & (
            (self.cluster_theta_deg > cdc_lo) & (self.cluster_theta_deg < cdc_hi)
        )
        n_photons = np.bincount(gam.event[photon_ok], minlength=n).astype(np.int64)
        # Event shapes use good tracks and all neutral clusters (CMS 3-vectors).
        ev = np.concatenate([trk.event, gam.event])
        px = np.concatenate([trk.px, gam.px])
        py = np.concatenate([trk.py, gam.py])
        pz = np.concatenate([trk.pz, gam.pz])
        energy = np.concatenate([trk.energy, gam.energy])
        p = np.maximum(np.sqrt(px**2 + py**2 + pz**2), 1e-9)
        e_vis = event_sums(ev, energy, n)
        sx, sy, sz = event_sums(ev, px, n), event_sums(ev, py, n), event_sums(ev, pz, n)
        p_sum = event_sums(ev, p, n)
        tensor = momentum_tensor(ev, px, py, pz, p, n)
        r2 = fox_wolfram_r2(tensor, p_sum)
        axis = thrust_axis(ev, px, py, pz, tensor)
        thrust = thrust_about(ev, px, py, pz, axis, p_sum)
        e_ecl = event_sums(self.reco.clusters.event, self.reco.clusters.energy, n) + event_sums(
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
