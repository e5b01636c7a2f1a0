"""Closure statistics: the weighted kept histogram against the full one on the same events.

For the events passing a skim, the filtered production estimates a bin's count N (all events)
by S = Σ_kept w with w = 1/p. Given the events, D = S − N = Σ_bin (k_i/p_i − 1) is a sum of
independent terms (a martingale when p_i depends on earlier events: online learning), each
with mean 0 and known cumulants from its recorded p_i (every event's p is recorded, kept or
not):

    κ2 = (1 − p)/p,   κ3 = (1 − p)(1 − 2p)/p²,   κ4 = (1 − p)(1 − 6p(1 − p))/p³.

The pull of a bin is z = D/sqrt(Σκ2): exactly mean 0 and variance 1, Gaussian only where many
events carry the variance. `merge_bins` therefore joins neighbouring bins until each group's D
is at least as Gaussian as a Poisson count of `min_count` (|skewness| ≤ 1/sqrt(min_count),
|excess kurtosis| ≤ 1/min_count, both from the cumulants above): decided from the recorded
p of all events, never from the keep draws, so the merging cannot bias the pulls. Bins with no
variance (empty, or every event kept with p = 1: D ≡ 0) carry no information and are merged
away the same way.

An event with p = 0 (the biased `hard-cut` policy) can never be kept; its term is −1 with
certainty. It gets κ2 = κ3 = κ4 = 1 (a Poisson count of one missing event), so a bin that lost
n events has a finite pull of about −sqrt(n) instead of −∞, and `p_zero` counts such events.

The χ² of one observable is Σ z² over its merged bins with ndf = their number (nothing is
fitted: both histograms hold the same events). Observables histogram the same events, so their
χ² are correlated: they are never summed; each gets its own p-value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def difference_cumulants(p: F64) -> tuple[F64, F64, F64]:
    """Per event: 2nd, 3rd and 4th cumulant of k/p − 1 (k ~ Bernoulli(p)); p = 0 → (1, 1, 1)."""
    p = np.asarray(p, dtype=np.float64)
    zero = p <= 0
    q = np.where(zero, 1.0, p)
    k2 = (1 - q) / q
    k3 = (1 - q) * (1 - 2 * q) / q**2
    k4 = (1 - q) * (1 - 6 * q * (1 - q)) / q**3
    one = np.float64(1.0)
    return (np.where(zero, one, k2), np.where(zero, one, k3), np.where(zero, one, k4))


def gaussian_enough(k2: float, k3: float, k4: float, min_count: float) -> bool:
    """Is a difference with these cumulants as Gaussian as a Poisson count ≥ min_count?"""
    if k2 <= 0:
        return False
    return abs(k3) / k2**1.5 <= 1 / np.sqrt(min_count) and abs(k4) / k2**2 <= 1 / min_count


def merge_bins(k2: F64, k3: F64, k4: F64, min_count: float) -> I64:
    """Group index per bin (adjacent bins joined left to right until `gaussian_enough`; a
    trailing remainder joins the last group); −1 for every bin if no group qualifies."""
    n = len(k2)
    group = np.full(n, -1, dtype=np.int64)
    start, current = 0, 0
    s2 = s3 = s4 = 0.0
    for i in range(n):
        s2, s3, s4 = s2 + float(k2[i]), s3 + float(k3[i]), s4 + float(k4[i])
        if gaussian_enough(s2, s3, s4, min_count):
            group[start : i + 1] = current
            current += 1
            start = i + 1
            s2 = s3 = s4 = 0.0
    if current > 0 and start < n:
        group[start:] = current - 1
    return group


@dataclass(frozen=True)
class BinnedTest:
    """One observable of one run: pulls of its merged bins, χ², ndf and p-value."""

    pulls: F64  # per merged bin
    chi2: float
    ndf: int  # merged bins (0: nothing testable)
    p_value: float  # nan when ndf = 0
    pulls_sumw2: F64  # the same bins with the analyst's variance Σ_kept w² (conservative)

    @property
    def testable(self) -> bool:
        return self.ndf > 0


def binned_test(
    all_counts: F64,
    kept_sumw: F64,
    kept_sumw2: F64,
    cumulants: tuple[F64, F64, F64],
    min_count: float,
) -> BinnedTest:
    """Merge sparse bins (`merge_bins`), then pulls D/sqrt(Σκ2), χ² and its p-value."""
    from scipy import stats  # scipy: only where p-values are computed

    k2, k3, k4 = cumulants
    group = merge_bins(k2, k3, k4, min_count)
    n_groups = int(group.max()) + 1
    if n_groups == 0:
        return BinnedTest(np.zeros(0), 0.0, 0, float("nan"), np.zeros(0))
    used = group >= 0

    def grouped(x: F64) -> F64:
        return np.bincount(group[used], weights=x[used], minlength=n_groups).astype(np.float64)

    diff = grouped(kept_sumw - all_counts)
    pulls = diff / np.sqrt(grouped(k2))
    chi2 = float(np.sum(pulls**2))
    sumw2 = grouped(kept_sumw2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_sumw2 = np.where(sumw2 > 0, diff / np.sqrt(sumw2), 0.0)
    return BinnedTest(pulls, chi2, n_groups, float(stats.chi2.sf(chi2, n_groups)), z_sumw2)


@dataclass(frozen=True)
class Estimate:
    value: float
    error: float


@dataclass(frozen=True)
class PullSummary:
    """Pulls pooled over observables × bins × runs. Pulls of one run are correlated across
    observables (the same events fill every histogram), so errors come from the spread between
    runs (delete-one-run jackknife; runs have independent keep draws). With a single run, the
    bound for fully correlated observables: σ = width · mean over observables of 1/sqrt(n_bins)."""

    n_pulls: int
    n_runs: int
    mean: Estimate
    width: Estimate  # standard deviation about the pooled mean
    error_from_runs: bool


def summarize_pulls(pulls_by_run: Sequence[Sequence[F64]]) -> PullSummary:
    """Pooled mean and width of the pulls (per run: one array per observable) with errors."""
    runs = [np.concatenate([np.asarray(z, dtype=np.float64) for z in r] or [np.zeros(0)])
            for r in pulls_by_run]  # fmt: skip
    runs = [z for z in runs if len(z)]
    pooled = np.concatenate(runs) if runs else np.zeros(0)
    n = len(pooled)
    if n < 2:
        nan = Estimate(float("nan"), float("nan"))
        return PullSummary(n, len(runs), nan, nan, False)
    mean, width = float(pooled.mean()), float(pooled.std(ddof=1))
    leave = [np.concatenate(runs[:i] + runs[i + 1 :]) for i in range(len(runs) * (len(runs) > 1))]
    if len(runs) < 2 or min(len(z) for z in leave) < 2:
        sizes = np.array([len(z) for r in pulls_by_run for z in r if len(z)], dtype=np.float64)
        scale = float(np.mean(1 / np.sqrt(sizes)))
        return PullSummary(n, len(runs), Estimate(mean, width * scale),
                           Estimate(width, width * scale / np.sqrt(2)), False)  # fmt: skip
    # Delete-one-run jackknife: honest under any correlation inside a run.
    means = np.array([z.mean() for z in leave])
    widths = np.array([z.std(ddof=1) for z in leave])
    factor = (len(runs) - 1) / len(runs)
    return PullSummary(
        n,
        len(runs),
        Estimate(mean, float(np.sqrt(factor * np.sum((means - means.mean()) ** 2)))),
        Estimate(width, float(np.sqrt(factor * np.sum((widths - widths.mean()) ** 2)))),
        True,
    )


@dataclass(frozen=True)
class Uniformity:
    """Are the χ² p-values uniform? Per observable, a KS test over runs (independent under the
    null); `ks_pvalue` combines them by Bonferroni (valid however the observables correlate).
    `pooled_ks_pvalue` tests all observables × runs at once as if independent: shown for
    reference only, since correlated observables make it reject too often."""

    n_values: int
    per_observable: dict[str, float]  # KS p-value over runs
    ks_pvalue: float  # min over observables × their number, capped at 1
    pooled_ks_pvalue: float


def uniformity(p_values: Mapping[str, Sequence[float]]) -> Uniformity:
    from scipy import stats  # scipy: only where p-values are tested

    per = {
        name: float(stats.kstest(np.asarray(v, dtype=np.float64), "uniform").pvalue)
        for name, v in p_values.items()
        if len(v)
    }
    pooled = np.concatenate(
        [np.asarray(v, dtype=np.float64) for v in p_values.values()] or [np.zeros(0)]
    )
    if not per:
        return Uniformity(0, {}, float("nan"), float("nan"))
    return Uniformity(
        len(pooled),
        per,
        min(1.0, len(per) * min(per.values())),
        float(stats.kstest(pooled, "uniform").pvalue),
    )
