"""Bayes limit: on a backend whose pass probability is known in closed form, the estimate
recovers q(x) and the limit within their stated uncertainties; the CLI runs end to end."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from pipeline_fakes import (
    CUT,
    SLOPE,
    FakeSource,
    event_uniform,
    latent_x,
    true_pass_probability,
)
from typer.testing import CliRunner

from adaptive_bkg.backends import _REGISTRY, register_backend
from adaptive_bkg.cli import app
from adaptive_bkg.config import BackendConfig, load_config
from adaptive_bkg.formats.events import EventBatch, write_events
from adaptive_bkg.interfaces import SimResult
from adaptive_bkg.stats.limit_estimate import replica_steps, stored_steps
from adaptive_bkg.stats.policy_fit import fit_sqrt_k
from adaptive_bkg.stats.speedup import expected_speedup
from adaptive_bkg.workflows.bayes_limit import BayesLimitResult, estimate_bayes_limit

SKIM = "closed-form"


class ClosedFormBackend:
    """Passes with q(x) = sigmoid(6(x − 1.5)) (pipeline_fakes), drawn per (seed, event id)."""

    def __init__(self, cfg: BackendConfig, skims: Sequence[str] | None = None) -> None:
        self.seed = cfg.seed

    @property
    def skims(self) -> tuple[str, ...]:
        return (SKIM,)

    def simulate(self, batch: EventBatch) -> SimResult:
        key = batch.event_id ^ np.uint64((self.seed * 0xD1B54A32D192ED03) % 2**64)
        flags = event_uniform(key) < true_pass_probability(batch)
        return SimResult(batch.event_id.copy(), flags[:, None], np.full(len(batch), 0.1))


@pytest.fixture(autouse=True, scope="module")
def closed_form_backend() -> Iterator[None]:
    """The closed-form backend, registered for this module's tests only (the registry is
    global: other modules' tests list the registered backends)."""
    register_backend("closed-form-test", lambda cfg, skims: ClosedFormBackend(cfg, skims))
    yield
    _REGISTRY.pop("closed-form-test", None)


@pytest.fixture(scope="module")
def events() -> EventBatch:
    return FakeSource(seed=3).next_batch(6000)


def test_replica_flags_recover_the_closed_form_probability(events: EventBatch) -> None:
    """q̂_R per event is within its binomial error of q(x): pulls have mean 0 and width 1."""
    cfg = load_config(None, ["backend.name=closed-form-test"])
    replicas = 400
    counts = np.zeros(len(events))
    for r in range(1, replicas + 1):
        seed_cfg = cfg.backend.model_copy(update={"seed": cfg.backend.seed + r})
        counts += ClosedFormBackend(seed_cfg).simulate(events).flags[:, 0]
    q = true_pass_probability(events)
    ok = (q > 0.02) & (q < 0.98)  # where the binomial error is not degenerate
    pull = (counts[ok] / replicas - q[ok]) / np.sqrt(q[ok] * (1 - q[ok]) / replicas)
    assert ok.sum() > 1000
    assert abs(pull.mean()) < 0.1
    assert 0.9 < pull.std() < 1.1


def closed_form_limit(events: EventBatch, times: tuple[float, float, float], p_min: float) -> float:
    """The limit on these events: the sqrt-optimal policy on the exact q, in expectation."""
    q = true_pass_probability(events)
    k = fit_sqrt_k(q, *times, p_min)
    return expected_speedup(q, np.clip(k * np.sqrt(q), p_min, 1.0), *times)


def noisy_covariate(events: EventBatch, noise: float, seed: int = 5) -> np.ndarray:
    """A filter's score: the closed-form logit with Gaussian noise (an imperfect classifier)."""
    z = SLOPE * (latent_x(events) - CUT)
    z = z + np.random.default_rng(seed).normal(0.0, noise, len(events))
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture(scope="module")
def ladder(events: EventBatch) -> BayesLimitResult:
    """R = 25, 50, 100 with a covariate prior (a classifier with noise 0.5 on the logit)."""
    cfg = load_config(None, ["backend.name=closed-form-test"])
    score = {SKIM: noisy_covariate(events, noise=0.5)}
    return estimate_bayes_limit(
        cfg, events, [SKIM], replicas=100, n_bootstrap=30, seed=1, covariate=score
    )


