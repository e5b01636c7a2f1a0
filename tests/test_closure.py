"""Closure: the 1/p-weighted kept sample reproduces the unfiltered one; speedup formulas agree.

Synthetic populations (fixed seeds): a hidden variable x ~ N(0, 1), a true pass probability
q(x), labels drawn from q, and an observable m = x + noise whose histogram over passing events
is the "physics distribution". The filter sees q (a perfectly calibrated model) or a worse model.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pytest

from adaptive_bkg.config import PolicyConfig
from adaptive_bkg.stats.calibration import Calibrator, sigmoid
from adaptive_bkg.stats.metrics import RunAccumulator
from adaptive_bkg.stats.sampling import BiasedPolicyWarning, Policy, draw_keep, make_policy
from adaptive_bkg.stats.speedup import confusion_fractions, expected_speedup, speedup_closed_form

T_FAST, T_NN, T_SLOW = 1.0, 1.0, 100.0
BINS = np.linspace(-1.0, 5.0, 21)  # 20 bins of the observable m, covering the passing events


class Population(NamedTuple):
    x: np.ndarray
    q: np.ndarray  # true (calibrated) pass probability
    labels: np.ndarray
    m: np.ndarray  # observable


def _population(n: int, seed: int, floor: float = 0.0) -> Population:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    q = floor + (0.9 - floor) * sigmoid(-6.0 + 2.5 * x)
    labels = rng.random(n) < q
    m = x + rng.normal(0.0, 0.7, n)
    return Population(x, q, labels, m)


@pytest.fixture(scope="module")
def broad() -> Population:
    """ε ≈ 2 %, q down to ~1e-6: the floor p_min binds for most events (weights up to 100)."""
    return _population(1_000_000, seed=11)


@pytest.fixture(scope="module")
def bounded() -> Population:
    """q >= 0.01, so p >= ~0.17 under sqrt-optimal: narrow weights, precise N_eff (ε ≈ 5 %)."""
    return _population(2_000_000, seed=12, floor=0.01)


def _weighted_histogram(
    pop: Population, kept: np.ndarray, p: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    sel = kept & pop.labels
    w = 1.0 / p[sel]
    sum_w, _ = np.histogram(pop.m[sel], BINS, weights=w)
    sum_w2, _ = np.histogram(pop.m[sel], BINS, weights=w * w)
    return sum_w, sum_w2


class Pulls(NamedTuple):
    bins: np.ndarray  # per dense bin, variance Σw² estimated from the kept sample
    total: float  # whole pass count, variance Σw²
    total_exact: float  # whole pass count, exact variance Σ_pass (1−p)/p (nan if some p = 0)


def _pulls(pop: Population, kept: np.ndarray, p: np.ndarray) -> Pulls:
    """Pulls of the weighted estimate against the unfiltered truth (the realised labels).

    The analyst's variance estimate is Σw² over kept passing events: it is the variance about
    the expectation, slightly conservative against the realised truth, whose exact variance
    given the labels is Σ(1−p)/p over passing events. Per-bin pulls are only Gaussian-like
    where many events are kept, so they use "dense" bins where the expected number of kept
    passing events Σ_pass p >= 30 (decided from the population, not from the draw).
    """
    sum_w, sum_w2 = _weighted_histogram(pop, kept, p)
    m_pass, p_pass = pop.m[pop.labels], p[pop.labels]
    truth, _ = np.histogram(m_pass, BINS)
    expected_kept, _ = np.histogram(m_pass, BINS, weights=p_pass)
    dense = expected_kept >= 30
    bins = (sum_w[dense] - truth[dense]) / np.sqrt(sum_w2[dense])
    diff = sum_w.sum() - truth.sum()
    total_exact = diff / np.sqrt(np.sum((1 - p_pass) / p_pass)) if np.all(p_pass > 0) else np.nan
    return Pulls(bins, float(diff / np.sqrt(sum_w2.sum())), float(total_exact))


def _fitted(name: str, pop: Population, **cfg: float) -> Policy:
    policy = make_policy(PolicyConfig(name=name, **cfg))
    # labels only used by skewed-sigmoid; fit on a 50k subsample like a learner would
    return policy.fit(pop.q[:50_000], T_FAST, T_NN, T_SLOW, labels=pop.labels[:50_000])


@pytest.mark.parametrize("name", ["sqrt-optimal", "identity", "basf2-exp", "skewed-sigmoid"])
def test_weighted_histogram_closes(broad: Population, name: str) -> None:
    policy = _fitted(name, broad)
    p = policy.keep_probability(broad.q)
    kept = draw_keep(p, np.random.default_rng(21))
    pulls = _pulls(broad, kept, p)
    assert pulls.bins.size >= 15  # the histogram is populated
    # ~18 bins of |pull| < 4: for Gaussian pulls a false alarm has probability ~1e-3 (over 20
    # keep draws x 5 policies the largest |pull| seen was 3.0)
    assert np.max(np.abs(pulls.bins)) < 4.0, pulls.bins
    assert abs(pulls.total) < 4.0
    assert abs(pulls.total_exact) < 4.0
    # ... and the test has power: 4σ of the total is at most 14 % (4 % for the optimised ones)
    _, sum_w2 = _weighted_histogram(broad, kept, p)
    assert np.sqrt(sum_w2.sum()) / broad.labels.sum() < 0.035  # identity 2.9 %, others ~1 %
    # Σ_kept w estimates the number of generated events (variance Σ_kept w(w−1))
    w = 1.0 / p[kept]
    assert abs(w.sum() - broad.q.size) < 4.0 * np.sqrt(np.sum(w * (w - 1.0)))


def test_hard_cut_is_biased(broad: Population) -> None:
    with pytest.warns(BiasedPolicyWarning):
        policy = make_policy(PolicyConfig(name="hard-cut", threshold=0.1))
    p = policy.keep_probability(broad.q)
    kept = draw_keep(p, np.random.default_rng(22))
    pulls = _pulls(broad, kept, p)
    # events with q <= 0.1 are lost for good: the pass count is far too low
    assert pulls.total < -5.0
    assert np.max(np.abs(pulls.bins)) > 5.0


class _Chunk(NamedTuple):
    kept: np.ndarray
    p: np.ndarray


def test_closure_when_p_changes_mid_run(broad: Population) -> None:
    """Four chunks in time order. Chunk 0: an untrained, noisy model with the unfitted policy.
    Later chunks: a better model, temperature-calibrated on labelled kept events of the earlier
    chunks only (weights 1/p), and k refitted on the earlier chunks' scores. Every event's p is
    fixed before its keep draw and is the one used in its weight, so the run closes."""
    rng = np.random.default_rng(23)
    n = broad.q.size
    chunks = np.array_split(np.arange(n), 4)
    noisy_logit = -4.0 + 1.2 * (broad.x + rng.normal(0.0, 1.0, n))  # model v0
    good_logit = 2.0 * (-6.0 + 2.5 * broad.x)  # model v1: right ranking, T = 2 off
    policy = make_policy(PolicyConfig())  # k = 1 until the first fit
    calibrator = Calibrator("temperature")
    history: list[_Chunk] = []
    for i, idx in enumerate(chunks):
        if i == 0:
            q_model = sigmoid(noisy_logit[idx])
        else:
            earlier = np.concatenate(chunks[:i])
            seen = np.concatenate([c.kept for c in history])
            p_seen = np.concatenate([c.p for c in history])
            calibrator.fit(
                good_logit[earlier][seen], broad.labels[earlier][seen], weights=1.0 / p_seen[seen]
            )
            policy.fit(calibrator.apply(good_logit[earlier]), T_FAST, T_NN, T_SLOW)
            q_model = calibrator.apply(good_logit[idx])
        p = policy.keep_probability(q_model)
        history.append(_Chunk(draw_keep(p, rng), p))
    assert calibrator.state.temperatures[0] == pytest.approx(2.0, rel=0.1)
    kept = np.concatenate([c.kept for c in history])
    p_all = np.concatenate([c.p for c in history])
    pulls = _pulls(broad, kept, p_all)
    assert np.max(np.abs(pulls.bins)) < 4.0, pulls.bins
    assert abs(pulls.total) < 4.0
    assert abs(pulls.total_exact) < 4.0
    # Weighting chunk 0's kept events with the p of the later model (not the p used to keep
    # them) breaks the argument and biases the result.
    wrong = p_all.copy()
    wrong[chunks[0]] = policy.keep_probability(calibrator.apply(good_logit[chunks[0]]))
    assert abs(_pulls(broad, kept, wrong).total) > 5.0
    # (and p really changed between the model versions: typical factor > 1.6 per event)
    assert np.mean(np.abs(np.log(wrong[chunks[0]] / p_all[chunks[0]]))) > 0.5


def _speedup_relative_sd(
    q: np.ndarray, p: np.ndarray, labels: np.ndarray | None
) -> tuple[float, float]:
    """Delta-method relative sd of (measured speedup, N_eff) from the keep draws (given labels)
    or from keep draws and labels together (labels=None). Speedup ∝ S1/(S2·C) with S1 = Σw,
    S2 = Σw² over kept passing, C = N·t2 + t_slow·n_kept; N_eff = S1²/S2."""
    y = q if labels is None else labels.astype(float)  # P(pass) per event
    s1, s2 = np.sum(y), np.sum(y / p)
    c = q.size * (T_FAST + T_NN) + T_SLOW * np.sum(p)
    a = 1.0 / (p * s1) - 1.0 / (p * p * s2)  # d log(S1/S2) per kept passing event
    b = T_SLOW / c  # d log C per kept event
    if labels is None:  # Z = y·k with y ~ q, k ~ p independent
        mean = q * p * a - p * b
        second = q * p * a * a - 2 * q * p * a * b + p * b * b
        var_speed = np.sum(second - mean**2)
    else:  # only k ~ Bernoulli(p) is random
        var_speed = np.sum(p * (1 - p) * (y * a - b) ** 2)
    a_neff = 2.0 / (p * s1) - 1.0 / (p * p * s2)
    var_neff = np.sum(q * p * a_neff**2 - (q * p * a_neff) ** 2)
    return float(np.sqrt(var_speed)), float(np.sqrt(var_neff))


@pytest.mark.parametrize("name", ["sqrt-optimal", "basf2-exp"])
def test_measured_speedup_matches_closed_form_and_expectation(
    bounded: Population, name: str
) -> None:
    pop = bounded
    p = _fitted(name, pop).keep_probability(pop.q)
    kept = draw_keep(p, np.random.default_rng(31))
    acc = RunAccumulator(["skim"])
    acc.add(kept, p, pop.labels[:, None], T_FAST, T_NN, T_SLOW)
    summary = acc.summary()
    measured = summary.skims["skim"].speedup
    assert summary.t_slow == pytest.approx(T_SLOW, rel=1e-12)  # constant costs: exact

    # 1. Accounting identity: the closed form with the realised fractions is the same number.
    y = pop.labels
    w = 1.0 / p[kept & y]
    realised = speedup_closed_form(
        eps=y.mean(),
        f_TP=np.mean(kept[y]),
        f_FP=np.mean(kept[~y]),
        f_FN=1 - np.mean(kept[y]),
        f_TN=1 - np.mean(kept[~y]),
        E_w=np.sum(w * w) / np.sum(w),
        t_fast=T_FAST,
        t_nn=T_NN,
        t_slow=T_SLOW,
    )
    assert measured == pytest.approx(realised, rel=1e-9)

    # 2. Statistics: the closed form in expectation (labels fixed) and expected_speedup (q only).
    sd_given_labels, _ = _speedup_relative_sd(pop.q, p, pop.labels)
    sd_total, _ = _speedup_relative_sd(pop.q, p, None)
    assert sd_given_labels < 0.006  # so 2 % below is > 3.3σ
    assert sd_total < 0.006
    closed = speedup_closed_form(*confusion_fractions(y, p), T_FAST, T_NN, T_SLOW)
    expected = expected_speedup(pop.q, p, T_FAST, T_NN, T_SLOW)
    assert measured == pytest.approx(closed, rel=0.02)
    assert measured == pytest.approx(expected, rel=0.02)
    assert closed == pytest.approx(expected, rel=0.02)
    assert measured > 1.25  # a real gain (1.32–1.37 here), not the trivial 101/102


@pytest.mark.parametrize("name", ["sqrt-optimal", "basf2-exp", "identity"])
def test_n_eff_matches_expectation(bounded: Population, name: str) -> None:
    """N_eff of kept passing events ≈ N·ε²/E[q/p] (expectation over labels and keep draws)."""
    pop = bounded
    p = _fitted(name, pop).keep_probability(pop.q)
    kept = draw_keep(p, np.random.default_rng(32))
    acc = RunAccumulator(["skim"])
    acc.add(kept, p, pop.labels[:, None], T_FAST, T_NN, T_SLOW)
    n_eff = acc.summary().skims["skim"].n_eff
    expectation = pop.q.size * pop.q.mean() ** 2 / np.mean(pop.q / p)
    _, sd = _speedup_relative_sd(pop.q, p, None)
    # identity keeps w up to 100 and is ~6x noisier (sd 3 %); the others have sd < 0.6 %
    assert sd < (0.04 if name == "identity" else 0.006)
    assert n_eff == pytest.approx(expectation, rel=4 * sd)


def test_slow_cost_estimate_is_unbiased(bounded: Population) -> None:
    """t_slow is estimated as Σ_kept w·cost / Σ_kept w; passing events here cost 3x more."""
    pop = bounded
    p = _fitted("sqrt-optimal", pop).keep_probability(pop.q)
    kept = draw_keep(p, np.random.default_rng(33))
    cost_slow = np.where(pop.labels, 300.0, 100.0)
    acc = RunAccumulator(["skim"])
    acc.add(kept, p, pop.labels[:, None], T_FAST, T_NN, cost_slow)
    truth = cost_slow.mean()
    w = 1.0 / p[kept]
    # linearised variance of the ratio estimator: Σ_kept w(w−1)(c − c̄)² / N²
    sd = np.sqrt(np.sum(w * (w - 1) * (cost_slow[kept] - truth) ** 2)) / pop.q.size
    assert acc.summary().t_slow == pytest.approx(truth, abs=4 * sd)
    assert sd / truth < 0.01  # informative


def test_module_emits_no_stray_warnings(broad: Population) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fitted("sqrt-optimal", broad).keep_probability(broad.q[:1000])
