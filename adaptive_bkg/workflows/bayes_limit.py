"""The Bayes limit: the best speedup any filter of generator-level events can reach (DESIGN §2).

The detector is random, so even the exact q(x) = P(pass | x) leaves passing events at small q.
The backend's randomness is counter-based per (backend seed, event id), so simulating the same
events with R other backend seeds gives R independent detector outcomes per event and

    q̂_R(x) = (passes among the R replicas) / R,

an unbiased estimate of q(x). At finite R most events with a small q have q̂ = 0, and a policy
on raw q̂ puts them all at p_min: their rare passes then carry w = 1/p_min and the estimate
converges slowly (measured on the closed-form backend of tests/test_bayes_limit.py, 6000
events, limit 1.64: speedup 0.73 at R = 50, 1.36 at R = 400). So the headline uses the
empirical-Bayes posterior mean under a Beta prior fitted to all events by the method of
moments (beta-binomial),

    q̃_R(x) = (c + α) / (R + α + β),

(1.50 at R = 50, 1.54 at R = 400 in the same study); raw q̂ is kept as `speedup_raw`. Any
function of x is a legitimate filter, so both stay lower estimates when scored as below.

The sqrt-optimal policy (`policy_fit.fit_sqrt_k`, floored at p_min) is fitted on q̃_R and scored
on the labels of one more, independent seed (the backend seed of the config, never among the
replicas) with the expected-speedup formula of `speedup.expected_speedup`. Scoring on
independent labels means the noise of q̂_R can only cost speedup (in expectation), never
inflate it: each figure is a lower estimate of the limit that rises towards it as R grows. It
is reported at R/4, R/2 and R so that a reader sees whether it has converged.

Uncertainty: a bootstrap over events (resample events with their q̂ and label, refit k, rescore);
it covers the finite event sample and the label draw, not the remaining distance to R = ∞.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.config import Config
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.stats.policy_fit import fit_sqrt_k
from adaptive_bkg.stats.speedup import SpeedupEstimate, expected_speedup, oracle_speedup


@dataclass(frozen=True)
class LimitPoint:
    """The Bayes-limit estimate with q̂ from `replicas` backend seeds."""

    replicas: int
    speedup: float  # policy on the empirical-Bayes q̃ (the headline)
    speedup_err: float  # bootstrap standard deviation over events
    fraction_of_oracle: float
    k: float  # fitted sqrt-optimal scale
    speedup_raw: float  # policy on raw q̂ = c/R (converges more slowly)
    prior: tuple[float, float]  # (α, β) of the Beta prior


@dataclass(frozen=True)
class SkimLimit:
    skim: str
    eff: float  # mean q̂ over all replicas (the skim's pass rate)
    eff_err: float
    oracle_speedup: float
    points: tuple[LimitPoint, ...]  # increasing replicas: R/4, R/2, R

    @property
    def best(self) -> LimitPoint:
        return self.points[-1]

    @property
    def converged(self) -> bool:
        """Whether the last doubling of R moved the estimate by less than its uncertainty."""
        if len(self.points) < 2:
            return False
        a, b = self.points[-2], self.points[-1]
        return abs(b.speedup - a.speedup) <= math.hypot(a.speedup_err, b.speedup_err)


@dataclass(frozen=True)
class BayesLimitResult:
    n_events: int
    replicas: int
    label_seed: int
    replica_seeds: tuple[int, int]  # first and last backend seed of the replicas
    times: tuple[float, float, float]  # t_fast, t_nn, t_slow (mean seconds per event)
    p_min: float
    n_bootstrap: int
    wall_s: float
    skims: tuple[SkimLimit, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


# ---------------------------------------------------------------------------------------------
def limit_speedup(
    q_hat: NDArray[np.float64],
    labels: NDArray[np.bool_],
    times: tuple[float, float, float],
    p_min: float,
) -> tuple[float, float]:
    """(expected speedup, k) of p = clip(k·sqrt(q̂), p_min, 1) fitted on q̂, scored on labels."""
    t_fast, t_nn, t_slow = times
    k = fit_sqrt_k(q_hat, t_fast, t_nn, t_slow, p_min)
    p = np.clip(k * np.sqrt(q_hat), p_min, 1.0)
    return expected_speedup(labels.astype(np.float64), p, t_fast, t_nn, t_slow), k


def scored_speedup(
    q: NDArray[np.float64],
    labels: NDArray[np.bool_],
    times: tuple[float, float, float],
    p_min: float,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> SpeedupEstimate:
    """Any filter's q [n] on a labelled sample: the sqrt-optimal policy fitted on q, scored on
    the labels (`limit_speedup`), ± a bootstrap over events that refits k each time."""
    q = np.asarray(q, dtype=np.float64)
    y = np.asarray(labels, dtype=np.bool_)
    value, _ = limit_speedup(q, y, times, p_min)
    draws = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].any():
            draws.append(limit_speedup(q[idx], y[idx], times, p_min)[0])
    return SpeedupEstimate(value, float(np.std(draws, ddof=1)) if len(draws) > 1 else math.nan)


def beta_prior(counts: NDArray[np.integer], replicas: int) -> tuple[float, float]:
    """Method-of-moments Beta(α, β) for q from binomial counts c ~ Bin(R, q) over events."""
    q_hat = np.asarray(counts, dtype=np.float64) / replicas
    mean = float(q_hat.mean())
    if not 0 < mean < 1:
        return (1e-6, 1e-6)  # nothing (or everything) passed: no information to shrink to
    if replicas < 2:
        return (mean, 1 - mean)  # Var(q) is not identified from one draw: weight of one replica
    # Var(q̂) = Var(q) + (E[q] − E[q²])/R, E[q²] = Var(q) + mean²
    var_q = (float(q_hat.var()) - mean * (1 - mean) / replicas) / (1 - 1 / replicas)
    var_q = min(max(var_q, 1e-12), mean * (1 - mean) * (1 - 1e-9))
    strength = mean * (1 - mean) / var_q - 1
    return (mean * strength, (1 - mean) * strength)


def shrunk_q(
    counts: NDArray[np.integer], replicas: int
) -> tuple[NDArray[np.float64], tuple[float, float]]:
    """Posterior mean (c + α)/(R + α + β) under the fitted Beta prior, and the prior."""
    a, b = beta_prior(counts, replicas)
    return (np.asarray(counts, dtype=np.float64) + a) / (replicas + a + b), (a, b)


def limit_point(
    replicas: int,
    counts: NDArray[np.integer],
    labels: NDArray[np.bool_],
    times: tuple[float, float, float],
    p_min: float,
    n_bootstrap: int,
    rng: np.random.Generator,
    oracle: float,
) -> LimitPoint:
    """One `LimitPoint` for one skim (counts: passes among `replicas` seeds per event), with
    a bootstrap over events (prior refitted too) for its uncertainty."""
    q_tilde, prior = shrunk_q(counts, replicas)
    speedup, k = limit_speedup(q_tilde, labels, times, p_min)
    raw, _ = limit_speedup(counts / float(replicas), labels, times, p_min)
    n = len(labels)
    draws = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        if labels[idx].any():
            q_boot, _ = shrunk_q(counts[idx], replicas)
            draws.append(limit_speedup(q_boot, labels[idx], times, p_min)[0])
    err = float(np.std(draws, ddof=1)) if len(draws) > 1 else math.nan
    fraction = speedup / oracle if oracle > 0 else math.nan
    return LimitPoint(replicas, speedup, err, fraction, k, raw, prior)


def replica_steps(replicas: int) -> tuple[int, ...]:
    """R/4, R/2, R (distinct, >= 1): the convergence ladder."""
    return tuple(sorted({max(1, replicas // 4), max(1, replicas // 2), replicas}))


def estimate_bayes_limit(
    cfg: Config,
    events: EventBatch,
    skims: Sequence[str],
    replicas: int,
    n_bootstrap: int = 100,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> BayesLimitResult:
    """Simulate `events` with `replicas` backend seeds and estimate each skim's Bayes limit.

    The labels come from the config's backend seed s0; the replicas use s0+1 … s0+R. Any
    registered backend (or `module:Class`) whose randomness follows its `seed` works.
    `progress(done)` is called after every replica.
    """
    from adaptive_bkg.backends import make_backend
    from adaptive_bkg.backends.emulator.cost import CostModel

    check_request(max(len(events), 1), replicas, n_bootstrap)
    if len(events) == 0:
        raise UserError("no events to simulate: give --events N > 0 or a non-empty --data file")
    start = time.perf_counter()
    label_seed = cfg.backend.seed

    def backend_for(backend_seed: int) -> Any:
        # The virtual clock only counts: a wall clock would really wait for every replica.
        backend_cfg = cfg.backend.model_copy(update={"seed": backend_seed, "clock": "virtual"})
        return make_backend(backend_cfg, tuple(skims))

    first = backend_for(label_seed)
    names = tuple(first.skims)
    labels = np.asarray(first.simulate(events).flags, dtype=np.bool_)
    steps = replica_steps(replicas)
    counts = np.zeros(labels.shape, dtype=np.int32)
    snapshots: dict[int, NDArray[np.int32]] = {}
    for r in range(1, replicas + 1):
        counts += np.asarray(backend_for(label_seed + r).simulate(events).flags, dtype=np.int32)
        if r in steps:
            snapshots[r] = counts.copy()
        if progress is not None:
            progress(r)
    times = CostModel.from_config(cfg.backend).mean_times
    p_min = cfg.policy.p_min
    rng = np.random.default_rng(seed)
    out = []
    for s, skim in enumerate(names):
        q_all = snapshots[replicas][:, s] / float(replicas)
        eff = float(q_all.mean())
        oracle = oracle_speedup(eff, *times)
        points = tuple(
            limit_point(r, snapshots[r][:, s], labels[:, s], times, p_min, n_bootstrap, rng, oracle)
            for r in steps
        )
        out.append(
            SkimLimit(
                skim=skim,
                eff=eff,
                eff_err=float(q_all.std(ddof=1) / math.sqrt(len(q_all))) if len(q_all) > 1 else 0.0,
                oracle_speedup=oracle,
                points=points,
            )
        )
    return BayesLimitResult(
        n_events=len(events),
        replicas=replicas,
        label_seed=label_seed,
        replica_seeds=(label_seed + 1, label_seed + replicas),
        times=tuple(float(t) for t in times),  # type: ignore[arg-type]
        p_min=p_min,
        n_bootstrap=n_bootstrap,
        wall_s=time.perf_counter() - start,
        skims=tuple(out),
    )


def check_request(n_events: int, replicas: int, n_bootstrap: int) -> None:
    """Reject bad sizes before any event is generated."""
    if n_events <= 0:
        raise UserError(f"--events must be positive, got {n_events}")
    if replicas < 2:
        raise UserError(f"--replicas must be at least 2, got {replicas}")
    if n_bootstrap < 2:
        raise UserError(f"--bootstrap must be at least 2, got {n_bootstrap}")


def bayes_limit_events(cfg: Config, n_events: int, data: Path | None) -> EventBatch:
    """The first `n_events` of `data` (events or labelled file), else freshly generated ones."""
    if data is not None:
        from adaptive_bkg.workflows.recipes import read_any_events

        if not Path(data).exists():
            raise UserError(f"--data {data} does not exist; give an events or labelled file")
        batch = read_any_events(Path(data))
        if len(batch) < n_events:
            raise UserError(f"--data {data} holds {len(batch)} events, fewer than --events")
        return batch.take(np.arange(n_events))
    from adaptive_bkg.generators.pythia import PythiaGenerator

    return PythiaGenerator(cfg.generator).next_batch(n_events)


def result_lines(result: BayesLimitResult) -> list[str]:
    """What `adaptive-bkg bayes-limit` prints."""
    t_fast, t_nn, t_slow = result.times
    lines = [
        f"Bayes limit on {result.n_events:,} events, q̂ from {result.replicas} backend seeds "
        f"({result.replica_seeds[0]}…{result.replica_seeds[1]}), scored on seed "
        f"{result.label_seed}; times {t_fast:.3g} : {t_nn:.3g} : {t_slow:.3g} s, "
        f"p_min {result.p_min:g}, ± = bootstrap over events ({result.n_bootstrap})"
    ]
    for s in result.skims:
        ladder = ", ".join(
            f"R={p.replicas}: {p.speedup:.2f} ± {p.speedup_err:.2f}" for p in s.points
        )
        raw = s.best.speedup_raw
        state = "converged" if s.converged else "still rising: a lower bound"
        lines.append(
            f"[{s.skim}] ε = {s.eff:.4f} ± {s.eff_err:.4f}; Bayes-limit speedup {ladder} "
            f"({state}); oracle {s.oracle_speedup:.2f} "
            f"({100 * s.best.fraction_of_oracle:.0f} % of it); raw q̂ at R={s.best.replicas}: "
            f"{raw:.2f}"
        )
    return lines
