"""Run statistics: merge-able running accumulators, their typed summaries, weight quantiles,
and the weighted AUC. The formulas (N_eff, ε̂, speedup and its uncertainty) are in speedup.py.

Numerics: all sums are float64. Each batch is summed pairwise by numpy (error ~ log2(n)·2⁻⁵³),
and batch sums are added to the running totals; with weights <= 1/p_min = 100 and up to 1e8
events the relative rounding error stays below ~1e-8, far under the statistical error
(1/sqrt(N_eff)), so no Kahan summation is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from adaptive_bkg.stats.speedup import (
    LearnerCompute,
    SpeedupEstimate,
    SpeedupMoments,
    SpeedupVarianceTerms,
    eff_hat,
    n_eff_from_sums,
    oracle_speedup,
    speedup_measured,
    speedup_variance_terms,
    with_extra_cost,
)

# Weight histogram for merge-able quantiles: log10(w) in [0, 6), 0.01 dex bins (2.3 % in w).
_HIST_LOG10_MAX = 6.0
_HIST_BINS = 600
DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)


def weighted_auc(scores: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Area under the ROC curve with per-event weights; ties count one half.

    AUC = P_w(score of a positive > score of a negative) + 0.5 P_w(equal), where a pair
    (i, j) counts with weight w_i w_j. With integer weights this equals the unweighted AUC of
    the sample in which each event is repeated w times. NaN if a class has no weight.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.bool_).ravel()
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not s.shape == y.shape == w.shape:
        raise ValueError(f"weighted_auc: shapes differ {s.shape}, {y.shape}, {w.shape}")
    if not np.all(np.isfinite(s)) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weighted_auc: scores must be finite and weights finite and >= 0")
    w_pos, w_neg = float(w[y].sum()), float(w[~y].sum())
    if w_pos <= 0 or w_neg <= 0:
        return math.nan
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each tied group
    pos = np.add.reduceat(np.where(y, w, 0.0), starts)
    neg = np.add.reduceat(np.where(y, 0.0, w), starts)
    neg_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (w_pos * w_neg))


def weight_quantiles(
    w: ArrayLike, quantiles: Sequence[float] = DEFAULT_QUANTILES
) -> NDArray[np.float64]:
    """Exact quantiles of a weight array (for plots); NaN for an empty array."""
    wa = np.asarray(w, dtype=np.float64)
    if wa.size == 0:
        return np.full(len(quantiles), np.nan)
    return np.asarray(np.quantile(wa, quantiles), dtype=np.float64)


def weight_histogram_edges() -> NDArray[np.float64]:
    """Bin edges in w of the accumulators' weight histograms (log-spaced from 1 to 1e6)."""
    return np.asarray(10.0 ** np.linspace(0.0, _HIST_LOG10_MAX, _HIST_BINS + 1))


def _histogram(w: NDArray[np.float64]) -> NDArray[np.int64]:
    index = np.floor(np.log10(np.maximum(w, 1.0)) * (_HIST_BINS / _HIST_LOG10_MAX))
    index = np.clip(index, 0, _HIST_BINS - 1).astype(np.int64)  # overflow -> last bin
    return np.bincount(index, minlength=_HIST_BINS).astype(np.int64)


def quantiles_from_histogram(
    counts: NDArray[np.int64],
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    max_weight: float = math.inf,
) -> tuple[tuple[float, float], ...]:
    """Quantiles of w from a weight histogram, log-interpolated within a bin (±1.2 %).

    max_weight (the exact maximum, if known) caps the interpolation inside the top bin.
    """
    total = int(counts.sum())
    if total == 0:
        return tuple((float(qq), math.nan) for qq in quantiles)
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    log_edges = np.linspace(0.0, _HIST_LOG10_MAX, _HIST_BINS + 1)
    out = []
    for qq in quantiles:
        target = qq * total
        i = int(np.clip(np.searchsorted(cumulative, target, side="left") - 1, 0, _HIST_BINS - 1))
        inside = (target - cumulative[i]) / max(int(counts[i]), 1)
        log_w = log_edges[i] + float(np.clip(inside, 0.0, 1.0)) * (log_edges[1] - log_edges[0])
        out.append((float(qq), min(float(10.0**log_w), max_weight)))
    return tuple(out)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Typed summaries
