"""Model inputs: PDG vocabulary, padding to tensors, per-particle and pair features, bucketing.

Split of work, chosen so that the ONNX graph can take basf2-like raw inputs:
- numpy side (`to_model_inputs`): validate, pad with `events.pad_events` (the one padding
  function), map PDG codes to vocabulary ids with one `np.searchsorted`.
- torch side (`particle_features`, `pair_features`, called inside the model's forward): all
  feature engineering from the raw basf2 features [B, N, 8] (t, x, y, z, E, px, py, pz).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from particle import Particle
from particle.pdgid import is_diquark, is_quark
from torch import Tensor

from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import BASF2_FEATURE_ORDER, FLOAT_FIELDS, EventBatch, pad_events

# Vocabulary ids reserved before the known PDG codes.
PAD_ID, UNKNOWN_ID, MASK_ID = 0, 1, 2
N_RESERVED_IDS = 3
N_RAW_FEATURES = len(BASF2_FEATURE_ORDER)  # 8: t, x, y, z, E, px, py, pz
N_PARTICLE_FEATURES = 12  # see `particle_features`
N_PAIR_FEATURES = 5  # see `pair_features`
VERTEX_SCALE_CM = 1e-3  # 10 um: primary vertex ~0, B/D flight ~ 2-5, K_S flight ~ 8-10 in log space
TIME_SCALE_NS = 1e-3  # 1 ps, the scale of B and D lifetimes
_IT, _IX, _IY, _IZ, _IE, _IPX, _IPY, _IPZ = range(N_RAW_FEATURES)


@dataclass(frozen=True, eq=False)
class PdgVocab:
    """Sorted known PDG codes (particles and antiparticles distinct) with their charges.

    Vocabulary id of code `codes[k]` is `N_RESERVED_IDS + k`; everything else is `UNKNOWN_ID`.
    """

    codes: NDArray[np.int64]  # sorted ascending
    charges: NDArray[np.float32]  # charge in units of e, aligned with codes
    version: str  # content hash: checkpoints record it and refuse a different vocabulary

    @property
    def size(self) -> int:
        """Number of vocabulary ids including the reserved ones (the embedding table size)."""
        return N_RESERVED_IDS + len(self.codes)

    def ids(self, pdg: NDArray[np.integer]) -> NDArray[np.int64]:
        """PDG codes -> vocabulary ids; 0 stays PAD_ID, unknown codes -> UNKNOWN_ID."""
        pdg = np.asarray(pdg, dtype=np.int64)
        pos = np.searchsorted(self.codes, pdg).clip(0, len(self.codes) - 1)
        found = self.codes[pos] == pdg
        out = np.where(found, pos + N_RESERVED_IDS, UNKNOWN_ID)
        return np.where(pdg == 0, PAD_ID, out).astype(np.int64)

    def charge_table(self) -> NDArray[np.float32]:
        """Charge per vocabulary id (reserved ids -> 0): indexed inside the model."""
        return np.concatenate([np.zeros(N_RESERVED_IDS, np.float32), self.charges])

    def charge(self, pdg: NDArray[np.integer]) -> NDArray[np.float32]:
        """Charge (units of e) of PDG codes; unknown codes -> 0."""
        return self.charge_table()[self.ids(pdg)]


@functools.lru_cache(maxsize=1)
def pdg_vocab() -> PdgVocab:
    """All non-nuclear, non-parton particles of the `particle` package lighter than 11 GeV.

    That covers everything Pythia puts into a Belle II generator-level decay tree up to the
    Upsilon(4S) (about 660 codes); built once per process.
    """

    codes, charges = [], []
    for p in Particle.all():
        code = int(p.pdgid)
        mass = p.mass if p.mass is not None else 0.0
        if abs(code) >= 1_000_000_000 or mass >= 11_000.0 or code in (21, 0):
            continue
        if is_quark(code) or is_diquark(code):
            continue
        codes.append(code)
        charges.append(float(p.charge) if p.charge is not None else 0.0)
    order = np.argsort(codes)
    codes_arr = np.asarray(codes, np.int64)[order]
    codes_arr, first = np.unique(codes_arr, return_index=True)
    charges_arr = np.asarray(charges, np.float32)[order][first]
    digest = hashlib.sha1(codes_arr.tobytes() + charges_arr.tobytes()).hexdigest()[:12]
    return PdgVocab(codes_arr, charges_arr, f"pdg-{len(codes_arr)}-{digest}")


class ModelInputs(NamedTuple):
    """One padded batch as the model sees it (all tensors on one device)."""

    features: Tensor  # [B, N, 8] float32 raw basf2 features in BASF2_FEATURE_ORDER
    pdg: Tensor  # [B, N] int64 vocabulary ids (PAD_ID where padded)
    mother: Tensor  # [B, N] int64 mother index within the event, -1 none/truncated/padded
    mask: Tensor  # [B, N] bool, True for real particles
    bkg_type: Tensor  # [B] int64 index into events.BKG_TYPES

    def to(self, device: torch.device | str) -> ModelInputs:
        return ModelInputs(*(t.to(device, non_blocking=True) for t in self))

    @property
    def n_events(self) -> int:
        return int(self.mask.shape[0])


def check_finite(batch: EventBatch) -> None:
    """UserError naming the first event id and field holding NaN or inf."""
    for name in FLOAT_FIELDS:
        values = getattr(batch, name)
        bad = ~np.isfinite(values)
        if bad.any():
            particle = int(np.flatnonzero(bad)[0])
            event = int(np.searchsorted(batch.offsets, particle, side="right") - 1)
            raise UserError(
                f"event {int(batch.event_id[event])}: particle field '{name}' holds "
                f"{values[particle]} (non-finite); fix or drop that event before scoring it"
            )


def to_model_inputs(
    batch: EventBatch,
    max_particles: int = 128,
    device: torch.device | str = "cpu",
    multiple_of: int = 8,
    *,
    check: bool = True,
) -> ModelInputs:
    """Validate, pad (`pad_events`, truncating beyond `max_particles`) and move to `device`.

    `multiple_of` rounds the particle axis up so that compiled kernels see few shapes.
    `check=False` skips `check_finite`, for callers that already checked the whole batch.
    """
    if check:
        check_finite(batch)
    padded = pad_events(batch, max_particles=max_particles, multiple_of=multiple_of)
    ids = pdg_vocab().ids(padded.pdg)
    ids[~padded.mask] = PAD_ID  # a real particle with pdg 0 would otherwise look like padding
    return ModelInputs(
        features=torch.from_numpy(padded.features),
        pdg=torch.from_numpy(ids),
        mother=torch.from_numpy(padded.mother.astype(np.int64)),
        mask=torch.from_numpy(padded.mask),
        bkg_type=torch.from_numpy(padded.bkg_type),
    ).to(device)


def random_pdg_mask(inputs: ModelInputs, fraction: float, generator: torch.Generator) -> Tensor:
    """[B, N] bool: each real particle chosen with probability `fraction`, at least one per
    non-empty event (kishimoto2023 masked-id pretraining)."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"masked-PDG fraction {fraction} must lie strictly between 0 and 1")
    rand = torch.rand(inputs.mask.shape, generator=generator, device="cpu").to(inputs.mask.device)
    rand = rand.masked_fill(~inputs.mask, 2.0)
    chosen = (rand < fraction) & inputs.mask
    # Guarantee one masked particle per event: the one with the smallest random number.
    first = torch.zeros_like(chosen).scatter_(1, rand.argmin(dim=1, keepdim=True), True)
    return chosen | (first & inputs.mask)


