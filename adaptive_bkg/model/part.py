"""A Particle Transformer (ParT, arXiv:2202.03772) for generator-level Belle II events.

    raw particle features --particle_features--> embed MLP --+ PDG embedding + bkg-type embedding
    pair features (decay tree, ln m^2, angle, vertex distance) --pair MLP--> bias [B, H, N, N]
        (computed ONCE per event, shared by every particle block: DESIGN §5)
    particle blocks (pre-norm, SDPA with additive float mask = pair bias + key padding)
    class blocks (a class token attends to [class token, particles]; CaiT / ParT style)
    LayerNorm -> one logit per skim head (heads can be added/replaced, backbone kept)

`inputs = "physics"` (preset part-phys-small) swaps in physics_features: CMS-frame, decay-tree,
acceptance and ParT-style CMS pair features, plus a global-event embedding added to every
particle token; the beams that define the CMS are part of the config (checkpoints record them).

Padding never changes a result: padded keys get -inf in the attention mask, padded queries
produce finite garbage that nothing reads, and the class token only sees real particles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptive_bkg.config import GeneratorConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.model.features import (
    MASK_ID,
    N_PAIR_FEATURES,
    N_PARTICLE_FEATURES,
    N_RESERVED_IDS,
    ModelInputs,
    pair_features,
    particle_features,
    pdg_vocab,
)
from adaptive_bkg.model.physics_features import (
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
from adaptive_bkg.physics.beams import Beams, BeamSettings
from adaptive_bkg.physics.geometry import BELLE2_ACCEPTANCE
from adaptive_bkg.physics.pdg import NEUTRINOS
from adaptive_bkg.physics.processes import BKG_TYPES

INPUTS = ("raw", "physics")  # PartConfig.inputs
_BEAM_FIELDS = ("e_minus_gev", "e_plus_gev", "crossing_angle_rad")


@dataclass(frozen=True)
class PartConfig:
    dim: int = 128  # token width
    heads: int = 8
    particle_blocks: int = 8
    class_blocks: int = 2
    mlp_ratio: int = 4  # hidden width of the block MLPs = mlp_ratio * dim
    embed_hidden: int = 128  # hidden width of the particle-embedding MLP
    pair_hidden: int = 64  # hidden width of the pair-feature MLP (its cost scales with N^2)
    pair_layers: int = 3  # hidden layers of the pair-feature MLP (0 = linear map to heads)
    dropout: float = 0.0
    # "raw": features.particle/pair_features; "physics": physics_features, in the CMS of these
    # beams (None for raw inputs; left out of `to_dict` then, so raw checkpoints are unchanged).
    inputs: str = "raw"
    e_minus_gev: float | None = None
    e_plus_gev: float | None = None
    crossing_angle_rad: float | None = None

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise UserError(f"model inputs '{self.inputs}' unknown (allowed: {', '.join(INPUTS)})")
        beams = [getattr(self, name) for name in _BEAM_FIELDS]
        if any((b is None) == (self.inputs == "physics") for b in beams):
            raise UserError(
                f"model inputs '{self.inputs}' with beams {beams}: physics inputs need all of "
                f"{', '.join(_BEAM_FIELDS)}, raw inputs none"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "inputs" or value is None:
                continue
            if f.name in _BEAM_FIELDS:
                if value < 0 or (value == 0 and f.name != "crossing_angle_rad"):
                    raise UserError(f"model {f.name} = {value} must be > 0")
            elif f.name == "dropout":
                if not 0.0 <= value < 1.0:
                    raise UserError(f"model dropout {value} must lie in [0, 1)")
            elif value < (minimum := 0 if f.name == "pair_layers" else 1):
                raise UserError(f"model {f.name} = {value} must be >= {minimum}")
        if self.dim % self.heads:
            raise UserError(f"model width {self.dim} is not divisible by heads {self.heads}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if self.inputs == "raw":  # as before physics inputs existed: old readers load it
            for name in ("inputs", *_BEAM_FIELDS):
                del values[name]
        return values

    @property
    def beams(self) -> Beams:
        """The beams whose CMS the physics inputs use (physics inputs only)."""
        if self.e_minus_gev is None or self.e_plus_gev is None or self.crossing_angle_rad is None:
            raise ValueError("PartConfig.beams: raw inputs have no beams")
        return Beams(self.e_minus_gev, self.e_plus_gev, self.crossing_angle_rad)

    def with_beams(self, settings: BeamSettings) -> PartConfig:
        """This config in the CMS of `settings` (e.g. `cfg.generator`); raw inputs unchanged."""
        if self.inputs == "raw":
            return self
        return on_physics_inputs(self, settings)

    @staticmethod
    def from_dict(values: dict[str, Any]) -> PartConfig:
        known = {f.name for f in fields(PartConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"model config has unknown fields {unknown} (known: {sorted(known)})")
        return PartConfig(**values)


def on_physics_inputs(config: PartConfig, settings: BeamSettings) -> PartConfig:
    """`config` on physics inputs in the CMS of the beams `settings` names."""
    return replace(
        config,
        inputs="physics",
        e_minus_gev=float(settings.e_minus_gev),
        e_plus_gev=float(settings.e_plus_gev),
        crossing_angle_rad=float(settings.crossing_angle_rad),
    )


PRESETS: dict[str, PartConfig] = {
    # DESIGN §5: 8 particle blocks + 2 class blocks, 8 heads, width 128, ~2M parameters.
    "part-2m": PartConfig(),
    # CPU preset (docs/model.md has measured speed): on CPU every [B, N, N, C] pass is memory
    # bound, so the pair bias is a linear map of the pair features (adjacency still exact).
    "part-small": PartConfig(
        dim=64, heads=4, particle_blocks=3, class_blocks=1, mlp_ratio=2, embed_hidden=64,
        pair_hidden=16, pair_layers=0,
    ),
}  # fmt: skip
# part-small's architecture on the physics-aware inputs (physics_features, docs/model.md), in
# the CMS of the generator's default (basf2 Y4S) beams unless `preset(..., beams)` says otherwise.
PRESETS["part-phys-small"] = on_physics_inputs(PRESETS["part-small"], GeneratorConfig())


def preset(name: str, beams: BeamSettings | None = None) -> PartConfig:
    """The named architecture; physics-input presets take the CMS of `beams` (e.g.
    `cfg.generator`) when given."""
    try:
        config = PRESETS[name]
    except KeyError:
        raise UserError(f"unknown model preset '{name}' (known: {', '.join(PRESETS)})") from None
    return config if beams is None else config.with_beams(beams)


# ---------------------------------------------------------------------------------------------
def _mlp(sizes: Sequence[int], dropout: float = 0.0, relu: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers.append(nn.ReLU() if relu else nn.GELU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor, dropout: float, math_path: bool
) -> Tensor:
    """softmax(q k^T / sqrt(d) + bias) v; `math_path` spells it out (ONNX export, reference)."""
    bias = bias.to(q.dtype)
    if not math_path:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    scale = 1.0 / math.sqrt(int(q.shape[-1]))  # int(): a Python constant when traced
    scores = (q @ k.transpose(-1, -2)) * scale + bias
    return F.dropout(scores.softmax(dim=-1), dropout, training=dropout > 0) @ v


class ParticleBlock(nn.Module):
    """Pre-norm self-attention over particles with an additive pair bias, then an MLP."""

    def __init__(self, cfg: PartConfig) -> None:
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.mlp = _mlp([cfg.dim, cfg.mlp_ratio * cfg.dim, cfg.dim], cfg.dropout)
        self.math_attention = False

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, d_head]
        dropout = self.dropout if self.training else 0.0
        y = attention(q, k, v, bias, dropout, self.math_attention)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class ClassBlock(nn.Module):
    """The class token attends to [class token, particles] (padded particles masked)."""

    def __init__(self, cfg: PartConfig) -> None:
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.norm_q, self.norm_kv, self.norm2 = (nn.LayerNorm(cfg.dim) for _ in range(3))
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.mlp = _mlp([cfg.dim, cfg.mlp_ratio * cfg.dim, cfg.dim], cfg.dropout)
        self.math_attention = False

    def forward(self, cls: Tensor, x: Tensor, key_bias: Tensor) -> Tensor:
        b, n, d = x.shape
        h, dh = self.heads, d // self.heads
        tokens = self.norm_kv(torch.cat([cls, x], dim=1))  # [B, 1 + N, D]
        q = self.q(self.norm_q(cls)).view(b, 1, h, dh).transpose(1, 2)
        k, v = self.kv(tokens).view(b, n + 1, 2, h, dh).permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.dropout if self.training else 0.0
        y = attention(q, k, v, key_bias, dropout, self.math_attention)  # [B, H, 1, dh]
        cls = cls + self.proj(y.transpose(1, 2).reshape(b, 1, d))
        return cls + self.mlp(self.norm2(cls))


class ParticleTransformer(nn.Module):
    charge_table: Tensor  # [n_pdg] charge per vocabulary id (buffer)
    invisible_table: Tensor  # [n_pdg] neutrino flag per vocabulary id (physics inputs only)
    cms_matrix: Tensor  # [4, 4] lab -> CMS boost (physics inputs only)

    def __init__(
        self,
        cfg: PartConfig,
        skims: Sequence[str],
        n_pdg: int | None = None,
        n_bkg_types: int = len(BKG_TYPES),
    ) -> None:
        super().__init__()
        vocab = pdg_vocab()
        self.cfg = cfg
        self.n_pdg = vocab.size if n_pdg is None else n_pdg
        self.n_bkg_types = n_bkg_types
        self.skims: tuple[str, ...] = ()
        # Derived from the PDG vocabulary, not learned: kept out of the state dict.
        charge = torch.zeros(self.n_pdg)
        table = torch.from_numpy(vocab.charge_table())[: self.n_pdg]
        charge[: table.numel()] = table
        self.register_buffer("charge_table", charge, persistent=False)
        physics = cfg.inputs == "physics"
        if physics:  # constants derived from the vocabulary and the config: not in the state dict
            invisible = torch.zeros(self.n_pdg, dtype=torch.bool)
            codes = torch.from_numpy(vocab.codes)[: self.n_pdg - N_RESERVED_IDS]
            invisible[N_RESERVED_IDS : N_RESERVED_IDS + codes.numel()] = torch.isin(
                codes.abs(), torch.tensor(NEUTRINOS, dtype=codes.dtype)
            )
            self.register_buffer("invisible_table", invisible, persistent=False)
            boost = torch.from_numpy(cfg.beams.cms_matrix()).to(torch.float32)
            self.register_buffer("cms_matrix", boost, persistent=False)
            self.sqrt_s = cfg.beams.sqrt_s

        n_particle = N_PHYS_PARTICLE_FEATURES if physics else N_PARTICLE_FEATURES
        n_pair = N_PHYS_PAIR_FEATURES if physics else N_PAIR_FEATURES
        self.particle_embed = _mlp([n_particle, cfg.embed_hidden, cfg.dim])
        self.pdg_embed = nn.Embedding(self.n_pdg, cfg.dim)
        self.bkg_embed = nn.Embedding(n_bkg_types, cfg.dim)
        self.pair_embed = _mlp(
            [n_pair] + [cfg.pair_hidden] * cfg.pair_layers + [cfg.heads], relu=True
        )  # ReLU: this MLP runs on N^2 pairs, where GELU's cost shows
        self.blocks = nn.ModuleList(ParticleBlock(cfg) for _ in range(cfg.particle_blocks))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.class_blocks = nn.ModuleList(ClassBlock(cfg) for _ in range(cfg.class_blocks))
        self.norm = nn.LayerNorm(cfg.dim)
        self.particle_norm = nn.LayerNorm(cfg.dim)
        self.pdg_head = nn.Linear(cfg.dim, self.n_pdg)  # masked-PDG pretraining only
        self.heads = nn.ModuleList()
        self.add_skims(skims)
        # Created last, so that raw-input models draw the same initial weights as before.
        self.global_embed = nn.Linear(N_GLOBAL_FEATURES, cfg.dim) if physics else None

    # -- skim heads ----------------------------------------------------------------------
    def _new_head(self) -> nn.Linear:
        head = nn.Linear(self.cfg.dim, 1)
        head.to(self.cls_token.device)
        return head

    def add_skims(self, names: Sequence[str]) -> None:
        """Append a freshly initialised head per new skim; the backbone is untouched."""
        clash = sorted(set(names) & set(self.skims))
        if clash or len(set(names)) != len(names):
            raise UserError(f"skims {clash or list(names)} given twice; each skim has one head")
        for _ in names:
            self.heads.append(self._new_head())
        self.skims = (*self.skims, *names)

    def replace_heads(self, names: Sequence[str]) -> None:
        """Drop every head and start fresh ones for `names` (transfer to new skims)."""
        self.heads = nn.ModuleList()
        self.skims = ()
        self.add_skims(names)

    def select_skims(self, names: Sequence[str]) -> None:
        """Keep (and reorder to) the heads of `names`, which must all exist."""
        missing = [s for s in names if s not in self.skims]
        if missing:
            raise UserError(f"model has no heads for skims {missing} (it has {list(self.skims)})")
        self.heads = nn.ModuleList(self.heads[self.skims.index(s)] for s in names)
        self.skims = tuple(names)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.heads.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but the skim heads and the masked-PDG head (for a lower fine-tune lr)."""
        skip = {id(p) for p in [*self.heads.parameters(), *self.pdg_head.parameters()]}
        yield from (p for p in self.parameters() if id(p) not in skip)

    def set_math_attention(self, enabled: bool) -> None:
        """Spell attention out instead of SDPA (ONNX export; reference for tests)."""
        for block in [*self.blocks, *self.class_blocks]:
            block.math_attention = enabled

    # -- forward -------------------------------------------------------------------------
    def embed_particles(self, inputs: ModelInputs) -> tuple[Tensor, Tensor]:
        """Particle tokens before the blocks [B, N, D] and the attention key mask [B, N]."""
        # An event without particles would have no valid key (softmax of all -inf = NaN):
        # let such events attend to their first (padding) slot instead.
        mask = inputs.mask
        empty = ~mask.any(dim=1, keepdim=True)
        first = torch.arange(mask.shape[1], device=mask.device) == 0
        key_mask = mask | (empty & first)
        charge = self.charge_table[inputs.pdg]
        if self.global_embed is None:
            x = self.particle_embed(particle_features(inputs.features, charge, inputs.mother))
        else:
            features, event = self.physics_inputs(inputs, charge)
            x = self.particle_embed(features) + self.global_embed(event).unsqueeze(1)
        x = x + self.pdg_embed(inputs.pdg) + self.bkg_embed(inputs.bkg_type).unsqueeze(1)
        return x, key_mask

    def physics_inputs(self, inputs: ModelInputs, charge: Tensor) -> tuple[Tensor, Tensor]:
        """Physics-aware particle features [B, N, F] and global-event features [B, G], in
        float32 even under bf16 autocast (3 significant digits would blur boosts and angles)."""
        raw, mother = inputs.features, inputs.mother
        with torch.autocast(raw.device.type, enabled=False):
            cms = cms_four_momenta(raw, self.cms_matrix)
            tree = decay_tree(raw, mother, inputs.mask)
            accept = acceptances(raw, charge, BELLE2_ACCEPTANCE)
            particles = physics_particle_features(raw, charge, mother, cms, tree, accept)
            visible = tree.final & ~self.invisible_table[inputs.pdg]
            event = global_features(cms, visible, tree.final & accept.trackable, self.sqrt_s)
        return particles, event

    def pair_bias(self, inputs: ModelInputs, key_mask: Tensor) -> Tensor:
        """Attention bias [B, H, N, N]: pair-feature MLP per head, -inf on padded keys."""
        if self.global_embed is None:
            pairs = pair_features(inputs.features, inputs.mother)
        else:
            with torch.autocast(inputs.features.device.type, enabled=False):  # as physics_inputs
                cms = cms_four_momenta(inputs.features, self.cms_matrix)
                pairs = physics_pair_features(inputs.features, inputs.mother, cms)
        bias = self.pair_embed(pairs).permute(0, 3, 1, 2)
        key_bias = torch.zeros_like(key_mask, dtype=bias.dtype).masked_fill(~key_mask, -math.inf)
        return (bias + key_bias[:, None, None, :]).contiguous()  # else SDPA copies it per block

    def encode_particles(self, inputs: ModelInputs) -> tuple[Tensor, Tensor]:
        """Particle tokens after the particle blocks [B, N, D] and the key mask [B, N] used."""
        x, key_mask = self.embed_particles(inputs)
        bias = self.pair_bias(inputs, key_mask)  # once per event, shared by all blocks
        for block in self.blocks:
            x = block(x, bias)
        return x, key_mask

    def pool(self, x: Tensor, key_mask: Tensor, bkg_type: Tensor) -> Tensor:
        """Class blocks over particle tokens -> event representation [B, D] (normalised)."""
        valid = torch.cat([torch.ones_like(key_mask[:, :1]), key_mask], dim=1)
        key_bias = torch.zeros_like(valid, dtype=x.dtype).masked_fill(~valid, -math.inf)
        key_bias = key_bias[:, None, None, :]
        cls = self.cls_token.expand(x.shape[0], -1, -1) + self.bkg_embed(bkg_type).unsqueeze(1)
        for block in self.class_blocks:
            cls = block(cls, x, key_bias)
        return self.norm(cls.squeeze(1))

    def embed(self, inputs: ModelInputs) -> Tensor:
        """Event representation [B, D] (the normalised class token): feature extraction."""
        x, key_mask = self.encode_particles(inputs)
        return self.pool(x, key_mask, inputs.bkg_type)

    def head_logits(self, z: Tensor) -> Tensor:
        """Event representations [B, D] -> logits [B, n_skims] (all heads in one matmul)."""
        heads = cast(list[nn.Linear], list(self.heads))
        if not heads:  # a masked-PDG-pretrained backbone has no skim heads yet
            return z.new_zeros(z.shape[0], 0)
        weight = torch.cat([h.weight for h in heads], dim=0)
        bias = torch.cat([h.bias for h in heads], dim=0)
        return F.linear(z, weight, bias)

    def forward(self, inputs: ModelInputs) -> Tensor:
        """Logits [B, n_skims], one per skim head in `self.skims` order."""
        return self.head_logits(self.embed(inputs))

    def masked_pdg_logits(self, inputs: ModelInputs, positions: Tensor) -> Tensor:
        """Self-supervised pretraining (kishimoto2023): hide the PDG id (and hence the charge)
        of the particles at `positions` [B, N] bool and predict it: logits [n_masked, n_pdg].
        Targets are `inputs.pdg[positions]`."""
        hidden = inputs._replace(pdg=inputs.pdg.masked_fill(positions, MASK_ID))
        x, _ = self.encode_particles(hidden)
        return self.pdg_head(self.particle_norm(x[positions]))

    def n_parameters(self, include_pdg_head: bool = False) -> int:
        skip = set() if include_pdg_head else {id(p) for p in self.pdg_head.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)
