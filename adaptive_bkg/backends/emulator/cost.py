"""Per-event cost of the three stages, and the clocks that spend it.

The speedup of a filter depends on what each stage costs per event (DESIGN.md §2): generation
t_fast, network inference t_NN and detector simulation + reconstruction t_slow. Following the
references (giesegh2025, yu2022) the default mean ratio on the generic mixture is 1 : 1 : 100.

t_slow is not a constant: Geant4 time grows with the number and energy of particles that reach
the detector, reconstruction time with the number of tracks and clusters. So per event

    t_slow(event) = type_scale[bkg_type] * (intercept + sum_f coefficient_f * feature_f(event))

with generator-level features (no detector needed): `n_particles` (size of the event record),
`n_final` (final-state particles), `e_visible_gev` (energy of visible final-state particles
inside the ECL polar acceptance) and `n_tracks` (charged final-state particles in the CDC
acceptance with pT > 0.1 GeV). The built-in shape splits the mean as 30 % fixed per-event
overhead (beam-background overlay, module setup), 40 % n_final, 30 % E_visible; the absolute
scale defaults to a mean of 0.1 s per event (yu2022: t_SR = 97 ms). A calibrated file from
`adaptive-bkg calibrate` replaces shape and scale with a fit to measured basf2 timings.

t_fast and t_NN per event are half fixed, half proportional to n_particles (both generation
and a padded transformer scale with the event size), with mixture means set by the ratio.

Clocks: `VirtualClock` only adds up (deterministic, no waiting, the default); `WallClock`
really waits cost / wall_speedup seconds, so a live pipeline feels the slow stage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaptive_bkg.backends.emulator.detector import CHARGED_CODES
from adaptive_bkg.config import BackendConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.interfaces import Clock
from adaptive_bkg.physics.geometry import BELLE2_ACCEPTANCE
from adaptive_bkg.physics.pdg import NEUTRINOS
from adaptive_bkg.physics.processes import BKG_TYPES, CROSS_SECTIONS_NB

COST_FILE_KIND = "adaptive-bkg-cost"
COST_FILE_VERSION = 1
DEFAULT_T_SLOW_MEAN_S = 0.1
"""Mean sim+reco seconds per event: yu2022 quotes t_SR = 97 ms for Belle II generic events."""

# Acceptances: physics.geometry (references/belle2_reference_numbers.md §2).
CDC_THETA_DEG = BELLE2_ACCEPTANCE.cdc_theta_deg
ECL_THETA_DEG = BELLE2_ACCEPTANCE.ecl_envelope_deg
TRACK_MIN_PT_GEV = BELLE2_ACCEPTANCE.track_pt_min_gev
_NEUTRINOS = np.array(NEUTRINOS, dtype=np.int32)

FEATURES: tuple[str, ...] = ("n_particles", "n_final", "n_tracks", "e_visible_gev")
"""Generator-level features a cost model (and a calibration table) may use."""

REFERENCE_FEATURE_MEANS: dict[str, dict[str, float]] = {
    # Mean features per background type, measured with adaptive_bkg.generators.pythia
    # (Pythia 8.317, Belle II fragmentation, 3000 events per type, seed 1, via `feature_means`;
    # statistical precision ~0.5 %). They turn the ratio into coefficients without generating
    # events at run time; tests/test_cost.py checks them against freshly generated events.
    "charged": {"n_particles": 37.74, "n_final": 21.68, "n_tracks": 8.05, "e_visible_gev": 9.585},
    "mixed": {"n_particles": 37.64, "n_final": 21.30, "n_tracks": 7.96, "e_visible_gev": 9.572},
    "uubar": {"n_particles": 22.88, "n_final": 16.71, "n_tracks": 5.78, "e_visible_gev": 9.882},
    "ddbar": {"n_particles": 23.10, "n_final": 16.78, "n_tracks": 5.64, "e_visible_gev": 9.889},
    "ssbar": {"n_particles": 21.31, "n_final": 15.29, "n_tracks": 5.15, "e_visible_gev": 9.786},
    "ccbar": {"n_particles": 28.80, "n_final": 19.02, "n_tracks": 6.15, "e_visible_gev": 9.521},
    "taupair": {"n_particles": 13.93, "n_final": 10.79, "n_tracks": 2.36, "e_visible_gev": 5.396},
}

_DEFAULT_SHARES = {"intercept": 0.30, "n_final": 0.40, "e_visible_gev": 0.30}
"""Built-in split of the mean t_slow between the fixed overhead and the two features. The
particle term counts final-state particles (what Geant4 transports), not the record size:
which intermediate states a generator keeps changes n_particles but not the detector work."""


# ---------------------------------------------------------------------------------------------
class EventFeatures(NamedTuple):
    """Generator-level per-event quantities the cost depends on."""

    n_particles: NDArray[np.float64]
    n_final: NDArray[np.float64]
    n_tracks: NDArray[np.float64]
    e_visible_gev: NDArray[np.float64]

    def get(self, name: str) -> NDArray[np.float64]:
        value: NDArray[np.float64] = getattr(self, name)
        return value


def event_features(batch: EventBatch) -> EventFeatures:
    """Vectorised over the whole batch; final state = particles that are nobody's mother."""
    n = len(batch)
    n_total = int(batch.offsets[-1]) if n else 0
    event_of = batch.particle_event_index
    has_daughter = np.zeros(n_total, dtype=np.bool_)
    with_mother = batch.mother >= 0
    has_daughter[batch.offsets[:-1][event_of[with_mother]] + batch.mother[with_mother]] = True
    final = ~has_daughter

    px, py, pz = (
        batch.px.astype(np.float64),
        batch.py.astype(np.float64),
        batch.pz.astype(np.float64),
    )
    pt = np.hypot(px, py)
    theta = np.degrees(np.arctan2(pt, pz))
    abs_pdg = np.abs(batch.pdg)
    in_ecl = (theta > ECL_THETA_DEG[0]) & (theta < ECL_THETA_DEG[1])
    in_cdc = (theta > CDC_THETA_DEG[0]) & (theta < CDC_THETA_DEG[1])
    visible = final & in_ecl & ~np.isin(abs_pdg, _NEUTRINOS)
    track = final & in_cdc & (pt > TRACK_MIN_PT_GEV) & np.isin(abs_pdg, CHARGED_CODES)

    def per_event(weights: NDArray[np.float64] | NDArray[np.bool_]) -> NDArray[np.float64]:
        return np.bincount(event_of, weights=weights, minlength=n).astype(np.float64)

    return EventFeatures(
        n_particles=batch.n_particles.astype(np.float64),
        n_final=per_event(final),
        n_tracks=per_event(track),
        e_visible_gev=per_event(np.where(visible, batch.E.astype(np.float64), 0.0)),
    )