def test_both_estimates_recover_the_closed_form_limit(
    events: EventBatch, ladder: BayesLimitResult
) -> None:
    (skim,) = ladder.skims
    times, p_min = ladder.times, ladder.p_min
    truth = closed_form_limit(events, times, p_min)
    assert [p.replicas for p in skim.points] == [25, 50, 100]
    best = skim.best
    assert best.method == "covariate"
    assert best.speedup_err > 0
    assert best.plugin_err > 0
    # Lower estimate: a filter's speedup, so never above the limit beyond its error, and close
    # below it (measured 1.601 ± 0.008 at R = 100, i.e. q̃ from 50 replicas, against 1.646:
    # soft labels make it precise enough to see it is still 2.7 % short).
    ladder_values = [p.speedup for p in skim.points]
    assert best.speedup < truth + 3 * best.speedup_err, (ladder_values, truth)
    assert truth - best.speedup < 0.05 * truth, (ladder_values, truth)
    # No rung falls below the one before beyond the errors (measured 1.615 ± 0.016 at R = 25,
    # 1.601 ± 0.008 at R = 100: with this good a covariate the prior carries the small rungs).
    for lower, higher in itertools.pairwise(skim.points):
        gap = math.hypot(lower.speedup_err, higher.speedup_err)
        assert higher.speedup > lower.speedup - 3 * gap, (ladder_values, truth)
    # Plug-in: every rung of the ladder within 3σ of the limit (measured 1.644 / 1.643 /
    # 1.645 ± ~0.02), and the ladder has converged.
    for point in skim.points:
        assert abs(point.plugin - truth) < 3 * point.plugin_err, (point, truth)
    assert skim.plugin_converged
    assert abs(skim.eff - true_pass_probability(events).mean()) < 3 * skim.eff_err + 1e-3


def test_plugin_is_consistent_along_the_replica_ladder(events: EventBatch) -> None:
    """With R = 2 the counts identify two moments of the q distribution: the plug-in is far off
    (measured 2.31 against 1.646); its distance to the limit shrinks as R grows."""
    cfg = load_config(None, ["backend.name=closed-form-test"])
    result = estimate_bayes_limit(cfg, events, [SKIM], replicas=40, n_bootstrap=20, seed=2)
    truth = closed_form_limit(events, result.times, result.p_min)
    small = estimate_bayes_limit(cfg, events, [SKIM], replicas=8, n_bootstrap=20, seed=2)
    far = small.skims[0].points[0]
    assert far.replicas == 2
    assert abs(far.plugin - truth) > 5 * far.plugin_err
    gaps = [abs(p.plugin - truth) for p in (far, *result.skims[0].points)]  # R = 2, 10, 20, 40
    assert gaps[0] > gaps[1] > 0.0
    assert max(gaps[2:]) < 0.5 * gaps[1] + 3 * result.skims[0].best.plugin_err


def test_new_lower_estimate_beats_the_single_beta_at_small_r(events: EventBatch) -> None:
    """With q̃ from 10 replicas (R = 20) the old single-Beta shrinkage gives every event with the
    same count the same q̃; the NPMLE posterior and, more so, a covariate prior (a classifier
    with noise 0.5 on the logit) get closer to the limit (measured: see the message)."""
    cfg = load_config(None, ["backend.name=closed-form-test"])
    plain = estimate_bayes_limit(cfg, events, [SKIM], replicas=20, n_bootstrap=20, seed=3)
    score = {SKIM: noisy_covariate(events, noise=0.5)}
    with_cov = estimate_bayes_limit(
        cfg, events, [SKIM], replicas=20, n_bootstrap=20, seed=3, covariate=score
    )
    truth = closed_form_limit(events, plain.times, plain.p_min)
    npmle_point, cov_point = plain.skims[0].best, with_cov.skims[0].best
    assert cov_point.method == "covariate"
    assert len(cov_point.prior) == 4
    assert npmle_point.fit_replicas == cov_point.fit_replicas == 10
    old = npmle_point.speedup_beta
    print(f"single-Beta {old:.3f}, NPMLE {npmle_point.speedup:.3f}, covariate "
          f"{cov_point.speedup:.3f}, limit {truth:.3f}")  # fmt: skip
    # Same soft labels for all three: the differences are the q̃ alone.
    assert npmle_point.speedup > old + 0.02
    assert cov_point.speedup > npmle_point.speedup + 0.02
    assert truth - cov_point.speedup < 0.5 * (truth - old)


