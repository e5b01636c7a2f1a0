"""Batched inference over an `EventBatch`, bucketed by multiplicity, results in input order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.model.features import (
    DEFAULT_BUCKET_EDGES,
    bucket_edges,
    bucketed_batches,
    check_finite,
    to_model_inputs,
)
from adaptive_bkg.model.part import ParticleTransformer
from adaptive_bkg.stats.sampling import sigmoid


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:N' validated."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device '{name}' asked for but CUDA is not available here; use cpu or auto"
        )
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device '{name}' is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def predict_logits(
    model: ParticleTransformer,
    batch: EventBatch,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    max_particles: int = 128,
    edges: Sequence[int] | None = DEFAULT_BUCKET_EDGES,
    autocast_bf16: bool = False,
) -> NDArray[np.float32]:
    """Logits [n, n_skims] in the order of `batch`.

    Events are grouped by multiplicity (`edges`; None = in order, no bucketing) so padding
    stays small. The model is put in eval mode and moved to `device`. `autocast_bf16` runs
    the forward in bfloat16 autocast (GPU speed; logits come back float32).
    """
    if batch_size < 1:
        raise UserError(f"prediction batch size {batch_size} must be >= 1")
    device = torch.device(device)
    check_finite(batch)  # once here, so a bad event is named before any work
    model.eval().to(device)
    out = np.empty((len(batch), len(model.skims)), dtype=np.float32)
    if len(batch) == 0:
        return out
    groups = bucketed_batches(
        batch.n_particles, batch_size, None if edges is None else bucket_edges(max_particles, edges)
    )
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=autocast_bf16):
        for idx in groups:
            inputs = to_model_inputs(batch.take(idx), max_particles, device, check=False)
            out[idx] = model(inputs).float().cpu().numpy()
    return out


def predict_q(
    model: ParticleTransformer,
    batch: EventBatch,
    temperature: float = 1.0,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    max_particles: int = 128,
) -> NDArray[np.float64]:
    """Calibrated pass probabilities q = sigmoid(logit / temperature), [n, n_skims] float64."""
    if not temperature > 0:
        raise UserError(f"calibration temperature {temperature} must be > 0")
    logits = predict_logits(model, batch, batch_size, device, max_particles).astype(np.float64)
    return sigmoid(logits / temperature)
