"""Observables the closure suite histograms: generator level and reconstructed level.

Generator level (`gen_*`): the stable final state of the generator record in the e+e- CMS
(neutrinos invisible). Reconstructed level: the emulator's reconstruction of each event with
the run's detector settings and beams (deterministic per backend seed and event id), through
the same `SkimContext` the skims use. An event without the object an observable needs (no
lepton, no D candidate, …) has NaN and is left out of that observable's histograms.

Binning: each observable's `edges` cover its physical range; values outside are clipped into
the first / last bin, so no event is lost in an overflow nobody looks at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator import EmulatorBackend
from adaptive_bkg.backends.emulator.candidates import Candidates, combine
from adaptive_bkg.backends.emulator.context import M_D0, SkimContext
from adaptive_bkg.config import Config
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.generators.truth import charged_multiplicity, final_state_mask, pdg_charge
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.physics.pdg import NEUTRINOS, PDG
from adaptive_bkg.physics.shapes import (
    event_sums,
    fox_wolfram_r2,
    momentum_tensor,
    thrust_about,
    thrust_axis,
)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Observable:
    name: str
    label: str  # axis label with unit
    edges: F64
    level: str = "reco"  # "gen" or "reco"


def _lin(lo: float, hi: float, n: int) -> F64:
    return np.linspace(lo, hi, n + 1)


def _ints(lo: int, hi: int, step: int = 1) -> F64:
    return np.arange(lo - 0.5, hi + 0.5 + step / 2, step, dtype=np.float64)


G = "gen"
OBSERVABLES: tuple[Observable, ...] = (
    # generator level
    Observable("n_particles", "generator-level particles", np.arange(0.5, 80.5, 4.0), "gen"),
    Observable("gen_n_charged", "generator charged final-state particles", _ints(0, 20), "gen"),
    Observable("gen_n_photons", r"generator photons ($E^* > 0.1$ GeV)", _ints(0, 24), "gen"),
    Observable("gen_p_track", r"generator leading charged $p^*$ [GeV]", _lin(0, 5.5, 22), "gen"),
    Observable("gen_cos_track", r"generator leading charged $\cos\theta^*$", _lin(-1, 1, 20), G),
    Observable("gen_e_photon", r"generator leading photon $E^*$ [GeV]", _lin(0, 5.5, 22), "gen"),
    Observable("gen_e_vis", r"generator visible $E^*$ [GeV]", _lin(0, 11.5, 23), "gen"),
    Observable("gen_p_miss", r"generator missing $p^*$ [GeV]", _lin(0, 5.5, 22), "gen"),
    Observable("gen_lepton_pstar", r"generator leading $e/\mu$ $p^*$ [GeV]", _lin(0, 5.5, 22), G),
    Observable("gen_thrust", "generator thrust", _lin(0.5, 1.0, 25), "gen"),
    Observable("gen_r2", "generator $R_2$", _lin(0.0, 1.0, 25), "gen"),
    # reconstructed level
    Observable("n_tracks", "good tracks", _ints(0, 16)),
    Observable("n_photons", "photons ($E > 0.1$ GeV)", _ints(0, 20)),
    Observable("n_pi0", r"$\pi^0$ candidates", _ints(0, 12)),
    Observable("e_vis", r"$E_\mathrm{vis}^*$ [GeV]", _lin(0.0, 12.0, 24)),
    Observable("p_miss", r"$p_\mathrm{miss}^*$ [GeV]", _lin(0.0, 6.0, 24)),
    Observable("e_ecl", r"$E_\mathrm{ECL}$ [GeV]", _lin(0.0, 12.0, 24)),
    Observable("max_pt", r"leading track $p_T$ [GeV]", _lin(0.0, 5.0, 25)),
    Observable("p_track", r"leading track $p^*$ [GeV]", _lin(0.0, 5.5, 22)),
    Observable("cos_track", r"leading track $\cos\theta^*$", _lin(-1.0, 1.0, 20)),
    Observable("e_photon", r"leading photon $E^*$ [GeV]", _lin(0.0, 5.5, 22)),
    Observable("thrust", "thrust", _lin(0.5, 1.0, 25)),
    Observable("r2", "$R_2$", _lin(0.0, 1.0, 25)),
    Observable("m_hemi", "heavier thrust-hemisphere mass [GeV]", _lin(0.0, 5.0, 25)),
    Observable("lepton_pstar", r"leading lepton $p^*$ [GeV] (events with one)", _lin(0, 5.5, 22)),
    Observable("d_mass", r"best $D$ candidate mass [GeV]", _lin(1.83, 1.90, 14)),
    Observable("dstar_pstar", r"leading $D^{*+}$ candidate $p^*$ [GeV]", _lin(0.0, 5.0, 20)),
    Observable("mbc", r"$M_\mathrm{bc}$, best $B \to D\pi$ candidate [GeV]", _lin(5.0, 5.3, 15)),
    Observable("delta_e", r"$\Delta E$, best $B \to D\pi$ candidate [GeV]", _lin(-0.5, 0.5, 20)),
)  # fmt: skip


def _leading(event: I64, values: F64, n: int) -> tuple[F64, I64]:
    """Per event the largest value (NaN if none) and the index of the entry holding it (−1)."""
    best = np.full(n, np.nan)
    index = np.full(n, -1, dtype=np.int64)
    if len(event):
        order = np.lexsort((-values, event))  # by event, largest first
        first = order[np.r_[True, event[order][1:] != event[order][:-1]]]
        best[event[first]] = values[first]
        index[event[first]] = first
    return best, index


def _cos(pz: F64, p: F64, index: I64) -> F64:
    ok = index >= 0
    out = np.full(len(index), np.nan)
    out[ok] = pz[index[ok]] / np.maximum(p[index[ok]], 1e-12)
    return out


def generator_observables(events: EventBatch, beams: Beams) -> dict[str, F64]:
    """The `gen_*` observables (and the record's size) of `events`, in the CMS of `beams`."""
    n = len(events)
    ev = events.particle_event_index
    e, px, py, pz = beams.to_cms(
        *(np.asarray(a, dtype=np.float64) for a in (events.E, events.px, events.py, events.pz))
    )
    p = np.sqrt(px**2 + py**2 + pz**2)
    apdg = np.abs(events.pdg.astype(np.int64))
    visible = final_state_mask(events) & ~np.isin(apdg, NEUTRINOS)
    charged = visible & (pdg_charge(events.pdg) != 0)
    photon = visible & (apdg == PDG.GAMMA) & (e > 0.1)
    lepton = charged & np.isin(apdg, (PDG.E_MINUS, PDG.MU_MINUS))
    p_track, i_track = _leading(ev[charged], p[charged], n)
    vis = visible & (p > 0)
    ev_v, px_v, py_v, pz_v, p_v = ev[vis], px[vis], py[vis], pz[vis], p[vis]
    tensor = momentum_tensor(ev_v, px_v, py_v, pz_v, p_v, n)
    p_sum = event_sums(ev_v, p_v, n)
    axis = thrust_axis(ev_v, px_v, py_v, pz_v, tensor)
    miss = [event_sums(ev_v, c, n) for c in (px_v, py_v, pz_v)]
    return {
        "n_particles": events.n_particles.astype(np.float64),
        "gen_n_charged": charged_multiplicity(events),
        "gen_n_photons": event_sums(ev[photon], None, n),
        "gen_p_track": p_track,
        "gen_cos_track": _cos(pz[charged], p[charged], i_track),
        "gen_e_photon": _leading(ev[photon], e[photon], n)[0],
        "gen_e_vis": event_sums(ev_v, e[vis], n),
        "gen_p_miss": np.sqrt(miss[0] ** 2 + miss[1] ** 2 + miss[2] ** 2),
        "gen_lepton_pstar": _leading(ev[lepton], p[lepton], n)[0],
        "gen_thrust": np.where(p_sum > 0, thrust_about(ev_v, px_v, py_v, pz_v, axis, p_sum),
                               np.nan),
        "gen_r2": np.where(p_sum > 0, fox_wolfram_r2(tensor, p_sum), np.nan),
    }  # fmt: skip


def _best(event: I64, score: F64, value: F64, n: int) -> F64:
    """Per event the `value` of the candidate with the highest `score` (NaN without one)."""
    _, index = _leading(event, score, n)
    return np.where(index >= 0, value[np.maximum(index, 0)] if len(value) else np.nan, np.nan)


def reconstructed_observables(ctx: SkimContext) -> dict[str, F64]:
    """The reconstructed-level observables of one batch's `SkimContext`."""
    n = ctx.n
    v = ctx.variables
    trk, gam = ctx.all_pions, ctx.photons
    p_track, i_track = _leading(trk.event, trk.p, n)
    d = ctx.d_mesons
    b: Candidates = combine(d, ctx.pions, mass_range=(4.9, 5.6))  # B -> D pi
    mbc, de = ctx.mbc_de(b)
    in_box = mbc > 5.0
    _, _, m_pos, m_neg = ctx.hemispheres
    return {
        "n_tracks": v.n_tracks.astype(np.float64),
        "n_photons": v.n_photons.astype(np.float64),
        "n_pi0": np.bincount(ctx.pi0s.event, minlength=n).astype(np.float64),
        "e_vis": v.e_vis,
        "p_miss": v.p_miss,
        "e_ecl": v.e_ecl,
        "max_pt": v.max_pt,
        "p_track": p_track,
        "cos_track": _cos(trk.pz, trk.p, i_track),
        "e_photon": _leading(gam.event, gam.energy, n)[0],
        "thrust": v.thrust,
        "r2": v.r2,
        "m_hemi": np.maximum(m_pos, m_neg),
        "lepton_pstar": np.where(v.lepton_pstar > 0, v.lepton_pstar, np.nan),
        "d_mass": _best(d.event, -np.abs(d.mass - M_D0), d.mass, n),
        "dstar_pstar": _leading(ctx.dstars.event, ctx.dstars.p, n)[0],
        "mbc": _best(b.event[in_box], -np.abs(de[in_box]), mbc[in_box], n),
        "delta_e": _best(b.event[in_box], -np.abs(de[in_box]), de[in_box], n),
    }


def observables(events: EventBatch, cfg: Config) -> dict[str, F64]:
    """Per-event values of every `OBSERVABLES` entry, with the run's detector and beams."""
    beams = Beams.of(cfg.generator)
    # skims unused: reconstruction only
    backend = EmulatorBackend(cfg.backend, ["tau-generic"], beams)
    ctx = SkimContext(backend.reconstruct(events), backend.beams)
    return generator_observables(events, beams) | reconstructed_observables(ctx)


def histogram_values(values: F64, obs: Observable) -> tuple[NDArray[np.bool_], F64]:
    """(has a value, value clipped into the histogram range) for `np.histogram(…, obs.edges)`."""
    x = np.asarray(values, dtype=np.float64)
    inside = np.isfinite(x)
    return inside, np.clip(np.where(inside, x, obs.edges[0]), obs.edges[0],
                           np.nextafter(obs.edges[-1], -np.inf))  # fmt: skip


def reco_key(cfg: Config) -> tuple[Any, ...]:
    """What the observables of an event depend on besides the event: detector and beams."""
    return (cfg.backend.seed, cfg.backend.conditions, Beams.of(cfg.generator))
