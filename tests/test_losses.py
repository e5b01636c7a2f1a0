"""Losses: weighting semantics, focal/BCE relation, speedup loss values and gradients,
and calibration recovered by importance weights after filtering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn.functional import binary_cross_entropy_with_logits as torch_bce

from adaptive_bkg.errors import UserError
from adaptive_bkg.model.losses import (
    StageTimes,
    balanced_pos_weight,
    bce_loss,
    class_weighted_bce_loss,
    entropeedup_loss,
    focal_loss,
    inverse_speedup,
    speedup_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    targets = (torch.rand(50, 3, generator=gen) < 0.3).double()
    weights = torch.randint(1, 5, (50,), generator=gen).double()
    return logits, targets, weights


def test_bce_matches_torch_and_integer_weights_equal_duplication(batch) -> None:  # type: ignore[no-untyped-def]
    logits, targets, weights = batch
    torch.testing.assert_close(bce_loss(logits, targets), torch_bce(logits, targets))
    repeat = weights.long()
    duplicated = bce_loss(logits.repeat_interleave(repeat, 0), targets.repeat_interleave(repeat, 0))
    torch.testing.assert_close(bce_loss(logits, targets, weights), duplicated)
    for loss in (class_weighted_bce_loss, focal_loss):
        dup = loss(logits.repeat_interleave(repeat, 0), targets.repeat_interleave(repeat, 0))
        torch.testing.assert_close(loss(logits, targets, weights), dup)


def test_focal_with_gamma_zero_is_bce_and_down_weights_easy_events(batch) -> None:  # type: ignore[no-untyped-def]
    logits, targets, weights = batch
    torch.testing.assert_close(
        focal_loss(logits, targets, weights, gamma=0.0), bce_loss(logits, targets, weights)
    )
    easy = torch.tensor([[6.0], [-6.0]], dtype=torch.float64)
    labels = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    assert focal_loss(easy, labels, gamma=2.0) < 1e-3 * bce_loss(easy, labels)
    with pytest.raises(UserError, match="gamma"):
        focal_loss(logits, targets, gamma=-1.0)


def test_class_weighted_bce_balances_classes() -> None:
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    torch.testing.assert_close(balanced_pos_weight(targets), torch.tensor([3.0, 1.0]))
    logits = torch.zeros(4, 2)
    # at logit 0 each term is ln 2: positives count pos_weight times, negatives once
    expected = math.log(2) * ((1 * 3 + 3) + (2 * 1 + 2)) / 8
    assert class_weighted_bce_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert class_weighted_bce_loss(logits, targets, pos_weight=1.0).item() == pytest.approx(
        math.log(2)
    )


def test_inverse_speedup_reproduces_oracle_and_no_filter_limits() -> None:
    times = StageTimes(1.0, 1.0, 100.0)
    targets = torch.tensor([[1.0]] * 5 + [[0.0]] * 95)  # eps = 5%
    perfect = torch.where(targets > 0, 40.0, -40.0)  # p = y (p_min tiny)
    r = inverse_speedup(perfect, targets, None, times, p_min=1e-9)
    assert 1 / r.item() == pytest.approx(101 / (2 + 100 * 0.05), rel=1e-6)  # DESIGN: 14.4
    keep_all = torch.full_like(targets, 40.0)
    r_all = inverse_speedup(keep_all, targets, None, times, p_min=1e-9)
    assert r_all.item() == pytest.approx(102 / 101, rel=1e-6)  # pays t_NN for nothing
    # importance weights count as repeated events
    w = torch.ones(100)
    w[:5] = 2.0
    doubled = torch.cat([targets, targets[:5]])
    r_w = inverse_speedup(torch.zeros(100, 1), targets, w, times)
    r_d = inverse_speedup(torch.zeros(105, 1), doubled, None, times)
    torch.testing.assert_close(r_w, r_d)


def test_speedup_loss_gradient_signs() -> None:
    """At p = 0.5 for all: raising a passing event's p lowers R, a failing one's raises it."""
    targets = torch.tensor([[1.0], [0.0], [0.0], [1.0], [0.0]])
    logits = torch.zeros(5, 1, requires_grad=True)
    speedup_loss(logits, targets).backward()
    assert logits.grad is not None
    grad = logits.grad[:, 0]
    assert (grad[targets[:, 0] > 0] < 0).all()
    assert (grad[targets[:, 0] == 0] > 0).all()


def test_speedup_loss_without_positives_is_zero_with_graph() -> None:
    logits = torch.zeros(4, 2, requires_grad=True)
    loss = speedup_loss(logits, torch.zeros(4, 2))
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad is not None
    assert (logits.grad == 0).all()
    partly = inverse_speedup(torch.zeros(3, 2), torch.tensor([[1.0, 0], [0, 0], [0, 0]]))
    assert not math.isnan(partly[0].item())
    assert math.isnan(partly[1].item())


def test_entropeedup_decays_bce_weight(batch) -> None:  # type: ignore[no-untyped-def]
    logits, targets, weights = batch
    bce = bce_loss(logits, targets, weights)
    speed = speedup_loss(logits, targets, weights)
    for epoch in (0, 10, 30):
        expected = math.exp(-epoch / 10) * bce + speed
        torch.testing.assert_close(
            entropeedup_loss(logits, targets, weights, epoch=epoch), expected
        )


def test_importance_weights_recover_calibration_after_filtering() -> None:
    """A logistic model (misspecified on purpose: true q is not logistic in x) is fitted on a
    sample filtered with p(x); weighting by 1/p recovers the fit to the full population."""
    rng = np.random.default_rng(1)
    n = 200_000
    x = rng.normal(size=n)
    q_true = 1 / (1 + np.exp(-(1.5 * x**2 - 3.0)))  # U-shaped: ~23% pass overall
    y = rng.random(n) < q_true
    p_keep = np.clip(1 / (1 + np.exp(-3 * x)), 0.02, 1.0)  # keeps mostly x > 0
    kept = rng.random(n) < p_keep

    def fit(xs: np.ndarray, ys: np.ndarray, ws: np.ndarray) -> torch.Tensor:
        params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")
        xt, yt, wt = (torch.from_numpy(a).double() for a in (xs, ys.astype(float), ws))

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = bce_loss((params[0] * xt + params[1])[:, None], yt[:, None], wt)
            loss.backward()
            return loss

        opt.step(closure)
        return params.detach()

    def mean_q(params: torch.Tensor) -> float:
        return float(torch.sigmoid(params[0] * torch.from_numpy(x) + params[1]).mean())

    full = fit(x, y, np.ones(n))
    weighted = fit(x[kept], y[kept], 1 / p_keep[kept])
    unweighted = fit(x[kept], y[kept], np.ones(int(kept.sum())))
    eps = float(y.mean())
    # A logistic fit with intercept is calibrated in the large: mean q = eps on its sample.
    # Statistical error of the weighted estimate here ~0.003 (n_kept ~ 100k, w <= 50).
    assert abs(mean_q(full) - eps) < 0.002
    assert abs(mean_q(weighted) - eps) < 0.01
    torch.testing.assert_close(weighted, full, atol=0.1, rtol=0)
    # Without weights the fit learns the filtered (x > 0 rich) population: visibly off.
    assert abs(mean_q(unweighted) - eps) > 0.03 or (unweighted - full).abs().max() > 0.3
