"""Effective sample size, efficiency and speedup: the formulas and their uncertainties.

Definitions (DESIGN §2, docs/statistics.md). For skim s, over kept events that pass it:
  N_eff = (Σw)² / Σw²,   ε̂ = Σw / N_generated,
  speedup = (t3 · N_eff / ε̂) / (Σ costs actually spent),   t3 = t_fast + t_slow,
  oracle  = t3 / (t2 + ε·t_slow),   t2 = t_fast + t_nn.
The speedup's numerator is the cost of an unfiltered run reaching the same N_eff: it needs
N_eff/ε generated events, each costing t3.

Uncertainty of the measured speedup (delta method, `speedup_variance_terms`): per generated event
a = w·[kept, pass], b = w²·[kept, pass] and its cost c = c_fast + c_nn + [kept]·c_slow are
i.i.d.; with A = Σa, B = Σb, C = Σc the speedup is ∝ A/(B·C), so
  (σ_S/S)² = V_AA/A² + V_BB/B² + V_CC/C² − 2V_AB/(AB) − 2V_AC/(AC) + 2V_BC/(BC),
with V_XY = Σxy − X·Y/N (e.g. V_AB = Σ_{kept,pass} w³ − A·B/N). The cost term matters where
most passing events are kept with p near 1 (weights near 1): then A/B hardly moves and the
spread comes from how many failing events were kept. The estimated t_slow (when not given) is
treated as known. Closure: tests/test_uncertainty.py and tests/test_estimators.py check σ
against the spread of the speedup over repeated runs (±σ covers 64–66 %: docs/statistics.md).

The learner's compute (`LearnerCompute`) is a fixed, measured extra cost L: the speedup with it
is S·C/(C + L) (`with_extra_cost`), and only the cost terms of σ change, by r = C/(C + L)
(`SpeedupVarianceTerms.rel_error`).

The mean seconds per generated event of a run that keeps with probability p is
`cost_per_event` = t_fast + t_nn + t_slow·E[p] (t2 at p = 0, t1 at p = 1); without the filter
(no NN, every event simulated) it is `unfiltered_cost_per_event` = t3. Every speedup formula
here, the policy fits (sampling.py) and the speedup loss (model/losses.py) use these two.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import torch

_Fraction = TypeVar("_Fraction", float, "torch.Tensor")


def cost_per_event(
    t_fast: float, t_nn: float, t_slow: float, keep_fraction: _Fraction
) -> _Fraction:
    """Expected seconds per generated event: fast stage and NN for every event, the slow stage
    for the kept fraction E[p] (a float, or a tensor for the differentiable speedup loss)."""
    return t_fast + t_nn + t_slow * keep_fraction


def unfiltered_cost_per_event(t_fast: float, t_slow: float) -> float:
    """t3 = t_fast + t_slow: a run without the filter (no NN, every event simulated)."""
    return cost_per_event(t_fast, 0.0, t_slow, 1.0)


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
    t3 = unfiltered_cost_per_event(t_fast, t_slow)
    return t3 * ne / eff_hat(sum_w, n_generated) / total_cost_s


@dataclass(frozen=True)
class LearnerCompute:
    """What the learner spent (docs/statistics.md, "Honest cost accounting"): process CPU
    seconds of its training steps and of the re-scoring at each publish (policy refit on the
    probe reservoir, validation AUC and expected speedup), and on a GPU the wall seconds of
    those same steps between two device synchronisations (an upper bound of the GPU's busy
    time). `counted_s` is what `speedups_with_learner` adds to the run's cost: the CPU seconds;
    GPU seconds are reported beside it, not converted into CPU seconds."""

    train_cpu_s: float = 0.0
    rescore_cpu_s: float = 0.0
    gpu_s: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.train_cpu_s + self.rescore_cpu_s

    @property
    def counted_s(self) -> float:
        return self.cpu_s

    def plus(self, other: LearnerCompute) -> LearnerCompute:
        """Sum of two segments' compute (a resumed run goes on from the earlier one's)."""
        return LearnerCompute(
            self.train_cpu_s + other.train_cpu_s,
            self.rescore_cpu_s + other.rescore_cpu_s,
            self.gpu_s + other.gpu_s,
        )

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "cpu_s": self.cpu_s, "counted_s": self.counted_s}


class SpeedupEstimate(NamedTuple):
    value: float
    error: float  # one standard deviation (NaN where unknown)


class SpeedupMoments(NamedTuple):
    """The sums `speedup_variance_terms` needs, for one skim (kept passing events: w; all: c)."""

    sum_w: float  # A
    sum_w2: float  # B = Σw², also Σa²
    sum_w3: float  # Σab
    sum_w4: float  # Σb²
    total_cost: float  # C = Σc over all generated events
    sum_c2: float  # Σc²
    sum_w_c: float  # Σac
    sum_w2_c: float  # Σbc
    n_generated: int


class SpeedupVarianceTerms(NamedTuple):
    """(σ_S/S)² split by what it depends on, so that it can be re-evaluated with a fixed extra
    cost L added to the run's (e.g. the learner's compute, `with_extra_cost`)."""

    weights: float  # V_AA/A² + V_BB/B² − 2V_AB/(AB)
    cross: float  # −2V_AC/(AC) + 2V_BC/(BC)
    cost: float  # V_CC/C²

    def rel_error(self, total_cost_s: float, extra_cost_s: float = 0.0) -> float:
        """σ_S/S of the speedup whose cost is C + L (L fixed, known): the cost terms scale with
        r = C/(C + L), so (σ/S)² = weights + cross·r + cost·r²; NaN where unknown."""
        if not total_cost_s + extra_cost_s > 0:
            return math.nan
        r = total_cost_s / (total_cost_s + extra_cost_s)
        rel2 = self.weights + self.cross * r + self.cost * r * r
        return math.sqrt(max(rel2, 0.0)) if math.isfinite(rel2) else math.nan


UNKNOWN_VARIANCE = SpeedupVarianceTerms(math.nan, math.nan, math.nan)


def speedup_variance_terms(m: SpeedupMoments) -> SpeedupVarianceTerms:
    """The parts of (σ_S/S)² of `speedup_measured` (delta method, module docstring).

    NaN when they cannot be estimated (no passing event, or the higher sums are unknown).
    """
    a, b, c, n = m.sum_w, m.sum_w2, m.total_cost, float(m.n_generated)
    if a <= 0 or b <= 0 or c <= 0 or n <= 0:
        return UNKNOWN_VARIANCE
    v_aa = m.sum_w2 - a * a / n
    v_bb = m.sum_w4 - b * b / n
    v_cc = m.sum_c2 - c * c / n
    v_ab = m.sum_w3 - a * b / n
    v_ac = m.sum_w_c - a * c / n
    v_bc = m.sum_w2_c - b * c / n
    return SpeedupVarianceTerms(
        weights=v_aa / a**2 + v_bb / b**2 - 2.0 * v_ab / (a * b),
        cross=-2.0 * v_ac / (a * c) + 2.0 * v_bc / (b * c),
        cost=v_cc / c**2,
    )


def with_extra_cost(
    speedup: float, terms: SpeedupVarianceTerms, total_cost_s: float, extra_cost_s: float
) -> SpeedupEstimate:
    """The measured speedup (and its σ) had the run also spent `extra_cost_s` seconds: the
    numerator (cost of an unfiltered run with the same N_eff) is unchanged, the cost is C + L."""
    if not total_cost_s > 0 or extra_cost_s < 0:
        return SpeedupEstimate(math.nan, math.nan)
    value = speedup * total_cost_s / (total_cost_s + extra_cost_s)
    return SpeedupEstimate(value, value * terms.rel_error(total_cost_s, extra_cost_s))


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
    t_slow_kept: float | None = None,
) -> float:
    """giesegh2025: (t3/E[ω]) / ((εf_TP + (1−ε)f_FP)·t1 + (εf_FN + (1−ε)f_TN)·t2).

    f_TP = E[p | pass] (fraction of passing events kept), f_FN = 1 − f_TP, f_FP = E[p | fail],
    f_TN = 1 − f_FP, E[ω] = E[1/p | pass] over all passing events (so that
    E[Σ_{kept,pass} w²] = N·ε·E[ω]; see `confusion_fractions`).

    The reference prices every event's slow stage alike. Where it varies per event, t3 takes
    the mean over all events (`t_slow`: what an unfiltered run pays) and t1 the mean over the
    kept ones (`t_slow_kept`, default `t_slow`: Σ_kept cost_slow / n_kept in a run, or
    E[p·cost_slow]/E[p] in expectation); then it is the measured speedup's own definition.
    """
    slow_kept = t_slow if t_slow_kept is None else t_slow_kept
    t1 = cost_per_event(t_fast, t_nn, slow_kept, 1.0)  # kept: all three stages
    t2 = cost_per_event(t_fast, t_nn, t_slow, 0.0)  # discarded: no slow stage
    t3 = unfiltered_cost_per_event(t_fast, t_slow)
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
    objective = cost_per_event(t_fast, t_nn, t_slow, float(pa.mean())) * float(np.mean(qa / pa))
    return unfiltered_cost_per_event(t_fast, t_slow) * eps / objective if objective > 0 else 0.0


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
    objective = cost_per_event(t_fast, t_nn, t_slow, mean_p) * mean_y_over_p
    return (
        unfiltered_cost_per_event(t_fast, t_slow) * eps / objective if objective > 0 else math.nan
    )


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
    return unfiltered_cost_per_event(t_fast, t_slow) / cost_per_event(t_fast, t_nn, t_slow, eps)


def fraction_of_oracle(
    speedup: float, eps: float, t_fast: float, t_nn: float, t_slow: float
) -> float:
    return speedup / oracle_speedup(eps, t_fast, t_nn, t_slow)