def test_replica_ladder() -> None:
    assert replica_steps(500) == (125, 250, 500)
    assert stored_steps(500) == (62, 125, 250, 500)
    assert replica_steps(8) == (2, 4, 8)
    assert stored_steps(8) == (1, 2, 4, 8)


def test_cli_end_to_end_on_an_events_file(tmp_path: Path, events: EventBatch) -> None:
    data = tmp_path / "events.parquet"
    write_events(data, events.take(np.arange(2000)))
    out = tmp_path / "limit.json"
    args = ["bayes-limit", "--skims", SKIM, "--events", "1500", "--replicas", "40"]
    args += ["--data", str(data), "--bootstrap", "10", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--set", "backend.name=closed-form-test"])
    assert result.exit_code == 0, result.output
    assert f"[{SKIM}]" in result.output
    assert "R=40:" in result.output
    stored = json.loads(out.read_text())
    assert stored["n_events"] == 1500
    assert stored["replicas"] == 40
    point = stored["skims"][0]["points"][-1]
    assert point["replicas"] == 40
    assert math.isfinite(point["speedup_err"])


def test_cli_stores_and_reuses_counts_with_a_covariate(tmp_path: Path, events: EventBatch) -> None:
    """--counts writes the replica counts once; a second run (here with a --covariate prior)
    reads them instead of simulating: the NPMLE plug-in, which does not use the covariate, is
    identical, and the lower estimate now comes from the covariate prior."""
    data = tmp_path / "events.parquet"
    write_events(data, events.take(np.arange(1500)))
    counts = tmp_path / "counts.npz"
    cov = tmp_path / "cov.npz"
    np.savez(cov, **{SKIM: noisy_covariate(events.take(np.arange(1500)), noise=0.5)})
    base = ["bayes-limit", "--skims", SKIM, "--events", "1500", "--replicas", "20"]
    base += ["--data", str(data), "--bootstrap", "5", "--counts", str(counts)]
    base += ["--set", "backend.name=closed-form-test"]
    first = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a.json")])
    assert first.exit_code == 0, first.output
    assert counts.exists()
    stamp = counts.stat().st_mtime_ns
    second = CliRunner().invoke(
        app, [*base, "--covariate", str(cov), "--out", str(tmp_path / "b.json")]
    )
    assert second.exit_code == 0, second.output
    assert counts.stat().st_mtime_ns == stamp  # read, not rewritten
    assert "covariate prior" in second.output
    a = json.loads((tmp_path / "a.json").read_text())["skims"][0]["points"]
    b = json.loads((tmp_path / "b.json").read_text())["skims"][0]["points"]
    assert [p["plugin"] for p in a] == [p["plugin"] for p in b]
    assert [p["method"] for p in a] == ["npmle"] * 3
    assert [p["method"] for p in b] == ["covariate"] * 3
    # Other events against the stored counts: one line, nothing simulated, file untouched.
    other = CliRunner().invoke(app, [*base[:4], "1000", *base[5:]])
    assert other.exit_code == 2
    assert "holds counts for other events" in other.output
    assert counts.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--replicas", "7"], "--replicas must be at least 8"),
        (["--events", "0"], "--events must be positive"),
        (["--data", "missing.parquet"], "does not exist"),
        (["--covariate", "missing.npz"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    args = ["bayes-limit", "--skims", SKIM, "--set", "backend.name=closed-form-test", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