# ---------------------------------------------------------------------------------------------
# Torch feature engineering (inside the model, hence inside the ONNX graph).
def _signed_log1p(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def particle_features(raw: Tensor, charge: Tensor, mother: Tensor) -> Tensor:
    """[B, N, 8] raw + [B, N] charge + [B, N] mother -> [B, N, N_PARTICLE_FEATURES].

    log E, log pT, log |p|, cos theta, sin phi, cos phi, charge, signed log(1 + |v|/10 um) for
    x, y, z, signed log(1 + t/1 ps), has-mother flag. Padded rows are all-zero raw features and
    give finite values (clamped logs), so no NaN can reach the attention.
    """
    e, px, py, pz = raw[..., _IE], raw[..., _IPX], raw[..., _IPY], raw[..., _IPZ]
    pt = torch.sqrt(px * px + py * py)
    p = torch.sqrt(pt * pt + pz * pz)
    eps = 1e-6
    feats = [
        torch.log(e.clamp(min=1e-4)),
        torch.log(pt.clamp(min=1e-4)),
        torch.log(p.clamp(min=1e-4)),
        pz / p.clamp(min=eps),
        py / pt.clamp(min=eps),
        px / pt.clamp(min=eps),
        charge,
        _signed_log1p(raw[..., _IX] / VERTEX_SCALE_CM),
        _signed_log1p(raw[..., _IY] / VERTEX_SCALE_CM),
        _signed_log1p(raw[..., _IZ] / VERTEX_SCALE_CM),
        _signed_log1p(raw[..., _IT] / TIME_SCALE_NS),
        (mother >= 0).to(raw.dtype),
    ]
    return torch.stack(feats, dim=-1)


def pair_features(raw: Tensor, mother: Tensor) -> Tensor:
    """[B, N, 8], [B, N] -> [B, N, N, N_PAIR_FEATURES], symmetric in (i, j): `pair_feature_list`
    stacked."""
    return torch.stack(pair_feature_list(raw, mother), dim=-1)


def pair_feature_list(raw: Tensor, mother: Tensor) -> list[Tensor]:
    """The N_PAIR_FEATURES pair features, each [B, N, N] and symmetric in (i, j):

    mother/daughter adjacency, same mother (siblings), ln m^2_ij (clamped at 1e-4 GeV^2),
    cos of the opening angle, ln(1 + |v_i - v_j| / 10 um). Momentum dot products go through
    batched matmuls (m^2_ij = m_i^2 + m_j^2 + 2 p_i.p_j): cheaper than [B, N, N, 4] sums.
    Pairs with padding get finite values; the model masks them as attention keys.
    """
    n = raw.shape[1]
    e, mom, pos = raw[..., _IE : _IE + 1], raw[..., _IPX : _IPZ + 1], raw[..., _IX : _IZ + 1]
    idx = torch.arange(n, device=raw.device)
    is_mother = mother.unsqueeze(-1) == idx.view(1, 1, n)  # [B, i, j]: mother[i] == j
    adjacency = is_mother | is_mother.transpose(1, 2)
    siblings = (mother.unsqueeze(-1) == mother.unsqueeze(-2)) & (mother.unsqueeze(-1) >= 0)
    four = torch.cat([e, mom], dim=-1)  # [B, N, 4]
    minkowski = torch.cat([e, -mom], dim=-1)
    self_m2 = (four * minkowski).sum(-1)
    m2 = self_m2.unsqueeze(-1) + self_m2.unsqueeze(-2) + 2.0 * (four @ minkowski.transpose(1, 2))
    unit = mom / mom.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    cos_angle = (unit @ unit.transpose(1, 2)).clamp(-1.0, 1.0)
    # Direct differences here: the expansion would turn 10 cm vertices that coincide into
    # ~30 um apart (float32 rounding), hiding exactly the displaced shared vertices we want.
    dist = (pos.unsqueeze(2) - pos.unsqueeze(1)).norm(dim=-1)
    return [
        adjacency.to(raw.dtype),
        siblings.to(raw.dtype),
        torch.log(m2.clamp(min=1e-4)),
        cos_angle,
        torch.log1p(dist / VERTEX_SCALE_CM),
    ]


# ---------------------------------------------------------------------------------------------
# Multiplicity bucketing: events of similar size share a padded batch.
DEFAULT_BUCKET_EDGES: tuple[int, ...] = (16, 24, 32, 40, 48, 56, 64, 80, 96, 128)


def bucket_edges(max_particles: int, edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> list[int]:
    """Edges below `max_particles`, closed by `max_particles` itself (truncation beyond)."""
    return [e for e in edges if e < max_particles] + [max_particles]


def bucket_indices(
    n_particles: NDArray[np.integer], edges: Sequence[int]
) -> list[NDArray[np.int64]]:
    """Group event indices by multiplicity: bucket k holds n in (edges[k-1], edges[k]].

    Events above the last edge go to the last bucket (they will be truncated). Empty buckets
    are dropped; within a bucket the original order is kept.
    """
    edges_arr = np.asarray(edges, dtype=np.int64)
    if edges_arr.size == 0 or np.any(np.diff(edges_arr) <= 0):
        raise UserError(f"bucket edges {list(edges)} must be a non-empty increasing list")
    which = np.searchsorted(edges_arr, np.asarray(n_particles), side="left").clip(
        0, len(edges_arr) - 1
    )
    order = np.argsort(which, kind="stable")
    counts = np.bincount(which, minlength=len(edges_arr))
    return [g for g in np.split(order, np.cumsum(counts)[:-1]) if g.size]


def bucketed_batches(
    n_particles: NDArray[np.integer],
    batch_size: int,
    edges: Sequence[int] | None,
    rng: np.random.Generator | None = None,
) -> list[NDArray[np.int64]]:
    """Index arrays of at most `batch_size` events, each from one multiplicity bucket.

    With `rng`, events are shuffled within buckets and the batch order is shuffled (training);
    without, batches come in bucket order (inference; callers scatter results back).
    `edges=None`: no bucketing, consecutive slices in input order (`rng` must be None).
    """
    if edges is None:
        if rng is not None:
            raise ValueError("bucketed_batches: shuffling (rng) needs bucket edges")
        n = len(n_particles)
        return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    batches: list[NDArray[np.int64]] = []
    for group in bucket_indices(n_particles, edges):
        if rng is not None:
            group = rng.permutation(group)
        batches.extend(np.array_split(group, -(-group.size // batch_size)))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class PaddingWaste(NamedTuple):
    particle_slots: float  # fraction of padded [B, N] slots that are padding
    pair_slots: float  # same for the [B, N, N] pair/attention slots (what attention costs)


def padding_waste(
    n_particles: NDArray[np.integer],
    batch_size: int,
    edges: Sequence[int] | None,
    max_particles: int = 128,
    multiple_of: int = 8,
) -> PaddingWaste:
    """Padding fraction when batching in order (`edges=None`) or bucketed by `edges`."""
    n = np.minimum(np.asarray(n_particles, dtype=np.int64), max_particles)
    groups = bucketed_batches(n, batch_size, edges)
    real = padded = real2 = padded2 = 0
    for g in groups:
        width = -(-int(n[g].max()) // multiple_of) * multiple_of
        real += int(n[g].sum())
        padded += width * g.size
        real2 += int((n[g] ** 2).sum())
        padded2 += width * width * g.size
    return PaddingWaste(1.0 - real / max(padded, 1), 1.0 - real2 / max(padded2, 1))
