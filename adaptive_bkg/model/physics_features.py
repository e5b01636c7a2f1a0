"""Physics-aware model inputs (`PartConfig.inputs = "physics"`, preset `part-phys-small`).

What a Belle II analyst computes by hand from a generator-level event, computed in torch from the
raw basf2 features inside `forward`, so the ONNX graph still takes raw inputs (docs/model.md):

- per particle, on top of `features.particle_features`: CMS-frame log E*, log |p*|, cos θ*,
  sin φ*, cos φ*; final-state flag and depth in the decay tree; lab-frame acceptance flags (CDC,
  ECL, "trackable"); flight distance;
- per pair, in the CMS frame as in ParT (arXiv:2202.03772, with the e+e- analogues of its
  pp variables): adjacency, siblings, ln m², ln Δ, ln kT, ln z, vertex distance;
- per event: visible energy, trackable charged multiplicity, thrust, Fox–Wolfram R2 and
  missing momentum, all at generator level over visible final-state particles in the CMS.

The boost is `Beams.cms_matrix` (physics/beams.py, the one boost) as a constant [4, 4] matrix;
the acceptance is `physics.geometry.BELLE2_ACCEPTANCE`, which the emulator reads too.
Nothing here knows any skim.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from adaptive_bkg.formats.events import BASF2_FEATURE_ORDER
from adaptive_bkg.model.features import (
    N_PARTICLE_FEATURES,
    VERTEX_SCALE_CM,
    pair_feature_list,
    particle_features,
)
from adaptive_bkg.physics.geometry import Acceptance

MAX_DEPTH = 10  # decay-tree depth is counted up to this (Υ(4S) → B → D* → D → K_S → π is 5)
N_PHYS_PARTICLE_FEATURES = N_PARTICLE_FEATURES + 11
N_PHYS_PAIR_FEATURES = 7
N_GLOBAL_FEATURES = 5
THRUST_ITERATIONS = 4  # as physics.shapes.thrust_axis
_SQUARINGS = 10  # principal axis of the momentum tensor as T^1024 v (ONNX has no eigh)
_EPS = 1e-6
_IX, _IY, _IZ, _IE, _IPX, _IPY, _IPZ = (
    BASF2_FEATURE_ORDER.index(name) for name in ("x", "y", "z", "E", "px", "py", "pz")
)


class DecayTree(NamedTuple):
    final: Tensor  # [B, N] bool: real particle without daughters
    depth: Tensor  # [B, N] float: number of ancestors (0 for primaries), capped at MAX_DEPTH
    flight_cm: Tensor  # [B, N] production to decay vertex (0 without daughters)


def cms_four_momenta(raw: Tensor, cms_matrix: Tensor) -> Tensor:
    """[B, N, 8] raw -> [B, N, 4] (E*, px*, py*, pz*) in the CMS: (E, p) @ Lᵀ."""
    return raw[..., _IE : _IPZ + 1] @ cms_matrix.transpose(0, 1)


def decay_tree(raw: Tensor, mother: Tensor, mask: Tensor) -> DecayTree:
    """Final-state flag, depth and flight distance from the mother indices (-1 = none)."""
    n = mother.shape[1]
    idx = torch.arange(n, device=mother.device)
    is_mother = (mother.unsqueeze(-1) == idx.view(1, 1, n)).to(raw.dtype)  # [B, i, j]: m[i] = j
    final = mask & (is_mother.amax(dim=1) == 0)
    depth = torch.zeros_like(raw[..., 0])
    up = mother
    for _ in range(MAX_DEPTH):  # walk up the chain: a fixed loop, unrolled in the ONNX graph
        has = up >= 0
        depth = depth + has.to(raw.dtype)
        up = torch.where(has, mother.gather(1, up.clamp(min=0)), up)
    # A daughter is born where its mother decays: the mother's flight distance is the distance
    # between their production vertices (a direct difference, see features.pair_features).
    pos = raw[..., _IX : _IZ + 1]
    mother_pos = pos.gather(1, mother.clamp(min=0).unsqueeze(-1).expand(-1, -1, 3))
    from_mother = torch.where(mother >= 0, (pos - mother_pos).norm(dim=-1), 0.0)
    flight = (is_mother * from_mother.unsqueeze(-1)).amax(dim=1)
    return DecayTree(final, depth, flight)


def _cos_theta_in(cos_theta: Tensor, theta_deg: tuple[float, float]) -> Tensor:
    """θ within [lo, hi] degrees (ends included), tested on cos θ (monotonic, no acos)."""
    lo, hi = theta_deg
    return (cos_theta <= math.cos(math.radians(lo))) & (cos_theta >= math.cos(math.radians(hi)))


class Acceptances(NamedTuple):
    in_cdc: Tensor  # [B, N] bool: lab θ inside the CDC polar range
    in_ecl: Tensor  # [B, N] bool: lab θ inside one of the ECL ranges (not in a gap)
    trackable: Tensor  # [B, N] bool: charged, in the CDC, pT above threshold, born in the tracker


def acceptances(raw: Tensor, charge: Tensor, geometry: Acceptance) -> Acceptances:
    px, py, pz = raw[..., _IPX], raw[..., _IPY], raw[..., _IPZ]
    pt = torch.sqrt(px * px + py * py)
    cos_theta = pz / torch.sqrt(pt * pt + pz * pz).clamp(min=_EPS)
    in_cdc = _cos_theta_in(cos_theta, geometry.cdc_theta_deg)
    in_ecl = torch.zeros_like(in_cdc)
    for theta_range in geometry.ecl_theta_ranges_deg:
        in_ecl = in_ecl | _cos_theta_in(cos_theta, theta_range)
    x, y, z = raw[..., _IX], raw[..., _IY], raw[..., _IZ]
    inside = (torch.sqrt(x * x + y * y) <= geometry.tracker_radius_cm) & (
        z.abs() <= geometry.tracker_half_z_cm
    )
    trackable = (charge != 0) & in_cdc & (pt >= geometry.track_pt_min_gev) & inside
    return Acceptances(in_cdc, in_ecl, trackable)


def physics_particle_features(
    raw: Tensor,
    charge: Tensor,
    mother: Tensor,
    cms: Tensor,
    tree: DecayTree,
    accept: Acceptances,
) -> Tensor:
    """[B, N, N_PHYS_PARTICLE_FEATURES]: `particle_features`, then log E*, log |p*|, cos θ*,
    sin φ*, cos φ*, final-state flag, depth, in-CDC, in-ECL, trackable,
    ln(1 + flight / 10 µm). Padded rows stay finite (clamped logs and divisions)."""
    e, px, py, pz = cms.unbind(-1)
    pt = torch.sqrt(px * px + py * py)
    p = torch.sqrt(pt * pt + pz * pz)
    extra = [
        torch.log(e.clamp(min=1e-4)),
        torch.log(p.clamp(min=1e-4)),
        pz / p.clamp(min=_EPS),
        py / pt.clamp(min=_EPS),
        px / pt.clamp(min=_EPS),
        tree.final.to(raw.dtype),
        tree.depth,
        accept.in_cdc.to(raw.dtype),
        accept.in_ecl.to(raw.dtype),
        accept.trackable.to(raw.dtype),
        torch.log1p(tree.flight_cm / VERTEX_SCALE_CM),
    ]
    base = particle_features(raw, charge, mother)
    return torch.cat([base, torch.stack(extra, dim=-1)], dim=-1)


def physics_pair_features(raw: Tensor, mother: Tensor, cms: Tensor) -> Tensor:
    """[B, N, N, N_PHYS_PAIR_FEATURES], symmetric in (i, j): adjacency, siblings, ln m²ᵢⱼ,
    ln Δ, ln kT, ln z, ln(1 + |vᵢ - vⱼ| / 10 µm), the middle three in the CMS frame.

    e+e- analogues of ParT's pp variables (rapidity-azimuth ΔR and pT do not suit a detector
    that covers nearly 4π around an almost symmetric CMS): Δ = |uᵢ - uⱼ| = sqrt(2 (1 - cos θᵢⱼ))
    for the unit momenta u (≈ θᵢⱼ when small), kT = min(|pᵢ|, |pⱼ|) Δ (the Durham kT),
    z = min(Eᵢ, Eⱼ) / (Eᵢ + Eⱼ). Δ² is clamped at 1e-6 (1 mrad): float32 resolves no less.
    """
    adjacency, siblings, ln_m2, _, ln_dist = pair_feature_list(raw, mother)
    e, mom = cms[..., 0], cms[..., 1:]
    p = mom.norm(dim=-1)
    unit = mom / p.unsqueeze(-1).clamp(min=_EPS)
    ln_delta = 0.5 * torch.log((2.0 - 2.0 * (unit @ unit.transpose(1, 2))).clamp(min=1e-6))
    ln_p = torch.log(p.clamp(min=1e-4))
    ln_kt = torch.minimum(ln_p.unsqueeze(-1), ln_p.unsqueeze(-2)) + ln_delta
    e = e.clamp(min=1e-4)
    ln_z = torch.log(torch.minimum(e.unsqueeze(-1), e.unsqueeze(-2))) - torch.log(
        e.unsqueeze(-1) + e.unsqueeze(-2)
    )
    return torch.stack([adjacency, siblings, ln_m2, ln_delta, ln_kt, ln_z, ln_dist], dim=-1)


def global_features(cms: Tensor, visible: Tensor, trackable_final: Tensor, sqrt_s: float) -> Tensor:
    """[B, N_GLOBAL_FEATURES] over visible final-state particles in the CMS: E_vis / √s,
    trackable charged multiplicity / 10, thrust, Fox–Wolfram R2, |Σ p| / √s.

    Thrust and R2 as in physics.shapes (R2 from the linearised momentum tensor in O(N)); the
    thrust iteration starts from the tensor's principal axis, found by powers of the tensor
    here because ONNX has no eigensolver. Events without visible particles give zeros.
    """
    w = visible.to(cms.dtype)
    e, mom = cms[..., 0] * w, cms[..., 1:] * w.unsqueeze(-1)
    p = mom.norm(dim=-1)
    p_sum = p.sum(dim=1)  # [B]
    safe_sum = p_sum.clamp(min=_EPS)
    scaled = mom / p.clamp(min=_EPS).sqrt().unsqueeze(-1)  # p_a / sqrt|p|: T = scaledᵀ scaled
    tensor = scaled.transpose(1, 2) @ scaled  # [B, 3, 3] sum_i p_ia p_ib / |p_i|
    r2 = (1.5 * (tensor * tensor).sum(dim=(1, 2)) - 0.5 * p_sum * p_sum) / (safe_sum * safe_sum)
    # Principal axis: T^(2^k) (repeated squaring, rescaled) applied to the hardest visible
    # particle's direction; converges even when the two largest eigenvalues are close.
    power = tensor
    for _ in range(_SQUARINGS):
        power = power @ power
        power = power / power.abs().amax(dim=(1, 2), keepdim=True).clamp(min=1e-30)
    lead = p.argmax(dim=1, keepdim=True)
    axis = power @ mom.gather(1, lead.unsqueeze(-1).expand(-1, -1, 3)).transpose(1, 2)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp(min=1e-12)  # [B, 3, 1]
    for _ in range(THRUST_ITERATIONS):  # n <- sum sign(p.n) p climbs to a maximum of sum |p.n|
        sign = torch.sign(mom @ axis)  # [B, N, 1]
        new = (sign * mom).sum(dim=1, keepdim=True).transpose(1, 2)
        norm = new.norm(dim=1, keepdim=True)
        axis = torch.where(norm > 0, new / norm.clamp(min=1e-12), axis)
    thrust = (mom @ axis).abs().sum(dim=(1, 2)) / safe_sum
    missing = mom.sum(dim=1).norm(dim=-1)
    n_tracks = trackable_final.to(cms.dtype).sum(dim=1)
    has = p_sum > 0
    return torch.stack(
        [
            e.sum(dim=1) / sqrt_s,
            n_tracks / 10.0,
            torch.where(has, thrust, 0.0),
            torch.where(has, r2, 0.0),
            missing / sqrt_s,
        ],
        dim=-1,
    )
