"""Bayes limit: on a backend whose pass probability is known in closed form, the estimate
recovers q(x) and the limit within their stated uncertainties; the CLI runs end to end."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from pipeline_fakes import FakeSource, event_uniform, true_pass_probability
from typer.testing import CliRunner

from adaptive_bkg.backends import _REGISTRY, register_backend
from adaptive_bkg.cli import app
from adaptive_bkg.config import BackendConfig, load_config
from adaptive_bkg.formats.events import EventBatch, write_events
from adaptive_bkg.interfaces import SimResult
from adaptive_bkg.stats.policy_fit import fit_sqrt_k
from adaptive_bkg.stats.speedup import expected_speedup
from adaptive_bkg.workflows.bayes_limit import estimate_bayes_limit, limit_speedup, replica_steps

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


@pytest.fixture(autouse=True)
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


def test_bayes_limit_recovers_the_closed_form_limit(events: EventBatch) -> None:
    cfg = load_config(None, ["backend.name=closed-form-test"])
    result = estimate_bayes_limit(cfg, events, [SKIM], replicas=400, n_bootstrap=60, seed=1)
    (skim,) = result.skims
    times, p_min = result.times, result.p_min
    q = true_pass_probability(events)
    # The limit on these events: the sqrt-optimal policy on the exact q, in expectation.
    k = fit_sqrt_k(q, *times, p_min)
    truth = expected_speedup(q, np.clip(k * np.sqrt(q), p_min, 1.0), *times)
    assert [p.replicas for p in skim.points] == [100, 200, 400]
    best = skim.best
    assert best.speedup_err > 0
    # Within 3σ (60 bootstrap resamples make σ itself uncertain by ~10 %; the shrunk
    # estimate sits below the limit by ~1σ here, as a lower estimate should).
    assert abs(best.speedup - truth) < 3 * best.speedup_err, (best, truth)
    # The ladder is a lower estimate that rises (within errors) towards the limit.
    assert skim.points[0].speedup <= best.speedup + best.speedup_err
    assert abs(skim.eff - q.mean()) < 3 * skim.eff_err + 1e-3
    # With exact q the scoring on one seed's labels is unbiased around the same truth.
    labels = ClosedFormBackend(cfg.backend).simulate(events).flags[:, 0]
    exact, _ = limit_speedup(q, labels, times, p_min)
    assert abs(exact - truth) < 3 * best.speedup_err


def test_few_replicas_give_a_lower_estimate(events: EventBatch) -> None:
    """q̂ from 2 seeds is mostly 0 or 1: the policy it fits is worse than with exact q."""
    cfg = load_config(None, ["backend.name=closed-form-test"])
    result = estimate_bayes_limit(cfg, events, [SKIM], replicas=2, n_bootstrap=20, seed=1)
    q = true_pass_probability(events)
    times, p_min = result.times, result.p_min
    k = fit_sqrt_k(q, *times, p_min)
    truth = expected_speedup(q, np.clip(k * np.sqrt(q), p_min, 1.0), *times)
    assert result.skims[0].best.speedup < truth - 2 * result.skims[0].best.speedup_err


def test_replica_ladder() -> None:
    assert replica_steps(500) == (125, 250, 500)
    assert replica_steps(2) == (1, 2)


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


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--replicas", "1"], "--replicas must be at least 2"),
        (["--events", "0"], "--events must be positive"),
        (["--data", "missing.parquet"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    args = ["bayes-limit", "--skims", SKIM, "--set", "backend.name=closed-form-test", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
