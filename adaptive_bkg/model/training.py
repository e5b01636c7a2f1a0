"""Training the filter network: one `Trainer` for offline (pre)training, fine-tuning and the
online learner stage (the epoch loops `fit` and `fit_masked_pdg` are in fitting.py).

- `Trainer.train_step` is one AdamW step on one mini-batch: gradient clipping, bf16 autocast
  on CUDA, per-event loss weights w = 1/p (the learner sees only kept events; weighting keeps
  q calibrated for the unfiltered distribution, DESIGN §2), loss chosen by `LearnerConfig.loss`
  from `model/losses.py`. Fine-tuning uses a lower backbone lr (`backbone_lr_factor`) or a
  frozen backbone (`freeze_backbone`, feature extraction).
- `Trainer.masked_pdg_step` is the self-supervised step (kishimoto2023): hide PDG ids,
  predict them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from adaptive_bkg.config import LearnerConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.model import losses
from adaptive_bkg.model.features import (
    bucket_edges,
    bucketed_batches,
    random_pdg_mask,
    to_model_inputs,
)
from adaptive_bkg.model.part import ParticleTransformer
from adaptive_bkg.model.predict import predict_logits
from adaptive_bkg.stats.metrics import weighted_auc


# ---------------------------------------------------------------------------------------------
class StepResult(NamedTuple):
    loss: float
    n_events: int
    step: int  # optimiser steps taken so far, this one included


class EvalResult(NamedTuple):
    loss: float
    auc: dict[str, float]  # weighted AUC per skim (NaN where a class is absent)
    logits: NDArray[np.float32]  # [n, n_skims]


class MaskedPdgResult(NamedTuple):
    loss: float
    accuracy: float  # fraction of masked particles whose PDG id was predicted exactly
    n_masked: int
    step: int


def _lr_lambda(warmup_steps: int, total_steps: int | None, schedule: str) -> Callable[[int], float]:
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        if schedule != "cosine" or total_steps is None:
            return warm
        progress = min(1.0, step / max(1, total_steps))
        return warm * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Optimiser, schedule and loss around a `ParticleTransformer` (see module doc).

    `total_steps` switches on the cosine schedule (cfg.lr_schedule == "cosine"); without it the
    lr is constant after warm-up, as the online learner needs. `pos_weight` [n_skims]: positive
    class weights for class-weighted losses (None: balanced on each batch).
    """

    def __init__(
        self,
        model: ParticleTransformer,
        cfg: LearnerConfig,
        device: str | torch.device,
        max_particles: int,
        *,
        total_steps: int | None = None,
        backbone_lr_factor: float = 1.0,
        freeze_backbone: bool = False,
        pos_weight: Sequence[float] | None = None,
        times: losses.StageTimes | None = None,
        p_min: float = 0.01,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.device = torch.device(device)
        self.max_particles = max_particles
        self.times, self.p_min = times or losses.StageTimes(), p_min
        self.epoch = 0.0  # entropeedup anneals with it; fit() advances it
        self.step = 0
        self.autocast = self.device.type == "cuda"  # bf16 on GPU; CPU stays float32
        self.model.to(self.device).train()
        self.pos_weight: torch.Tensor | None = None
        if pos_weight is not None:
            self.set_pos_weight(pos_weight)

        head = list(model.head_parameters())
        backbone = list(model.backbone_parameters())
        groups: list[dict[str, Any]] = [{"params": head, "lr": cfg.lr}]
        if freeze_backbone:
            for p in backbone:
                p.requires_grad_(False)
        else:
            groups.append({"params": backbone, "lr": cfg.lr * backbone_lr_factor})
        # Masked-PDG head trains only in self-supervised pretraining (its grads are None
        # otherwise, and AdamW skips parameters without gradients).
        groups.append({"params": list(model.pdg_head.parameters()), "lr": cfg.lr})
        for group in groups:
            group["params"] = [p for p in group["params"] if p.requires_grad]
        self.trainable = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]], weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(cfg.warmup_steps, total_steps, cfg.lr_schedule)
        )
        self._mask_rng = torch.Generator().manual_seed(cfg.seed)

    # -- loss ----------------------------------------------------------------------------
    def set_pos_weight(self, pos_weight: Sequence[float] | NDArray[np.float64]) -> None:
        values = np.asarray(pos_weight, dtype=np.float32)
        if values.shape != (len(self.model.skims),):
            raise ValueError(
                f"pos_weight needs {len(self.model.skims)} entries, got {values.shape}"
            )
        self.pos_weight = torch.from_numpy(values).to(self.device)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None
    ) -> torch.Tensor:
        name, cfg = self.cfg.loss, self.cfg
        if name == "weighted-bce" or (name == "bce" and cfg.class_weights):
            return losses.class_weighted_bce_loss(logits, targets, weights, self.pos_weight)
        if name == "bce":
            return losses.bce_loss(logits, targets, weights)
        if name == "focal":
            if not cfg.class_weights:
                return losses.focal_loss(logits, targets, weights, gamma=cfg.focal_gamma)
            # Balanced alpha per skim: alpha / (1 - alpha) = n_neg / n_pos, as pos_weight.
            pw = (
                self.pos_weight
                if self.pos_weight is not None
                else losses.balanced_pos_weight(targets, weights)
            )
            alphas = (pw / (1.0 + pw)).clamp(1e-3, 1 - 1e-3).tolist()
            per_skim = [
                losses.focal_loss(
                    logits[:, s : s + 1], targets[:, s : s + 1], weights, cfg.focal_gamma, a
                )
                for s, a in enumerate(alphas)
            ]
            return torch.stack(per_skim).mean()
        if name == "speedup":
            return losses.speedup_loss(logits, targets, weights, self.times, self.p_min)
        if name == "entropeedup":
            return losses.entropeedup_loss(
                logits, targets, weights, self.epoch, self.times, self.p_min
            )
        raise UserError(f"unknown loss '{name}'")  # pragma: no cover - config validates it

    # -- steps ---------------------------------------------------------------------------
    def _optimise(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1

    def train_step(
        self,
        batch: EventBatch,
        labels: NDArray[np.bool_],
        weights: NDArray[np.float64] | None = None,
    ) -> StepResult:
        """One optimiser step on this mini-batch (weights = 1/p per event, None = all 1)."""
        if labels.shape != (len(batch), len(self.model.skims)):
            raise ValueError(
                f"labels {labels.shape} != ({len(batch)}, {len(self.model.skims)} skims)"
            )
        self.model.train()
        inputs = to_model_inputs(batch, self.max_particles, self.device)
        targets = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)).to(self.device)
        w = None if weights is None else torch.from_numpy(np.asarray(weights, np.float32))
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            logits = self.model(inputs)
        loss = self.loss(logits.float(), targets, None if w is None else w.to(self.device))
        self._optimise(loss)
        return StepResult(float(loss.detach()), len(batch), self.step)

    def evaluate(
        self,
        batch: EventBatch,
        labels: NDArray[np.bool_],
        weights: NDArray[np.float64] | None = None,
        batch_size: int = 1024,
    ) -> EvalResult:
        """Loss and weighted AUC per skim on held-out events (no gradient, model left in
        train mode)."""
        logits = predict_logits(
            self.model,
            batch,
            batch_size,
            self.device,
            self.max_particles,
            autocast_bf16=self.autocast,
        )
        self.model.train()
        w = None if weights is None else torch.from_numpy(np.asarray(weights, np.float32))
        targets = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))
        with torch.no_grad():
            loss = float(self.loss(torch.from_numpy(logits), targets, w))
        auc = {
            skim: weighted_auc(logits[:, s], labels[:, s], weights)
            for s, skim in enumerate(self.model.skims)
        }
        return EvalResult(loss, auc, logits)

    def masked_pdg_step(self, batch: EventBatch) -> MaskedPdgResult:
        """Self-supervised step: mask `ssl_mask_fraction` of PDG ids, predict them."""
        self.model.train()
        loss, correct, n = self._masked_pdg(batch)
        self._optimise(loss)
        return MaskedPdgResult(float(loss.detach()), correct / max(n, 1), n, self.step)

    def evaluate_masked_pdg(self, batch: EventBatch, batch_size: int = 1024) -> MaskedPdgResult:
        self.model.eval()
        total_loss = total_correct = total_n = 0.0
        with torch.no_grad():
            for idx in bucketed_batches(
                batch.n_particles, batch_size, bucket_edges(self.max_particles)
            ):
                loss, correct, n = self._masked_pdg(batch.take(idx))
                total_loss += float(loss) * n
                total_correct += correct
                total_n += n
        self.model.train()
        n_masked = int(total_n)
        return MaskedPdgResult(
            total_loss / max(total_n, 1), total_correct / max(total_n, 1), n_masked, self.step
        )

    def _masked_pdg(self, batch: EventBatch) -> tuple[torch.Tensor, int, int]:
        inputs = to_model_inputs(batch, self.max_particles, self.device)
        positions = random_pdg_mask(inputs, self.cfg.ssl_mask_fraction, self._mask_rng)
        targets = inputs.pdg[positions]
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            logits = self.model.masked_pdg_logits(inputs, positions)
        loss = F.cross_entropy(logits.float(), targets)
        correct = int((logits.argmax(dim=1) == targets).sum())
        return loss, correct, int(targets.numel())

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of the model weights (what a WeightsSnapshot carries)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def init_heads_from_prior(
    model: ParticleTransformer,
    labels: NDArray[np.bool_] | None = None,
    *,
    rates: Sequence[float] | NDArray[np.float64] | None = None,
    skims: Sequence[str] | None = None,
) -> None:
    """Zero weights and bias = logit(pass rate) for the heads of `skims` (default: all).

    Pass rates come from `labels` [n, n_model_skims] (columns in the model's skim order) or
    directly from `rates` [n_model_skims] (e.g. an expected rate for a live run's new head).
    A fresh head otherwise starts in a random direction, and for a skim passing < 1 % of
    events AdamW spends its first hundreds of steps only moving the bias: with a frozen
    backbone and 10^4 events that left heads ranking worse than random (AUC 0.43 where a
    logistic regression on the same features reaches 0.72). Starting at the prior makes the
    first gradients point along the data.
    """
    if (labels is None) == (rates is None):
        raise ValueError("give exactly one of labels or rates")
    if labels is not None:
        rate = labels.mean(axis=0) if len(labels) else np.full(labels.shape[1], 0.5)
    else:
        rate = np.asarray(rates, dtype=np.float64)
    if rate.shape != (len(model.skims),):
        raise ValueError(f"{rate.shape} pass rates for {len(model.skims)} heads")
    rate = np.clip(rate, 1e-4, 1 - 1e-4)
    chosen = set(model.skims if skims is None else skims)
    with torch.no_grad():
        for k, (name, head) in enumerate(zip(model.skims, model.heads, strict=True)):
            if name not in chosen:
                continue
            assert isinstance(head, torch.nn.Linear)
            head.weight.zero_()
            head.bias.fill_(float(np.log(rate[k] / (1 - rate[k]))))
