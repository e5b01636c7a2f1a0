"""Empirical Bayes for per-event pass probabilities from replica counts c ~ Bin(R, q(x)).

Two estimators of the distribution of q behind the Bayes limit (workflows/bayes_limit.py):

* `npmle`: the Kiefer–Wolfowitz nonparametric maximum-likelihood estimate ĝ of the mixing
  distribution of q on a fixed grid (EM on the histogram of counts; Efron's g-modeling with an
  unrestricted g). Its posterior mean E[q | c] shrinks each count towards the fitted
  distribution, and any functional of ĝ — the sqrt-optimal speedup (`plugin_speedup`) — is a
  plug-in estimate of that functional of the true q distribution.
* `CovariatePrior`: a beta-binomial whose prior mean depends on the event through a covariate
  score s(x) (any filter's probability), q | x ~ Beta(m κ, (1 − m) κ) with
  logit m = a + b·logit s and log κ = d + e·logit s, all four fitted by the marginal likelihood
  of the counts. Its posterior mean (c + m κ)/(R + κ) separates events with the same count
  (all the c = 0 events, at small R) by how likely the covariate says they are to pass.

With R replicas the counts identify only the first R moments of the q distribution, so every
figure here converges as R grows, not as the number of events does; the Bayes-limit workflow
reports an R ladder for that reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, logit
from scipy.stats import binom

from adaptive_bkg.stats.policy_fit import fit_sqrt_k

F64 = NDArray[np.float64]


def q_grid(size: int = 300, q_min: float = 1e-6) -> F64:
    """Support of the NPMLE: q = 0, then log-spaced from q_min to 1 (the limit lives in the
    rare-pass tail, where log spacing resolves it)."""
    return np.concatenate([[0.0], np.geomspace(q_min, 1.0, size - 1)])


@dataclass(frozen=True)
class Deconvolved:
    """ĝ: probability `weights` on the q values `grid`, fitted to counts out of `replicas`."""

    grid: F64
    weights: F64
    replicas: int
    log_likelihood: float
    iterations: int

    def posterior_mean(self, counts: ArrayLike) -> F64:
        """E[q | c] under ĝ for each count."""
        like = _likelihood(self.replicas, self.grid)  # [R+1, G]
        joint = like * self.weights
        table = (joint @ self.grid) / np.maximum(joint.sum(axis=1), 1e-300)
        return np.asarray(table[np.asarray(counts, dtype=np.int64)], dtype=np.float64)

    @property
    def mean(self) -> float:
        return float(self.weights @ self.grid)


def _likelihood(replicas: int, grid: F64) -> F64:
    """P(c | q_j) for c = 0 … R (rows) and every grid point (columns)."""
    c = np.arange(replicas + 1)[:, None]
    return np.asarray(binom.pmf(c, replicas, grid[None, :]), dtype=np.float64)


def npmle(
    counts: ArrayLike,
    replicas: int,
    grid: F64 | None = None,
    start: F64 | None = None,
    max_iter: int = 5000,
    tol: float = 1e-9,
) -> Deconvolved:
    """Kiefer–Wolfowitz NPMLE of the q distribution from counts c_i ~ Bin(R, q_i), by EM.

    The likelihood depends on the counts only through their histogram, so one EM step costs
    O(R·G) whatever the number of events. Stops when the log-likelihood per event improves by
    less than `tol` in one
    accelerated step. `start`: initial weights (e.g. a previous fit, to bootstrap).
    """
    support = q_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    hist = np.bincount(np.asarray(counts, dtype=np.int64), minlength=replicas + 1)
    hist = hist.astype(np.float64)
    if len(hist) != replicas + 1:
        raise ValueError(f"a count exceeds replicas = {replicas}")
    n = hist.sum()
    like = _likelihood(replicas, support)
    used = hist > 0
    like, freq = like[used], hist[used] / n
    g = np.full(len(support), 1.0 / len(support)) if start is None else start.copy()

    def step(h: F64) -> F64:
        # The floor keeps a count that h gives (numerically) zero probability from dividing by 0.
        h = h * (like.T @ (freq / np.maximum(like @ h, 1e-300)))
        return h / h.sum()

    def log_lik_per_event(h: F64) -> float:
        return float(freq @ np.log(np.maximum(like @ h, 1e-300)))

    # EM for mixture weights converges sublinearly; SQUAREM (Varadhan & Roland 2008, scheme
    # S3) extrapolates two EM steps and falls back to them when that does not improve.
    current = log_lik_per_event(g)
    it = 0
    while it < max_iter:
        g1 = step(g)
        g2 = step(g1)
        it += 2
        r, v = g1 - g, g2 - 2 * g1 + g
        v_norm = float(np.linalg.norm(v))
        candidate = g2
        if v_norm > 0:
            alpha = min(-1.0, -float(np.linalg.norm(r)) / v_norm)
            trial = np.maximum(g - 2 * alpha * r + alpha**2 * v, 0.0)
            if trial.sum() > 0:
                trial = step(trial / trial.sum())
                it += 1
                if log_lik_per_event(trial) >= log_lik_per_event(g2):
                    candidate = trial
        g, previous = candidate, current
        current = log_lik_per_event(g)
        if abs(current - previous) < tol:
            break
    log_lik = float(n * current)
    return Deconvolved(support, g, replicas, log_lik, it)


def bootstrap_npmle(fit: Deconvolved, counts: ArrayLike, rng: np.random.Generator) -> Deconvolved:
    """ĝ refitted to one bootstrap resample of the events (multinomial on the count
    histogram, which is what resampling events does to it), warm-started at `fit`."""
    hist = np.bincount(np.asarray(counts, dtype=np.int64), minlength=fit.replicas + 1)
    n = int(hist.sum())
    drawn = rng.multinomial(n, hist / n)
    resampled = np.repeat(np.arange(fit.replicas + 1), drawn)
    # Warm-started, the functional settles within a few hundred steps (tolerance 1e-8:
    # measured to move the plug-in speedup by < 0.001 against a full fit).
    return npmle(resampled, fit.replicas, fit.grid, start=fit.weights, max_iter=2000, tol=1e-8)


def plugin_speedup(
    grid: F64, weights: F64, times: tuple[float, float, float], p_min: float
) -> tuple[float, float]:
    """(speedup, k) of the sqrt-optimal policy p = clip(k·sqrt(q), p_min, 1) for events whose
    true q is distributed as `weights` on `grid`: t3·ε / ((t2 + t_slow·E[p])·E[q/p]), the
    expectation `speedup.expected_speedup` estimates from labels."""
    t_fast, t_nn, t_slow = times
    g = np.asarray(weights, dtype=np.float64)
    k = fit_sqrt_k(grid, t_fast, t_nn, t_slow, p_min, weights=g)
    p = np.clip(k * np.sqrt(grid), p_min, 1.0)
    eps = float(g @ grid)
    objective = (t_fast + t_nn + t_slow * float(g @ p)) * float(g @ (grid / p))
    return ((t_fast + t_slow) * eps / objective if objective > 0 else 0.0), k


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CovariatePrior:
    """q | x ~ Beta(m κ, (1 − m) κ), logit m = a + b·logit s(x), log κ = d + e·logit s(x)."""

    a: float
    b: float
    d: float
    e: float
    replicas: int

    def shape(self, score: ArrayLike) -> tuple[F64, F64]:
        """(m, κ) per event for covariate scores s."""
        z = _score_logit(score)
        m = expit(self.a + self.b * z)
        kappa = np.exp(np.clip(self.d + self.e * z, -20.0, 20.0))
        return np.asarray(m, dtype=np.float64), np.asarray(kappa, dtype=np.float64)

    def posterior_mean(self, counts: ArrayLike, score: ArrayLike) -> F64:
        m, kappa = self.shape(score)
        return (np.asarray(counts, dtype=np.float64) + m * kappa) / (self.replicas + kappa)


def _score_logit(score: ArrayLike) -> F64:
    s = np.clip(np.asarray(score, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.asarray(logit(s), dtype=np.float64)


def fit_covariate_prior(
    counts: ArrayLike, replicas: int, score: ArrayLike, start: CovariatePrior | None = None
) -> CovariatePrior:
    """Maximum marginal (beta-binomial) likelihood of the counts for the four parameters
    (L-BFGS with the analytic gradient)."""
    c = np.asarray(counts, dtype=np.float64)
    z = _score_logit(score)
    rest = replicas - c

    def negative_log_likelihood(theta: F64) -> tuple[float, F64]:
        a, b, d, e = theta
        m = expit(a + b * z)
        kappa = np.exp(np.clip(d + e * z, -20.0, 20.0))
        alpha = np.maximum(m * kappa, 1e-300)
        beta = np.maximum((1 - m) * kappa, 1e-300)
        value = np.sum(betaln(c + alpha, rest + beta) - betaln(alpha, beta))
        common = digamma(kappa) - digamma(replicas + kappa)
        d_alpha = digamma(c + alpha) - digamma(alpha) + common
        d_beta = digamma(rest + beta) - digamma(beta) + common
        d_mean = kappa * m * (1 - m) * (d_alpha - d_beta)  # d/d(a + b z)
        d_conc = alpha * d_alpha + beta * d_beta  # d/d(d + e z)
        grad = np.array([d_mean.sum(), d_mean @ z, d_conc.sum(), d_conc @ z])
        return -float(value), -grad

    if start is not None:
        theta0 = np.array([start.a, start.b, start.d, start.e])
    else:
        mean = min(max(float(c.mean()) / replicas, 1e-6), 1 - 1e-6)
        theta0 = np.array([float(logit(mean) - np.median(z)), 1.0, math.log(50.0), 0.0])
    fit = minimize(negative_log_likelihood, theta0, jac=True, method="L-BFGS-B")
    a, b, d, e = (float(v) for v in fit.x)
    return CovariatePrior(a, b, d, e, replicas)
