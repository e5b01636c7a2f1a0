"""Shared pieces of the model tests: a tiny ParT config that runs in milliseconds."""

from __future__ import annotations

from adaptive_bkg.config import GeneratorConfig
from adaptive_bkg.model.part import PartConfig, on_physics_inputs

TINY = PartConfig(
    dim=32, heads=4, particle_blocks=2, class_blocks=1, mlp_ratio=2, embed_hidden=32,
    pair_hidden=8, pair_layers=1,
)  # fmt: skip

# The same on the physics-aware inputs, in the CMS of the default (basf2 Y4S) beams.
TINY_PHYS = on_physics_inputs(TINY, GeneratorConfig())