def feature_means(batch: EventBatch) -> dict[str, dict[str, float]]:
    """Mean of every feature per background type present in `batch` (to refresh the table)."""
    features = event_features(batch)
    means: dict[str, dict[str, float]] = {}
    for code, name in enumerate(BKG_TYPES):
        sel = batch.bkg_type == code
        if sel.any():
            means[name] = {f: float(features.get(f)[sel].mean()) for f in FEATURES}
    return means


def _mixture_mean(feature: str, type_scale: Sequence[float] | None = None) -> float:
    """Cross-section-weighted mean of `feature` (times the type scale) over the generic mixture."""
    total = sum(CROSS_SECTIONS_NB.values())
    scale = type_scale or [1.0] * len(BKG_TYPES)
    return sum(
        CROSS_SECTIONS_NB[t] / total * scale[i] * REFERENCE_FEATURE_MEANS[t][feature]
        for i, t in enumerate(BKG_TYPES)
    )


# ---------------------------------------------------------------------------------------------
class CostFile(BaseModel):
    """On-disk form of a calibrated slow-stage cost model (written by `adaptive-bkg calibrate`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = COST_FILE_KIND
    version: int = COST_FILE_VERSION
    intercept_s: float
    coefficients: dict[str, float]
    uncertainties: dict[str, float] = Field(default_factory=dict)
    type_scale: dict[str, float] = Field(default_factory=dict)
    t_fast_mean_s: float | None = Field(default=None, gt=0)
    t_nn_mean_s: float | None = Field(default=None, gt=0)
    r2: float | None = None
    n_events: int | None = None
    source: str | None = None


def load_cost_file(path: Path) -> CostFile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"cost file {path} not found (backend.cost.file)") from None
    except yaml.YAMLError:
        raise UserError(f"cost file {path} is not valid YAML") from None
    if not isinstance(raw, dict):
        raise UserError(
            f"cost file {path} must hold a mapping (write one with adaptive-bkg calibrate)"
        )
    try:
        cost = CostFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise UserError(f"cost file {path}: bad entry '{key}': {err['msg']}") from None
    if cost.kind != COST_FILE_KIND or cost.version != COST_FILE_VERSION:
        raise UserError(
            f"cost file {path}: kind/version {cost.kind}/{cost.version}, expected "
            f"{COST_FILE_KIND}/{COST_FILE_VERSION}"
        )
    unknown = sorted(set(cost.coefficients) - set(FEATURES))
    if unknown:
        raise UserError(
            f"cost file {path}: unknown features {unknown} (known: {', '.join(FEATURES)})"
        )
    bad_types = sorted(set(cost.type_scale) - set(BKG_TYPES))
    if bad_types or any(v <= 0 for v in cost.type_scale.values()):
        raise UserError(
            f"cost file {path}: type_scale needs values > 0 for types in {', '.join(BKG_TYPES)}"
        )
    return cost


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostModel:
    """Per-event seconds for generation, inference and simulation; all vectorised."""

    intercept_s: float
    coefficients: Mapping[str, float]
    type_scale: tuple[float, ...]  # per BKG_TYPES code
    t_fast_mean_s: float
    t_nn_mean_s: float
    floor_s: float = field(default=0.0)
    """Lower bound on a per-event t_slow: a fitted model with a negative term stays positive."""

    @classmethod
    def from_config(cls, cfg: BackendConfig) -> CostModel:
        cost_cfg = cfg.cost
        r_fast, r_nn, r_slow = cost_cfg.ratio
        if cost_cfg.file is None:
            mean_slow = cost_cfg.t_slow_mean_s or DEFAULT_T_SLOW_MEAN_S
            coefficients = {
                f: _DEFAULT_SHARES[f] * mean_slow / _mixture_mean(f)
                for f in ("n_final", "e_visible_gev")
            }
            model = cls(
                intercept_s=_DEFAULT_SHARES["intercept"] * mean_slow,
                coefficients=coefficients,
                type_scale=(1.0,) * len(BKG_TYPES),
                t_fast_mean_s=mean_slow * r_fast / r_slow,
                t_nn_mean_s=mean_slow * r_nn / r_slow,
            )
        else:
            loaded = load_cost_file(cost_cfg.file)
            scale = tuple(loaded.type_scale.get(t, 1.0) for t in BKG_TYPES)
            fitted = cls(loaded.intercept_s, dict(loaded.coefficients), scale, 1.0, 1.0)
            fitted_mean = fitted.mixture_mean_slow()
            if fitted_mean <= 0:
                raise UserError(
                    f"cost file {cost_cfg.file}: mean t_slow on the generic mixture is "
                    f"{fitted_mean:.3g} s; refit with more events"
                )
            rescale = (cost_cfg.t_slow_mean_s / fitted_mean) if cost_cfg.t_slow_mean_s else 1.0
            mean_slow = fitted_mean * rescale
            model = cls(
                intercept_s=loaded.intercept_s * rescale,
                coefficients={f: c * rescale for f, c in loaded.coefficients.items()},
                type_scale=scale,
                t_fast_mean_s=loaded.t_fast_mean_s or mean_slow * r_fast / r_slow,
                t_nn_mean_s=loaded.t_nn_mean_s or mean_slow * r_nn / r_slow,
            )
        # 1 % of the mean: far below any real event, only guards against negative fitted costs.
        return replace(model, floor_s=0.01 * mean_slow)

    # -- per-event costs ------------------------------------------------------------------------
    def slow_cost(self, batch: EventBatch) -> NDArray[np.float64]:
        features = event_features(batch)
        total = np.full(len(batch), self.intercept_s, dtype=np.float64)
        for name, coefficient in self.coefficients.items():
            total += coefficient * features.get(name)
        total *= np.asarray(self.type_scale, dtype=np.float64)[batch.bkg_type.astype(np.int64)]
        return np.maximum(total, self.floor_s)

    def fast_cost(self, batch: EventBatch) -> NDArray[np.float64]:
        return self.t_fast_mean_s * self._size_shape(batch)

    def nn_cost(self, batch: EventBatch) -> NDArray[np.float64]:
        return self.t_nn_mean_s * self._size_shape(batch)

    def _size_shape(self, batch: EventBatch) -> NDArray[np.float64]:
        # Half fixed, half proportional to the record size; mean 1 on the generic mixture.
        n = batch.n_particles.astype(np.float64)
        return 0.5 + 0.5 * n / _mixture_mean("n_particles")

    # -- means on the generic mixture -----------------------------------------------------------
    def mixture_mean_slow(self) -> float:
        """Cross-section-weighted mean t_slow from the reference feature means (no floor)."""
        total = sum(CROSS_SECTIONS_NB.values())
        return sum(
            CROSS_SECTIONS_NB[t]
            / total
            * self.type_scale[i]
            * (
                self.intercept_s
                + sum(c * REFERENCE_FEATURE_MEANS[t][f] for f, c in self.coefficients.items())
            )
            for i, t in enumerate(BKG_TYPES)
        )

    @property
    def mean_times(self) -> tuple[float, float, float]:
        """(t_fast, t_NN, t_slow) means on the generic mixture, seconds per event."""
        return (self.t_fast_mean_s, self.t_nn_mean_s, self.mixture_mean_slow())


# ---------------------------------------------------------------------------------------------
class VirtualClock:
    """Accounting only: adds up, never waits, fully deterministic."""

    def __init__(self) -> None:
        self._spent = 0.0

    @property
    def spent_s(self) -> float:
        return self._spent

    def spend(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"cannot spend {seconds} s")
        self._spent += seconds


class WallClock(VirtualClock):
    """Really waits seconds / speedup (sleeps, releasing the GIL, until the deadline has passed)."""

    def __init__(self, speedup: float = 1.0) -> None:
        super().__init__()
        if speedup <= 0:
            raise UserError(f"backend.cost.wall_speedup must be > 0, got {speedup}")
        self.speedup = speedup

    def spend(self, seconds: float) -> None:
        super().spend(seconds)
        deadline = time.perf_counter() + seconds / self.speedup
        while (remaining := deadline - time.perf_counter()) > 0:
            time.sleep(remaining)  # loop: sleep may wake a little early


def make_clock(cfg: BackendConfig) -> Clock:
    return WallClock(cfg.cost.wall_speedup) if cfg.clock == "wall" else VirtualClock()
