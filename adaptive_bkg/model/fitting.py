"""Fit loops around a `Trainer` (training.py): `fit` runs epochs over a `LabelledEvents` set in
multiplicity buckets and validates after each epoch (`validate_skims`): AUC, and the speedup and
fraction of the oracle speedup that the default sqrt-optimal policy, fitted on the validation q,
reaches on the validation labels. `fit_masked_pdg` is the self-supervised variant
(kishimoto2023): hide PDG ids, predict them. The learning-curve plot of a `TrainingHistory` is
`pipeline.plots.plot_learning_curve`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.config import PolicyConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.formats.labelled import LabelledEvents
from adaptive_bkg.model.features import bucket_edges, bucketed_batches
from adaptive_bkg.model.training import Trainer
from adaptive_bkg.stats.metrics import weighted_auc
from adaptive_bkg.stats.sampling import make_policy, sigmoid
from adaptive_bkg.stats.speedup import confusion_fractions, oracle_speedup, speedup_closed_form


@dataclass(frozen=True)
class SkimValidation:
    """Validation figures of one skim (see `validate_skims`)."""

    auc: float
    eff: float  # pass rate on the validation set
    speedup: float  # expected speedup of sqrt-optimal p on the validation labels
    oracle_speedup: float
    fraction_of_oracle: float
    k: float  # fitted sqrt-optimal scale


def validate_skims(
    logits: NDArray[np.floating],
    labels: NDArray[np.bool_],
    skims: Sequence[str],
    times: tuple[float, float, float],
    policy_cfg: PolicyConfig | None = None,
    weights: NDArray[np.float64] | None = None,
) -> dict[str, SkimValidation]:
    """Per skim: AUC, and the speedup a policy reaches with q = sigmoid(logit).

    The policy (default sqrt-optimal) is fitted per skim on the validation q only (no labels),
    then scored with the validation *labels* through the closed form of giesegh2025
    (`speedup.speedup_closed_form` on `speedup.confusion_fractions`): so a miscalibrated q
    costs speedup but never inflates it. NaN where the validation set lacks a class.
    """
    t_fast, t_nn, t_slow = times
    q = sigmoid(logits)
    policy = make_policy(policy_cfg or PolicyConfig(), tuple(skims))
    policy.fit(q, t_fast, t_nn, t_slow)
    p = policy.per_skim(q)
    params = np.asarray(policy.state.params, dtype=np.float64)
    out: dict[str, SkimValidation] = {}
    for s, skim in enumerate(skims):
        y = labels[:, s]
        auc = weighted_auc(logits[:, s], y, weights)
        eff = float(y.mean()) if len(y) else math.nan
        if not 0 < eff < 1:
            out[skim] = SkimValidation(auc, eff, math.nan, math.nan, math.nan, math.nan)
            continue
        speedup = speedup_closed_form(*confusion_fractions(y, p[:, s]), t_fast, t_nn, t_slow)
        oracle = oracle_speedup(eff, t_fast, t_nn, t_slow)
        k = float(params[min(s, len(params) - 1), 0]) if params.shape[1] else math.nan
        out[skim] = SkimValidation(auc, eff, speedup, oracle, speedup / oracle, k)
    return out


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    step: int
    events_seen: int
    train_loss: float  # mean over the epoch's steps
    val_loss: float
    wall_s: float  # since fit() started
    skims: dict[str, SkimValidation]


@dataclass
class TrainingHistory:
    """Per-epoch records plus a running train loss per ~1 % of the run (for the curve)."""

    skims: tuple[str, ...]
    epochs: list[EpochRecord] = field(default_factory=list)
    step_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss)

    @property
    def last(self) -> EpochRecord:
        if not self.epochs:
            raise ValueError("no epoch finished")
        return self.epochs[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "skims": list(self.skims),
            "epochs": [asdict(e) for e in self.epochs],
            "step_loss": [list(x) for x in self.step_loss],
        }


@dataclass(frozen=True)
class FitProgress:
    epoch: int
    step: int
    events_done: int  # in this epoch
    events_total: int  # per epoch
    loss: float


def class_pos_weight(labels: NDArray[np.bool_], cap: float = 1e3) -> NDArray[np.float64]:
    """n_neg / n_pos per skim over a whole training set (capped; 1 where no positives)."""
    pos = labels.sum(axis=0).astype(np.float64)
    neg = labels.shape[0] - pos
    ratio = np.where(pos > 0, neg / np.maximum(pos, 1.0), 1.0)
    return np.asarray(np.clip(ratio, 1.0 / cap, cap), dtype=np.float64)


def fit(
    trainer: Trainer,
    train: LabelledEvents,
    val: LabelledEvents | None,
    epochs: int,
    *,
    batch_size: int,
    times: tuple[float, float, float],
    policy_cfg: PolicyConfig | None = None,
    train_weights: NDArray[np.float64] | None = None,
    seed: int = 0,
    progress: Callable[[FitProgress], None] | None = None,
) -> TrainingHistory:
    """Train `epochs` passes over `train` (bucketed by multiplicity, shuffled), validating on
    `val` after each epoch. Label columns must be in the model's skim order."""
    skims = trainer.model.skims
    if train.skims != skims or (val is not None and val.skims != skims):
        raise UserError(
            f"dataset skims {list(train.skims)} differ from the model heads {list(skims)}"
        )
    if len(train) == 0:
        raise UserError("no training events")
    if trainer.pos_weight is None and (
        trainer.cfg.class_weights or trainer.cfg.loss == "weighted-bce"
    ):
        trainer.set_pos_weight(class_pos_weight(train.labels))
    rng = np.random.default_rng(seed)
    edges = bucket_edges(trainer.max_particles)
    history = TrainingHistory(skims)
    start = time.perf_counter()
    n_steps_epoch = len(bucketed_batches(train.batch.n_particles, batch_size, edges))
    log_every = max(1, (n_steps_epoch * epochs) // 100)
    window: list[float] = []
    for epoch in range(epochs):
        trainer.epoch = float(epoch)
        batches = bucketed_batches(train.batch.n_particles, batch_size, edges, rng)
        loss_sum, done = 0.0, 0
        for idx in batches:
            w = None if train_weights is None else train_weights[idx]
            step = trainer.train_step(train.batch.take(idx), train.labels[idx], w)
            loss_sum += step.loss * step.n_events
            done += step.n_events
            window.append(step.loss)
            if len(window) >= log_every:
                history.step_loss.append((step.step, float(np.mean(window))))
                window = []
            if progress is not None:
                progress(FitProgress(epoch, step.step, done, len(train), step.loss))
        val_loss, per_skim = math.nan, {}
        if val is not None and len(val):
            result = trainer.evaluate(val.batch, val.labels)
            val_loss = result.loss
            per_skim = validate_skims(result.logits, val.labels, skims, times, policy_cfg)
        history.epochs.append(
            EpochRecord(
                epoch=epoch + 1,
                step=trainer.step,
                events_seen=(epoch + 1) * len(train),
                train_loss=loss_sum / max(done, 1),
                val_loss=val_loss,
                wall_s=time.perf_counter() - start,
                skims=per_skim,
            )
        )
    return history


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskedPdgEpoch:
    epoch: int
    step: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    wall_s: float


def fit_masked_pdg(
    trainer: Trainer,
    train: EventBatch,
    val: EventBatch | None,
    epochs: int,
    *,
    batch_size: int,
    seed: int = 0,
    progress: Callable[[FitProgress], None] | None = None,
) -> list[MaskedPdgEpoch]:
    """Self-supervised pretraining on unlabelled events: masked-PDG prediction accuracy."""
    if len(train) == 0:
        raise UserError("no training events")
    rng = np.random.default_rng(seed)
    edges = bucket_edges(trainer.max_particles)
    start = time.perf_counter()
    out: list[MaskedPdgEpoch] = []
    for epoch in range(epochs):
        loss_sum = correct = n_masked = 0.0
        done = 0
        for idx in bucketed_batches(train.n_particles, batch_size, edges, rng):
            step = trainer.masked_pdg_step(train.take(idx))
            loss_sum += step.loss * step.n_masked
            correct += step.accuracy * step.n_masked
            n_masked += step.n_masked
            done += len(idx)
            if progress is not None:
                progress(FitProgress(epoch, step.step, done, len(train), step.loss))
        val_loss = val_acc = math.nan
        if val is not None and len(val):
            ev = trainer.evaluate_masked_pdg(val)
            val_loss, val_acc = ev.loss, ev.accuracy
        out.append(
            MaskedPdgEpoch(
                epoch + 1,
                trainer.step,
                loss_sum / max(n_masked, 1),
                correct / max(n_masked, 1),
                val_loss,
                val_acc,
                time.perf_counter() - start,
            )
        )
    return out
