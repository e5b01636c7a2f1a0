"""Training losses for multi-skim pass/fail heads, all importance-weighted.

Shapes: `logits` and `targets` [B, n_skims] (targets 0/1, any float/bool dtype), `weights` [B]
per-event importance weights (an event kept with probability p trains with weight 1/p, so the
learned q stays calibrated for the unfiltered distribution: DESIGN §2) or None (all 1).
Every loss is a weighted mean, normalised by sum(weights): with integer weights it equals the
unweighted loss on the sample where each event is repeated w times.

The speedup loss follows DESIGN §2, not yu2022's soft-confusion-matrix R. The network output
p = p_min + (1 - p_min) * sigmoid(logit) is used directly as the keep probability, and

    R = (t2 + t_slow * E[p]) * E[y / p] / (t3 * eps),     eps = E[y]

is the exact expected inverse speedup of importance sampling with that p: cost per generated
event t2 + t_slow * E[p] (`stats.speedup.cost_per_event`, like every speedup formula),
effective passing events per generated event eps^2 / E[q/p], and E[y/p] = E[q/p] because
E[y | x] = q(x). yu2022's R counts soft TP/FP/FN/TN, which measures the same cost but
approximates N_eff; DESIGN's form is unbiased, has no thresholds, gives R = 1/oracle_speedup
at p = y and (t2 + t_slow)/t3 at p = 1, and its minimiser over p(x) is the sqrt-optimal policy.
Caveat: a head trained on it outputs a keep probability (~ sqrt(q)), not a calibrated q; use
the `identity` policy on such heads, or BCE/entropeedup for q.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptive_bkg.errors import UserError
from adaptive_bkg.stats.speedup import cost_per_event, unfiltered_cost_per_event


def _weighted_mean(per_item: Tensor, weights: Tensor | None) -> Tensor:
    """Mean over events (weighted) and skims of a [B, S] tensor."""
    if weights is None:
        return per_item.mean()
    w = weights.to(per_item.dtype)
    return (per_item * w.unsqueeze(1)).sum() / (w.sum() * per_item.shape[1]).clamp(min=1e-12)


def _check(logits: Tensor, targets: Tensor, weights: Tensor | None) -> Tensor:
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    if weights is not None and weights.shape != logits.shape[:1]:
        raise ValueError(f"weights {tuple(weights.shape)} do not match batch {logits.shape[0]}")
    return targets.to(logits.dtype)


def bce_loss(logits: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    y = _check(logits, targets, weights)
    return _weighted_mean(F.binary_cross_entropy_with_logits(logits, y, reduction="none"), weights)


def balanced_pos_weight(targets: Tensor, weights: Tensor | None = None, cap: float = 1e3) -> Tensor:
    """Per skim (weighted negatives) / (weighted positives), capped; 1 where no positives."""
    y = targets.float()
    w = torch.ones(y.shape[0], device=y.device) if weights is None else weights.float()
    pos = (w.unsqueeze(1) * y).sum(0)
    neg = (w.unsqueeze(1) * (1 - y)).sum(0)
    ratio = torch.where(pos > 0, neg / pos.clamp(min=1e-12), torch.ones_like(pos))
    return ratio.clamp(min=1.0 / cap, max=cap)


def class_weighted_bce_loss(
    logits: Tensor,
    targets: Tensor,
    weights: Tensor | None = None,
    pos_weight: Tensor | float | None = None,
) -> Tensor:
    """BCE with positives up-weighted by `pos_weight` (per skim; None = balanced on this batch).
    Biases q upwards by design: recalibrate (temperature) before using it as a probability."""
    y = _check(logits, targets, weights)
    if pos_weight is None:
        pos_weight = balanced_pos_weight(y, weights)
    pw = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none", pos_weight=pw)
    return _weighted_mean(loss, weights)


def focal_loss(
    logits: Tensor,
    targets: Tensor,
    weights: Tensor | None = None,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> Tensor:
    """Focal loss -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017); gamma = 0 is BCE."""
    if gamma < 0 or (alpha is not None and not 0 < alpha < 1):
        raise UserError(f"focal loss needs gamma >= 0 and 0 < alpha < 1 (got {gamma}, {alpha})")
    y = _check(logits, targets, weights)
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * y + (1 - p) * (1 - y)
    loss = (1 - p_t).pow(gamma) * ce if gamma else ce
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return _weighted_mean(loss, weights)


@dataclass(frozen=True)
class StageTimes:
    """Mean per-event times (any unit; only ratios matter) of generation, NN, slow stage."""

    t_fast: float = 1.0
    t_nn: float = 1.0
    t_slow: float = 100.0

    def __post_init__(self) -> None:
        if min(self.t_fast, self.t_nn, self.t_slow) < 0 or self.t_slow <= 0:
            raise UserError(f"stage times {self} must be >= 0 with t_slow > 0")


def keep_probability(logits: Tensor, p_min: float) -> Tensor:
    """p = p_min + (1 - p_min) sigmoid(logit): the floor keeps y/p finite (w <= 1/p_min)."""
    return p_min + (1.0 - p_min) * torch.sigmoid(logits)


def inverse_speedup(
    logits: Tensor,
    targets: Tensor,
    weights: Tensor | None = None,
    times: StageTimes = StageTimes(),
    p_min: float = 0.01,
) -> Tensor:
    """R per skim [S] (see module doc), NaN for skims without a positive in the batch."""
    if not 0 < p_min <= 1:
        raise UserError(f"p_min {p_min} must lie in (0, 1]")
    y = _check(logits, targets, weights)
    w = torch.ones_like(logits[:, 0]) if weights is None else weights.to(logits.dtype)
    w = (w / w.sum().clamp(min=1e-12)).unsqueeze(1)  # E_w[.] = sum(w * .)
    p = keep_probability(logits, p_min)
    eps = (w * y).sum(0)
    cost = cost_per_event(times.t_fast, times.t_nn, times.t_slow, (w * p).sum(0))
    variance_factor = (w * y / p).sum(0)
    t3 = unfiltered_cost_per_event(times.t_fast, times.t_slow)
    r = cost * variance_factor / (t3 * eps.detach())
    return torch.where(eps > 0, r, torch.full_like(r, math.nan))


def speedup_loss(
    logits: Tensor,
    targets: Tensor,
    weights: Tensor | None = None,
    times: StageTimes = StageTimes(),
    p_min: float = 0.01,
) -> Tensor:
    """Mean inverse speedup over the skims that have positives in this batch (0 if none).

    Each skim is scored with its own p_s; the run keeps with max_s p_s, which can only make
    every skim's N_eff better, so this is a conservative, separable surrogate.
    """
    r = inverse_speedup(logits, targets, weights, times, p_min)
    ok = ~torch.isnan(r)
    if not bool(ok.any()):
        return logits.sum() * 0.0  # keeps the graph (and DDP) happy; no signal in this batch
    return r[ok].mean()


def entropeedup_loss(
    logits: Tensor,
    targets: Tensor,
    weights: Tensor | None = None,
    epoch: float = 0.0,
    times: StageTimes = StageTimes(),
    p_min: float = 0.01,
) -> Tensor:
    """yu2022: e^(-epoch/10) * BCE + speedup loss (BCE shapes early training, R takes over)."""
    bce = bce_loss(logits, targets, weights)
    return math.exp(-epoch / 10.0) * bce + speedup_loss(logits, targets, weights, times, p_min)
