"""Probability calibration: model logits -> calibrated pass probabilities q, per skim.

The keep policies need q(x) = P(pass | x): sqrt-optimal's k and the speedup forecast use E[q]
and E[q/p], so a miscalibrated q costs speedup (never bias: any p > 0 stays unbiased). Fit the
calibrator on held-out labelled events; when those come from the filtered stream, pass
weights w = 1/p so that the fit represents the unfiltered distribution.

Methods: ``temperature`` (q = σ(z/T), one T per skim, T by weighted NLL), ``isotonic``
(monotone step function of z by pool-adjacent-violators, linearly interpolated between block
edges), ``none`` (q = σ(z)). The state is a small frozen, JSON-able `CalibrationState`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import isotonic_regression, minimize_scalar

from adaptive_bkg.errors import UserError
from adaptive_bkg.stats.sampling import sigmoid

CALIBRATION_METHODS: tuple[str, ...] = ("temperature", "isotonic", "none")
_LOG_T_BOUNDS = (math.log(1e-2), math.log(1e2))


@dataclass(frozen=True)
class CalibrationState:
    """temperatures: one per skim (temperature); knots: per skim (x, q) points (isotonic)."""

    method: str
    temperatures: tuple[float, ...] = ()
    knots: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise UserError(
                f"unknown calibration method '{self.method}' "
                f"(allowed: {', '.join(CALIBRATION_METHODS)})"
            )

    @property
    def is_fitted(self) -> bool:
        return self.method == "none" or bool(self.temperatures) or bool(self.knots)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "temperatures": list(self.temperatures),
            "knots": [[list(x), list(y)] for x, y in self.knots],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationState:
        return cls(
            method=str(data["method"]),
            temperatures=tuple(float(t) for t in data.get("temperatures", ())),
            knots=tuple(
                (tuple(float(v) for v in x), tuple(float(v) for v in y))
                for x, y in data.get("knots", ())
            ),
        )


def _as_2d(a: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be [n] or [n, n_skims], got shape {arr.shape}")
    return arr


def fit_temperature(
    logits: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None
) -> float:
    """T minimising the weighted NLL of σ(z/T) (bounded to [0.01, 100])."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones_like(z) if weights is None else np.asarray(weights, dtype=np.float64)

    def nll(log_t: float) -> float:
        u = z / math.exp(log_t)
        # -log σ(u) = softplus(-u), -log(1-σ(u)) = softplus(u)
        return float(np.sum(w * (y * np.logaddexp(0.0, -u) + (1 - y) * np.logaddexp(0.0, u))))

    result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-7})
    return math.exp(float(result.x))