@dataclass(frozen=True)
class SkimSummary:
    """Statistics of one skim over a run (or any merged set of batches).

    eff_hat_err = sqrt(Σw²)/N_generated is the usual (slightly conservative) error of ε̂.
    speedup / oracle_speedup / fraction_of_oracle use the run's total cost (shared by all skims).
    speedup_err: one standard deviation of speedup (delta method, see speedup.py);
    NaN when unknown (no passing event yet, or a state saved before the higher sums existed).
    speedup_var_terms: (σ/S)² split into its weight, weight×cost and cost parts
    (`speedup.SpeedupVarianceTerms`), so that the speedup with an extra fixed cost (the
    learner's compute, `speedups_with_learner`) gets its σ from the summary alone.
    """

    sum_w: float
    sum_w2: float
    n_pass_kept: int
    n_eff: float
    eff_hat: float
    speedup: float
    oracle_speedup: float
    fraction_of_oracle: float
    eff_hat_err: float
    max_weight: float
    weight_quantiles: tuple[tuple[float, float], ...]
    speedup_err: float = math.nan
    speedup_var_terms: tuple[float, float, float] = (math.nan, math.nan, math.nan)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_extra_cost(self, total_cost_s: float, extra_cost_s: float) -> SpeedupEstimate:
        """This skim's speedup (± σ) had the run also spent `extra_cost_s` (fixed) seconds."""
        terms = SpeedupVarianceTerms(*self.speedup_var_terms)
        return with_extra_cost(self.speedup, terms, total_cost_s, extra_cost_s)


