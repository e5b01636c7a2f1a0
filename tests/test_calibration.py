"""Probability calibration: temperature recovery, isotonic reliability, weights, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptive_bkg.errors import UserError
from adaptive_bkg.stats.calibration import (
    CalibrationState,
    Calibrator,
    expected_calibration_error,
    reliability_curve,
    sigmoid,
)


def _miscalibrated(n: int, seed: int, temperature: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits z fed to the calibrator while the truth is P(pass | z) = σ(z/T)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-4.0, 3.0, n)
    labels = rng.random(n) < sigmoid(z / temperature)
    return z, labels


def test_temperature_scaling_recovers_t() -> None:
    z, y = _miscalibrated(200_000, seed=1)
    calibrator = Calibrator("temperature").fit(z, y)
    (t,) = calibrator.state.temperatures
    # Over 20 seeds σ(T) = 0.0085 at this n, so 0.05 is ~6σ.
    assert t == pytest.approx(2.0, abs=0.05)
    z_test, y_test = _miscalibrated(100_000, seed=2)
    # ECE noise floor with 5000 events per bin is ~0.003 (max 0.0042 over 15 seeds)
    assert expected_calibration_error(calibrator.apply(z_test), y_test, 20) < 0.008
    assert expected_calibration_error(sigmoid(z_test), y_test, 20) > 0.02  # raw σ(z) is off


def test_temperature_per_skim() -> None:
    z1, y1 = _miscalibrated(50_000, seed=3, temperature=2.0)
    z2, y2 = _miscalibrated(50_000, seed=4, temperature=0.5)
    calibrator = Calibrator("temperature").fit(np.stack([z1, z2], 1), np.stack([y1, y2], 1))
    np.testing.assert_allclose(calibrator.state.temperatures, [2.0, 0.5], rtol=0.05)
    q = calibrator.apply(np.stack([z1, z2], 1))
    assert q.shape == (50_000, 2)
    np.testing.assert_allclose(q[:, 1], sigmoid(z2 / calibrator.state.temperatures[1]))


def test_isotonic_reliability_and_monotonicity() -> None:
    # A non-logistic distortion that temperature scaling cannot fix: truth σ((z + 3)/2)·0.8.
    rng = np.random.default_rng(7)
    z = rng.normal(-3.0, 2.5, 100_000)
    truth = 0.8 * sigmoid((z + 3.0) / 2.0)
    y = rng.random(z.size) < truth
    calibrator = Calibrator("isotonic").fit(z, y)
    z_test = np.sort(rng.normal(-3.0, 2.5, 50_000))
    q = calibrator.apply(z_test)
    assert np.all(np.diff(q) >= 0)
    assert q.min() >= 0
    assert q.max() <= 1
    # Against the known truth where the data are dense: max error <= 0.035 over 15 seeds.
    dense = np.abs(z_test + 3.0) < 4.0
    assert np.max(np.abs(q - 0.8 * sigmoid((z_test + 3.0) / 2.0))[dense]) < 0.05
    y_test = rng.random(z_test.size) < 0.8 * sigmoid((z_test + 3.0) / 2.0)
    curve = reliability_curve(q, y_test, n_bins=10)
    # 5000 events per bin: binomial σ <= 0.007; 0.03 tolerates 4σ plus isotonic's own error.
    np.testing.assert_allclose(curve.frac_pass, curve.mean_q, atol=0.03)
    assert expected_calibration_error(q, y_test, 10) < 0.012  # max 0.0076 over 15 seeds
    assert expected_calibration_error(sigmoid(z_test), y_test, 10) > 0.05


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_integer_weights_equal_repeated_events(method: str) -> None:
    z, y = _miscalibrated(3000, seed=9)
    w = np.random.default_rng(10).integers(1, 4, z.size)
    weighted = Calibrator(method).fit(z, y, weights=w.astype(float))
    repeated = Calibrator(method).fit(np.repeat(z, w), np.repeat(y, w))
    grid = np.linspace(-12, 6, 200)
    np.testing.assert_allclose(weighted.apply(grid), repeated.apply(grid), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["temperature", "isotonic", "none"])
def test_state_round_trip(method: str) -> None:
    z, y = _miscalibrated(2000, seed=11)
    calibrator = Calibrator(method).fit(np.stack([z, -z], 1), np.stack([y, ~y], 1))
    again = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert again.state == calibrator.state
    np.testing.assert_array_equal(
        again.apply(z[:, None].repeat(2, 1)), calibrator.apply(z[:, None].repeat(2, 1))
    )


def test_errors() -> None:
    with pytest.raises(UserError, match="unknown calibration method 'platt'"):
        Calibrator("platt")
    with pytest.raises(ValueError, match="before fit"):
        Calibrator("temperature").apply(np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        Calibrator().fit(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="weights"):
        Calibrator().fit(np.zeros(4), np.zeros(4), weights=np.array([1.0, -1.0, 1.0, 1.0]))
    fitted = Calibrator("temperature").fit(np.zeros((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="2 skims"):
        fitted.apply(np.zeros((3, 3)))
    assert CalibrationState("none").is_fitted
