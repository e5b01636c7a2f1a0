"""N_eff, speedup formulas and the merge-able run accumulator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptive_bkg.stats.metrics import (
    RunAccumulator,
    quantiles_from_histogram,
    weight_histogram_edges,
    weight_quantiles,
)
from adaptive_bkg.stats.speedup import (
    confusion_fractions,
    expected_speedup,
    fraction_of_oracle,
    n_eff,
    oracle_speedup,
    speedup_closed_form,
    speedup_measured,
)

SKIMS = ("dstar-d0pi", "radiative", "tau-generic")


def test_oracle_reference_values() -> None:
    # DESIGN §2: 101/(2 + 100ε) at 1:1:100
    assert oracle_speedup(0.05, 1, 1, 100) == pytest.approx(14.43, abs=0.005)
    assert oracle_speedup(0.01, 1, 1, 100) == pytest.approx(33.67, abs=0.005)
    assert fraction_of_oracle(7.2, 0.05, 1, 1, 100) == pytest.approx(7.2 / (101 / 7))


def test_n_eff() -> None:
    assert n_eff(np.ones(17)) == 17
    assert n_eff([1.0, 3.0]) == pytest.approx(16 / 10)
    assert n_eff(np.full(5, 4.0)) == pytest.approx(5)  # scale-free
    assert n_eff(np.array([])) == 0.0


def test_closed_form_limits() -> None:
    # no filter (p = 1): every event pays t1 = t3 + t_nn, E[ω] = 1
    assert speedup_closed_form(0.05, 1, 1, 0, 0, 1.0, 1, 1, 100) == pytest.approx(101 / 102)
    # perfect classifier with p = 1 on passing events: the oracle bound
    for eps in (0.01, 0.05, 0.3):
        assert speedup_closed_form(eps, 1, 0, 0, 1, 1.0, 1, 1, 100) == pytest.approx(
            oracle_speedup(eps, 1, 1, 100)
        )
    # constant p everywhere: E[ω] = 1/p and the cost is t2 + p·t_slow
    p = 0.2
    assert speedup_closed_form(0.05, p, p, 1 - p, 1 - p, 1 / p, 1, 1, 100) == pytest.approx(
        101 * p / (2 + 100 * p)
    )


def test_expected_speedup_matches_closed_form_in_expectation() -> None:
    # With labels equal to the calibrated q in expectation, both formulas are the same number:
    # f_TP etc. weighted by q reproduce E[p], and ε·E[ω] = E[q/p].
    rng = np.random.default_rng(0)
    q = rng.beta(0.3, 9.7, 400_000)
    p = np.clip(2.5 * np.sqrt(q), 0.01, 1.0)
    labels = rng.random(q.size) < q
    cf = confusion_fractions(labels, p)
    closed = speedup_closed_form(*cf, 1.0, 1.0, 100.0)
    # only label noise separates them: 0.2–1.1 % over 5 seeds, so 3 % is ~5σ
    assert closed == pytest.approx(expected_speedup(q, p, 1.0, 1.0, 100.0), rel=0.03)


def _random_run(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    p = np.clip(rng.beta(0.5, 5.0, n), 0.01, 1.0)
    kept = rng.random(n) < p
    flags = rng.random((n, len(SKIMS))) < np.array([0.3, 0.05, 0.6])
    cost_fast = rng.exponential(1.0, n)
    cost_nn = np.full(n, 0.5)
    cost_slow = np.where(kept, rng.exponential(100.0, n), np.nan)  # unknown where discarded
    return kept, p, flags, cost_fast, cost_nn, cost_slow


def test_accumulator_matches_direct_computation() -> None:
    kept, p, flags, cost_fast, cost_nn, cost_slow = _random_run(50_000, seed=1)
    acc = RunAccumulator(SKIMS)
    acc.add(kept, p, flags, cost_fast, cost_nn, cost_slow)
    summary = acc.summary()
    w = 1.0 / p[kept]
    n = kept.size
    total = cost_fast.sum() + cost_nn.sum() + cost_slow[kept].sum()
    t_fast, t_slow = cost_fast.mean(), np.sum(w * cost_slow[kept]) / np.sum(w)
    assert summary.n_generated == n
    assert summary.n_kept == kept.sum()
    assert summary.total_cost_s == pytest.approx(total, rel=1e-12)
    assert summary.t_fast == pytest.approx(t_fast)
    assert summary.t_nn == pytest.approx(0.5)
    assert summary.t_slow == pytest.approx(t_slow, rel=1e-12)
    assert summary.expected_n_kept == pytest.approx(p.sum())
    assert summary.max_weight == pytest.approx(w.max())
    for s, skim in enumerate(SKIMS):
        ws = w[flags[kept, s]]
        got = summary.skims[skim]
        assert got.n_pass_kept == ws.size
        assert got.sum_w == pytest.approx(ws.sum(), rel=1e-12)
        assert got.sum_w2 == pytest.approx(np.sum(ws**2), rel=1e-12)
        assert got.n_eff == pytest.approx(n_eff(ws), rel=1e-12)
        assert got.eff_hat == pytest.approx(ws.sum() / n, rel=1e-12)
        speed = (t_fast + t_slow) * n_eff(ws) / (ws.sum() / n) / total
        assert got.speedup == pytest.approx(speed, rel=1e-12)
        assert got.speedup == pytest.approx(
            speedup_measured(ws.sum(), np.sum(ws**2), n, total, t_fast, t_slow), rel=1e-12
        )
        oracle = oracle_speedup(ws.sum() / n, t_fast, 0.5, t_slow)
        assert got.oracle_speedup == pytest.approx(oracle, rel=1e-12)
        assert got.fraction_of_oracle == pytest.approx(speed / oracle, rel=1e-12)
        assert got.max_weight == pytest.approx(ws.max())
        # histogram quantiles agree with the exact ones to the bin width (0.01 dex = 2.3 %)
        exact = weight_quantiles(ws, [0.5, 0.9, 0.99])
        approx = [v for _, v in quantiles_from_histogram(acc.hist[s], [0.5, 0.9, 0.99])]
        np.testing.assert_allclose(approx, exact, rtol=0.025)
    # given reference times override the estimates
    fixed = acc.summary(t_fast=1.0, t_nn=1.0, t_slow=100.0)
    assert fixed.t_slow == 100.0
    assert fixed.skims["radiative"].oracle_speedup == pytest.approx(
        oracle_speedup(fixed.skims["radiative"].eff_hat, 1, 1, 100)
    )


def test_merge_of_parts_equals_whole_and_round_trips() -> None:
    run = _random_run(30_000, seed=2)
    whole = RunAccumulator(SKIMS)
    whole.add(*run)
    parts = [RunAccumulator(SKIMS) for _ in range(3)]
    for part, index in zip(parts, np.array_split(np.arange(30_000), 3), strict=True):
        part.add(*(a[index] for a in run))
    merged = parts[0].merge(parts[1]).merge(parts[2])
    a, b = whole.summary().to_dict(), merged.summary().to_dict()
    assert a.keys() == b.keys()
    for key in ("n_generated", "n_kept", "max_weight", "weight_quantiles"):
        assert a[key] == b[key]
    assert a["total_cost_s"] == pytest.approx(b["total_cost_s"], rel=1e-12)
    for skim in SKIMS:
        for key, value in a["skims"][skim].items():
            if key == "weight_quantiles":  # from integer histograms: identical
                assert b["skims"][skim][key] == value
            else:
                assert b["skims"][skim][key] == pytest.approx(value, rel=1e-12), key
    np.testing.assert_array_equal(whole.hist, merged.hist)
    # persistence for resume, and JSON output of the summary
    restored = RunAccumulator.from_dict(json.loads(json.dumps(merged.to_dict())))
    assert restored.summary() == merged.summary()
    json.dumps(merged.summary().to_dict())


def test_empty_accumulator_and_no_pass() -> None:
    acc = RunAccumulator(SKIMS)
    summary = acc.summary()
    assert summary.n_generated == 0
    assert summary.skims["radiative"].speedup == 0.0
    acc.add(np.zeros(10, bool), np.full(10, 0.5), np.zeros((10, 3), bool), 1.0, 1.0, 0.0)
    skim = acc.summary().skims["dstar-d0pi"]
    assert skim.n_eff == 0
    assert skim.speedup == 0
    assert skim.eff_hat == 0
    assert np.isnan(skim.weight_quantiles[0][1])


def test_accumulator_input_errors() -> None:
    acc = RunAccumulator(SKIMS)
    with pytest.raises(ValueError, match="flags must have shape"):
        acc.add(np.ones(4, bool), np.ones(4), np.ones((4, 2), bool), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="p <= 0"):
        acc.add(np.ones(2, bool), np.array([0.5, 0.0]), np.ones((2, 3), bool), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="cannot merge"):
        acc.merge(RunAccumulator(("radiative",)))


def test_histogram_edges_cover_weights() -> None:
    edges = weight_histogram_edges()
    assert edges[0] == 1.0
    assert edges[-1] == pytest.approx(1e6)
    assert np.all(np.diff(np.log10(edges)) == pytest.approx(0.01))
