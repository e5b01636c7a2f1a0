"""Checkpoints: a plain state dict plus the config, skim list and PDG vocabulary version.

Only tensors, strings, numbers, lists and dicts are stored, so loading uses
`torch.load(weights_only=True)` (no pickled code runs). The format:

    {"format": "adaptive-bkg-model", "format_version": 1, "state_dict": {...},
     "part_config": {...PartConfig fields...}, "skims": [...], "n_pdg": int,
     "n_bkg_types": int, "pdg_vocab_version": str, "meta": {str: float | int | str}}

`meta` carries free scalars such as the calibration `temperature`, the training step or the
preset name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adaptive_bkg.errors import UserError
from adaptive_bkg.model.checkpoint_header import FORMAT, FORMAT_VERSION, HINT, read_header
from adaptive_bkg.model.features import pdg_vocab
from adaptive_bkg.model.part import PartConfig, ParticleTransformer

MetaValue = float | int | str


@dataclass(frozen=True)
class LoadedModel:
    model: ParticleTransformer  # in eval mode, on the requested device
    config: PartConfig
    skims: tuple[str, ...]
    meta: dict[str, MetaValue]

    @property
    def temperature(self) -> float:
        """Calibration temperature (q = sigmoid(logit / T)); 1.0 if never calibrated."""
        return float(self.meta.get("temperature", 1.0))


def save_checkpoint(
    path: Path | str,
    model: ParticleTransformer,
    skims: Sequence[str] | None = None,
    extra: dict[str, MetaValue] | None = None,
) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves half a checkpoint."""
    if skims is not None and tuple(skims) != model.skims:
        raise ValueError(f"save_checkpoint: skims {list(skims)} != model heads {list(model.skims)}")
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, float | int | str):
            raise UserError(
                f"checkpoint meta {key!r} = {value!r}: only str/int/float values allowed"
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "part_config": model.cfg.to_dict(),
        "skims": list(model.skims),
        "n_pdg": model.n_pdg,
        "n_bkg_types": model.n_bkg_types,
        "pdg_vocab_version": pdg_vocab().version,
        "meta": dict(extra or {}),
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def _read_payload(path: Path) -> dict[str, Any]:
    read_header(path)  # missing, not a torch file, foreign or another version: one line, no torch
    try:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load on damaged bytes raises almost anything (KeyError...)
        # torch's own messages run to paragraphs about weights_only; the type says enough.
        raise UserError(
            f"{path} is not an adaptive-bkg checkpoint (torch.load failed: {type(exc).__name__}); "
            f"{HINT}"
        ) from None
    return payload


def load_checkpoint(
    path: Path | str,
    skims: Sequence[str] | None = None,
    new_head_skims_ok: bool = False,
    expect_config: PartConfig | None = None,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Rebuild the model of a checkpoint.

    `skims`: the heads wanted, in this order. A subset of the checkpoint's skims is fine;
    a skim without a head is an error unless `new_head_skims_ok` (fine-tuning), which adds a
    freshly initialised head for it. `expect_config`: refuse a different architecture.
    """
    path = Path(path)
    payload = _read_payload(path)
    config = PartConfig.from_dict(dict(payload["part_config"]))
    if expect_config is not None and expect_config != config:
        diff = {
            k: (v, getattr(expect_config, k))
            for k, v in config.to_dict().items()
            if v != getattr(expect_config, k)
        }
        raise UserError(
            f"checkpoint {path} has a different architecture: (stored, asked) = {diff}; "
            "use a matching --set model.preset or start from scratch"
        )
    vocab_version = pdg_vocab().version
    if payload["pdg_vocab_version"] != vocab_version:
        raise UserError(
            f"checkpoint {path} uses PDG vocabulary {payload['pdg_vocab_version']}, this "
            f"installation builds {vocab_version} (different 'particle' package version?)"
        )
    stored_skims = tuple(payload["skims"])
    model = ParticleTransformer(
        config, stored_skims, n_pdg=int(payload["n_pdg"]), n_bkg_types=int(payload["n_bkg_types"])
    )
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise UserError(f"checkpoint {path} does not match its own config: {first}") from None

    wanted = stored_skims if skims is None else tuple(skims)
    missing = [s for s in wanted if s not in stored_skims]
    if missing and not new_head_skims_ok:
        raise UserError(
            f"checkpoint {path} was trained for skims {list(stored_skims)}; asked for "
            f"{list(wanted)}: use `finetune --skim {','.join(missing)}` to add a head"
        )
    if missing:
        model.add_skims(missing)
    model.select_skims(wanted)
    model.to(device).eval()
    meta = {str(k): v for k, v in dict(payload["meta"]).items()}
    return LoadedModel(model, config, model.skims, meta)