@dataclass(frozen=True)
class RunSummary:
    """Run-level counts and costs plus one `SkimSummary` per skim.

    t_fast / t_nn / t_slow are the mean per-event times used for speedups: given, or estimated
    from the run: Σcost_fast/N, Σcost_nn/N, and Σ_kept w·cost_slow / Σ_kept w, the weighted
    mean slow cost, which estimates the mean over all generated events (consistent; exact when
    the slow cost is constant). sum_w_kept estimates n_generated (a check).
    """

    n_generated: int
    n_kept: int
    total_cost_s: float
    skims: dict[str, SkimSummary]
    cost_fast_s: float
    cost_nn_s: float
    cost_slow_s: float
    t_fast: float
    t_nn: float
    t_slow: float
    expected_n_kept: float
    sum_w_kept: float
    max_weight: float
    weight_quantiles: tuple[tuple[float, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def speedups_with_learner(
    summary: RunSummary, compute: LearnerCompute
) -> dict[str, SpeedupEstimate]:
    """Per skim, the measured speedup (± σ) with the learner's counted compute added to the
    run's cost: (t3·N_eff/ε̂) / (Σ stage costs + learner CPU seconds). Beside `speedup`, which
    counts the stages only; docs/statistics.md says which to quote when."""
    return {
        name: skim.with_extra_cost(summary.total_cost_s, compute.counted_s)
        for name, skim in summary.skims.items()
    }


# ---------------------------------------------------------------------------------------------
class RunAccumulator:
    """Running, merge-able sums over generated events; `summary()` turns them into statistics.

    Each worker keeps its own accumulator; `merge` adds another one's sums (order-independent
    up to float rounding). `to_dict`/`from_dict` persist the state (JSON-able) for resume.
    """

    def __init__(self, skims: Sequence[str]):
        self.skims = tuple(skims)
        n_skims = len(self.skims)
        self.n_generated = 0
        self.n_kept = 0
        self.sum_p = 0.0
        self.cost_fast_s = 0.0
        self.cost_nn_s = 0.0
        self.cost_slow_s = 0.0
        self.sum_w_cost_slow = 0.0
        self.sum_w_kept = 0.0
        self.sum_w2_kept = 0.0
        self.max_w_kept = 0.0
        self.hist_kept = np.zeros(_HIST_BINS, dtype=np.int64)
        self.sum_w = np.zeros(n_skims, dtype=np.float64)
        self.sum_w2 = np.zeros(n_skims, dtype=np.float64)
        self.sum_w3 = np.zeros(n_skims, dtype=np.float64)
        self.sum_w4 = np.zeros(n_skims, dtype=np.float64)
        self.sum_w_c = np.zeros(n_skims, dtype=np.float64)
        self.sum_w2_c = np.zeros(n_skims, dtype=np.float64)
        self.sum_c2 = 0.0
        self.n_pass_kept = np.zeros(n_skims, dtype=np.int64)
        self.max_w = np.zeros(n_skims, dtype=np.float64)
        self.hist = np.zeros((n_skims, _HIST_BINS), dtype=np.int64)

    def add(
        self,
        kept: ArrayLike,
        p: ArrayLike,
        flags: ArrayLike,
        cost_fast: ArrayLike,
        cost_nn: ArrayLike,
        cost_slow: ArrayLike,
    ) -> None:
        """Add a batch of n generated events.

        kept: bool[n]; p: keep probabilities [n] (w = 1/p for kept events); flags: bool
        [n, n_skims], read only where kept; cost_fast, cost_nn: seconds [n] (or scalars);
        cost_slow: seconds [n] (or a scalar), read only where kept.
        """
        k = np.asarray(kept, dtype=bool)
        if k.ndim != 1:
            raise ValueError(f"kept must be 1-D, got shape {k.shape}")
        n = k.shape[0]
        pa = np.broadcast_to(np.asarray(p, dtype=np.float64), (n,))
        fl = np.asarray(flags, dtype=bool)
        if fl.shape != (n, len(self.skims)):
            raise ValueError(f"flags must have shape {(n, len(self.skims))}, got {fl.shape}")
        c_fast = np.broadcast_to(np.asarray(cost_fast, dtype=np.float64), (n,))
        c_nn = np.broadcast_to(np.asarray(cost_nn, dtype=np.float64), (n,))
        c_slow = np.broadcast_to(np.asarray(cost_slow, dtype=np.float64), (n,))[k]
        c_event = c_fast + c_nn  # each event's total cost, for the speedup's error
        c_event[k] += c_slow
        p_kept = pa[k]
        if np.any(~(p_kept > 0)):
            raise ValueError("a kept event has p <= 0 (or NaN): its weight 1/p is undefined")
        w = 1.0 / p_kept
        w2 = w * w
        pass_kept = fl[k]  # [n_kept, n_skims]

        self.n_generated += n
        self.n_kept += int(k.sum())
        self.sum_p += float(pa.sum())
        self.cost_fast_s += float(c_fast.sum())
        self.cost_nn_s += float(c_nn.sum())
        self.cost_slow_s += float(c_slow.sum())
        self.sum_w_cost_slow += float(np.dot(w, c_slow))
        self.sum_w_kept += float(w.sum())
        self.sum_w2_kept += float(w2.sum())
        if w.size:
            self.max_w_kept = max(self.max_w_kept, float(w.max()))
            self.hist_kept += _histogram(w)
        self.sum_w += w @ pass_kept
        self.sum_w2 += w2 @ pass_kept
        self.sum_w3 += (w2 * w) @ pass_kept
        self.sum_w4 += (w2 * w2) @ pass_kept
        self.sum_c2 += float(c_event @ c_event)
        self.sum_w_c += (w * c_event[k]) @ pass_kept
        self.sum_w2_c += (w2 * c_event[k]) @ pass_kept
        self.n_pass_kept += pass_kept.sum(axis=0)
        for s in range(len(self.skims)):
            ws = w[pass_kept[:, s]]
            if ws.size:
                self.max_w[s] = max(self.max_w[s], float(ws.max()))
                self.hist[s] += _histogram(ws)

    def merge(self, other: RunAccumulator) -> RunAccumulator:
        """Add another accumulator's sums into this one; returns self."""
        if other.skims != self.skims:
            raise ValueError(f"cannot merge accumulators for skims {other.skims} and {self.skims}")
        for name in self._SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.max_w_kept = max(self.max_w_kept, other.max_w_kept)
        self.hist_kept = self.hist_kept + other.hist_kept
        self.sum_w = self.sum_w + other.sum_w
        self.sum_w2 = self.sum_w2 + other.sum_w2
        self.sum_w3 = self.sum_w3 + other.sum_w3
        self.sum_w4 = self.sum_w4 + other.sum_w4
        self.sum_w_c = self.sum_w_c + other.sum_w_c
        self.sum_w2_c = self.sum_w2_c + other.sum_w2_c
        self.n_pass_kept = self.n_pass_kept + other.n_pass_kept
        self.max_w = np.maximum(self.max_w, other.max_w)
        self.hist = self.hist + other.hist
        return self

    @property
    def total_cost_s(self) -> float:
        return self.cost_fast_s + self.cost_nn_s + self.cost_slow_s

    def summary(
        self,
        t_fast: float | None = None,
        t_nn: float | None = None,
        t_slow: float | None = None,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
    ) -> RunSummary:
        """Statistics so far. Mean times default to estimates from this run (see RunSummary)."""
        n = self.n_generated
        tf = t_fast if t_fast is not None else _ratio(self.cost_fast_s, n)
        tn = t_nn if t_nn is not None else _ratio(self.cost_nn_s, n)
        # Hajek ratio Σ_kept w·c / Σ_kept w: consistent, exact for constant costs, and far less
        # noisy than the Horvitz-Thompson Σ_kept w·c / N.
        ts = t_slow if t_slow is not None else _ratio(self.sum_w_cost_slow, self.sum_w_kept)
        total = self.total_cost_s
        skims: dict[str, SkimSummary] = {}
        for s, skim in enumerate(self.skims):
            sw, sw2 = float(self.sum_w[s]), float(self.sum_w2[s])
            eps = eff_hat(sw, n)
            speed = speedup_measured(sw, sw2, n, total, tf, ts)
            terms = speedup_variance_terms(
                SpeedupMoments(
                    sw,
                    sw2,
                    float(self.sum_w3[s]),
                    float(self.sum_w4[s]),
                    total,
                    self.sum_c2,
                    float(self.sum_w_c[s]),
                    float(self.sum_w2_c[s]),
                    n,
                )
            )
            oracle = oracle_speedup(eps, tf, tn, ts) if tf + tn + ts > 0 else 0.0
            skims[skim] = SkimSummary(
                sum_w=sw,
                sum_w2=sw2,
                n_pass_kept=int(self.n_pass_kept[s]),
                n_eff=n_eff_from_sums(sw, sw2),
                eff_hat=eps,
                speedup=speed,
                oracle_speedup=oracle,
                fraction_of_oracle=_ratio(speed, oracle),
                eff_hat_err=math.sqrt(sw2) / n if n else 0.0,
                max_weight=float(self.max_w[s]),
                weight_quantiles=quantiles_from_histogram(
                    self.hist[s], quantiles, float(self.max_w[s])
                ),
                speedup_err=speed * terms.rel_error(total),
                speedup_var_terms=(terms.weights, terms.cross, terms.cost),
            )
        return RunSummary(
            n_generated=n,
            n_kept=self.n_kept,
            total_cost_s=total,
            skims=skims,
            cost_fast_s=self.cost_fast_s,
            cost_nn_s=self.cost_nn_s,
            cost_slow_s=self.cost_slow_s,
            t_fast=tf,
            t_nn=tn,
            t_slow=ts,
            expected_n_kept=self.sum_p,
            sum_w_kept=self.sum_w_kept,
            max_weight=self.max_w_kept,
            weight_quantiles=quantiles_from_histogram(self.hist_kept, quantiles, self.max_w_kept),
        )

    # -- persistence --------------------------------------------------------------------------
    _SUMS = (  # scalars that merge by addition
        "n_generated",
        "n_kept",
        "sum_p",
        "cost_fast_s",
        "cost_nn_s",
        "cost_slow_s",
        "sum_w_cost_slow",
        "sum_w_kept",
        "sum_w2_kept",
        "sum_c2",
    )
    _SCALARS = (*_SUMS, "max_w_kept")
    _ARRAYS = (
        *("hist_kept", "sum_w", "sum_w2", "sum_w3", "sum_w4", "sum_w_c", "sum_w2_c"),
        *("n_pass_kept", "max_w", "hist"),
    )
    # Added later: a state saved before them resumes with NaN (speedup_err unknown, not wrong).
    _OPTIONAL = ("sum_w3", "sum_w4", "sum_w_c", "sum_w2_c", "sum_c2")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"skims": list(self.skims)}
        data.update({name: getattr(self, name) for name in self._SCALARS})
        data.update({name: getattr(self, name).tolist() for name in self._ARRAYS})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunAccumulator:
        acc = cls(data["skims"])
        for name in cls._SCALARS:
            if name not in data and name in cls._OPTIONAL:
                setattr(acc, name, math.nan)
                continue
            setattr(acc, name, type(getattr(acc, name))(data[name]))
        for name in cls._ARRAYS:
            template = getattr(acc, name)
            if name not in data and name in cls._OPTIONAL:
                setattr(acc, name, np.full_like(template, np.nan))
                continue
            value = np.asarray(data[name], dtype=template.dtype)
            if value.shape != template.shape:
                raise ValueError(
                    f"accumulator field {name}: shape {value.shape} != {template.shape}"
                )
            setattr(acc, name, value)
        return acc
