"""Skims: selections modelled on Belle II skims, on the emulator's reconstructed events.

Every skim reads one shared `SkimContext` per batch (`context.py`: CMS objects, particle lists
and event variables, built with the combinatorics of `candidates.py`).

The selections approximate the basf2 skims named in each docstring (codes from basf2
skim/scripts/skim/registry.py, see references/belle2_reference_numbers.md §1); they are simpler,
but they keep what makes each skim a different physics question.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.candidates import (
    Candidates,
    any_per_event,
    combine,
    combine_indexed,
    pair_indices,
)
from adaptive_bkg.backends.emulator.context import SkimContext
from adaptive_bkg.backends.emulator.detector import RecoEvents
from adaptive_bkg.errors import UserError
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.physics.pdg import PDG, mass_gev
from adaptive_bkg.user_code import load_object

Bool = NDArray[np.bool_]

M_B = mass_gev(PDG.B0)


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
            obj = load_object(name, "skim")
            is_class = isinstance(obj, type)
            # Check the class before building it: another class may need arguments.
            if not (issubclass(obj, Skim) if is_class else isinstance(obj, Skim)):
                kind = obj.__name__ if is_class else type(obj).__name__
                raise UserError(
                    f"skim '{name}' is a {kind}, not an "
                    "adaptive_bkg.backends.emulator.skims.Skim subclass"
                )
            out.append(obj() if is_class else obj)
        elif name in SKIMS:
            out.append(SKIMS[name])
        else:
            raise UserError(
                f"unknown skim '{name}' (allowed: {', '.join(SKIMS)}; or my_module:MySkim)"
            )
    if len({s.name for s in out}) != len(out):
        raise UserError(f"skims {list(names)} name the same skim twice")
    return tuple(out)


def evaluate_skims(reco: RecoEvents, skims: Sequence[Skim], beams: Beams) -> NDArray[np.bool_]:
    """[n_events, n_skims] pass flags, sharing one context across skims (CMS of `beams`)."""
    ctx = SkimContext(reco, beams)
    flags = np.zeros((len(reco), len(skims)), dtype=np.bool_)
    for k, skim in enumerate(skims):
        flags[:, k] = skim.select(ctx)
    return flags
