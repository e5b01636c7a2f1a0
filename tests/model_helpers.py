"""Shared pieces of the model tests: a tiny ParT config that runs in milliseconds."""

from __future__ import annotations

from adaptive_bkg.model.part import PartConfig

TINY = PartConfig(
    dim=32, heads=4, particle_blocks=2, class_blocks=1, mlp_ratio=2, embed_hidden=32,
    pair_hidden=8, pair_layers=1,
)  # fmt: skip
