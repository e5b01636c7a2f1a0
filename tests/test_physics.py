"""The physics layer: the one Lorentz boost, the beams from the configuration (and that they
reach the emulator's skims), PDG codes and masses, event shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptive_bkg import backends
from adaptive_bkg.backends import make_backend, register_backend
from adaptive_bkg.backends.emulator.context import SkimContext
from adaptive_bkg.config import BackendConfig, Config, GeneratorConfig, load_config
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.interfaces import SimResult
from adaptive_bkg.model.synthetic import synthetic_events
from adaptive_bkg.physics.beams import Beams, boost
from adaptive_bkg.physics.pdg import PDG, ctau_cm, mass_gev
from adaptive_bkg.physics.shapes import (
    aplanarity,
    event_sums,
    fox_wolfram_r2,
    momentum_tensor,
    sphericity,
    sphericity_axes,
    thrust_about,
    thrust_axis,
)
from adaptive_bkg.stages.build import DefaultStages

NOMINAL = Beams.of(GeneratorConfig())


def random_vectors(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    p = rng.normal(0.0, 2.0, (3, n))
    mass = rng.uniform(0.0, 2.0, n)
    return (np.sqrt((p**2).sum(axis=0) + mass**2), *p)


def test_boost_to_cms_and_back_is_identity() -> None:
    e, px, py, pz = random_vectors(1000, seed=1)
    back = NOMINAL.to_lab(*NOMINAL.to_cms(e, px, py, pz))
    np.testing.assert_allclose(back, (e, px, py, pz), rtol=0, atol=1e-12)
    # Invariant mass is kept, the energy is not (the CMS moves with beta_z ≈ 0.27 in the lab).
    e_cms, qx, qy, qz = NOMINAL.to_cms(e, px, py, pz)
    np.testing.assert_allclose(e_cms**2 - qx**2 - qy**2 - qz**2, e**2 - px**2 - py**2 - pz**2,
                               atol=1e-10)  # fmt: skip
    assert np.abs(e_cms - e).max() > 0.1


def test_boost_of_a_particle_at_rest_and_per_vector_velocities() -> None:
    rng = np.random.default_rng(2)
    beta = rng.uniform(-0.5, 0.5, (3, 200))
    mass = rng.uniform(0.1, 3.0, 200)
    e, px, py, pz = boost(mass, 0.0 * mass, 0.0 * mass, 0.0 * mass, (beta[0], beta[1], beta[2]))
    gamma = 1 / np.sqrt(1 - (beta**2).sum(axis=0))
    np.testing.assert_allclose(e, gamma * mass, rtol=1e-13)
    np.testing.assert_allclose(np.stack([px, py, pz]), gamma * mass * beta, rtol=1e-12)
    # A given gamma (E/m of a parent) gives the same result; beta = 0 changes nothing.
    with_gamma = boost(mass, 0 * mass, 0 * mass, 0 * mass, (beta[0], beta[1], beta[2]), gamma)
    np.testing.assert_allclose(with_gamma, (e, px, py, pz), rtol=1e-13)
    still = boost(1.5, 0.3, -0.2, 0.1, (0.0, 0.0, 0.0))
    np.testing.assert_array_equal(np.asarray(still, dtype=float), [1.5, 0.3, -0.2, 0.1])


def test_upsilon_4s_at_rest_in_the_cms_of_the_nominal_beams() -> None:
    # basf2 Y4S preset: 7.004 GeV e-, 4.002 GeV e+, 83 mrad -> sqrt(s) = 10.5794 GeV.
    assert Beams(e_minus_gev=7.004, e_plus_gev=4.002, crossing_angle_rad=0.083) == NOMINAL
    assert NOMINAL.sqrt_s == pytest.approx(10.5794, abs=2e-4)
    e, px, py, pz = NOMINAL.to_cms(*NOMINAL.total)
    assert float(e) == pytest.approx(NOMINAL.sqrt_s, abs=1e-12)
    np.testing.assert_allclose([px, py, pz], 0.0, atol=1e-12)
    # The two beams are back to back in the CMS, each with sqrt(s)/2.
    k_minus, k_plus = (np.array(k) for k in NOMINAL.four_momenta())
    c_minus, c_plus = np.array(NOMINAL.to_cms(*k_minus)), np.array(NOMINAL.to_cms(*k_plus))
    np.testing.assert_allclose(c_minus[1:], -c_plus[1:], atol=1e-12)
    assert c_minus[0] == pytest.approx(NOMINAL.sqrt_s / 2, abs=1e-9)


def test_generator_beam_energy_reaches_the_emulator_skims() -> None:
    """A changed generator.e_minus_gev changes the CMS frame of the backends built for a run
    (the simulate stage and the label workflow), and so what the skims see."""
    events = synthetic_events(300, seed=5)
    skims = ("tau-generic", "leptonic-untagged")

    def stage_backend(cfg: Config) -> object:
        return DefaultStages(cfg, skims).simulator(0).backend

    nominal_cfg = load_config(None, [])
    hotter_cfg = load_config(None, ["generator.e_minus_gev=8.0"])
    nominal, hotter = stage_backend(nominal_cfg), stage_backend(hotter_cfg)
    assert nominal.beams == NOMINAL  # type: ignore[attr-defined]
    assert hotter.beams == Beams(8.0, 4.002, 0.083)  # type: ignore[attr-defined]
    assert hotter.beams.sqrt_s == pytest.approx(2 * math.sqrt(8.0 * 4.002), rel=1e-3)  # type: ignore[attr-defined]

    reco = nominal.reconstruct(events)  # type: ignore[attr-defined]
    v_nom = SkimContext(reco, nominal.beams).variables  # type: ignore[attr-defined]
    v_hot = SkimContext(reco, hotter.beams).variables  # type: ignore[attr-defined]
    # Same detector response, another CMS: visible energies and lepton momenta move.
    np.testing.assert_array_equal(v_nom.n_tracks, v_hot.n_tracks)
    has = v_nom.e_vis > 1.0
    assert np.abs(v_hot.e_vis - v_nom.e_vis)[has].mean() > 0.05
    assert not np.array_equal(v_nom.lepton_pstar, v_hot.lepton_pstar)
    # make_backend without beams keeps the default (nominal) ones.
    assert make_backend(nominal_cfg.backend, skims).beams == NOMINAL  # type: ignore[attr-defined]


class _RecordingBackend:
    """A stand-in backend that remembers the beams its factory was given."""

    skims = ("a",)

    def __init__(self, beams: Beams | None) -> None:
        self.beams = beams

    def simulate(self, batch: EventBatch) -> SimResult:
        raise NotImplementedError


def test_make_backend_gives_beams_only_to_factories_that_take_them() -> None:
    def with_beams(cfg: BackendConfig, skims: object, beams: Beams | None = None) -> object:
        return _RecordingBackend(beams)

    def without_beams(cfg: BackendConfig, skims: object) -> object:
        return _RecordingBackend(None)

    names = ("physics-test-with-beams", "physics-test-without-beams")
    register_backend(names[0], with_beams)  # type: ignore[arg-type]
    register_backend(names[1], without_beams)  # type: ignore[arg-type]
    try:
        hot = Beams(8.0, 4.002, 0.083)
        built = make_backend(BackendConfig(name=names[0]), None, hot)
        assert built.beams is hot  # type: ignore[attr-defined]
        assert make_backend(BackendConfig(name=names[0])).beams is None  # type: ignore[attr-defined]
        plain = make_backend(BackendConfig(name=names[1]), None, hot)
        assert plain.beams is None  # type: ignore[attr-defined]
    finally:
        for name in names:  # other tests list the registered names
            backends._REGISTRY.pop(name)


# -- PDG ---------------------------------------------------------------------------------------
def test_pdg_codes_equal_the_old_literals() -> None:
    assert (PDG.E_MINUS, PDG.MU_MINUS, PDG.TAU_MINUS, PDG.GAMMA) == (11, 13, 15, 22)
    assert (PDG.PI_PLUS, PDG.PI0, PDG.K_PLUS, PDG.K_S0, PDG.K_L0) == (211, 111, 321, 310, 130)
    assert (PDG.PROTON, PDG.NEUTRON, PDG.LAMBDA) == (2212, 2112, 3122)
    hyperons = (PDG.SIGMA_MINUS, PDG.SIGMA_PLUS, PDG.XI_MINUS, PDG.XI0, PDG.OMEGA_MINUS)
    assert hyperons == (3112, 3222, 3312, 3322, 3334)
    assert (PDG.D0, PDG.D_PLUS, PDG.D_S_PLUS, PDG.D_STAR_PLUS, PDG.D_STAR0) == (
        421, 411, 431, 413, 423
    )  # fmt: skip
    assert (PDG.J_PSI, PDG.PHI, PDG.ETA, PDG.B0, PDG.B_PLUS) == (443, 333, 221, 511, 521)
    assert (PDG.UPSILON_4S, PDG.Z0, PDG.NU_E, PDG.NU_TAU) == (300553, 23, 12, 16)
    assert (PDG.D_QUARK, PDG.U_QUARK, PDG.S_QUARK, PDG.C_QUARK) == (1, 2, 3, 4)


# (code, mass the code used as a literal, its last digit): the table agrees to that digit.
OLD_MASSES_GEV = [
    (PDG.E_MINUS, 0.000511, 1e-6),
    (PDG.MU_MINUS, 0.105658, 1e-6),
    (PDG.PI_PLUS, 0.139570, 1e-6),
    (PDG.K_PLUS, 0.493677, 1e-6),
    (PDG.PROTON, 0.938272, 1e-6),
    (PDG.K_S0, 0.497611, 1e-6),
    (PDG.LAMBDA, 1.115683, 1e-6),
    (PDG.PI0, 0.134977, 1e-6),
    (PDG.NEUTRON, 0.939565, 1e-6),
    (PDG.D0, 1.86484, 1e-5),
    (PDG.D_PLUS, 1.86966, 1e-5),
    (PDG.ETA, 0.547862, 1e-6),
]


@pytest.mark.parametrize(("code", "old", "digit"), OLD_MASSES_GEV)
def test_pdg_masses_equal_the_old_literals(code: int, old: float, digit: float) -> None:
    assert abs(mass_gev(code) - old) <= digit / 2
    assert mass_gev(-code) == mass_gev(code)


def test_pinned_values_are_the_old_ones_exactly() -> None:
    # Kept so that generated events and skim decisions stay bit-identical (see physics.pdg).
    assert mass_gev(PDG.E_MINUS) == 0.51099895e-3
    assert mass_gev(PDG.B0) == 5.27966
    assert ctau_cm(PDG.LAMBDA) == 7.89
    assert ctau_cm(PDG.K_S0) == pytest.approx(2.6844, abs=1e-4)


# -- event shapes ------------------------------------------------------------------------------
def test_event_shapes_of_known_configurations() -> None:
    """Event 0: two back-to-back tracks (R2 = thrust = 1, sphericity 0). Event 1: six
    particles along ±x, ±y, ±z (R2 = 0, sphericity 1, aplanarity 0.5, thrust 1/3). Event 2:
    empty (all zero)."""
    event = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    px = np.array([1.0, -1.0, 2.0, -2.0, 0.0, 0.0, 0.0, 0.0])
    py = np.array([0.0, 0.0, 0.0, 0.0, 2.0, -2.0, 0.0, 0.0])
    pz = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, -2.0])
    p = np.sqrt(px**2 + py**2 + pz**2)
    n = 3
    tensor = momentum_tensor(event, px, py, pz, p, n)
    p_sum = event_sums(event, p, n)
    np.testing.assert_allclose(fox_wolfram_r2(tensor, p_sum), [1.0, 0.0, 0.0], atol=1e-12)
    values, vectors = sphericity_axes(tensor, p_sum)
    np.testing.assert_allclose(sphericity(values), [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(aplanarity(values), [0.0, 0.5, 0.0], atol=1e-12)
    axis = thrust_axis(event, px, py, pz, tensor)
    np.testing.assert_allclose(np.abs(axis[0]), [1.0, 0.0, 0.0], atol=1e-9)
    thrust = thrust_about(event, px, py, pz, axis, p_sum)
    np.testing.assert_allclose(thrust, [1.0, 1 / 3, 0.0], atol=1e-9)
    # About the sphericity axis of event 0 (its leading eigenvector) the thrust is 1 too.
    np.testing.assert_allclose(thrust_about(event, px, py, pz, vectors[:, :, 2], p_sum)[0], 1.0)


def test_thrust_axis_is_a_local_maximum_above_the_sphericity_axis() -> None:
    """On random events the iterated axis gives at least the thrust about the principal axis it
    starts from, and no nearby direction (within 0.05 rad) gives more: a local maximum of
    sum |p·n| (the iteration climbs to the nearest one, not necessarily the global one)."""
    rng = np.random.default_rng(3)
    n, per_event = 20, 8
    event = np.repeat(np.arange(n), per_event)
    px, py, pz = rng.normal(size=(3, n * per_event))
    p = np.sqrt(px**2 + py**2 + pz**2)
    tensor = momentum_tensor(event, px, py, pz, p, n)
    p_sum = event_sums(event, p, n)
    axis = thrust_axis(event, px, py, pz, tensor)
    np.testing.assert_allclose(np.linalg.norm(axis, axis=1), 1.0, atol=1e-12)
    thrust = thrust_about(event, px, py, pz, axis, p_sum)
    start = np.linalg.eigh(tensor)[1][:, :, 2]
    assert np.all(thrust >= thrust_about(event, px, py, pz, start, p_sum) - 1e-12)
    for _ in range(200):
        nearby = axis + 0.05 * rng.normal(size=(n, 3)) / math.sqrt(3)
        nearby /= np.linalg.norm(nearby, axis=1, keepdims=True)
        assert np.all(thrust_about(event, px, py, pz, nearby, p_sum) <= thrust + 1e-12)
    assert np.all((thrust >= 0.5) & (thrust <= 1.0))
