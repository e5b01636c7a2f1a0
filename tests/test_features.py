"""Model inputs: PDG vocabulary, padding to tensors, feature engineering, bucketing."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from adaptive_bkg.backends.emulator.conditions import CONDITIONS
from adaptive_bkg.config import GeneratorConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import BASF2_FEATURE_ORDER, EventBatch, make_event_ids
from adaptive_bkg.model.features import (
    N_PAIR_FEATURES,
    N_PARTICLE_FEATURES,
    N_RESERVED_IDS,
    PAD_ID,
    UNKNOWN_ID,
    bucket_edges,
    bucket_indices,
    bucketed_batches,
    padding_waste,
    pair_features,
    particle_features,
    pdg_vocab,
    random_pdg_mask,
    to_model_inputs,
)
from adaptive_bkg.model.physics_features import (
    MAX_DEPTH,
    N_GLOBAL_FEATURES,
    N_PHYS_PAIR_FEATURES,
    N_PHYS_PARTICLE_FEATURES,
    acceptances,
    cms_four_momenta,
    decay_tree,
    global_features,
    physics_pair_features,
    physics_particle_features,
)
from adaptive_bkg.model.synthetic import synthetic_events
from adaptive_bkg.physics import shapes
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.physics.geometry import BELLE2_ACCEPTANCE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hand_event(particles: list[tuple[int, int, float, float, float, float]]) -> EventBatch:
    """One event from (pdg, mother, E, px, py, pz) rows; vertex at 0 except x = 0.1 * row."""
    n = len(particles)
    arr = np.array(particles, dtype=np.float64)
    f32 = np.float32
    return EventBatch(
        event_id=make_event_ids(3, 1, 40, 1),
        bkg_type=np.array([2], np.int8),
        seed=np.array([5], np.int64),
        offsets=np.array([0, n], np.int64),
        pdg=arr[:, 0].astype(np.int32),
        mother=arr[:, 1].astype(np.int32),
        E=arr[:, 2].astype(f32),
        px=arr[:, 3].astype(f32),
        py=arr[:, 4].astype(f32),
        pz=arr[:, 5].astype(f32),
        x=(0.1 * np.arange(n)).astype(f32),
        y=np.zeros(n, f32),
        z=np.zeros(n, f32),
        t=np.full(n, 2e-3, f32),
    )


def test_vocabulary_distinguishes_antiparticles_and_buckets_unknown_codes() -> None:
    vocab = pdg_vocab()
    ids = vocab.ids(np.array([211, -211, 22, 0, 987654321, 300553, 310, 130]))
    assert ids[0] != ids[1]
    assert min(ids[0], ids[1], ids[2]) >= N_RESERVED_IDS
    assert ids[3] == PAD_ID
    assert ids[4] == UNKNOWN_ID
    assert ids[5] >= N_RESERVED_IDS
    assert len(set(ids.tolist())) == len(ids)
    charges = vocab.charge(np.array([211, -211, 22, 11, -11, 2212, 130, 987654321]))
    np.testing.assert_array_equal(charges, [1, -1, 0, -1, 1, 1, 0, 0])
    assert 400 < vocab.size < 1000  # all light hadrons, leptons, photons; not the nuclei
    assert vocab.version == pdg_vocab().version
    assert vocab.version.startswith("pdg-")


def test_to_model_inputs_pads_with_events_pad_events_layout() -> None:
    batch = synthetic_events(5, seed=3, mean_particles=10)
    inputs = to_model_inputs(batch, max_particles=128)
    counts = batch.n_particles
    assert inputs.features.shape == (5, int(-(-counts.max() // 8) * 8), 8)
    assert inputs.mask.sum(1).tolist() == counts.tolist()
    first = slice(0, int(counts[0]))
    for k, name in enumerate(BASF2_FEATURE_ORDER):
        np.testing.assert_array_equal(
            inputs.features[0, first, k].numpy(), getattr(batch, name)[first]
        )
    np.testing.assert_array_equal(inputs.pdg[0, first].numpy(), pdg_vocab().ids(batch.pdg[first]))
    assert (inputs.pdg[~inputs.mask] == PAD_ID).all()
    assert (inputs.mother[~inputs.mask] == -1).all()
    assert inputs.bkg_type.tolist() == batch.bkg_type.tolist()
    assert inputs.pdg.dtype == torch.int64
    assert inputs.mother.dtype == torch.int64


def test_truncation_beyond_max_particles_drops_dangling_mothers() -> None:
    batch = synthetic_events(3, seed=4, mean_particles=40, min_particles=30)
    inputs = to_model_inputs(batch, max_particles=16, multiple_of=1)
    assert inputs.mask.shape == (3, 16)
    assert bool(inputs.mask.all())
    assert int(inputs.mother.max()) < 16


@pytest.mark.parametrize("field", ["E", "x", "t"])
def test_non_finite_input_names_event_and_field(field: str) -> None:
    batch = synthetic_events(4, seed=5)
    values = getattr(batch, field).copy()
    bad_particle = int(batch.offsets[2]) + 1  # second particle of the third event
    values[bad_particle] = np.inf if field == "t" else np.nan
    broken = dataclasses.replace(batch, **{field: values})
    with pytest.raises(
        UserError, match=rf"event {int(batch.event_id[2])}: particle field '{field}'"
    ):
        to_model_inputs(broken, 128)


def test_particle_features_values_for_a_hand_built_particle() -> None:
    # E = 2, p = (1, 0, 1): pT = 1, |p| = sqrt 2, cos theta = 1/sqrt 2, phi = 0; x = 0 here.
    batch = hand_event([(211, -1, 2.0, 1.0, 0.0, 1.0), (22, 0, 1.0, 0.0, 1.0, 0.0)])
    inputs = to_model_inputs(batch, multiple_of=1)
    charge = torch.from_numpy(pdg_vocab().charge_table())[inputs.pdg]
    feats = particle_features(inputs.features, charge, inputs.mother)[0]
    assert feats.shape == (2, N_PARTICLE_FEATURES)
    expected_pion = [math.log(2), 0.0, math.log(math.sqrt(2)), 1 / math.sqrt(2), 0.0, 1.0, 1.0]
    np.testing.assert_allclose(feats[0, :7].numpy(), expected_pion, atol=1e-6)
    assert feats[1, 4].item() == pytest.approx(1.0)  # photon along +y: sin phi = 1
    assert feats[1, 7].item() == pytest.approx(math.log1p(0.1 / 1e-3), rel=1e-6)  # x = 1 mm
    assert feats[0, 10].item() == pytest.approx(math.log1p(2.0), rel=1e-6)  # t = 2 ps
    assert feats[:, 11].tolist() == [0.0, 1.0]  # has-mother flag


def test_pair_features_match_direct_formulas_and_are_symmetric() -> None:
    batch = synthetic_events(6, seed=7, mean_particles=20)
    inputs = to_model_inputs(batch, multiple_of=1)
    pairs = pair_features(inputs.features, inputs.mother)
    assert pairs.shape[-1] == N_PAIR_FEATURES
    torch.testing.assert_close(pairs, pairs.transpose(1, 2), rtol=0, atol=1e-5)
    raw = inputs.features.double()
    e, p, v = raw[..., 4], raw[..., 5:8], raw[..., 1:4]
    m2 = (e[:, :, None] + e[:, None, :]) ** 2 - ((p[:, :, None] + p[:, None, :]) ** 2).sum(-1)
    cos = torch.nn.functional.cosine_similarity(p[:, :, None], p[:, None, :], dim=-1)
    dist = (v[:, :, None] - v[:, None, :]).norm(dim=-1)
    real = (inputs.mask[:, :, None] & inputs.mask[:, None, :]).numpy()
    # float32 with the Minkowski expansion: absolute error ~1e-6 * E^2, relative tolerance on
    # ln m^2 of 2e-3 where m^2 > 0.01 GeV^2 (clamped region excluded).
    big = real & (m2.numpy() > 1e-2)
    np.testing.assert_allclose(pairs[..., 2].numpy()[big], np.log(m2.numpy()[big]), atol=2e-3)
    np.testing.assert_allclose(pairs[..., 3].numpy()[real], cos.numpy()[real], atol=1e-5)
    ref = np.log1p(dist.numpy() / 1e-3)  # coinciding displaced vertices must give exactly 0
    np.testing.assert_allclose(pairs[..., 4].numpy()[real], ref[real], atol=1e-4)
    # adjacency: exactly the mother/daughter pairs, both directions
    b, i = np.nonzero((inputs.mother >= 0).numpy())
    j = inputs.mother.numpy()[b, i]
    adjacency = np.zeros(pairs.shape[:3], bool)
    adjacency[b, i, j] = adjacency[b, j, i] = True
    np.testing.assert_array_equal(pairs[..., 0].numpy() == 1.0, adjacency)


def test_pair_mass_of_back_to_back_photons() -> None:
    batch = hand_event([(22, -1, 1.0, 0.0, 0.0, 1.0), (22, -1, 1.0, 0.0, 0.0, -1.0)])
    inputs = to_model_inputs(batch, multiple_of=1)
    pairs = pair_features(inputs.features, inputs.mother)[0]
    assert pairs[0, 1, 2].item() == pytest.approx(math.log(4.0), abs=1e-5)  # m = 2 GeV
    assert pairs[0, 1, 3].item() == pytest.approx(-1.0)
    assert pairs[0, 0, 2].item() == pytest.approx(math.log(1e-4))  # i = j: (2p)^2 = 0, clamped
    assert pairs[0, 1, 1].item() == 0.0  # no mothers: not siblings


def test_bucket_indices_partition_events_by_multiplicity() -> None:
    n = np.array([5, 40, 17, 16, 200, 33, 1, 64])
    edges = [16, 32, 64]
    groups = bucket_indices(n, edges)
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(n.size))
    assert [g.tolist() for g in groups] == [[0, 3, 6], [2], [1, 4, 5, 7]]
    with pytest.raises(UserError, match="increasing"):
        bucket_indices(n, [32, 16])
    assert bucket_edges(50) == [16, 24, 32, 40, 48, 50]


def test_bucketed_batches_cover_every_event_once_within_size() -> None:
    n = synthetic_events(1000, seed=9).n_particles
    rng = np.random.default_rng(0)
    batches = bucketed_batches(n, 64, bucket_edges(128), rng)
    flat = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(flat), np.arange(n.size))
    assert max(b.size for b in batches) <= 64
    edges = np.array(bucket_edges(128))
    for b in batches:  # one bucket per batch
        assert np.unique(np.searchsorted(edges, n[b])).size == 1


def test_bucketing_cuts_padding_waste() -> None:
    n = synthetic_events(4000, seed=10).n_particles  # ~ Normal(45, 15) like generator output
    plain = padding_waste(n, 256, None)
    bucketed = padding_waste(n, 256, bucket_edges(128))
    # measured: plain ~0.51 (particles) / 0.74 (pairs); bucketed ~0.08 / 0.15
    assert plain.particle_slots > 0.4
    assert plain.pair_slots > 0.6
    assert bucketed.particle_slots < 0.12
    assert bucketed.pair_slots < 0.2


def test_random_pdg_mask_hits_real_particles_only_and_every_event() -> None:
    batch = synthetic_events(200, seed=12, mean_particles=30)
    inputs = to_model_inputs(batch)
    chosen = random_pdg_mask(inputs, 0.15, torch.Generator().manual_seed(0))
    assert not bool((chosen & ~inputs.mask).any())
    assert bool(chosen.any(dim=1).all())
    fraction = chosen.sum().item() / inputs.mask.sum().item()
    assert 0.13 < fraction < 0.18  # 0.15 plus the forced one per event (~1/30), binomial noise
    with pytest.raises(UserError, match="between 0 and 1"):
        random_pdg_mask(inputs, 1.5, torch.Generator())


# ---------------------------------------------------------------------------------------------
# Physics-aware inputs (physics_features, preset part-phys-small).
BEAMS = Beams.of(GeneratorConfig())
CMS = torch.from_numpy(BEAMS.cms_matrix()).float()


def raw_event(rows: list[tuple[float, ...]], n_slots: int | None = None) -> torch.Tensor:
    """[1, n_slots, 8] raw features from (E, px, py, pz[, x, y, z]) rows; the rest zero."""
    raw = torch.zeros(1, n_slots or len(rows), 8, dtype=torch.float64)
    for k, row in enumerate(rows):
        raw[0, k, 4 : 4 + 4] = torch.tensor(row[:4], dtype=torch.float64)
        raw[0, k, 1 : 1 + len(row[4:])] = torch.tensor(row[4:], dtype=torch.float64)
    return raw.float()


def lab(e: float, px: float, py: float, pz: float) -> tuple[float, float, float, float]:
    """A CMS 4-vector seen in the lab, through the one boost (physics.beams)."""
    out = BEAMS.to_lab(e, px, py, pz)
    return float(out[0]), float(out[1]), float(out[2]), float(out[3])


def test_cms_frame_of_the_upsilon_and_of_particles_at_rest_and_along_z() -> None:
    m_pi = 0.13957
    raw = raw_event([BEAMS.total, lab(m_pi, 0, 0, 0), lab(2.0, 0, 0, math.sqrt(4 - m_pi**2))])
    cms = cms_four_momenta(raw, CMS)[0].double()
    assert cms[0, 0].item() == pytest.approx(BEAMS.sqrt_s, rel=1e-6)  # E* = sqrt(s)
    assert cms[0, 1:].norm().item() < 1e-5 * BEAMS.sqrt_s  # p* = 0
    assert cms[1, 0].item() == pytest.approx(m_pi, abs=1e-5)  # at rest in the CMS
    assert cms[1, 1:].norm().item() < 1e-5
    mask = torch.ones(1, 3, dtype=torch.bool)
    mother = torch.full((1, 3), -1)
    tree = decay_tree(raw, mother, mask)
    accept = acceptances(raw, torch.zeros(1, 3), BELLE2_ACCEPTANCE)
    feats = physics_particle_features(
        raw, torch.zeros(1, 3), mother, cms.float()[None], tree, accept
    )
    assert feats.shape == (1, 3, N_PHYS_PARTICLE_FEATURES)
    extra = feats[0, :, N_PARTICLE_FEATURES:]
    assert extra[0, 0].item() == pytest.approx(math.log(BEAMS.sqrt_s), abs=1e-6)  # log E*
    assert extra[2, 2].item() == pytest.approx(1.0, abs=1e-6)  # along +z* in the CMS: cos θ* = 1
    # in the lab that pion leans towards +x (the crossing angle): not along z there
    assert feats[0, 2, 3].item() < 0.9999


def test_decay_tree_final_state_depth_and_flight_distance() -> None:
    # Υ(4S) -> B0 B0bar; B0 -> D- π+ (D- flies 0.02 cm); D- -> K+ π- π- (born 0.05 cm further)
    rows = [(10.58, 0, 0, 3, 0, 0, 0), (5.3, 0, 0, 1, 0, 0, 0), (5.3, 0, 0, 2, 0, 0, 0),
            (2.0, 0, 0, 1, 0.02, 0, 0), (1.0, 0, 0, 1, 0.02, 0, 0), (0.8, 0, 0, 1, 0.02, 0.05, 0),
            (0.5, 0, 0, 1, 0.02, 0.05, 0), (0.4, 0, 0, 1, 0.02, 0.05, 0)]  # fmt: skip
    raw = raw_event(rows, n_slots=10)  # two padded slots
    mother = torch.tensor([[-1, 0, 0, 1, 1, 3, 3, 3, -1, -1]])
    mask = torch.arange(10)[None] < 8
    tree = decay_tree(raw, mother, mask)
    assert tree.final[0].tolist() == [False, False, True, False] + [True] * 4 + [False] * 2
    assert tree.depth[0, :8].tolist() == [0, 1, 1, 2, 2, 3, 3, 3]
    np.testing.assert_allclose(
        tree.flight_cm[0].numpy(), [0, 0.02, 0, 0.05, 0, 0, 0, 0, 0, 0], atol=1e-7
    )
    # depth counts ancestors up to MAX_DEPTH
    chain = torch.arange(-1, MAX_DEPTH + 4)[None]  # particle k's mother is k - 1
    deep = decay_tree(torch.zeros(1, chain.shape[1], 8), chain, chain >= -1)
    assert deep.depth[0, -1].item() == MAX_DEPTH
    assert deep.depth[0, :4].tolist() == [0, 1, 2, 3]


def test_acceptance_flags_at_the_boundaries() -> None:
    def at(theta_deg: float, pt: float = 0.5, r_cm: float = 0.0) -> tuple[float, ...]:
        t = math.radians(theta_deg)
        p = pt / math.sin(t)
        return (p, pt, 0.0, p * math.cos(t), r_cm, 0.0, 0.0)

    thetas = [16.9, 17.1, 149.9, 150.1, 12.3, 12.5, 31.0, 31.8, 32.6, 129.5, 155.0, 155.2]
    raw = raw_event([at(t) for t in thetas])
    accept = acceptances(raw, torch.ones(1, len(thetas)), BELLE2_ACCEPTANCE)
    assert (
        accept.in_cdc[0].tolist()
        == [False, True, True, False] + [False] * 2 + [True] * 4 + [False] * 2
    )
    assert accept.in_ecl[0].tolist() == [True, True, True, True, False, True, True, False, True,
                                         False, True, False]  # fmt: skip
    # trackable: charged, in the CDC, pT >= 0.1 GeV, born inside r 40 cm (and |z| 60 cm)
    raw = raw_event([at(90), at(90, pt=0.09), at(90), at(90, r_cm=39.0), at(90, r_cm=41.0)])
    charge = torch.tensor([[1.0, -1.0, 0.0, 1.0, 1.0]])
    trackable = acceptances(raw, charge, BELLE2_ACCEPTANCE).trackable[0].tolist()
    assert trackable == [True, False, False, True, False]


def test_emulator_conditions_share_the_model_acceptance() -> None:
    geometry = BELLE2_ACCEPTANCE
    for name, params in CONDITIONS.items():
        assert (params.cdc_theta_min_deg, params.cdc_theta_max_deg) == geometry.cdc_theta_deg, name
        assert params.ecl_theta_ranges_deg == geometry.ecl_theta_ranges_deg, name
        assert params.track_pt_min_gev == geometry.track_pt_min_gev, name
        assert params.track_max_production_radius_cm == geometry.tracker_radius_cm, name
        assert params.track_max_production_z_cm == geometry.tracker_half_z_cm, name


def test_physics_pair_features_are_symmetric_and_match_cms_formulas() -> None:
    batch = synthetic_events(6, seed=11, mean_particles=20)
    inputs = to_model_inputs(batch, multiple_of=1)
    cms = cms_four_momenta(inputs.features, CMS)
    pairs = physics_pair_features(inputs.features, inputs.mother, cms)
    assert pairs.shape[-1] == N_PHYS_PAIR_FEATURES
    torch.testing.assert_close(pairs, pairs.transpose(1, 2), rtol=0, atol=1e-5)
    # float64 reference through the numpy boost
    f = inputs.features.double().numpy()
    e, px, py, pz = BEAMS.to_cms(f[..., 4], f[..., 5], f[..., 6], f[..., 7])
    p3 = np.stack([px, py, pz], -1)
    p = np.linalg.norm(p3, axis=-1)
    u = p3 / np.maximum(p, 1e-12)[..., None]
    delta = np.linalg.norm(u[:, :, None] - u[:, None, :], axis=-1)
    real = (inputs.mask[:, :, None] & inputs.mask[:, None, :]).numpy() & (delta > 0.05)
    np.testing.assert_allclose(pairs[..., 3].numpy()[real], np.log(delta[real]), atol=1e-3)
    kt = np.minimum(p[:, :, None], p[:, None, :]) * delta
    np.testing.assert_allclose(pairs[..., 4].numpy()[real], np.log(kt[real]), atol=1e-3)
    e = np.maximum(e, 1e-4)  # padded slots (E = 0) as the model clamps them
    z = np.minimum(e[:, :, None], e[:, None, :]) / (e[:, :, None] + e[:, None, :])
    np.testing.assert_allclose(pairs[..., 5].numpy()[real], np.log(z[real]), atol=1e-4)
    # adjacency, siblings, ln m^2 and vertex distance are the raw pair features' own
    raw_pairs = pair_features(inputs.features, inputs.mother)
    torch.testing.assert_close(pairs[..., [0, 1, 2, 6]], raw_pairs[..., [0, 1, 2, 4]])


def test_back_to_back_photons_in_the_cms() -> None:
    raw = raw_event([lab(2.0, 0.6, 0.0, 1.9080), lab(2.0, -0.6, 0.0, -1.9080)])
    pairs = physics_pair_features(raw, torch.full((1, 2), -1), cms_four_momenta(raw, CMS))[0]
    assert pairs[0, 1, 3].item() == pytest.approx(math.log(2.0), abs=1e-4)  # Δ = 2
    assert pairs[0, 1, 4].item() == pytest.approx(math.log(4.0), abs=1e-3)  # kT = 2 GeV * 2
    assert pairs[0, 1, 5].item() == pytest.approx(math.log(0.5), abs=1e-6)  # z = 1/2
    assert pairs[0, 1, 2].item() == pytest.approx(math.log(16.0), abs=1e-4)  # m = 4 GeV


def test_global_features_of_a_two_photon_event_and_against_physics_shapes() -> None:
    # two back-to-back 5 GeV photons and a neutrino: only the photons are visible
    rows = [lab(5.0, 3.0, 0.0, 4.0), lab(5.0, -3.0, 0.0, -4.0), lab(0.3, 0.0, 0.3, 0.0)]
    raw = raw_event(rows)
    cms = cms_four_momenta(raw, CMS)
    visible = torch.tensor([[True, True, False]])
    glob = global_features(cms, visible, torch.zeros(1, 3, dtype=torch.bool), BEAMS.sqrt_s)[0]
    assert glob.shape == (N_GLOBAL_FEATURES,)
    np.testing.assert_allclose(
        glob.numpy(), [10.0 / BEAMS.sqrt_s, 0.0, 1.0, 1.0, 0.0], atol=2e-5
    )  # E_vis/sqrt(s), tracks/10, thrust, R2, |sum p|/sqrt(s)
    # thrust and R2 of many events against physics.shapes (float64, numpy)
    batch = synthetic_events(40, seed=4, mean_particles=15)
    inputs = to_model_inputs(batch, multiple_of=1)
    cms = cms_four_momenta(inputs.features, CMS)
    glob = global_features(cms, inputs.mask, inputs.mask, BEAMS.sqrt_s).double().numpy()
    assert np.allclose(glob[:, 1], batch.n_particles / 10.0)
    e, px, py, pz = BEAMS.to_cms(batch.E * 1.0, batch.px * 1.0, batch.py * 1.0, batch.pz * 1.0)
    event = batch.particle_event_index
    p = np.sqrt(px**2 + py**2 + pz**2)
    p_sum = shapes.event_sums(event, p, len(batch))
    tensor = shapes.momentum_tensor(event, px, py, pz, p, len(batch))
    r2 = shapes.fox_wolfram_r2(tensor, p_sum)
    axis = shapes.thrust_axis(event, px, py, pz, tensor)
    thrust = shapes.thrust_about(event, px, py, pz, axis, p_sum)
    np.testing.assert_allclose(glob[:, 3], r2, atol=1e-4)
    np.testing.assert_allclose(glob[:, 2], thrust, atol=1e-3)
    np.testing.assert_allclose(
        glob[:, 0], shapes.event_sums(event, e, len(batch)) / BEAMS.sqrt_s, rtol=1e-5
    )
