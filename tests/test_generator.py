"""Pythia generator: physics content, conservation laws, units, determinism, mixture, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_bkg.config import MAX_SEED, GeneratorConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import (
    EventBatch,
    decode_event_ids,
    physics_hashes,
)
from adaptive_bkg.generators.pythia import (
    PYTHIA_MAX_SEED,
    PythiaGenerator,
    beam_four_momentum,
    generate_events,
    pythia_seed,
    stream_seed,
)
from adaptive_bkg.generators.truth import (
    charged_multiplicity,
    final_state_mask,
    final_state_momentum_sum,
    pdg_charge,
    per_event_sum,
)
from adaptive_bkg.generators.upsilon import X_D
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.physics.processes import BKG_TYPES, CROSS_SECTIONS_NB

C_CM_PER_NS = 29.9792458
NO_SPREAD = GeneratorConfig(energy_spread=False)
SAMPLE_SIZE = {"mixed": 2000, "taupair": 500}  # others: 400 (see the tolerances below)


@pytest.fixture(scope="module")
def by_type() -> dict[str, EventBatch]:
    """One sample per type without beam energy spread, so every event has the nominal beams."""
    return {
        t: generate_events(NO_SPREAD, SAMPLE_SIZE.get(t, 400), types=[t], worker=t_index)
        for t_index, t in enumerate(BKG_TYPES)
    }


def _global_mother(batch: EventBatch) -> np.ndarray:
    start = np.repeat(batch.offsets[:-1], batch.n_particles)
    return np.where(batch.mother >= 0, start + batch.mother, -1)


def _count(batch: EventBatch, mask: np.ndarray) -> np.ndarray:
    return np.bincount(batch.particle_event_index[mask], minlength=len(batch))


# --- conservation laws ------------------------------------------------------------------------
@pytest.mark.parametrize("bkg_type", BKG_TYPES)
def test_final_state_sums_to_beams_and_is_neutral(by_type: dict[str, EventBatch], bkg_type: str):
    batch = by_type[bkg_type]
    beams = beam_four_momentum(NO_SPREAD)
    # 1e-3 GeV: float32 momenta (7 digits on ~40 particles) sum to ~1e-6 GeV; a lost or double-
    # counted particle (a photon, a neutrino) would show up at >= 1e-3 GeV.
    deviation = np.abs(final_state_momentum_sum(batch) - beams).max(axis=1)
    assert deviation.max() < 1e-3, f"worst event off by {deviation.max():.3g} GeV"
    charge = per_event_sum(batch, pdg_charge(batch.pdg) * final_state_mask(batch))
    assert np.all(np.abs(charge) < 1e-9)


def test_beams_carry_crossing_angle_and_boost():
    total = beam_four_momentum(NO_SPREAD)
    # basf2 Y4S preset: px = (7.004 + 4.002) sin(41.5 mrad) = 0.4566, pz ≈ 3.0, √s = 10.5794.
    assert total[1] == pytest.approx(0.4566, abs=1e-4)
    assert total[3] == pytest.approx(2.9994, abs=1e-3)
    assert Beams.of(NO_SPREAD).sqrt_s == pytest.approx(10.5794, abs=2e-4)


@pytest.mark.parametrize("bkg_type", ["charged", "uubar"])
def test_energy_spread_smears_sqrt_s(bkg_type: str):
    batch = generate_events(GeneratorConfig(), 300, types=[bkg_type])
    e, px, py, pz = final_state_momentum_sum(batch).T
    w = np.sqrt(e**2 - px**2 - py**2 - pz**2)
    # σ_W/W = ½ sqrt((5.13/7004)² + (2.375/4002)²) -> σ_W = 4.99 MeV. The sample std of 300
    # Gaussian values has a 4 % relative error; 20 % covers that (5σ) plus the small difference
    # between Pythia's p_z spread (continuum) and our energy spread (B pairs).
    assert np.std(w) == pytest.approx(4.99e-3, rel=0.2)
    assert np.mean(w) == pytest.approx(10.5794, abs=2e-3)


# --- event content ----------------------------------------------------------------------------
def test_b_mesons_only_in_b_samples(by_type: dict[str, EventBatch]):
    charged, mixed = by_type["charged"], by_type["mixed"]
    assert np.all(_count(charged, charged.pdg == 521) == 1)
    assert np.all(_count(charged, charged.pdg == -521) == 1)
    assert np.all(_count(charged, charged.pdg == 300553) == 1)
    assert np.all(_count(mixed, np.abs(mixed.pdg) == 511) >= 2)
    assert np.all(_count(mixed, np.abs(mixed.pdg) == 521) == 0)
    for name in ("uubar", "ddbar", "ssbar", "ccbar", "taupair"):
        batch = by_type[name]
        b_like = np.isin(np.abs(batch.pdg), [511, 521, 300553])
        assert not b_like.any(), f"B meson or Υ(4S) in {name}"


def test_tau_pairs(by_type: dict[str, EventBatch]):
    batch = by_type["taupair"]
    assert np.all(_count(batch, batch.pdg == 15) == 1)
    assert np.all(_count(batch, batch.pdg == -15) == 1)
    for name in ("uubar", "charged"):
        other = by_type[name]
        # Hadronic events hold taus only from D_s (5 %) or B (2.4 %) decays: a few percent.
        assert np.mean(_count(other, np.abs(other.pdg) == 15) > 0) < 0.1, name


def test_continuum_flavour(by_type: dict[str, EventBatch]):
    def has(batch: EventBatch, codes: list[int]) -> float:
        return float(np.mean(_count(batch, np.isin(np.abs(batch.pdg), codes)) > 0))

    charm = [411, 421, 431, 4122]  # D+, D0, D_s, Λ_c: in every ccbar event, rare in light
    assert has(by_type["ccbar"], charm) > 0.95
    assert has(by_type["uubar"], charm) < 0.05


def test_only_physical_particles_with_valid_mothers(by_type: dict[str, EventBatch]):
    for name, batch in by_type.items():
        abs_pdg = np.abs(batch.pdg)
        parton_or_string = (
            (abs_pdg <= 8) | (abs_pdg == 21) | (abs_pdg == 23) | ((abs_pdg >= 81) & (abs_pdg <= 99))
        )
        assert not parton_or_string.any(), f"{name}: parton/string/γ*Z kept"
        assert np.all(batch.mother >= -1)
        assert np.all(batch.mother < np.repeat(batch.n_particles, batch.n_particles))
        position = np.arange(len(batch.pdg)) - np.repeat(batch.offsets[:-1], batch.n_particles)
        assert np.all(batch.mother != position), f"{name}: particle is its own mother"
        # Stable particles never have daughters (no photon conversions at generator level).
        mothers = _global_mother(batch)
        stable = np.isin(abs_pdg, [11, 13, 22, 211, 321, 2212, 130, 310])
        assert not stable[mothers[mothers >= 0]].any(), f"{name}: a stable particle decays"


def test_coherent_b0_mixing(by_type: dict[str, EventBatch]):
    batch = by_type["mixed"]
    mothers = _global_mother(batch)
    neutral_b = np.abs(batch.pdg) == 511
    oscillated = np.zeros(len(batch.pdg), np.bool_)
    oscillated[mothers[neutral_b & (mothers >= 0)]] = True
    oscillated &= neutral_b  # a B0 whose daughter is a B0bar: recorded as B0 -> B0bar
    decaying = neutral_b & ~oscillated
    assert np.all(_count(batch, decaying) == 2)
    flavour_sum = np.bincount(
        batch.particle_event_index[decaying], np.sign(batch.pdg[decaying]), len(batch)
    )
    same_sign = float(np.mean(np.abs(flavour_sum) == 2))
    chi_d = X_D**2 / (2 * (1 + X_D**2))  # 0.186 for the coherent C = -1 pair
    sigma = np.sqrt(chi_d * (1 - chi_d) / len(batch))
    # 3σ binomial band around χ_d; incoherent mixing of each B would give 2χ(1-χ) = 0.30.
    assert abs(same_sign - chi_d) < 3 * sigma, f"same-sign fraction {same_sign:.3f}"
    assert np.mean(_count(batch, oscillated)) == pytest.approx(same_sign)
    charged = by_type["charged"]
    charged_b = np.abs(charged.pdg) == 521
    assert not charged_b[_global_mother(charged)[charged_b & (_global_mother(charged) >= 0)]].any()


def test_b_angular_distribution_is_sin2(by_type: dict[str, EventBatch]):
    """e+e- -> Υ(4S) -> B Bbar: dN/dcosθ ∝ sin²θ about the e- beam in the Υ(4S) frame."""
    batch = by_type["mixed"]
    mothers = _global_mother(batch)
    is_upsilon = batch.pdg == 300553
    first_b = (mothers >= 0) & is_upsilon[np.maximum(mothers, 0)] & (batch.pdg == 511)
    assert np.all(_count(batch, first_b) == 1)
    up = np.stack([getattr(batch, f)[is_upsilon] for f in ("E", "px", "py", "pz")], 1)
    b = np.stack([getattr(batch, f)[first_b] for f in ("E", "px", "py", "pz")], 1)
    e_minus = np.array(Beams.of(NO_SPREAD).four_momenta()[0])

    def to_rest(p: np.ndarray) -> np.ndarray:
        beta = up[:, 1:] / up[:, :1]
        gamma = 1 / np.sqrt(1 - (beta**2).sum(1, keepdims=True))
        bp = (beta * p[..., 1:]).sum(-1, keepdims=True)
        b2 = (beta**2).sum(1, keepdims=True)
        return p[..., 1:] + ((gamma - 1) * bp / b2 - gamma * p[..., :1]) * beta

    axis = to_rest(np.broadcast_to(e_minus, up.shape).astype(np.float64))
    direction = to_rest(b.astype(np.float64))
    cos = (
        (axis * direction).sum(1) / np.linalg.norm(axis, axis=1) / np.linalg.norm(direction, axis=1)
    )
    # <cos²θ> = 1/5 for sin²θ (1/3 isotropic); std of cos²θ is 0.214, so 3σ of the mean of
    # 2000 events is 0.015.
    assert np.mean(cos**2) == pytest.approx(0.2, abs=0.015)


# --- units ------------------------------------------------------------------------------------
def test_vertices_in_cm_and_ns(by_type: dict[str, EventBatch]):
    batch = by_type["charged"]
    mothers = _global_mother(batch)
    from_b = (mothers >= 0) & (np.abs(batch.pdg[np.maximum(mothers, 0)]) == 521)
    parent = mothers[from_b]
    _, first = np.unique(parent, return_index=True)  # one daughter per B
    daughter = np.flatnonzero(from_b)[first]
    parent = parent[first]
    dt = (batch.t[daughter] - batch.t[parent]).astype(np.float64)
    velocity = (
        np.stack([batch.px[parent], batch.py[parent], batch.pz[parent]], 1) / batch.E[parent, None]
    )
    step = np.stack(
        [batch.x[daughter] - batch.x[parent], batch.y[daughter] - batch.y[parent],
         batch.z[daughter] - batch.z[parent]], 1
    )  # fmt: skip
    # Displacement = velocity · c · Δt ties cm to ns (float32 vertices: 1e-6 cm tolerance).
    np.testing.assert_allclose(step, velocity * C_CM_PER_NS * dt[:, None], atol=1e-6)
    # Mean proper decay length of B+ (cτ = 0.0491 cm); 400 exponential draws: 5 % error, 4σ.
    mass = np.sqrt(
        batch.E[parent].astype(np.float64) ** 2
        - (np.stack([batch.px[parent], batch.py[parent], batch.pz[parent]], 1) ** 2).sum(1)
    )
    ctau = C_CM_PER_NS * dt * mass / batch.E[parent]
    assert np.mean(ctau) == pytest.approx(0.0491, rel=0.2)


# --- multiplicities ---------------------------------------------------------------------------
def test_charged_multiplicity_bands(by_type: dict[str, EventBatch]):
    mean4pi = {t: float(charged_multiplicity(b, True).mean()) for t, b in by_type.items()}
    # BB̄: ARGUS 10.81 ± 0.23 and CLEO 10.71 (4π, K_S/Λ daughters counted). Pythia's generic B
    # decay tables give ~10.3 (B+B-) and ~10.8 (B0B̄0); ±10 % of ARGUS covers that model
    # difference; the statistical error of 400/2000 events is < 0.15.
    for name in ("charged", "mixed"):
        assert 9.7 < mean4pi[name] < 11.9, f"{name}: {mean4pi[name]:.2f}"
    # Continuum: ARGUS 8.35 ± 0.20 (udsc at 10.47 GeV); Pythia with the Belle II settings gives
    # 7.61 for udsc (DESIGN §3), light flavours ~7.2 and charm ~8.1 (charm decays add tracks).
    # Bands: light 6.6-8.0 and charm 7.4-8.9, i.e. Pythia's value ± ~8 % (stat. error 0.15).
    for name in ("uubar", "ddbar", "ssbar"):
        assert 6.6 < mean4pi[name] < 8.0, f"{name}: {mean4pi[name]:.2f}"
    assert 7.4 < mean4pi["ccbar"] < 8.9, f"ccbar: {mean4pi['ccbar']:.2f}"
    weights = {t: CROSS_SECTIONS_NB[t] for t in ("uubar", "ddbar", "ssbar", "ccbar")}
    udsc = sum(mean4pi[t] * w for t, w in weights.items()) / sum(weights.values())
    assert 7.1 < udsc < 8.35, f"udsc: {udsc:.2f}"
    # τ pairs: topological branching fractions (PDG: 85.2 % 1-prong, 14.6 % 3-prong, 0.1 %
    # 5-prong) give 2 × 1.294 = 2.59 stable charged tracks; ±0.15 is 4σ for 500 events.
    stable_tau = float(charged_multiplicity(by_type["taupair"]).mean())
    assert stable_tau == pytest.approx(2.59, abs=0.15)
    for name, batch in by_type.items():
        stable = charged_multiplicity(batch)
        assert np.all(stable <= charged_multiplicity(batch, True)), name


# --- determinism, seeds, ids ------------------------------------------------------------------
# Three types cover the three code paths (LHA B pairs, γ*/Z -> q qbar, -> τ τ) at 3/7 of the
# Pythia initialisation cost of the full mixture.
THREE_TYPES = ("mixed", "ccbar", "taupair")


def test_same_seed_is_bit_identical_and_batching_invariant():
    cfg = GeneratorConfig(seed=5, types=THREE_TYPES)
    one = PythiaGenerator(cfg).next_batch(60)
    generator = PythiaGenerator(cfg)
    two = EventBatch.concat([generator.next_batch(25), generator.next_batch(35)])
    assert one.equals(two)
    assert len(np.unique(one.bkg_type)) == 3  # the mixture really interleaves the types


def test_different_seeds_and_workers_differ():
    cfg5 = GeneratorConfig(seed=5, types=THREE_TYPES)
    base = PythiaGenerator(cfg5, worker=0).next_batch(40)
    other_seed = PythiaGenerator(cfg5.model_copy(update={"seed": 6}), worker=0).next_batch(40)
    other_worker = PythiaGenerator(cfg5, worker=1).next_batch(40)
    assert not base.equals(other_seed)
    assert not base.equals(other_worker)
    assert not np.array_equal(base.E[:20], other_worker.E[:20])
    assert np.all(base.seed == stream_seed(5, 0, 0, 0))
    assert np.all(other_worker.seed == stream_seed(5, 0, 1, 0))
    ids = np.concatenate([base.event_id, other_worker.event_id])
    assert len(np.unique(ids)) == len(ids)
    run, worker, counter = decode_event_ids(other_worker.event_id)
    assert np.all(worker == 1)
    assert np.all(run == 0)
    np.testing.assert_array_equal(counter, np.arange(40))


def test_event_ids_continue_across_batches_and_runs():
    generator = PythiaGenerator(GeneratorConfig(types=["uubar"]), worker=3, run=7)
    first, second = generator.next_batch(10), generator.next_batch(5)
    run, worker, counter = decode_event_ids(np.concatenate([first.event_id, second.event_id]))
    assert np.all(run == 7)
    assert np.all(worker == 3)
    np.testing.assert_array_equal(counter, np.arange(15))


def test_pythia_seeds_are_distinct_and_in_range():
    streams = [
        stream_seed(s, r, w, i)
        for s in (0, 1, 2, MAX_SEED)
        for r in (0, 1, (1 << 20) - 1)
        for w in (0, 1, 4095)
        for i in (0, 1, 7)
    ]
    assert len(set(streams)) == len(streams)
    assert min(streams) >= 0
    assert max(streams) <= MAX_SEED
    seeds = [pythia_seed(stream, t) for stream in streams for t in BKG_TYPES]
    assert len(set(seeds)) == len(seeds)  # 756 seeds: a collision has probability 3e-4
    assert min(seeds) >= 1
    assert max(seeds) <= PYTHIA_MAX_SEED
    with pytest.raises(UserError, match="generator seed"):
        stream_seed(MAX_SEED + 1, 0, 0, 0)
    with pytest.raises(UserError, match=r"worker number 1 outside 0\.\.0"):
        PythiaGenerator(GeneratorConfig(seed=1), worker=1, incarnation=1, n_workers=1)
    with pytest.raises(UserError, match="restarted 4096 times"):
        PythiaGenerator(GeneratorConfig(seed=1), worker=0, incarnation=4096, n_workers=1)


def test_run_numbers_give_disjoint_physics():
    """Physics never repeats unless asked (issue 10): one seed with two run numbers, or a
    restarted worker (new incarnation), gives new events; equal settings repeat bit for bit;
    no explicit seed gives a fresh one."""
    cfg = GeneratorConfig(seed=1, types=THREE_TYPES)

    def hashes(**kw: int) -> set[int]:
        batch = PythiaGenerator(cfg, **kw).next_batch(60)
        return set(physics_hashes(batch).tolist())

    run0 = hashes(run=0)
    assert len(run0) == 60
    assert run0.isdisjoint(hashes(run=1))
    assert run0.isdisjoint(hashes(run=0, incarnation=1, n_workers=2))
    assert run0 == hashes(run=0)  # explicit equal settings: bit-for-bit repeat
    fresh = GeneratorConfig(types=THREE_TYPES)  # seed null: drawn from OS entropy
    assert PythiaGenerator(fresh).seed != PythiaGenerator(fresh).seed
    restarted = PythiaGenerator(cfg, worker=1, incarnation=2, n_workers=3)
    run, id_worker, _ = decode_event_ids(restarted.next_batch(5).event_id)
    assert np.all(id_worker == 1 + 2 * 3)
    assert np.all(run == 0)


# --- mixture ----------------------------------------------------------------------------------
def test_mixture_fractions_follow_cross_sections():
    generator = PythiaGenerator(GeneratorConfig(seed=3))
    n = 200_000
    codes = generator.draw_types(n)  # the draw alone, no Pythia needed
    total = sum(CROSS_SECTIONS_NB.values())
    for code, name in enumerate(BKG_TYPES):
        expected = CROSS_SECTIONS_NB[name] / total
        observed = np.mean(codes == code)
        sigma = np.sqrt(expected * (1 - expected) / n)
        assert abs(observed - expected) < 3 * sigma, f"{name}: {observed:.4f} vs {expected:.4f}"


def test_configured_fractions_and_types():
    cfg = GeneratorConfig(types=["charged", "taupair"], fractions={"charged": 1, "taupair": 3})
    generator = PythiaGenerator(cfg)
    codes = generator.draw_types(40_000)
    assert set(np.unique(codes)) == {BKG_TYPES.index("charged"), BKG_TYPES.index("taupair")}
    sigma = np.sqrt(0.25 * 0.75 / 40_000)
    assert abs(np.mean(codes == BKG_TYPES.index("charged")) - 0.25) < 3 * sigma
    with pytest.raises(UserError, match="zero weight"):
        PythiaGenerator(GeneratorConfig(types=["uubar"], fractions={"charged": 1}))


def test_small_events_fixture_mixture(small_events: EventBatch):
    assert len(small_events) == 1400
    total = sum(CROSS_SECTIONS_NB.values())
    for code, name in enumerate(BKG_TYPES):
        expected = CROSS_SECTIONS_NB[name] / total
        sigma = np.sqrt(expected * (1 - expected) / 1400)
        assert abs(np.mean(small_events.bkg_type == code) - expected) < 3 * sigma, name
    assert len(np.unique(small_events.event_id)) == 1400


def test_is_an_event_source():
    from adaptive_bkg.interfaces import EventSource

    assert isinstance(PythiaGenerator(GeneratorConfig()), EventSource)


def test_negative_count_is_a_user_error():
    with pytest.raises(UserError, match=">= 0"):
        PythiaGenerator(GeneratorConfig()).next_batch(-1)
    assert len(PythiaGenerator(GeneratorConfig()).next_batch(0)) == 0
