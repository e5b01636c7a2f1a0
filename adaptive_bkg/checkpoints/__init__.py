"""Pretrained filter networks shipped with adaptive-bkg (package data).

`default_checkpoint("part-small")` is the path of a part-small ParticleTransformer pretrained
on labelled Pythia + emulator events for every catalogue skim except the held-out ones
(`HELD_OUT_SKIMS`, defined in `adaptive_bkg.backends.emulator.skims` and re-exported here,
kept for the transfer study and the demo). See MODEL_CARD.md here for the
exact command, data and validation figures. Load it with
`adaptive_bkg.model.checkpoint.load_checkpoint(default_checkpoint())`; fine-tune it for a new
skim with `adaptive-bkg finetune --from <path> --skim NAME`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from adaptive_bkg.errors import UserError

if TYPE_CHECKING:
    from adaptive_bkg.backends.emulator.skims import HELD_OUT_SKIMS as HELD_OUT_SKIMS

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


def resolve_checkpoint(checkpoint: str | Path | None, preset: str) -> Path:
    """`model.checkpoint` if given, else the shipped checkpoint of `model.preset`."""
    return Path(checkpoint) if checkpoint is not None else default_checkpoint(preset)


def __getattr__(name: str) -> object:
    # HELD_OUT_SKIMS lives in skims.py; imported on first use, since importing the emulator
    # (numpy, pyarrow, ~0.4 s) is more than `default_checkpoint` callers need.
    if name == "HELD_OUT_SKIMS":
        from adaptive_bkg.backends.emulator.skims import HELD_OUT_SKIMS

        return HELD_OUT_SKIMS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
