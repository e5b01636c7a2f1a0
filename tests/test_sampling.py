"""Keep-probability policies: floors, max over skims, the optimum of sqrt-optimal, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptive_bkg.config import PolicyConfig, load_config
from adaptive_bkg.errors import UserError
from adaptive_bkg.stats.policy_fit import expected_cost_objective, fit_sqrt_k, skewed_sigmoid
from adaptive_bkg.stats.sampling import (
    POLICY_NAMES,
    BiasedPolicyWarning,
    Policy,
    PolicyState,
    logit,
    make_policy,
)
from adaptive_bkg.stats.speedup import expected_speedup

T_FAST, T_NN, T_SLOW = 1.0, 1.0, 100.0  # the reference 1:1:100 cost ratio
UNBIASED = [n for n in POLICY_NAMES if n != "hard-cut"]


def _beta_q(n: int, seed: int = 1) -> np.ndarray:
    # Beta(0.3, 9.7): mean 3 %, most events near 0 and a long tail to 1 — a decent classifier.
    return np.random.default_rng(seed).beta(0.3, 9.7, n)


@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_policies_floor_p_and_stay_in_range(name: str) -> None:
    q = np.concatenate([[0.0, 1e-300, 1e-9, 0.5, 1.0], _beta_q(5000)])[:, None]
    policy = make_policy(PolicyConfig(name=name, p_min=0.02)).fit(q, T_FAST, T_NN, T_SLOW)
    p = policy.keep_probability(q)
    assert policy.is_unbiased
    assert p.shape == (q.shape[0],)
    assert p.min() >= 0.02
    assert p.max() <= 1.0
    assert np.all(1.0 / p <= 50.0)  # w <= 1/p_min
    if name != "none":
        assert p[0] == pytest.approx(0.02)  # q = 0 sits exactly on the floor


def test_hard_cut_is_labelled_biased_and_not_floored() -> None:
    with pytest.warns(BiasedPolicyWarning, match="BIASED"):
        policy = make_policy(PolicyConfig(name="hard-cut", threshold=0.3))
    assert not policy.is_unbiased
    assert "BIASED" in policy.label
    p = policy.keep_probability(np.array([[0.0], [0.3], [0.31], [1.0]]))
    np.testing.assert_array_equal(p, [0.0, 0.0, 1.0, 1.0])


def test_basf2_exp_matches_formula() -> None:
    q = np.array([0.001, 0.05, 0.3, 0.6, 0.99])
    p = make_policy(PolicyConfig(name="basf2-exp")).keep_probability(q[:, None])
    x = np.log(q / (1 - q))
    expected = np.clip(np.exp(0.47 * (x + 0.25)), 0.01, 1.0)
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert p[-1] == 1.0
    assert p[0] == pytest.approx(0.043776, rel=1e-4)


def test_skewed_sigmoid_defaults_are_identity() -> None:
    # a = 1, b = 0, c = 1 is the logistic function, so p(logit q) = q above the floor.
    q = np.linspace(0.02, 0.98, 49)
    np.testing.assert_allclose(skewed_sigmoid(logit(q), 1.0, 0.0, 1.0), q, rtol=1e-12)
    identity = make_policy(PolicyConfig(name="identity")).keep_probability(q[:, None])
    sigmoid = make_policy(PolicyConfig(name="skewed-sigmoid")).keep_probability(q[:, None])
    np.testing.assert_allclose(sigmoid, identity, rtol=1e-12)


def test_multi_skim_p_is_max_of_per_skim_with_separate_k() -> None:
    rng = np.random.default_rng(3)
    q = np.stack([rng.beta(0.3, 9.7, 20_000), rng.beta(0.5, 4.5, 20_000)], axis=1)
    both = make_policy(PolicyConfig()).fit(q, T_FAST, T_NN, T_SLOW)
    single = [
        make_policy(PolicyConfig()).fit(q[:, s], T_FAST, T_NN, T_SLOW).state.params[0][0]
        for s in range(2)
    ]
    k = [params[0] for params in both.state.params]
    np.testing.assert_allclose(k, single, rtol=1e-12)  # each skim's k from its own column
    assert abs(k[0] - k[1]) > 0.1  # the skims really differ
    per_skim = both.per_skim(q)
    np.testing.assert_allclose(per_skim, np.clip(np.sqrt(q) * k, 0.01, 1.0), rtol=1e-12)
    np.testing.assert_array_equal(both.keep_probability(q), per_skim.max(axis=1))
    with pytest.raises(ValueError, match="2 skims"):
        both.keep_probability(np.zeros((3, 3)))


def test_sqrt_optimal_beats_identity_and_basf2_on_expected_cost() -> None:
    q = _beta_q(100_000)
    assert 0.028 < q.mean() < 0.032
    cost = {}
    for name in ("sqrt-optimal", "identity", "basf2-exp", "none"):
        policy = make_policy(PolicyConfig(name=name)).fit(q, T_FAST, T_NN, T_SLOW)
        cost[name] = expected_cost_objective(q, policy.keep_probability(q), T_FAST, T_NN, T_SLOW)
    assert cost["sqrt-optimal"] < cost["basf2-exp"] < cost["identity"]
    assert cost["sqrt-optimal"] < cost["none"]
    # and k is a minimum: ±10 % in k costs more (k is fitted on this very sample).
    k = make_policy(PolicyConfig()).fit(q, T_FAST, T_NN, T_SLOW).state.params[0][0]
    for factor in (0.9, 1.1):
        p = np.clip(factor * k * np.sqrt(q), 0.01, 1.0)
        assert expected_cost_objective(q, p, T_FAST, T_NN, T_SLOW) > cost["sqrt-optimal"]
    # speedup = t3·ε/J, so the same ordering holds for the expected speedup
    p_opt = np.clip(k * np.sqrt(q), 0.01, 1.0)
    assert expected_speedup(q, p_opt, T_FAST, T_NN, T_SLOW) == pytest.approx(
        101 * q.mean() / cost["sqrt-optimal"], rel=1e-12
    )


@pytest.mark.parametrize(
    ("q_values", "floor_binds"),
    [
        ((0.4, 0.04, 0.002), False),  # p = (1, 0.447, 0.1): floor inactive, one p clipped at 1
        ((0.4, 0.04, 1e-5), True),  # k·sqrt(1e-5) < p_min: the floor binds for the third class
    ],
)
def test_sqrt_optimal_matches_exhaustive_grid(
    q_values: tuple[float, float, float], floor_binds: bool
) -> None:
    """q takes 3 values with probabilities π; brute-force J over (p1, p2, p3) ∈ [p_min, 1]^3.

    Minimising E[q/p] at fixed E[p] over the box [p_min, 1] is convex and its KKT conditions
    give p = clip(k·sqrt(q), p_min, 1), so the clipped form is optimal even where the floor
    binds; both cases are checked. Grid: 161 log-spaced values per axis (step 2.9 %); J is
    quadratic at its minimum, so the grid minimum lies within 3e-4 (relative) above the optimum.
    """
    q = np.array(q_values)
    pi = np.array([0.02, 0.18, 0.80])
    sample = np.repeat(q, (pi * 1000).round().astype(int))  # the discrete law as a sample
    p_min = 0.01
    k = fit_sqrt_k(sample, T_FAST, T_NN, T_SLOW, p_min)
    p_opt = np.clip(k * np.sqrt(q), p_min, 1.0)
    assert (p_opt[2] == p_min) == floor_binds

    def objective(p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
        mean_p = pi[0] * p1 + pi[1] * p2 + pi[2] * p3
        mean_q_over_p = pi[0] * q[0] / p1 + pi[1] * q[1] / p2 + pi[2] * q[2] / p3
        return (T_FAST + T_NN + T_SLOW * mean_p) * mean_q_over_p

    axis = np.geomspace(p_min, 1.0, 161)
    values = objective(axis[:, None, None], axis[None, :, None], axis[None, None, :])
    best = axis[np.array(np.unravel_index(values.argmin(), values.shape))]
    j_opt = float(objective(*p_opt))
    assert values.min() >= j_opt * (1 - 1e-12)  # nothing on the grid beats sqrt-optimal
    assert values.min() <= j_opt * (1 + 3e-4)
    np.testing.assert_allclose(best, p_opt, rtol=0.045)  # argmin within ~1.5 grid steps


def test_skewed_sigmoid_fit_improves_speedup_on_labelled_sample() -> None:
    rng = np.random.default_rng(5)
    q = _beta_q(20_000, seed=5)
    labels = rng.random(q.size) < q
    cfg = PolicyConfig(name="skewed-sigmoid")
    before = make_policy(cfg).keep_probability(q)
    fitted = make_policy(cfg).fit(q, T_FAST, T_NN, T_SLOW, labels=labels)
    after = fitted.keep_probability(q)
    a, b, c = fitted.state.params[0]
    assert fitted.state.n_fits == 1
    assert (a, b, c) != (1.0, 0.0, 1.0)

    def labelled_cost(p: np.ndarray) -> float:  # J with the labels in place of q
        return expected_cost_objective(labels.astype(float), p, T_FAST, T_NN, T_SLOW)

    assert labelled_cost(after) < 0.7 * labelled_cost(before)  # p = q is far from optimal
    # the fitted shape comes close to the sqrt-optimal policy on the same sample (within 5 %)
    k = fit_sqrt_k(q, T_FAST, T_NN, T_SLOW, 0.01)
    assert labelled_cost(after) < 1.05 * labelled_cost(np.clip(k * np.sqrt(q), 0.01, 1.0))


def test_fit_returns_self_refit_false_and_noop_policies() -> None:
    q = _beta_q(10_000)
    policy = make_policy(PolicyConfig())
    assert policy.state.params == ((1.0,),)
    assert policy.fit(q, T_FAST, T_NN, T_SLOW) is policy
    assert policy.state.n_fits == 1
    assert policy.state.params != ((1.0,),)
    frozen = make_policy(PolicyConfig(k=0.5, refit=False)).fit(q, T_FAST, T_NN, T_SLOW)
    assert frozen.state.params == ((0.5,),)
    assert frozen.state.n_fits == 0
    basf2 = make_policy(PolicyConfig(name="basf2-exp", a=0.3, b=-1.0))
    assert basf2.fit(q, T_FAST, T_NN, T_SLOW).state.params == ((0.3, -1.0),)


def test_state_round_trips_through_json() -> None:
    q = np.random.default_rng(2).beta(0.4, 8.0, (5000, 2))
    policy = make_policy(PolicyConfig(), skims=["dstar-d0pi", "radiative"])
    policy.fit(q, T_FAST, T_NN, T_SLOW)
    data = json.loads(json.dumps(policy.to_dict()))
    again = Policy.from_dict(data)
    assert again.state == policy.state
    np.testing.assert_array_equal(again.keep_probability(q), policy.keep_probability(q))


def test_unknown_policy_and_bad_inputs() -> None:
    with pytest.raises(UserError, match=r"unknown policy 'sqrt'.*sqrt-optimal, identity"):
        make_policy(PolicyConfig.model_construct(name="sqrt", p_min=0.01))
    with pytest.raises(UserError, match=r"policy\.name = 'nope'.*allowed: sqrt-optimal"):
        load_config(None, ["policy.name=nope"])
    with pytest.raises(UserError, match="unknown policy"):
        PolicyState(name="magic", p_min=0.01)
    with pytest.raises(UserError, match="p_min"):
        PolicyState(name="none", p_min=0.0)
    with pytest.raises(ValueError, match="needs 1 parameters"):
        PolicyState(name="sqrt-optimal", p_min=0.01, params=((1.0, 2.0),))
    policy = make_policy(PolicyConfig())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        policy.keep_probability(np.array([[0.5], [1.5]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        policy.keep_probability(np.array([[np.nan]]))
    with pytest.raises(UserError, match="t_slow"):
        policy.fit(np.full(10, 0.1), T_FAST, T_NN, 0.0)
    with pytest.raises(UserError, match="t_nn = -1"):
        policy.fit(np.full(10, 0.1), T_FAST, -1.0, T_SLOW)


def test_fit_with_no_passing_probability_floors_everything() -> None:
    policy = make_policy(PolicyConfig()).fit(np.zeros((100, 1)), T_FAST, T_NN, T_SLOW)
    np.testing.assert_array_equal(policy.keep_probability(np.zeros((5, 1))), 0.01)


def test_weighted_fit_equals_repeated_sample_and_undoes_filtering() -> None:
    rng = np.random.default_rng(8)
    q = _beta_q(20_000, seed=8)
    counts = rng.integers(1, 4, q.size)
    weighted = fit_sqrt_k(q, T_FAST, T_NN, T_SLOW, 0.01, weights=counts.astype(float))
    repeated = fit_sqrt_k(np.repeat(q, counts), T_FAST, T_NN, T_SLOW, 0.01)
    assert weighted == pytest.approx(repeated, rel=1e-6)  # same J; Brent stops within ~1e-8
    # A sample of kept events only (p = sqrt(q) floored) is skewed to high q; weights 1/p
    # restore the k of the unfiltered sample (spread 0.2 % over 10 seeds; 1.5 % tolerance).
    q_all = _beta_q(400_000, seed=9)
    p = np.clip(np.sqrt(q_all), 0.01, 1.0)
    kept = rng.random(q_all.size) < p
    k_all = fit_sqrt_k(q_all, T_FAST, T_NN, T_SLOW, 0.01)
    k_naive = fit_sqrt_k(q_all[kept], T_FAST, T_NN, T_SLOW, 0.01)
    policy = make_policy(PolicyConfig()).fit(
        q_all[kept], T_FAST, T_NN, T_SLOW, weights=1.0 / p[kept]
    )
    assert policy.state.params[0][0] == pytest.approx(k_all, rel=0.015)
    assert abs(k_naive / k_all - 1) > 0.1  # ignoring the weights is clearly wrong (−19 %)
    with pytest.raises(ValueError, match="weights"):
        policy.fit(q_all[:10], T_FAST, T_NN, T_SLOW, weights=np.ones(9))
