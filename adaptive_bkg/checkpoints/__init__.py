"""Pretrained filter networks shipped with adaptive-bkg (package data).

`default_checkpoint("part-small")` is the path of a part-small ParticleTransformer pretrained
on labelled Pythia + emulator events for every catalogue skim except the held-out ones
(`HELD_OUT_SKIMS`, kept for the transfer study and the demo). See MODEL_CARD.md here for the
exact command, data and validation figures. Load it with
`adaptive_bkg.model.checkpoint.load_checkpoint(default_checkpoint())`; fine-tune it for a new
skim with `adaptive-bkg finetune --from <path> --skim NAME`.
"""

from __future__ import annotations

from pathlib import Path

from adaptive_bkg.errors import UserError

HELD_OUT_SKIMS: tuple[str, ...] = ("radiative", "dstar-d0pi")
"""Catalogue skims the shipped checkpoint never saw labels of."""

_SHIPPED: dict[str, str] = {"part-small": "part-small.pt"}


def default_checkpoint(preset: str = "part-small") -> Path:
    """Path of the shipped pretrained checkpoint of `preset`."""
    try:
        name = _SHIPPED[preset]
    except KeyError:
        raise UserError(
            f"no shipped checkpoint for preset '{preset}' (shipped: {', '.join(_SHIPPED)}); "
            "pretrain one with adaptive-bkg pretrain"
        ) from None
    path = Path(__file__).with_name(name)
    if not path.is_file():
        raise UserError(f"shipped checkpoint {path} is missing from this installation")
    return path
