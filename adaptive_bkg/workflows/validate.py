"""The closure suite (`adaptive-bkg validate`): is a filtered production unbiased?

For runs replayed on a labelled file every event has its skim labels, its recorded keep
probability p and keep decision. For each skim, each observable (workflows/observables.py:
generator and reconstructed level) and each run, the events passing the skim are histogrammed
twice, all of them and the kept ones weighted 1/p, and compared bin by bin
(stats/closure_tests.py: sparse bins merged by a rule decided from p alone, pulls with the
exact variance Σ_all (1 − p)/p, one χ² and p-value per observable).

Over all runs (several runs = several keep-draw seeds on the same events) the suite passes when
  - no passing event had p = 0 (a policy that can never keep some events is not importance
    sampling: `hard-cut`),
  - the pooled pulls have |mean| ≤ 0.1 and |width − 1| ≤ 0.1 (`ClosureCriteria`), or deviate
    by less than 3 of their standard errors (a few runs cannot measure the mean to ±0.1: the
    suite then fails only a significant deviation; `Validation.meets_tolerances` is the
    strict reading),
  - the χ² p-values are uniform: per observable a KS test over runs, Bonferroni-combined over
    observables, p > 0.01.
Observables are computed once per labelled file, skim and detector setting (all seeds replay
the same events; only p and the keep draws differ), so 50 runs cost 50 record reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.labelled import read_labelled
from adaptive_bkg.stages.recorder import existing_run_dir, records_skims
from adaptive_bkg.stats.closure_tests import (
    BinnedTest,
    PullSummary,
    Uniformity,
    binned_test,
    difference_cumulants,
    summarize_pulls,
    uniformity,
)
from adaptive_bkg.workflows.closure import RunDraws, check_labelled, run_draws
from adaptive_bkg.workflows.observables import (
    OBSERVABLES,
    Observable,
    histogram_values,
    observables,
    reco_key,
)

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class ClosureCriteria:
    max_abs_pull_mean: float = 0.1
    max_abs_width_offset: float = 0.1  # |width − 1|
    min_ks_pvalue: float = 0.01
    min_count: float = 10.0  # merge bins until D is as Gaussian as a Poisson count of this
    n_sigma: float = 3.0  # a deviation beyond the tolerance fails only if this significant

    def __post_init__(self) -> None:
        if self.min_count <= 0 or self.max_abs_pull_mean <= 0 or self.max_abs_width_offset <= 0:
            raise UserError("closure tolerances and --min-count must be positive")
        if not 0 <= self.min_ks_pvalue < 1:
            raise UserError(f"--min-ks-pvalue {self.min_ks_pvalue} must lie in [0, 1)")


@dataclass(frozen=True)
class ObservableSummary:
    skim: str
    name: str
    level: str
    n_runs_tested: int  # runs in which it had at least one testable bin
    mean_ndf: float
    pulls: PullSummary
    ks_pvalue: float  # χ² p-values over runs against uniform (nan if untested)


@dataclass(frozen=True)
class Validation:
    """The result of the closure suite over `run_dirs` (one run per keep-draw seed)."""

    data: str
    run_dirs: tuple[str, ...]
    skims: tuple[str, ...]
    policies: tuple[str, ...]
    criteria: ClosureCriteria
    n_observables: int  # observables defined per skim
    n_tested: int  # (skim, observable) pairs with a testable bin in some run
    n_p_zero: int  # passing events with p = 0, over all runs
    pulls: PullSummary  # exact variance: the test
    pulls_sumw2: PullSummary  # the same bins with variance Σ_kept w²: for reference
    uniformity: Uniformity
    observables: tuple[ObservableSummary, ...]
    reasons: tuple[str, ...]  # empty: closure passes
    # Raw material for plots (not in to_dict): pulls per run, p-values per skim/observable.
    pulls_by_run: tuple[F64, ...] = field(repr=False, default=())
    p_values: dict[str, tuple[float, ...]] = field(repr=False, default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "closure passes"

    @property
    def meets_tolerances(self) -> bool:
        """The strict reading: |mean| ≤ 0.1, |width − 1| ≤ 0.1, KS p > 0.01, whatever the
        errors (what the 50-seed benchmark is held to)."""
        c, p = self.criteria, self.pulls
        return (
            self.n_p_zero == 0
            and abs(p.mean.value) <= c.max_abs_pull_mean
            and abs(p.width.value - 1) <= c.max_abs_width_offset
            and self.uniformity.ks_pvalue > c.min_ks_pvalue
        )

    def to_dict(self) -> dict[str, Any]:
        p, u = self.pulls, self.uniformity
        return {
            "data": self.data,
            "skims": list(self.skims),
            "policies": list(self.policies),
            "n_observables": self.n_observables,
            "n_tested": self.n_tested,
            "n_seeds": len(self.run_dirs),
            "n_pulls": p.n_pulls,
            "pull_mean": p.mean.value,
            "pull_mean_err": p.mean.error,
            "pull_width": p.width.value,
            "pull_width_err": p.width.error,
            "errors_from_runs": p.error_from_runs,
            "ks_pvalue": u.ks_pvalue,
            "pooled_ks_pvalue": u.pooled_ks_pvalue,
            "n_pvalues": u.n_values,
            "n_p_zero": self.n_p_zero,
            "sumw2": {
                "pull_mean": self.pulls_sumw2.mean.value,
                "pull_mean_err": self.pulls_sumw2.mean.error,
                "pull_width": self.pulls_sumw2.width.value,
                "pull_width_err": self.pulls_sumw2.width.error,
            },
            "criteria": asdict(self.criteria),
            "passed": self.passed,
            "meets_tolerances": self.meets_tolerances,
            "reason": self.reason,
            "per_observable": [
                {
                    "skim": o.skim,
                    "name": o.name,
                    "level": o.level,
                    "n_runs_tested": o.n_runs_tested,
                    "mean_ndf": o.mean_ndf,
                    "pull_mean": o.pulls.mean.value,
                    "pull_mean_err": o.pulls.mean.error,
                    "pull_width": o.pulls.width.value,
                    "pull_width_err": o.pulls.width.error,
                    "ks_pvalue": o.ks_pvalue,
                }
                for o in self.observables
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n"


def observable_test(values: F64, draws: RunDraws, obs: Observable, min_count: float) -> BinnedTest:
    """The binned comparison of one observable in one run (values: per passing event)."""
    has, x = histogram_values(values, obs)
    kept = has & draws.kept
    k2, k3, k4 = difference_cumulants(draws.p)

    def hist(sel: NDArray[np.bool_], weights: F64 | None = None) -> F64:
        w = None if weights is None else weights[sel]
        return np.histogram(x[sel], obs.edges, weights=w)[0].astype(np.float64)

    w = draws.weight
    return binned_test(
        hist(has),
        hist(kept, w),
        hist(kept, w * w),
        (hist(has, k2), hist(has, k3), hist(has, k4)),
        min_count,
    )


def _run_skims(run_dirs: Sequence[Path], skims: Sequence[str] | None) -> tuple[str, ...]:
    have = [set(records_skims(d / "records")) for d in run_dirs]
    wanted = tuple(skims) if skims else records_skims(run_dirs[0] / "records")
    for d, s in zip(run_dirs, have, strict=True):
        missing = [k for k in wanted if k not in s]
        if missing:
            raise UserError(
                f"run {d} did not produce for {', '.join(missing)} (it has: "
                f"{', '.join(sorted(s))}); give runs of the same skims or choose one with --skim"
            )
    return wanted


def validate_runs(
    run_dirs: Sequence[Path],
    data: Path,
    skims: Sequence[str] | None = None,
    criteria: ClosureCriteria | None = None,
    progress: Callable[[int], None] | None = None,
) -> Validation:
    """Run the closure suite on `run_dirs` (replays of the labelled file `data`)."""
    criteria = criteria or ClosureCriteria()
    if not run_dirs:
        raise UserError("give at least one run directory to validate")
    dirs = [existing_run_dir(Path(d)) for d in run_dirs]
    data = Path(data)
    wanted = _run_skims(dirs, skims)
    for skim in wanted:
        check_labelled(data, skim)
    labelled = read_labelled(data, list(wanted))
    cache: dict[tuple[Any, ...], tuple[NDArray[np.int64], dict[str, F64]]] = {}
    tests: dict[str, list[BinnedTest]] = {f"{s}/{o.name}": [] for s in wanted for o in OBSERVABLES}
    pulls_by_run: list[list[F64]] = []
    sumw2_by_run: list[list[F64]] = []
    policies: set[str] = set()
    n_p_zero = 0
    for k, run_dir in enumerate(dirs):
        run_pulls: list[F64] = []
        run_sumw2: list[F64] = []
        for skim in wanted:
            draws = run_draws(run_dir, labelled, data, skim)
            policies.add(draws.config.policy.name)
            n_p_zero += int(np.sum(draws.p <= 0))
            key = (skim, *reco_key(draws.config))
            if key not in cache:  # once per file, skim and detector: not once per seed
                rows = np.flatnonzero(labelled.labels[:, labelled.skims.index(skim)])
                cache[key] = rows, observables(labelled.batch.take(rows), draws.config)
            rows, values = cache[key]
            at = np.searchsorted(rows, draws.rows)
            for obs in OBSERVABLES:
                test = observable_test(values[obs.name][at], draws, obs, criteria.min_count)
                tests[f"{skim}/{obs.name}"].append(test)
                run_pulls.append(test.pulls)
                run_sumw2.append(test.pulls_sumw2)
        pulls_by_run.append(run_pulls)
        sumw2_by_run.append(run_sumw2)
        if progress is not None:
            progress(k + 1)
    p_values = {key: tuple(t.p_value for t in runs if t.testable) for key, runs in tests.items()}
    summaries = tuple(
        ObservableSummary(
            skim,
            obs.name,
            obs.level,
            sum(t.testable for t in runs),
            float(np.mean([t.ndf for t in runs])),
            summarize_pulls([[t.pulls] for t in runs]),
            uniformity({key: p_values[key]}).ks_pvalue,
        )
        for skim in wanted
        for obs in OBSERVABLES
        for key in [f"{skim}/{obs.name}"]
        for runs in [tests[key]]
    )
    tested = {key: v for key, v in p_values.items() if v}
    result = Validation(
        data=str(data),
        run_dirs=tuple(str(d) for d in dirs),
        skims=wanted,
        policies=tuple(sorted(policies)),
        criteria=criteria,
        n_observables=len(OBSERVABLES),
        n_tested=len(tested),
        n_p_zero=n_p_zero,
        pulls=summarize_pulls(pulls_by_run),
        pulls_sumw2=summarize_pulls(sumw2_by_run),
        uniformity=uniformity(tested),
        observables=summaries,
        reasons=(),
        pulls_by_run=tuple(np.concatenate(r) for r in pulls_by_run),
        p_values=tested,
    )
    return _judged(result)


def _judged(v: Validation) -> Validation:
    c, p = v.criteria, v.pulls
    reasons = []
    if v.n_p_zero:
        reasons.append(
            f"{v.n_p_zero} skim-passing events had keep probability 0 (policy "
            f"{', '.join(v.policies)} can never keep them): not importance sampling"
        )
    if p.n_pulls == 0:
        reasons.append("no bin had enough kept events to test; replay more events")
    else:
        if not abs(p.mean.value) <= max(c.max_abs_pull_mean, c.n_sigma * p.mean.error):
            reasons.append(
                f"pull mean {p.mean.value:+.3f} ± {p.mean.error:.3f} outside 0 ± "
                f"{c.max_abs_pull_mean:g} by more than {c.n_sigma:g}σ"
            )
        allowed = max(c.max_abs_width_offset, c.n_sigma * p.width.error)
        if not abs(p.width.value - 1) <= allowed:
            reasons.append(
                f"pull width {p.width.value:.3f} ± {p.width.error:.3f} outside 1 ± "
                f"{c.max_abs_width_offset:g} by more than {c.n_sigma:g}σ"
            )
        u = v.uniformity
        if not u.ks_pvalue > c.min_ks_pvalue:
            reasons.append(
                f"χ² p-values not uniform: KS p = {u.ks_pvalue:.2g} ≤ {c.min_ks_pvalue:g} "
                f"(smallest of {len(u.per_observable)} observables, Bonferroni)"
            )
    return Validation(**{**v.__dict__, "reasons": tuple(reasons)})


def result_lines(v: Validation) -> list[str]:
    """What `adaptive-bkg validate` prints."""
    p, s, u = v.pulls, v.pulls_sumw2, v.uniformity
    how = "between runs" if p.error_from_runs else "one run: bound for correlated observables"
    lines = [
        f"closure of {len(v.run_dirs)} run(s) ({', '.join(v.policies)}) on {v.data}: skims "
        f"{', '.join(v.skims)}, {v.n_observables} observables per skim, {v.n_tested} tested",
        f"pulls ({p.n_pulls} merged bins, exact variance): mean {p.mean.value:+.3f} ± "
        f"{p.mean.error:.3f}, width {p.width.value:.3f} ± {p.width.error:.3f} ({how})",
        f"  with the analyst's variance Σw² instead: mean {s.mean.value:+.3f}, width "
        f"{s.width.value:.3f} (conservative: Σw² also counts the events' own Poisson spread)",
        f"χ² p-values ({u.n_values}): KS p = {u.ks_pvalue:.3g} (per observable over runs, "
        f"Bonferroni); all pooled as if independent {u.pooled_ks_pvalue:.3g}",
    ]
    worst = sorted((o for o in v.observables if o.n_runs_tested), key=lambda o: o.ks_pvalue)[:3]
    if worst:
        lines.append(
            "lowest per-observable KS p: "
            + ", ".join(f"{o.skim}/{o.name} {o.ks_pvalue:.2g}" for o in worst)
        )
    if v.n_p_zero:
        lines.append(f"{v.n_p_zero} passing events had p = 0")
    lines.append(("PASS: " if v.passed else "FAIL: ") + v.reason)
    return lines
