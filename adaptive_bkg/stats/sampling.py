"""Keep-probability policies: calibrated pass probabilities q -> keep probabilities p.

An event is kept with probability p(x) and, if kept, carries the weight w = 1/p (importance
sampling). Any p > 0 gives an unbiased weighted sample; the policy only decides how much compute
is spent per unit of statistical power (docs/statistics.md, DESIGN §2).

Policies (every unbiased one floors p at `p_min`, so w <= 1/p_min):

- ``sqrt-optimal`` (default): p = clip(k·sqrt(q), p_min, 1); k minimises the expected cost per
  effective event J(k) = (t2 + t_slow·E[p])·E[q/p] over the current q distribution.
- ``identity``: p = clip(q, p_min, 1).
- ``skewed-sigmoid``: p = (1 + a·e^(−c(x−b)))^(−1/a) on the logit x (giesegh2025); (a, b, c)
  are fitted per skim for speedup on a labelled sample.
- ``basf2-exp``: p = clip(exp(a·(x − b)), p_min, 1) as in basf2's SmartBackground module.
- ``hard-cut``: p = 1 if q > threshold else 0. BIASED (events with p = 0 can never be
  represented); for demonstrating that bias only. It does not floor.
- ``none``: p = 1 (no filter).

Several skims: p = max_s p_s, and the one weight 1/p is valid for every skim (each p_s is a
lower bound of p, so no skim loses support).

A `Policy` is a thin object around a frozen, JSON-able `PolicyState` (name, p_min, per-skim
parameters). `fit` replaces the state with a new frozen one and returns the policy itself, so
both `policy.fit(...)` and `policy = policy.fit(...)` work; ship `policy.state` (or
`policy.state.to_dict()`) alongside model weights and rebuild with `Policy(state)`. The fits
themselves (objective J, k, skewed-sigmoid parameters) are in policy_fit.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from adaptive_bkg.config import POLICY_NAMES, PolicyConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.stats.policy_fit import (
    SKEWED_SIGMOID_DEFAULTS,
    check_times,
    fit_skewed_sigmoid,
    fit_sqrt_k,
    skewed_sigmoid,
)

BIASED_POLICIES: frozenset[str] = frozenset({"hard-cut"})

# Parameter names per policy; PolicyState.params holds one tuple in this order per skim.
PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "sqrt-optimal": ("k",),
    "identity": (),
    "skewed-sigmoid": ("a", "b", "c"),
    "basf2-exp": ("a", "b"),
    "hard-cut": ("threshold",),
    "none": (),
}
BASF2_EXP_DEFAULTS = (0.47, -0.25)  # basf2 SmartBackground defaults

_LOGIT_EPS = 1e-12  # q is clipped to [eps, 1-eps] before taking the logit (|x| <= 27.6)
_SKEWED_SIGMOID_MAX_EVENTS = 50_000  # Nelder-Mead: ~500 objective calls, ~1 s per skim


class BiasedPolicyWarning(UserWarning):
    """Emitted whenever a biased policy (hard-cut) is built: its weighted sample is NOT unbiased."""


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyState:
    """Everything a policy needs to reproduce p from q: small, frozen, JSON-able.

    params: one tuple per skim in `PARAM_NAMES[name]` order; a single tuple applies to every
    skim (the unfitted state). n_fits counts calls to fit() that changed the parameters.
    """

    name: str
    p_min: float
    params: tuple[tuple[float, ...], ...] = ((),)
    n_fits: int = 0
    skims: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.name not in POLICY_NAMES:
            raise UserError(f"unknown policy '{self.name}' (allowed: {', '.join(POLICY_NAMES)})")
        if not (0.0 < self.p_min <= 1.0):
            raise UserError(f"policy p_min = {self.p_min} must be in (0, 1]")
        n_expected = len(PARAM_NAMES[self.name])
        if not self.params or any(len(p) != n_expected for p in self.params):
            raise ValueError(
                f"policy {self.name} needs {n_expected} parameters per skim "
                f"{PARAM_NAMES[self.name]}, got {self.params}"
            )
        if self.skims is not None and len(self.params) not in (1, len(self.skims)):
            raise ValueError(f"{len(self.params)} parameter sets for {len(self.skims)} skims")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/`torch.load(weights_only=True)`-safe representation."""
        return {
            "name": self.name,
            "p_min": self.p_min,
            "params": [list(p) for p in self.params],
            "n_fits": self.n_fits,
            "skims": None if self.skims is None else list(self.skims),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyState:
        skims = data.get("skims")
        return cls(
            name=str(data["name"]),
            p_min=float(data["p_min"]),
            params=tuple(tuple(float(v) for v in p) for p in data["params"]),
            n_fits=int(data.get("n_fits", 0)),
            skims=None if skims is None else tuple(str(s) for s in skims),
        )


# ---------------------------------------------------------------------------------------------
def sigmoid(x: ArrayLike) -> NDArray[np.float64]:
    """q = 1 / (1 + e^-x) in float64, without overflow (the one sigmoid of the package)."""
    return np.asarray(special.expit(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def logit(q: ArrayLike) -> NDArray[np.float64]:
    """Logit of probabilities, clipped so that q = 0 or 1 stays finite."""
    qc = np.clip(np.asarray(q, dtype=np.float64), _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.asarray(special.logit(qc), dtype=np.float64)


def draw_keep(p: ArrayLike, rng: np.random.Generator) -> NDArray[np.bool_]:
    """Bernoulli(p) keep decisions; the weight of a kept event is 1/p."""
    pa = np.asarray(p, dtype=np.float64)
    return np.asarray(rng.random(pa.shape) < pa)


def weights(p: ArrayLike) -> NDArray[np.float64]:
    """Importance weights w = 1/p (only meaningful for kept events, where p > 0)."""
    return 1.0 / np.asarray(p, dtype=np.float64)


def _as_2d(q: ArrayLike) -> NDArray[np.float64]:
    qa = np.asarray(q, dtype=np.float64)
    if qa.ndim == 1:
        qa = qa[:, None]
    if qa.ndim != 2:
        raise ValueError(f"q must be [n] or [n, n_skims], got shape {qa.shape}")
    if qa.size and not (np.all(qa >= 0.0) and np.all(qa <= 1.0)):  # also rejects NaN
        raise ValueError("q must be probabilities in [0, 1] (got values outside or NaN)")
    return qa


# ---------------------------------------------------------------------------------------------
class Policy:
    """A keep-probability policy: `keep_probability(q[n, n_skims]) -> p[n]`.

    The parameters live in the frozen `state`; `fit` swaps in a new state and returns self.
    """

    def __init__(self, state: PolicyState, *, refit: bool = True, fit_max_events: int = 200_000):
        self.state = state
        self.refit = refit
        self.fit_max_events = fit_max_events
        if state.name in BIASED_POLICIES:
            warnings.warn(
                f"policy '{state.name}' is BIASED: events with p = 0 are never kept, so the "
                "weighted sample does not estimate the unfiltered one. Use only to show the bias.",
                BiasedPolicyWarning,
                stacklevel=2,
            )

    # -- properties ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.state.name

    @property
    def p_min(self) -> float:
        return self.state.p_min

    @property
    def is_unbiased(self) -> bool:
        """True iff p > 0 for every q, i.e. the 1/p-weighted kept sample is unbiased."""
        return self.state.name not in BIASED_POLICIES

    @property
    def label(self) -> str:
        """Human-readable name; biased policies say so."""
        return self.name if self.is_unbiased else f"{self.name} (BIASED)"

    def __repr__(self) -> str:
        return f"Policy({self.state!r})"

    # -- evaluation ---------------------------------------------------------------------------
    def _params(self, n_skims: int) -> NDArray[np.float64]:
        params = np.asarray(self.state.params, dtype=np.float64).reshape(len(self.state.params), -1)
        if params.shape[0] == 1:
            return np.repeat(params, n_skims, axis=0)
        if params.shape[0] != n_skims:
            raise ValueError(
                f"policy has parameters for {params.shape[0]} skims, q has {n_skims} columns"
            )
        return params

    def per_skim(self, q: ArrayLike) -> NDArray[np.float64]:
        """Per-skim keep probabilities p_s: [n, n_skims] (floored, except hard-cut)."""
        qa = _as_2d(q)
        n_skims = qa.shape[1]
        params = self._params(n_skims)
        name, p_min = self.state.name, self.state.p_min
        if name == "none":
            return np.ones_like(qa)
        if name == "hard-cut":
            return (qa > params[:, 0]).astype(np.float64)  # no floor: that is the bias
        if name == "identity":
            p = qa.copy()
        elif name == "sqrt-optimal":
            p = params[:, 0] * np.sqrt(qa)
        elif name == "basf2-exp":
            a, b = params[:, 0], params[:, 1]
            p = np.exp(np.minimum(a * (logit(qa) - b), 0.0))  # min(.,0): p <= 1, no overflow
        elif name == "skewed-sigmoid":
            x = logit(qa)
            p = np.empty_like(qa)
            for s in range(n_skims):
                p[:, s] = skewed_sigmoid(x[:, s], *params[s])
        else:  # pragma: no cover - PolicyState validates the name
            raise AssertionError(name)
        return np.clip(p, p_min, 1.0)

    def keep_probability(self, q: ArrayLike) -> NDArray[np.float64]:
        """p = max over skims of p_s: [n]. The one weight 1/p serves every skim."""
        per_skim = self.per_skim(q)
        if per_skim.shape[1] == 0:
            return np.ones(per_skim.shape[0], dtype=np.float64)
        return np.asarray(per_skim.max(axis=1), dtype=np.float64)

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self,
        q: ArrayLike,
        t_fast: float,
        t_nn: float,
        t_slow: float,
        labels: ArrayLike | None = None,
        *,
        weights: ArrayLike | None = None,
        seed: int = 0,
    ) -> Policy:
        """Refit the policy parameters to the current q distribution; returns self.

        q: [n, n_skims] calibrated pass probabilities of a recent, unfiltered sample of generated
        events (every generated event is scored, so use those, not only the kept ones).
        t_fast, t_nn, t_slow: mean seconds per event of generation, inference, slow stage.
        labels: [n, n_skims] bool, only for skewed-sigmoid (without them the calibrated q serve
        as soft labels). weights: [n] per-event weights when the sample is not a plain sample of
        generated events, e.g. 1/p for labelled kept events. sqrt-optimal fits k per skim on its
        own q column. identity / basf2-exp / hard-cut / none: nothing to fit.
        """
        check_times(float(t_fast), float(t_nn), float(t_slow))
        name = self.state.name
        if not self.refit or name not in ("sqrt-optimal", "skewed-sigmoid"):
            return self
        qa = _as_2d(q)
        if qa.shape[0] == 0:
            return self
        ya = None if labels is None else np.asarray(labels, dtype=np.float64).reshape(qa.shape)
        wa = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if wa is not None and (wa.shape[0] != qa.shape[0] or not np.all(wa >= 0)):
            raise ValueError(f"weights must be [{qa.shape[0]}], finite and >= 0")
        max_events = self.fit_max_events
        if name == "skewed-sigmoid":
            max_events = min(max_events, _SKEWED_SIGMOID_MAX_EVENTS)
        if qa.shape[0] > max_events:  # a fixed-seed subsample keeps fit() cheap
            idx = np.random.default_rng(seed).choice(qa.shape[0], max_events, replace=False)
            qa = qa[idx]
            ya = None if ya is None else ya[idx]
            wa = None if wa is None else wa[idx]
        p_min = self.state.p_min
        current = self._params(qa.shape[1])
        new: list[tuple[float, ...]] = []
        for s in range(qa.shape[1]):
            if name == "sqrt-optimal":
                new.append((fit_sqrt_k(qa[:, s], t_fast, t_nn, t_slow, p_min, weights=wa),))
            else:
                start = (float(current[s, 0]), float(current[s, 1]), float(current[s, 2]))
                y = qa[:, s] if ya is None else ya[:, s]
                x = logit(qa[:, s])
                new.append(
                    fit_skewed_sigmoid(x, y, t_fast, t_nn, t_slow, p_min, start=start, weights=wa)
                )
        self.state = replace(self.state, params=tuple(new), n_fits=self.state.n_fits + 1)
        return self

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        return cls(PolicyState.from_dict(data))


def make_policy(cfg: PolicyConfig, skims: Sequence[str] | None = None) -> Policy:
    """Build the configured policy (unfitted: k and a, b, c from the config or the defaults)."""
    name = cfg.name  # an unknown name falls through to params = () and PolicyState rejects it
    params: tuple[float, ...]
    if name == "sqrt-optimal":
        params = (cfg.k,)
    elif name == "skewed-sigmoid":
        a0, b0, c0 = SKEWED_SIGMOID_DEFAULTS
        params = (
            a0 if cfg.a is None else cfg.a,
            b0 if cfg.b is None else cfg.b,
            c0 if cfg.c is None else cfg.c,
        )
    elif name == "basf2-exp":
        a0, b0 = BASF2_EXP_DEFAULTS
        params = (a0 if cfg.a is None else cfg.a, b0 if cfg.b is None else cfg.b)
    elif name == "hard-cut":
        params = (cfg.threshold,)
    else:
        params = ()
    state = PolicyState(
        name=name,
        p_min=cfg.p_min,
        params=(params,),
        skims=None if skims is None else tuple(skims),
    )
    return Policy(state, refit=cfg.refit, fit_max_events=cfg.fit_max_events)
