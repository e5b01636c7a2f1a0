"""Fitting keep-probability policies for speed (used by `sampling.Policy.fit`).

The objective is J = (t2 + t_slow·E[p])·E[q/p], the expected cost per generated event
(`speedup.cost_per_event`) times the variance factor: the cost per effective passing event is
J/ε², so minimising J at fixed q maximises the expected speedup t3·ε/J. `fit_sqrt_k` finds the
scale k of p = k·sqrt(q); `fit_skewed_sigmoid` the (a, b, c) of the skewed sigmoid
(giesegh2025), whose form lives here with its fit.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from adaptive_bkg.errors import UserError
from adaptive_bkg.stats.speedup import cost_per_event

SKEWED_SIGMOID_DEFAULTS = (1.0, 0.0, 1.0)  # a=1, b=0, c=1 is the plain sigmoid, p = q


def skewed_sigmoid(x: ArrayLike, a: float, b: float, c: float) -> NDArray[np.float64]:
    """(1 + a·e^(−c(x−b)))^(−1/a), computed as exp(−log(1 + e^u)/a), u = log a − c(x−b)."""
    u = math.log(a) - c * (np.asarray(x, dtype=np.float64) - b)
    return np.asarray(np.exp(-np.logaddexp(0.0, u) / a), dtype=np.float64)


def expected_cost_objective(
    q: ArrayLike, p: ArrayLike, t_fast: float, t_nn: float, t_slow: float
) -> float:
    """J = (t2 + t_slow·E[p])·E[q/p]: expected cost per generated event times the variance factor.

    The cost per effective passing event is J/ε², so minimising J at fixed q maximises the
    speedup t3·ε/J (speedup.expected_speedup). q, p: [n] for one skim, q calibrated.
    """
    qa = np.asarray(q, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    return float(cost_per_event(t_fast, t_nn, t_slow, float(pa.mean())) * np.mean(qa / pa))


def check_times(t_fast: float, t_nn: float, t_slow: float) -> None:
    """Stage times a fit can use: finite, >= 0, t_fast + t_nn > 0 and t_slow > 0."""
    for name, t in (("t_fast", t_fast), ("t_nn", t_nn), ("t_slow", t_slow)):
        if not (math.isfinite(t) and t >= 0):
            raise UserError(f"policy fit: {name} = {t} must be a finite time >= 0 seconds")
    if t_fast + t_nn <= 0 or t_slow <= 0:
        raise UserError(
            f"policy fit: need t_fast + t_nn > 0 and t_slow > 0, got {t_fast}, {t_nn}, {t_slow}"
        )


def fit_sqrt_k(
    q: ArrayLike,
    t_fast: float,
    t_nn: float,
    t_slow: float,
    p_min: float,
    weights: ArrayLike | None = None,
) -> float:
    """The k minimising J(k) for p = clip(k·sqrt(q), p_min, 1) over a sample q [n] of one skim.

    weights: per-event weights of the sample (e.g. 1/p if it was taken from kept events only);
    None = an unfiltered sample.

    With s = sqrt(q) sorted once and prefix sums of s and s², E[p] and E[q/p] at any k are
    three-piece sums (floor | k·s | 1) found by two binary searches, so J(k) costs O(log n).
    J is flat for k below k_lo (every p at the floor) and above k_hi (every q > 0 at p = 1);
    a 2001-point grid in log k over that range (step <= 0.02) finds the basin and a bounded
    Brent step refines it.
    """
    s = np.sqrt(np.asarray(q, dtype=np.float64).ravel())
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    order = np.argsort(s, kind="stable")
    s, w = s[order], w[order]
    positive = s[(s > 0) & (w > 0)]
    if positive.size == 0:
        return p_min  # nothing can pass: every k <= p_min/max(s) is equivalent; floor everywhere
    cum_w = np.concatenate([[0.0], np.cumsum(w)])
    cum_s = np.concatenate([[0.0], np.cumsum(w * s)])
    cum_s2 = np.concatenate([[0.0], np.cumsum(w * s * s)])
    n = cum_w[-1]

    def objective(log_k: float) -> float:
        k = math.exp(log_k)
        lo = int(np.searchsorted(s, p_min / k, side="right"))  # s[:lo] -> p = p_min
        hi = max(int(np.searchsorted(s, 1.0 / k, side="left")), lo)  # s[hi:] -> p = 1
        sum_p = p_min * cum_w[lo] + k * (cum_s[hi] - cum_s[lo]) + (n - cum_w[hi])
        sum_q_over_p = cum_s2[lo] / p_min + (cum_s[hi] - cum_s[lo]) / k + cum_s2[-1] - cum_s2[hi]
        return float(cost_per_event(t_fast, t_nn, t_slow, sum_p / n) * sum_q_over_p / n)

    lo_k = math.log(p_min / positive[-1]) - 0.1
    hi_k = math.log(1.0 / max(positive[0], 1e-8)) + 0.1  # q < 1e-16 stays at the floor anyway
    grid = np.linspace(lo_k, max(hi_k, lo_k + 1.0), 2001)
    values = np.array([objective(g) for g in grid])
    i = int(np.argmin(values))
    left, right = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    # lazy: scipy.optimize costs ~0.3 CPU-s, paid by every CLI start-up otherwise
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        objective, bounds=(left, right), method="bounded", options={"xatol": 1e-9}
    )
    best = float(result.x) if float(result.fun) <= values[i] else float(grid[i])
    return math.exp(best)


def fit_skewed_sigmoid(
    x: ArrayLike,
    labels: ArrayLike,
    t_fast: float,
    t_nn: float,
    t_slow: float,
    p_min: float,
    start: tuple[float, float, float] = SKEWED_SIGMOID_DEFAULTS,
    weights: ArrayLike | None = None,
) -> tuple[float, float, float]:
    """(a, b, c) minimising the labelled objective (t2 + t_slow·mean p)·mean(y/p) (giesegh2025).

    y may be hard labels or soft ones (calibrated q); weights as in `fit_sqrt_k`. The form is
    over-parameterised (no unique optimum, as the reference notes); Nelder-Mead from a few
    starts returns one of the optima.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(labels, dtype=np.float64).ravel()
    wa = np.ones_like(xa) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    wa = wa / wa.sum()
    if np.dot(wa, ya) <= 0:
        return start

    def unpack(theta: NDArray[np.float64]) -> tuple[float, float, float]:
        a = math.exp(float(np.clip(theta[0], -7.0, 7.0)))
        c = math.exp(float(np.clip(theta[2], -7.0, 5.0)))
        return a, float(theta[1]), c

    def objective(theta: NDArray[np.float64]) -> float:
        p = np.clip(skewed_sigmoid(xa, *unpack(theta)), p_min, 1.0)
        return float(
            cost_per_event(t_fast, t_nn, t_slow, float(np.dot(wa, p))) * np.dot(wa, ya / p)
        )

    from scipy.optimize import minimize  # lazy: see fit_sqrt_k

    a0, b0, c0 = start
    starts = [
        np.array([math.log(a0), b0, math.log(c0)]),
        np.array([0.0, float(np.quantile(xa, 0.9)), math.log(0.5)]),
        np.array([math.log(0.2), float(np.median(xa)), 0.0]),
    ]
    best = min(
        (
            minimize(
                objective,
                s,
                method="Nelder-Mead",
                options={"xatol": 1e-4, "fatol": 1e-10, "maxiter": 600},
            )
            for s in starts
        ),
        key=lambda r: float(r.fun),
    )
    return unpack(np.asarray(best.x))