def fit_isotonic(
    logits: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Weighted isotonic (non-decreasing) fit of labels on logits -> (x knots, q at knots).

    Ties in z are pooled first; each PAV block contributes its first and last x with the block
    mean, so `np.interp` between knots reproduces the step function and interpolates the gaps.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones_like(z) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = w > 0
    z, y, w = z[keep], y[keep], w[keep]
    if z.size == 0:
        raise ValueError("isotonic calibration needs at least one event with positive weight")
    order = np.argsort(z, kind="stable")
    z, y, w = z[order], y[order], w[order]
    unique_z, start = np.unique(z, return_index=True)
    sum_w = np.add.reduceat(w, start)
    mean_y = np.add.reduceat(w * y, start) / sum_w
    result = isotonic_regression(mean_y, weights=sum_w, increasing=True)
    fitted = np.asarray(result.x)
    blocks = np.asarray(result.blocks)
    first, last = blocks[:-1], blocks[1:] - 1
    xs = np.stack([unique_z[first], unique_z[last]], axis=1).ravel()
    qs = np.repeat(fitted[first], 2)
    distinct = np.concatenate([[True], np.diff(xs) > 0])  # single-point blocks: one knot
    return tuple(xs[distinct].tolist()), tuple(np.clip(qs[distinct], 0.0, 1.0).tolist())


class Calibrator:
    """`fit(logits, labels, weights)` then `apply(logits) -> q`, per skim column."""

    def __init__(self, method: str = "temperature", state: CalibrationState | None = None):
        self.state = state if state is not None else CalibrationState(method=method)

    @property
    def method(self) -> str:
        return self.state.method

    def fit(
        self, logits: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None
    ) -> Calibrator:
        """logits, labels: [n] or [n, n_skims]; weights: [n] (e.g. 1/p) or None. Returns self."""
        z = _as_2d(logits, "logits")
        y = _as_2d(labels, "labels")
        if y.shape != z.shape:
            raise ValueError(f"labels shape {y.shape} != logits shape {z.shape}")
        if z.shape[0] == 0:
            raise ValueError("calibration needs at least one labelled event")
        w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if w is not None and (w.shape[0] != z.shape[0] or np.any(~(w >= 0))):
            raise ValueError("weights must be [n], finite and >= 0")
        if self.method == "temperature":
            temps = tuple(fit_temperature(z[:, s], y[:, s], w) for s in range(z.shape[1]))
            self.state = CalibrationState("temperature", temperatures=temps)
        elif self.method == "isotonic":
            knots = tuple(fit_isotonic(z[:, s], y[:, s], w) for s in range(z.shape[1]))
            self.state = CalibrationState("isotonic", knots=knots)
        return self

    def apply(self, logits: ArrayLike) -> NDArray[np.float64]:
        """Calibrated q with the shape of `logits` ([n] or [n, n_skims])."""
        raw = np.asarray(logits, dtype=np.float64)
        z = _as_2d(raw, "logits")
        if self.method == "none":
            q = sigmoid(z)
        elif not self.state.is_fitted:
            raise ValueError(f"{self.method} calibrator used before fit()")
        else:
            n_params = len(self.state.temperatures) or len(self.state.knots)
            if n_params != z.shape[1]:
                raise ValueError(f"calibrator fitted on {n_params} skims, got {z.shape[1]} columns")
            if self.method == "temperature":
                q = sigmoid(z / np.asarray(self.state.temperatures))
            else:
                q = np.empty_like(z)
                for s, (xs, qs) in enumerate(self.state.knots):
                    q[:, s] = np.interp(z[:, s], xs, qs)
        return q if raw.ndim == 2 else q[:, 0]

    def to_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(state=CalibrationState.from_dict(data))


# ---------------------------------------------------------------------------------------------
class ReliabilityCurve(NamedTuple):
    """Per bin of predicted q: weighted mean prediction, observed pass fraction, total weight."""

    mean_q: NDArray[np.float64]
    frac_pass: NDArray[np.float64]
    sum_weight: NDArray[np.float64]


def reliability_curve(
    q: ArrayLike, labels: ArrayLike, n_bins: int = 10, weights: ArrayLike | None = None
) -> ReliabilityCurve:
    """Equal-population bins in q (one skim); empty bins are dropped."""
    qa = np.asarray(q, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    w = np.ones_like(qa) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    edges = np.unique(np.quantile(qa, np.linspace(0, 1, n_bins + 1)))
    index = np.clip(np.searchsorted(edges, qa, side="right") - 1, 0, max(edges.size - 2, 0))
    n = max(edges.size - 1, 1)
    sw = np.asarray(np.bincount(index, weights=w, minlength=n), dtype=np.float64)
    good = sw > 0
    mean_q = np.bincount(index, weights=w * qa, minlength=n)[good] / sw[good]
    frac = np.bincount(index, weights=w * y, minlength=n)[good] / sw[good]
    return ReliabilityCurve(mean_q, frac, sw[good])


def expected_calibration_error(
    q: ArrayLike, labels: ArrayLike, n_bins: int = 10, weights: ArrayLike | None = None
) -> float:
    """Weight-averaged |observed − predicted| over equal-population bins in q."""
    curve = reliability_curve(q, labels, n_bins, weights)
    return float(
        np.sum(curve.sum_weight * np.abs(curve.frac_pass - curve.mean_q)) / curve.sum_weight.sum()
    )
