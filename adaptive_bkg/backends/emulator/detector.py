"""A parametric Belle II-like detector response, vectorised over whole `EventBatch`es.

From the generator-level final state (particles that are the mother of no other particle) it
makes what reconstruction would hand to a skim:

* charged tracks in the CDC acceptance above a pT threshold, with an efficiency, a pT
  resolution a·pT (+) b/β, a production-radius limit (displaced daughters need enough CDC
  layers), straight-line impact parameters d0/z0, a matched ECL deposit and a PID hypothesis
  drawn from a momentum-dependent confusion matrix;
* ECL clusters for photons (acceptance with gaps, energy resolution, 50 MeV threshold);
* V0s (K_S -> pi+ pi-, Lambda -> p pi-) when both daughters are tracks and the decay radius
  lies in a window.

The K_S, Lambda and pi0 that the generator left undecayed are decayed first (`decays.py`).

Randomness is counter-based (`randomness.py`): every random number is a hash of (backend seed,
event id, the particle's position in its event, a stream number). The same event therefore gets
the same response whatever batch it is simulated in, which is what a re-simulation after a crash
needs. All sums over an event's objects go through `np.bincount`, which adds in input order, so
even the floating-point rounding does not depend on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.conditions import (
    MU,
    PI,
    SPECIES_MASS_GEV,
    DetectorParams,
    E,
    K,
    P,
)
from adaptive_bkg.backends.emulator.decays import Particles, decay_unstable, final_state
from adaptive_bkg.backends.emulator.randomness import (
    S_ANGLE,
    S_BKG_A,
    S_BKG_B,
    S_BKG_C,
    S_BKG_COUNT_CLUSTERS,
    S_BKG_COUNT_TRACKS,
    S_BKG_D,
    S_BKG_E,
    S_D0,
    S_ECL_TRACK,
    S_PHOTON_EFF,
    S_PHOTON_SMEAR,
    S_PID,
    S_PT_SMEAR,
    S_TRACK_EFF,
    S_V0_FIT,
    S_Z0,
    child_keys,
    event_keys,
    normal,
    poisson,
    uniform,
)
from adaptive_bkg.formats.events import EventBatch, offsets_from_counts
from adaptive_bkg.physics.pdg import PDG, charge

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]
Bool = NDArray[np.bool_]

MASS = np.asarray(SPECIES_MASS_GEV)

# Charged long-lived particles, i.e. those Pythia leaves undecayed at tau0Max = 10 mm, sorted by
# code (searched with np.searchsorted; the cost model's track count uses them too) -> species
# used for the detector response. Long-lived charged hyperons are treated as pion-like tracks.
_CHARGED: tuple[tuple[int, int], ...] = (
    (PDG.E_MINUS, E),
    (PDG.MU_MINUS, MU),
    (PDG.PI_PLUS, PI),
    (PDG.K_PLUS, K),
    (PDG.PROTON, P),
    (PDG.SIGMA_MINUS, PI),
    (PDG.SIGMA_PLUS, PI),
    (PDG.XI_MINUS, PI),
    (PDG.OMEGA_MINUS, PI),
)
CHARGED_CODES = np.array([code for code, _ in _CHARGED])
_CHARGED_SPECIES = np.array([species for _, species in _CHARGED], dtype=np.int8)
_CHARGED_SIGN = np.array([charge(code) for code, _ in _CHARGED], dtype=np.int8)  # of pdg > 0

V0_KINDS: tuple[str, ...] = ("K_S0", "Lambda0", "anti-Lambda0")
KSHORT, LAMBDA, ANTILAMBDA = range(3)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Tracks:
    """Reconstructed charged tracks, CSR by event (event i owns offsets[i]:offsets[i+1])."""

    offsets: I64
    event: I64  # event index in the batch, per track
    charge: NDArray[np.int8]
    px: F64  # measured lab momentum (GeV)
    py: F64
    pz: F64
    pid: NDArray[np.int8]  # PID hypothesis, index into conditions.SPECIES
    d0: F64  # transverse impact parameter (cm)
    z0: F64  # longitudinal impact parameter (cm)
    ecl_energy: F64  # energy of the matched ECL cluster (GeV), 0 if none
    true_species: NDArray[np.int8]  # truth, for tests and studies; -1 for beam background


@dataclass(frozen=True, eq=False)
class Clusters:
    """Neutral ECL clusters (not matched to a track), CSR by event. Massless 4-vectors."""

    offsets: I64
    event: I64
    energy: F64  # measured (GeV)
    px: F64
    py: F64
    pz: F64
    from_beam_background: Bool


@dataclass(frozen=True, eq=False)
class V0s:
    """K_S / Lambda candidates from two reconstructed daughter tracks, CSR by event."""

    offsets: I64
    event: I64
    kind: NDArray[np.int8]  # index into V0_KINDS
    mass: F64  # with the kind's daughter mass hypotheses (GeV)
    px: F64
    py: F64
    pz: F64
    energy: F64
    flight_radius: F64  # transverse decay radius (cm)
    track_a: I64  # global indices into Tracks
    track_b: I64


@dataclass(frozen=True, eq=False)
class RecoEvents:
    """What reconstruction hands to the skims, for one batch."""

    event_id: U64
    bkg_type: NDArray[np.int8]
    tracks: Tracks
    clusters: Clusters
    v0s: V0s

    def __len__(self) -> int:
        return int(self.event_id.shape[0])


# ---------------------------------------------------------------------------------------------
def _in_ranges(theta_deg: F64, ranges: tuple[tuple[float, float], ...]) -> Bool:
    inside = np.zeros(theta_deg.shape, dtype=np.bool_)
    for lo, hi in ranges:
        inside |= (theta_deg >= lo) & (theta_deg <= hi)
    return inside


def _ecl_sigma(energy: F64, params: DetectorParams) -> F64:
    """Relative ECL resolution a/E (+) b/E^(1/4) (+) c."""
    e = np.maximum(energy, 1e-3)
    return np.sqrt(
        (params.ecl_resolution_a / e) ** 2
        + (params.ecl_resolution_b / e**0.25) ** 2
        + params.ecl_resolution_c**2
    )


def _pid_cumulative(params: DetectorParams) -> F64:
    """[2 momentum bins, 5 true species, 4] cumulative P(hypothesis <= h | species)."""
    matrix = np.asarray([params.pid_low_p, params.pid_high_p], dtype=np.float64)
    return np.cumsum(matrix, axis=2)[:, :, :4]


def draw_pid(
    species: NDArray[np.integer], p: F64, keys: U64, params: DetectorParams
) -> NDArray[np.int8]:
    """PID hypothesis per track from the configured confusion matrices."""
    cum = _pid_cumulative(params)[(p >= params.pid_p_split_gev).astype(np.int64), species]
    u = uniform(keys, S_PID)
    return (u[:, None] > cum).sum(axis=1).astype(np.int8)


def _make_tracks(parts: Particles, params: DetectorParams) -> dict[str, NDArray[np.generic]]:
    """Reconstruct the charged particles; track columns plus internal v0_parent, rho, key."""
    code_pos = np.searchsorted(CHARGED_CODES, np.abs(parts.pdg))
    code_pos = np.minimum(code_pos, len(CHARGED_CODES) - 1)
    is_charged = CHARGED_CODES[code_pos] == np.abs(parts.pdg)
    ch = parts.select(is_charged)
    code_pos = code_pos[is_charged]
    species = _CHARGED_SPECIES[code_pos]
    charge = (_CHARGED_SIGN[code_pos] * np.sign(ch.pdg)).astype(np.int8)
    pt = np.hypot(ch.px, ch.py)
    p = np.sqrt(pt**2 + ch.pz**2)
    theta = np.degrees(np.arctan2(pt, ch.pz))
    rho = np.hypot(ch.x, ch.y)
    eff = np.where(
        pt >= params.track_eff_pt_knee_gev, params.track_eff_high_pt, params.track_eff_low_pt
    )
    found = (
        (theta >= params.cdc_theta_min_deg)
        & (theta <= params.cdc_theta_max_deg)
        & (pt >= params.track_pt_min_gev)
        & (rho <= params.track_max_production_radius_cm)
        & (np.abs(ch.z) <= params.track_max_production_z_cm)
        & (uniform(ch.key, S_TRACK_EFF) < eff)
    )
    ch = ch.select(found)
    species, charge, pt, p, theta = species[found], charge[found], pt[found], p[found], theta[found]
    rho = rho[found]
    beta = p / np.sqrt(p**2 + MASS[species] ** 2)
    sigma = np.hypot(params.pt_resolution_a * pt, params.pt_resolution_b / beta)
    scale = np.maximum(1.0 + sigma * normal(ch.key, S_PT_SMEAR), 0.05)
    # Straight-line point of closest approach to the z axis (curvature ignored).
    d0 = (ch.x * ch.py - ch.y * ch.px) / pt + params.impact_resolution_cm * normal(ch.key, S_D0)
    z0 = (
        ch.z
        - (ch.x * ch.px + ch.y * ch.py) * ch.pz / pt**2
        + params.impact_resolution_cm * normal(ch.key, S_Z0)
    )
    p_meas = p * scale
    # Direction: Gaussian kicks along two axes perpendicular to p (intrinsic + multiple
    # scattering ~ 1/(p beta)), then the measured magnitude.
    sigma_angle = np.hypot(
        params.angle_resolution_rad, params.angle_scattering_rad_gev / (p * beta)
    )
    ux, uy, uz = ch.px / p, ch.py / p, ch.pz / p
    u_perp = np.maximum(np.hypot(ux, uy), 1e-12)
    e1x, e1y = -uy / u_perp, ux / u_perp
    e2x, e2y, e2z = -uz * e1y, uz * e1x, ux * e1y - uy * e1x  # p_hat x e1
    k1 = sigma_angle * normal(ch.key, S_ANGLE)
    k2 = sigma_angle * normal(ch.key, S_ANGLE + 1)
    dx, dy, dz = ux + k1 * e1x + k2 * e2x, uy + k1 * e1y + k2 * e2y, uz + k2 * e2z
    norm = p_meas / np.sqrt(dx**2 + dy**2 + dz**2)
    energy_true = np.sqrt(p**2 + MASS[species] ** 2)
    reaches_ecl = _in_ranges(theta, params.ecl_theta_ranges_deg) & (
        pt >= params.ecl_track_pt_min_gev
    )
    shower = energy_true * (1.0 + _ecl_sigma(energy_true, params) * normal(ch.key, S_ECL_TRACK))
    mip = params.mip_energy_gev * (1.0 + 0.3 * normal(ch.key, S_ECL_TRACK))
    ecl = np.where(reaches_ecl, np.where(species == E, shower, mip), 0.0)
    columns: dict[str, NDArray[np.generic]] = {
        "event": ch.event,
        "charge": charge,
        "px": dx * norm,
        "py": dy * norm,
        "pz": dz * norm,
        "pid": draw_pid(species, p_meas, ch.key, params),
        "d0": d0,
        "z0": z0,
        "ecl_energy": np.maximum(ecl, 0.0),
        "true_species": species.astype(np.int8),
        "v0_parent": ch.v0_parent,
        "rho": rho,
        "key": ch.key,
    }
    return columns


def _make_photon_clusters(
    parts: Particles, params: DetectorParams
) -> dict[str, NDArray[np.generic]]:
    ph = parts.select(parts.pdg == PDG.GAMMA)
    p = np.sqrt(ph.px**2 + ph.py**2 + ph.pz**2)
    theta = np.degrees(np.arctan2(np.hypot(ph.px, ph.py), ph.pz))
    energy = ph.energy * (1.0 + _ecl_sigma(ph.energy, params) * normal(ph.key, S_PHOTON_SMEAR))
    seen = (
        _in_ranges(theta, params.ecl_theta_ranges_deg)
        & (uniform(ph.key, S_PHOTON_EFF) < params.photon_efficiency)
        & (energy >= params.cluster_threshold_gev)
    )
    scale = energy[seen] / np.maximum(p[seen], 1e-12)
    return {
        "event": ph.event[seen],
        "energy": energy[seen],
        "px": ph.px[seen] * scale,
        "py": ph.py[seen] * scale,
        "pz": ph.pz[seen] * scale,
        "from_beam_background": np.zeros(int(seen.sum()), dtype=np.bool_),
    }


def _overlay_slots(keys: U64, mean: float, stream: int) -> tuple[I64, U64]:
    """Per-event Poisson counts of overlay objects -> (event index, key) per object."""
    counts = poisson(uniform(keys, stream), mean)
    event = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
    starts = offsets_from_counts(counts)[:-1]
    slot = np.arange(len(event), dtype=np.int64) - np.repeat(starts, counts)
    return event, child_keys(keys[event], slot, salt=stream)


def _direction(keys: U64, theta_min: float, theta_max: float) -> tuple[F64, F64, F64]:
    """Unit vectors uniform in solid angle within a polar range."""
    c_lo, c_hi = np.cos(np.radians(theta_max)), np.cos(np.radians(theta_min))
    cos_t = c_lo + (c_hi - c_lo) * uniform(keys, S_BKG_A)
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = 2.0 * np.pi * uniform(keys, S_BKG_B)
    return sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t


def _beam_background(
    keys: U64, params: DetectorParams
) -> tuple[dict[str, NDArray[np.generic]], dict[str, NDArray[np.generic]]]:
    """Overlay of beam-induced tracks and soft clusters (run-dependent MC)."""
    event, k = _overlay_slots(keys, params.bkg_tracks_mean, S_BKG_COUNT_TRACKS)
    ux, uy, uz = _direction(k, params.cdc_theta_min_deg, params.cdc_theta_max_deg)
    pt = 0.1 + 0.5 * uniform(k, S_BKG_C)
    p = pt / np.hypot(ux, uy)
    # Beam-induced tracks rarely point back to the IP: wide d0 / z0 (cm)  [emulator choice].
    tracks: dict[str, NDArray[np.generic]] = {
        "event": event,
        "charge": np.where(uniform(k, S_BKG_D) < 0.5, 1, -1).astype(np.int8),
        "px": p * ux,
        "py": p * uy,
        "pz": p * uz,
        "pid": draw_pid(np.full(len(k), PI), p, k, params),
        "d0": 1.0 * normal(k, S_BKG_E),
        "z0": 8.0 * normal(k, S_BKG_E + 1),
        "ecl_energy": np.zeros(len(k)),
        "true_species": np.full(len(k), -1, dtype=np.int8),
        "v0_parent": np.full(len(k), -1, dtype=np.int64),
        "rho": np.zeros(len(k)),
        "key": k,
    }
    event, k = _overlay_slots(keys, params.bkg_clusters_mean, S_BKG_COUNT_CLUSTERS)
    lo, hi = params.ecl_theta_ranges_deg[0][0], params.ecl_theta_ranges_deg[-1][1]
    ux, uy, uz = _direction(k, lo, hi)
    energy = 0.02 + params.bkg_cluster_energy_gev * -np.log(uniform(k, S_BKG_C))
    theta = np.degrees(np.arccos(uz))
    seen = _in_ranges(theta, params.ecl_theta_ranges_deg) & (energy >= params.cluster_threshold_gev)
    clusters: dict[str, NDArray[np.generic]] = {
        "event": event[seen],
        "energy": energy[seen],
        "px": (energy * ux)[seen],
        "py": (energy * uy)[seen],
        "pz": (energy * uz)[seen],
        "from_beam_background": np.ones(int(seen.sum()), dtype=np.bool_),
    }
    return tracks, clusters


def _sorted_csr(
    columns: list[dict[str, NDArray[np.generic]]], n_events: int
) -> tuple[dict[str, NDArray[np.generic]], I64]:
    """Concatenate column dicts and stable-sort by event; returns (columns, offsets)."""
    merged = {name: np.concatenate([c[name] for c in columns]) for name in columns[0]}
    order = np.argsort(merged["event"], kind="stable")
    merged = {name: values[order] for name, values in merged.items()}
    counts = np.bincount(merged["event"].astype(np.int64), minlength=n_events)
    return merged, offsets_from_counts(counts)


def _make_v0s(
    tracks: Tracks,
    v0_parent: I64,
    pdg: NDArray[np.int32],
    rho: F64,
    keys: U64,
    params: DetectorParams,
) -> V0s:
    """Pair the two reconstructed daughters of each K_S / Lambda into a V0 candidate."""
    cand = np.flatnonzero(v0_parent >= 0)
    order = cand[np.argsort(v0_parent[cand], kind="stable")]
    parents, first, count = np.unique(v0_parent[order], return_index=True, return_counts=True)
    pair = count == 2
    a, b = order[first[pair]], order[first[pair] + 1]
    kind_pdg = pdg[parents[pair]]
    flight = rho[a]  # the true decay radius: both daughters start there
    ok = (
        (tracks.charge[a] != tracks.charge[b])
        & (flight >= params.v0_min_radius_cm)
        & (flight <= params.v0_max_radius_cm)
        & (uniform(keys[a], S_V0_FIT) < params.v0_fit_efficiency)
    )
    a, b, kind_pdg, flight = a[ok], b[ok], kind_pdg[ok], flight[ok]
    kind = np.select(
        [kind_pdg == PDG.K_S0, kind_pdg == PDG.LAMBDA], [KSHORT, LAMBDA], ANTILAMBDA
    ).astype(np.int8)
    # Lambda: the positive daughter is the proton; anti-Lambda: the negative one.
    a_is_proton = ((kind == LAMBDA) & (tracks.charge[a] > 0)) | (
        (kind == ANTILAMBDA) & (tracks.charge[a] < 0)
    )
    b_is_proton = (kind != KSHORT) & ~a_is_proton
    m_a = np.where(a_is_proton, MASS[P], MASS[PI])
    m_b = np.where(b_is_proton, MASS[P], MASS[PI])
    px, py, pz = (
        tracks.px[a] + tracks.px[b],
        tracks.py[a] + tracks.py[b],
        tracks.pz[a] + tracks.pz[b],
    )
    e_a = np.sqrt(tracks.px[a] ** 2 + tracks.py[a] ** 2 + tracks.pz[a] ** 2 + m_a**2)
    e_b = np.sqrt(tracks.px[b] ** 2 + tracks.py[b] ** 2 + tracks.pz[b] ** 2 + m_b**2)
    energy = e_a + e_b
    mass = np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))
    event = tracks.event[a]
    return V0s(
        offsets=offsets_from_counts(np.bincount(event, minlength=len(tracks.offsets) - 1)),
        event=event,
        kind=kind,
        mass=mass,
        px=px,
        py=py,
        pz=pz,
        energy=energy,
        flight_radius=flight,
        track_a=a,
        track_b=b,
    )


def simulate_detector(batch: EventBatch, params: DetectorParams, seed: int) -> RecoEvents:
    """Detector response for a whole batch; deterministic per (seed, event id)."""
    n = len(batch)
    keys = event_keys(batch.event_id, seed)
    parts = final_state(batch, keys)
    for _ in range(2):  # K_S -> pi0 pi0 needs a second round for the pi0s
        parts = decay_unstable(parts)
    track_cols = _make_tracks(parts, params)
    bkg_tracks, bkg_clusters = _beam_background(keys, params)
    cols, track_offsets = _sorted_csr([track_cols, bkg_tracks], n)
    v0_parent = np.asarray(cols.pop("v0_parent"), dtype=np.int64)
    rho = np.asarray(cols.pop("rho"), dtype=np.float64)
    track_keys = np.asarray(cols.pop("key"), dtype=np.uint64)
    tracks = Tracks(offsets=track_offsets, **cols)  # type: ignore[arg-type]
    cols, cluster_offsets = _sorted_csr([_make_photon_clusters(parts, params), bkg_clusters], n)
    clusters = Clusters(offsets=cluster_offsets, **cols)  # type: ignore[arg-type]
    v0s = _make_v0s(tracks, v0_parent, batch.pdg, rho, track_keys, params)
    return RecoEvents(batch.event_id, batch.bkg_type, tracks, clusters, v0s)
