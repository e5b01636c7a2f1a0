"""Effective sample size, efficiency, speedup and their merge-able running accumulators.

Definitions (DESIGN §2, docs/statistics.md). For skim s, over kept events that pass it:
  N_eff = (Σw)² / Σw²,   ε̂ = Σw / N_generated,
  speedup = (t3 · N_eff / ε̂) / (Σ costs actually spent),   t3 = t_fast + t_slow,
  oracle  = t3 / (t2 + ε·t_slow),   t2 = t_fast + t_nn.
The speedup's numerator is the cost of an unfiltered run reaching the same N_eff: it needs
N_eff/ε generated events, each costing t3.

Uncertainty of the measured speedup (delta method, `speedup_rel_error`): per generated event
a = w·[kept, pass], b = w²·[kept, pass] and its cost c = c_fast + c_nn + [kept]·c_slow are
i.i.d.; with A = Σa, B = Σb, C = Σc the speedup is ∝ A/(B·C), so
  (σ_S/S)² = V_AA/A² + V_BB/B² + V_CC/C² − 2V_AB/(AB) − 2V_AC/(AC) + 2V_BC/(BC),
with V_XY = Σxy − X·Y/N (e.g. V_AB = Σ_{kept,pass} w³ − A·B/N). The cost term matters where
most passing events are kept with p near 1 (weights near 1): then A/B hardly moves and the
spread comes from how many failing events were kept. The estimated t_slow (when not given) is
treated as known. Closure: tests/test_uncertainty.py checks that ±σ covers ≈ 68 % of the
spread of the speedup over repeated runs.

Numerics: all sums are float64. Each batch is summed pairwise by numpy (error ~ log2(n)·2⁻⁵³),
and batch sums are added to the running totals; with weights <= 1/p_min = 100 and up to 1e8
events the relative rounding error stays below ~1e-8, far under the statistical error
(1/sqrt(N_eff)), so no Kahan summation is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Weight histogram for merge-able quantiles: log10(w) in [0, 6), 0.01 dex bins (2.3 % in w).
_HIST_LOG10_MAX = 6.0
_HIST_BINS = 600
DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)


# ---------------------------------------------------------------------------------------------
# Scalar formulas
def n_eff(w: ArrayLike) -> float:
    """Kish effective sample size (Σw)²/Σw² of weights w (0 for an empty sample)."""
    wa = np.asarray(w, dtype=np.float64)
    return n_eff_from_sums(float(np.sum(wa)), float(np.sum(wa * wa)))


def n_eff_from_sums(sum_w: float, sum_w2: float) -> float:
    return sum_w * sum_w / sum_w2 if sum_w2 > 0 else 0.0


def eff_hat(sum_w_pass: float, n_generated: int) -> float:
    """Estimated skim efficiency ε̂ = Σ_{kept,pass} w / N_generated (Horvitz-Thompson)."""
    return sum_w_pass / n_generated if n_generated > 0 else 0.0


def speedup_measured(
    sum_w: float,
    sum_w2: float,
    n_generated: int,
    total_cost_s: float,
    t_fast: float,
    t_slow: float,
) -> float:
    """(t3·N_eff/ε̂) / total cost, from the sums over kept passing events (0 if none passed).

    t3·N_eff/ε̂ = t3·N_generated·Σw/Σw²: the cost of an unfiltered run with the same N_eff.
    """
    if sum_w2 <= 0 or total_cost_s <= 0 or n_generated <= 0:
        return 0.0
    ne = n_eff_from_sums(sum_w, sum_w2)
    return (t_fast + t_slow) * ne / eff_hat(sum_w, n_generated) / total_cost_s


class SpeedupMoments(NamedTuple):
    """The sums `speedup_rel_error` needs, for one skim (kept passing events: w; all: c)."""

    sum_w: float  # A
    sum_w2: float  # B = Σw², also Σa²
    sum_w3: float  # Σab
    sum_w4: float  # Σb²
    total_cost: float  # C = Σc over all generated events
    sum_c2: float  # Σc²
    sum_w_c: float  # Σac
    sum_w2_c: float  # Σbc
    n_generated: int


def speedup_rel_error(m: SpeedupMoments) -> float:
    """Relative standard error σ_S/S of `speedup_measured` (delta method, module docstring).

    NaN when it cannot be estimated (no passing event, or the higher sums are unknown).
    """
    a, b, c, n = m.sum_w, m.sum_w2, m.total_cost, float(m.n_generated)
    if a <= 0 or b <= 0 or c <= 0 or n <= 0:
        return math.nan
    v_aa = m.sum_w2 - a * a / n
    v_bb = m.sum_w4 - b * b / n
    v_cc = m.sum_c2 - c * c / n
    v_ab = m.sum_w3 - a * b / n
    v_ac = m.sum_w_c - a * c / n
    v_bc = m.sum_w2_c - b * c / n
    rel2 = (
        v_aa / a**2
        + v_bb / b**2
        + v_cc / c**2
        - 2.0 * v_ab / (a * b)
        - 2.0 * v_ac / (a * c)
        + 2.0 * v_bc / (b * c)
    )
    return math.sqrt(max(rel2, 0.0)) if math.isfinite(rel2) else math.nan


def speedup_closed_form(
    eps: float,
    f_TP: float,
    f_FP: float,
    f_FN: float,
    f_TN: float,
    E_w: float,
    t_fast: float,
    t_nn: float,
    t_slow: float,
) -> float:
    """giesegh2025: (t3/E[ω]) / ((εf_TP + (1−ε)f_FP)·t1 + (εf_FN + (1−ε)f_TN)·t2).

    f_TP = E[p | pass] (fraction of passing events kept), f_FN = 1 − f_TP, f_FP = E[p | fail],
    f_TN = 1 − f_FP, E[ω] = E[1/p | pass] over all passing events (so that
    E[Σ_{kept,pass} w²] = N·ε·E[ω]; see `confusion_fractions`).
    """
    t1 = t_fast + t_nn + t_slow
    t2 = t_fast + t_nn
    t3 = t_fast + t_slow
    denominator = (eps * f_TP + (1 - eps) * f_FP) * t1 + (eps * f_FN + (1 - eps) * f_TN) * t2
    return (t3 / E_w) / denominator


class ConfusionFractions(NamedTuple):
    """Inputs of `speedup_closed_form` in expectation over a labelled sample with keep prob p."""

    eps: float
    f_TP: float
    f_FP: float
    f_FN: float
    f_TN: float
    E_w: float


def confusion_fractions(labels: ArrayLike, p: ArrayLike) -> ConfusionFractions:
    """Expected confusion fractions for keep probabilities p on a labelled, unfiltered sample."""
    y = np.asarray(labels, dtype=bool)
    pa = np.asarray(p, dtype=np.float64)
    if not y.any() or y.all():
        raise ValueError("confusion_fractions needs both passing and failing events")
    f_tp = float(pa[y].mean())
    f_fp = float(pa[~y].mean())
    return ConfusionFractions(
        eps=float(y.mean()),
        f_TP=f_tp,
        f_FP=f_fp,
        f_FN=1.0 - f_tp,
        f_TN=1.0 - f_fp,
        E_w=float(np.mean(1.0 / pa[y])),
    )


def expected_speedup(
    q: ArrayLike, p: ArrayLike, t_fast: float, t_nn: float, t_slow: float
) -> float:
    """t3·ε / ((t2 + t_slow·E[p])·E[q/p]) for calibrated q [n] (one skim) and keep probs p [n]."""
    qa = np.asarray(q, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    eps = float(qa.mean())
    t2 = t_fast + t_nn
    objective = (t2 + t_slow * float(pa.mean())) * float(np.mean(qa / pa))
    return (t_fast + t_slow) * eps / objective if objective > 0 else 0.0


class SpeedupEstimate(NamedTuple):
    value: float
    error: float  # one standard deviation (NaN where unknown)


def expected_speedup_weighted(
    labels: ArrayLike,
    p: ArrayLike,
    w: ArrayLike,
    t_fast: float,
    t_nn: float,
    t_slow: float,
) -> float:
    """Expected speedup of keep probabilities p [n] scored on labels [n] of a sample that was
    itself kept with weights w = 1/p_taken (e.g. the learner's validation stream).

    ε, E[p] and E[y/p] over ALL events are estimated by Hájek ratios Σw·x/Σw; then
    speedup = t3·ε / ((t2 + t_slow·E[p])·E[y/p]) as in `expected_speedup`.
    """
    y = np.asarray(labels, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    wa = np.asarray(w, dtype=np.float64)
    total = float(wa.sum())
    if total <= 0 or not y.any():
        return math.nan
    eps = float(wa @ y) / total
    mean_p = float(wa @ pa) / total
    mean_y_over_p = float(wa @ (y / pa)) / total
    objective = (t_fast + t_nn + t_slow * mean_p) * mean_y_over_p
    return (t_fast + t_slow) * eps / objective if objective > 0 else math.nan


def bootstrap_expected_speedup(
    labels: ArrayLike,
    p: ArrayLike,
    w: ArrayLike,
    times: tuple[float, float, float],
    n_bootstrap: int = 50,
    seed: int = 0,
) -> SpeedupEstimate:
    """`expected_speedup_weighted` with a bootstrap (over events) standard deviation."""
    y = np.asarray(labels, dtype=np.bool_)
    pa = np.asarray(p, dtype=np.float64)
    wa = np.asarray(w, dtype=np.float64)
    value = expected_speedup_weighted(y, pa, wa, *times)
    if math.isnan(value):
        return SpeedupEstimate(math.nan, math.nan)
    rng = np.random.default_rng(seed)
    n = len(y)
    draws = [
        expected_speedup_weighted(y[i], pa[i], wa[i], *times)
        for i in (rng.integers(0, n, n) for _ in range(n_bootstrap))
    ]
    finite = np.asarray([d for d in draws if math.isfinite(d)])
    error = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return SpeedupEstimate(value, error)


def oracle_speedup(eps: float, t_fast: float, t_nn: float, t_slow: float) -> float:
    """Perfect classifier, p = 1 exactly for passing events: t3 / (t2 + ε·t_slow)."""
    return (t_fast + t_slow) / (t_fast + t_nn + eps * t_slow)


def fraction_of_oracle(
    speedup: float, eps: float, t_fast: float, t_nn: float, t_slow: float
) -> float:
    return speedup / oracle_speedup(eps, t_fast, t_nn, t_slow)


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
    speedup_err: one standard deviation of speedup (delta method, see the module docstring);
    NaN when unknown (no passing event yet, or a state saved before the higher sums existed).
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
            rel = speedup_rel_error(
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
                speedup_err=speed * rel,
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
