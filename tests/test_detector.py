"""Emulated detector: acceptance, thresholds, resolution, PID, V0s, conditions, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from adaptive_bkg.backends.emulator import EmulatorBackend
from adaptive_bkg.backends.emulator.conditions import (
    CONDITIONS,
    MU,
    PI,
    SPECIES_MASS_GEV,
    DetectorParams,
    K,
    detector_params,
)
from adaptive_bkg.backends.emulator.detector import KSHORT, LAMBDA, simulate_detector
from adaptive_bkg.backends.emulator.randomness import normal, uniform
from adaptive_bkg.config import BackendConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import EventBatch, make_event_ids

MASS = {11: 0.000511, 13: 0.105658, 211: 0.13957, 321: 0.493677, 2212: 0.938272, 22: 0.0}
MASS.update({310: 0.497611, 3122: 1.115683, 111: 0.134977, 12: 0.0})
NOMINAL = detector_params("nominal")
# Perfect efficiency so acceptance tests test only the cut under test.
EFFICIENT = replace(NOMINAL, track_eff_high_pt=1.0, track_eff_low_pt=1.0, photon_efficiency=1.0)


def single_particle_batch(
    pdg: int,
    p: float,
    theta_deg: float,
    n: int = 1,
    vertex: tuple[float, float, float] = (0.0, 0.0, 0.0),
    phi: float = 0.3,
) -> EventBatch:
    """n events, each holding one particle of momentum p at polar angle theta."""
    theta = np.radians(theta_deg)
    px, py, pz = p * np.sin(theta) * np.cos(phi), p * np.sin(theta) * np.sin(phi), p * np.cos(theta)
    energy = np.sqrt(p**2 + MASS[abs(pdg)] ** 2)
    f32 = np.float32
    return EventBatch(
        event_id=make_event_ids(0, 0, 0, n),
        bkg_type=np.zeros(n, np.int8),
        seed=np.ones(n, np.int64),
        offsets=np.arange(n + 1, dtype=np.int64),
        pdg=np.full(n, pdg, np.int32),
        mother=np.full(n, -1, np.int32),
        E=np.full(n, energy, f32),
        px=np.full(n, px, f32),
        py=np.full(n, py, f32),
        pz=np.full(n, pz, f32),
        x=np.full(n, vertex[0], f32),
        y=np.full(n, vertex[1], f32),
        z=np.full(n, vertex[2], f32),
        t=np.zeros(n, f32),
    )


def n_tracks(batch: EventBatch, params: DetectorParams = EFFICIENT) -> int:
    return len(simulate_detector(batch, params, seed=3).tracks.charge)


def n_clusters(batch: EventBatch, params: DetectorParams = EFFICIENT) -> int:
    return len(simulate_detector(batch, params, seed=3).clusters.energy)


# ---------------------------------------------------------------------------------------------
def test_cdc_polar_acceptance() -> None:
    assert n_tracks(single_particle_batch(211, 1.0, 90.0)) == 1
    assert n_tracks(single_particle_batch(211, 1.0, 18.0)) == 1
    assert n_tracks(single_particle_batch(211, 1.0, 10.0)) == 0  # forward of 17°
    assert n_tracks(single_particle_batch(211, 1.0, 155.0)) == 0  # backward of 150°


def test_pt_threshold() -> None:
    assert n_tracks(single_particle_batch(211, 0.12, 90.0)) == 1
    assert n_tracks(single_particle_batch(211, 0.08, 90.0)) == 0
    # 0.3 GeV at 20°: pT = 0.10 GeV just above, at 19°: 0.098 just below.
    assert n_tracks(single_particle_batch(211, 0.3, 20.0)) == 1
    assert n_tracks(single_particle_batch(211, 0.3, 19.0)) == 0


def test_production_radius_limit() -> None:
    assert n_tracks(single_particle_batch(211, 1.0, 90.0, vertex=(5.0, 0.0, 0.0))) == 1
    assert n_tracks(single_particle_batch(211, 1.0, 90.0, vertex=(60.0, 0.0, 0.0))) == 0


def test_neutral_and_invisible_particles_make_no_tracks() -> None:
    assert n_tracks(single_particle_batch(22, 1.0, 90.0)) == 0
    assert n_tracks(single_particle_batch(12, 1.0, 90.0)) == 0
    assert n_clusters(single_particle_batch(12, 1.0, 90.0)) == 0


def test_ecl_acceptance_gaps_and_threshold() -> None:
    assert n_clusters(single_particle_batch(22, 1.0, 90.0)) == 1
    assert n_clusters(single_particle_batch(22, 1.0, 20.0)) == 1  # forward endcap
    assert n_clusters(single_particle_batch(22, 1.0, 31.8)) == 0  # forward gap 31.4–32.2°
    assert n_clusters(single_particle_batch(22, 1.0, 129.7)) == 0  # backward gap
    assert n_clusters(single_particle_batch(22, 1.0, 10.0)) == 0  # outside 12.4°
    assert n_clusters(single_particle_batch(22, 0.03, 90.0)) == 0  # below 50 MeV


def test_track_efficiency_matches_parameter() -> None:
    batch = single_particle_batch(211, 1.0, 90.0, n=20_000)
    found = n_tracks(batch, NOMINAL) / len(batch)
    # binomial sigma = sqrt(0.97*0.03/20000) = 0.0012; allow 5 sigma.
    assert abs(found - NOMINAL.track_eff_high_pt) < 0.006


def test_momentum_resolution_pull() -> None:
    pt_true = 2.0
    batch = single_particle_batch(211, pt_true, 90.0, n=20_000)
    tracks = simulate_detector(batch, EFFICIENT, seed=5).tracks
    pt = np.hypot(tracks.px, tracks.py)
    beta = pt_true / np.hypot(pt_true, SPECIES_MASS_GEV[PI])
    sigma = pt_true * np.hypot(
        EFFICIENT.pt_resolution_a * pt_true, EFFICIENT.pt_resolution_b / beta
    )
    pull = (pt - pt_true) / sigma
    # Width of a unit Gaussian from 20k samples has error 1/sqrt(2N) = 0.005; 4% is ~8 sigma
    # and still catches a factor-of-two mistake in either coefficient.
    assert abs(pull.std() - 1.0) < 0.04
    assert abs(pull.mean()) < 0.05  # unbiased: error of the mean 0.007


@pytest.mark.parametrize(
    ("pdg", "p", "species", "bin_name"),
    [(211, 1.5, PI, "pid_high_p"), (321, 0.5, K, "pid_low_p"), (13, 1.5, MU, "pid_high_p")],
)
def test_pid_confusion_rates(pdg: int, p: float, species: int, bin_name: str) -> None:
    n = 30_000
    tracks = simulate_detector(single_particle_batch(pdg, p, 90.0, n=n), EFFICIENT, seed=9).tracks
    observed = np.bincount(tracks.pid, minlength=5) / len(tracks.pid)
    expected = np.asarray(getattr(EFFICIENT, bin_name)[species])
    # 5 binomial sigma per hypothesis (plus a floor for rates that are exactly zero).
    tolerance = 5 * np.sqrt(expected * (1 - expected) / len(tracks.pid)) + 1e-4
    assert np.all(np.abs(observed - expected) < tolerance), (observed, expected)


def test_muon_id_needs_momentum_above_0p7() -> None:
    tracks = simulate_detector(single_particle_batch(13, 0.5, 90.0, n=5000), EFFICIENT, 1).tracks
    assert not np.any(tracks.pid == MU)


def test_kshort_decay_and_v0_reconstruction() -> None:
    n = 5000
    reco = simulate_detector(single_particle_batch(310, 1.0, 90.0, n=n), EFFICIENT, seed=2)
    v0 = reco.v0s
    assert np.all(v0.kind == KSHORT)
    # Only K_S -> pi+ pi- (69.2 %) can make a V0, times the fit efficiency 0.95 = 0.657; both
    # daughters must also pass pT > 0.1 GeV, the acceptance and the 40 cm radius (~90 %).
    fraction = len(v0.mass) / n
    assert 0.55 < fraction < 0.66
    in_window = (v0.mass > 0.468) & (v0.mass < 0.528)
    assert in_window.mean() > 0.99
    assert abs(np.median(v0.mass) - 0.4976) < 0.002
    # Momentum and angle resolution give a Belle II-like K_S mass width of 1–3 MeV.
    assert 0.001 < np.std(v0.mass[in_window]) < 0.003
    # Flight radius follows the exponential decay: mean beta*gamma*c*tau = 1/0.4976 * 2.68 cm.
    assert abs(v0.flight_radius.mean() - 2.6844 / 0.497611) < 0.4


def test_kshort_decayed_by_generator_also_makes_a_v0() -> None:
    """A K_S whose pi+ pi- daughters are in the record is found through the mother index."""
    ks_p = np.array([0.0, 1.0, 0.0])
    e_ks = np.hypot(1.0, 0.497611)
    # Symmetric decay in the K_S rest frame along x, then boosted along y.
    q = np.sqrt(0.497611**2 / 4 - 0.13957**2)
    gamma, beta_gamma = e_ks / 0.497611, 1.0 / 0.497611
    e_pi = np.hypot(q, 0.13957)
    daughters = [(q, gamma * 0 + beta_gamma * e_pi), (-q, beta_gamma * e_pi)]
    rows = [(310, e_ks, *ks_p, 0.0, 0.0, 0.0, -1)]
    for pdg, (px, py) in zip((211, -211), daughters, strict=True):
        rows.append(
            (pdg, float(np.sqrt(px**2 + py**2 + 0.13957**2)), px, py, 0.0, 0.0, 3.0, 0.0, 0)
        )
    batch = EventBatch(
        event_id=make_event_ids(0, 0, 0, 1),
        bkg_type=np.zeros(1, np.int8),
        seed=np.ones(1, np.int64),
        offsets=np.array([0, 3]),
        pdg=np.array([r[0] for r in rows], np.int32),
        mother=np.array([r[-1] for r in rows], np.int32),
        E=np.array([r[1] for r in rows], np.float32),
        px=np.array([r[2] for r in rows], np.float32),
        py=np.array([r[3] for r in rows], np.float32),
        pz=np.array([r[4] for r in rows], np.float32),
        x=np.array([r[5] for r in rows], np.float32),
        y=np.array([r[6] for r in rows], np.float32),
        z=np.array([r[7] for r in rows], np.float32),
        t=np.zeros(3, np.float32),
    )
    perfect = replace(EFFICIENT, v0_fit_efficiency=1.0)
    v0 = simulate_detector(batch, perfect, seed=1).v0s
    assert len(v0.mass) == 1
    assert abs(v0.mass[0] - 0.4976) < 0.005
    assert abs(v0.flight_radius[0] - 3.0) < 1e-4


def test_lambda_reconstruction_mass() -> None:
    reco = simulate_detector(single_particle_batch(3122, 1.5, 90.0, n=4000), EFFICIENT, seed=4)
    v0 = reco.v0s
    assert len(v0.mass) > 0.3 * 4000  # 63.9 % p pi-, proton and pion both found mostly
    assert np.all(v0.kind == LAMBDA)
    assert abs(np.median(v0.mass) - 1.1157) < 0.002


def test_undecayed_pi0_gives_two_photons_with_pi0_mass() -> None:
    reco = simulate_detector(single_particle_batch(111, 1.0, 90.0, n=2000), EFFICIENT, seed=8)
    c = reco.clusters
    two = np.flatnonzero(np.diff(c.offsets) == 2)
    assert len(two) > 0.8 * 2000  # both photons above 50 MeV and in the barrel mostly
    i, j = c.offsets[two], c.offsets[two] + 1
    e = c.energy[i] + c.energy[j]
    p2 = (c.px[i] + c.px[j]) ** 2 + (c.py[i] + c.py[j]) ** 2 + (c.pz[i] + c.pz[j]) ** 2
    mass = np.sqrt(np.maximum(e**2 - p2, 0))
    assert abs(np.median(mass) - 0.135) < 0.005


def test_degraded_conditions_lower_track_efficiency() -> None:
    batch = single_particle_batch(211, 1.0, 90.0, n=20_000)
    nominal = n_tracks(batch, CONDITIONS["nominal"]) / len(batch)
    degraded = n_tracks(batch, CONDITIONS["degraded"]) / len(batch)
    # 0.97 vs 0.88: a 9-point drop against a binomial error of ~0.002.
    assert nominal - degraded > 0.07


def test_high_background_overlays_tracks_and_clusters() -> None:
    batch = single_particle_batch(211, 1.0, 90.0, n=5000)
    quiet = simulate_detector(batch, CONDITIONS["nominal"], seed=1)
    busy = simulate_detector(batch, CONDITIONS["high-background"], seed=1)
    assert len(busy.tracks.charge) > len(quiet.tracks.charge) + 0.5 * 5000
    assert busy.clusters.from_beam_background.sum() > 0.5 * 5000
    assert not quiet.clusters.from_beam_background.any()
    # Beam-background tracks mostly miss the IP, so they seldom count as good tracks.
    bkg = busy.tracks.true_species < 0
    good = (np.abs(busy.tracks.d0) < 0.5) & (np.abs(busy.tracks.z0) < 2.0)
    assert good[bkg].mean() < 0.2


def test_unknown_conditions_is_a_user_error() -> None:
    with pytest.raises(UserError, match="allowed: nominal, high-background, degraded"):
        detector_params("foggy")
    with pytest.raises(UserError, match="foggy"):
        EmulatorBackend(BackendConfig(conditions="foggy"))


def test_pid_matrices_are_normalised_and_validated() -> None:
    for params in CONDITIONS.values():
        for matrix in (params.pid_low_p, params.pid_high_p):
            np.testing.assert_allclose(np.sum(matrix, axis=1), 1.0, atol=1e-9)
    broken = tuple((0.5, 0.5, 0.5, 0.0, 0.0) for _ in range(5))
    with pytest.raises(ValueError, match="PID matrices"):
        DetectorParams(pid_high_p=broken)
    with pytest.raises(ValueError, match="track_eff_high_pt"):
        DetectorParams(track_eff_high_pt=1.2)


def test_counter_random_numbers() -> None:
    keys = np.arange(100_000, dtype=np.uint64)
    u = uniform(keys, 1)
    assert u.min() > 0.0
    assert u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005  # error of the mean 0.0009
    assert abs(np.corrcoef(u, uniform(keys, 2))[0, 1]) < 0.02  # streams independent
    z = normal(keys, 3)
    assert abs(z.std() - 1.0) < 0.01
    np.testing.assert_array_equal(u[5:10], uniform(keys[5:10], 1))  # pure function of the key


def test_reconstruction_is_deterministic_per_event_id(small_events: EventBatch) -> None:
    """The same event gets the same tracks whatever batch it is simulated in."""
    whole = simulate_detector(small_events, NOMINAL, seed=11)
    order = np.random.default_rng(0).permutation(len(small_events))[:300]
    part = simulate_detector(small_events.take(order), NOMINAL, seed=11)
    for k, i in enumerate(order[:50]):
        a = slice(whole.tracks.offsets[i], whole.tracks.offsets[i + 1])
        b = slice(part.tracks.offsets[k], part.tracks.offsets[k + 1])
        np.testing.assert_array_equal(whole.tracks.px[a], part.tracks.px[b])
        np.testing.assert_array_equal(whole.tracks.pid[a], part.tracks.pid[b])
    other_seed = simulate_detector(small_events, NOMINAL, seed=12)
    assert not np.array_equal(other_seed.tracks.px[:100], whole.tracks.px[:100])
