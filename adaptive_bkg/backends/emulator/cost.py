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

import csv
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaptive_bkg.backends.emulator.detector import CHARGED_CODES
from adaptive_bkg.config import BackendConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.events import BKG_TYPES, CROSS_SECTIONS_NB, EventBatch

COST_FILE_KIND = "adaptive-bkg-cost"
COST_FILE_VERSION = 1
DEFAULT_T_SLOW_MEAN_S = 0.1
"""Mean sim+reco seconds per event: yu2022 quotes t_SR = 97 ms for Belle II generic events."""

# Acceptances from references/belle2_reference_numbers.md §2 (basf2 AcceptanceVariables.cc).
CDC_THETA_DEG = (17.0, 150.0)
ECL_THETA_DEG = (12.4, 155.1)
TRACK_MIN_PT_GEV = 0.1
_NEUTRINOS = np.array([12, 14, 16], dtype=np.int32)

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
class Clock(Protocol):
    """Where simulated seconds go: counted only (virtual) or really waited (wall)."""

    @property
    def spent_s(self) -> float:
        """Total cost-model seconds passed to `spend` so far."""
        ...

    def spend(self, seconds: float) -> None: ...


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


# ---------------------------------------------------------------------------------------------
# Calibration: fit t_slow = intercept + sum coefficient * feature to measured timings.
REQUIRED_COLUMNS: tuple[str, ...] = ("t_slow_s", "n_particles", "e_visible_gev")


@dataclass(frozen=True)
class CostFit:
    """Result of `fit_cost_table`: coefficients with standard errors and goodness of fit."""

    intercept_s: float
    intercept_err_s: float
    coefficients: dict[str, float]
    errors: dict[str, float]
    r2: float
    """Coefficient of determination over the events within 5 robust sigma of the fit."""
    n_events: int
    n_outliers: int
    """Events more than 5 robust sigma off the fit (such as a first event that loads geometry
    and conditions); the Huber loss bounds their pull on the coefficients."""
    ignored_columns: tuple[str, ...]
    source: str

    def to_cost_file(self) -> CostFile:
        return CostFile(
            intercept_s=self.intercept_s,
            coefficients=self.coefficients,
            uncertainties={"intercept_s": self.intercept_err_s, **self.errors},
            r2=self.r2,
            n_events=self.n_events,
            source=self.source,
        )


class TimingTable(NamedTuple):
    """A parsed timing CSV: numeric columns, the event ids (if given) and ignored columns."""

    columns: dict[str, NDArray[np.float64]]
    event_id: NDArray[np.uint64] | None
    ignored: tuple[str, ...]


def read_timing_table(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> TimingTable:
    """Parse a CSV of per-event timings: `t_slow_s`, feature columns and optionally event_id."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise UserError(f"timing table {path} not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"timing table {path} cannot be read ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise UserError(f"timing table {path} is empty; expected a header {','.join(required)}")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise UserError(f"timing table {path}: duplicate column names in header {header}")
    missing = [c for c in required if c not in header]
    if missing:
        optional = [f for f in FEATURES if f not in required]
        raise UserError(
            f"timing table {path} lacks columns {missing} (needs {', '.join(required)}; "
            f"optional {', '.join(optional)})"
        )
    body = rows[1:]
    if not body:
        raise UserError(f"timing table {path} has a header but no rows")

    def cells(name: str) -> Iterator[tuple[int, str]]:
        j = header.index(name)
        for i, row in enumerate(body):
            yield i + 2, (row[j].strip() if j < len(row) else "")

    event_id = None
    if "event_id" in header:
        ids = []
        for line, cell in cells("event_id"):
            # Parsed as integers: event ids use all 64 bits, floats would round them.
            if not cell.isdigit() or int(cell) >= 2**64:
                raise UserError(
                    f"timing table {path} line {line}: event_id = {cell!r} is not an unsigned "
                    "64-bit integer"
                )
            ids.append(int(cell))
        event_id = np.array(ids, dtype=np.uint64)
    used = [c for c in header if c == "t_slow_s" or c in FEATURES]
    columns: dict[str, NDArray[np.float64]] = {}
    for name in used:
        values = np.empty(len(body), dtype=np.float64)
        for line, cell in cells(name):
            try:
                value = float(cell)
            except ValueError:
                raise UserError(
                    f"timing table {path} line {line}: column {name} = {cell!r} is not a number"
                ) from None
            if not math.isfinite(value):
                raise UserError(
                    f"timing table {path} line {line}: column {name} = {cell!r} is not finite"
                )
            values[line - 2] = value
        columns[name] = values
    if (columns["t_slow_s"] <= 0).any():
        line = int(np.flatnonzero(columns["t_slow_s"] <= 0)[0]) + 2
        raise UserError(f"timing table {path} line {line}: t_slow_s must be > 0")
    ignored = tuple(c for c in header if c not in used and c != "event_id")
    return TimingTable(columns, event_id, ignored)


def _features_from_events(
    table: TimingTable, events_path: Path, names: Sequence[str], source: Path
) -> dict[str, NDArray[np.float64]]:
    """Feature columns computed from the generator events, in the timing table's row order."""
    from adaptive_bkg.events import read_events

    assert table.event_id is not None
    events = read_events(events_path)
    order = np.argsort(events.event_id, kind="stable")
    sorted_ids = events.event_id[order]
    position = np.minimum(np.searchsorted(sorted_ids, table.event_id), max(len(order) - 1, 0))
    found = np.zeros(len(table.event_id), dtype=np.bool_)
    if len(order):
        found = sorted_ids[position] == table.event_id
    if not found.all():
        absent = [int(i) for i in table.event_id[~found][:5]]
        raise UserError(
            f"timing table {source}: event ids {absent} are not in {events_path} "
            "(time the events of that file)"
        )
    features = event_features(events)
    return {name: features.get(name)[order[position]] for name in names}


def fit_cost_table(
    path: Path,
    events: Path | None = None,
    features: Sequence[str] | None = None,
    huber_k: float = 1.345,
    iterations: int = 50,
) -> CostFit:
    """Robust (Huber, iteratively reweighted) least squares of t_slow_s on features.

    Features come from the table's columns, or, with `events`, are computed from that events
    file for the table's `event_id`s (then the table needs only event_id and t_slow_s, e.g. the
    `cost_s` an external backend reported). `features` picks the terms; by default every
    feature column present (table) or n_particles and e_visible_gev (events).
    """
    unknown = sorted(set(features or ()) - set(FEATURES))
    if unknown:
        raise UserError(f"unknown cost features {unknown} (known: {', '.join(FEATURES)})")
    if events is not None:
        table = read_timing_table(path, required=("event_id", "t_slow_s"))
        names = list(features or ("n_particles", "e_visible_gev"))
        columns = _features_from_events(table, Path(events), names, Path(path))
        ignored = table.ignored + tuple(c for c in table.columns if c != "t_slow_s")
    else:
        table = read_timing_table(path, required=("t_slow_s", *(features or REQUIRED_COLUMNS)))
        present = [c for c in table.columns if c != "t_slow_s"]
        names = list(features) if features else present
        columns = {c: table.columns[c] for c in names}
        ignored = table.ignored + tuple(c for c in present if c not in names)
    y = table.columns["t_slow_s"]
    design = np.column_stack([np.ones_like(y), *(columns[c] for c in names)])
    n, p = design.shape
    if n <= p:
        raise UserError(f"timing table {path}: {n} rows cannot fit {p} parameters; add events")
    constant = [c for c in names if np.ptp(columns[c]) == 0]
    if constant:
        raise UserError(f"timing table {path}: feature(s) {constant} are constant; drop them")
    if np.linalg.matrix_rank(design) < p:
        raise UserError(f"timing table {path}: features {names} are linearly dependent; drop one")

    weights = np.ones(n)
    beta = np.zeros(p)
    for _ in range(iterations):
        sw = np.sqrt(weights)
        new_beta = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)[0]
        residual = y - design @ new_beta
        # MAD scale: robust to the outliers being down-weighted.
        sigma = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
        if sigma == 0:  # an exact fit: nothing to reweight
            beta = new_beta
            break
        scaled = np.abs(residual) / sigma
        weights = np.minimum(1.0, huber_k / np.maximum(scaled, 1e-12))
        converged = np.allclose(new_beta, beta, rtol=1e-10, atol=1e-14)
        beta = new_beta
        if converged:
            break

    residual = y - design @ beta
    sigma = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    if sigma > 0:
        # Huber's asymptotic covariance: sigma^2 * E[psi^2] / E[psi']^2 * (X^T X)^-1.
        scaled = residual / sigma
        psi = np.clip(scaled, -huber_k, huber_k)
        inlier_fraction = max(float(np.mean(np.abs(scaled) <= huber_k)), 1.0 / n)
        s2 = sigma**2 * float(np.sum(psi**2)) / (n - p) / inlier_fraction**2
    else:
        s2 = float(np.sum(residual**2)) / (n - p)
    cov = s2 * np.linalg.inv(design.T @ design)
    err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    n_outliers = int(np.sum(np.abs(residual) > 5 * sigma)) if sigma > 0 else 0
    # R² of the events the model describes: outliers (> 5 sigma) would dominate both sums.
    inlier = np.abs(residual) <= 5 * sigma if sigma > 0 else np.ones(n, dtype=np.bool_)
    ss_tot = float(np.sum((y[inlier] - y[inlier].mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual[inlier] ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return CostFit(
        intercept_s=float(beta[0]),
        intercept_err_s=float(err[0]),
        coefficients={c: float(b) for c, b in zip(names, beta[1:], strict=True)},
        errors={c: float(e) for c, e in zip(names, err[1:], strict=True)},
        r2=r2,
        n_events=n,
        n_outliers=n_outliers,
        ignored_columns=ignored,
        source=str(path),
    )


def write_cost_file(fit: CostFit, out: Path) -> Path:
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(fit.to_cost_file().model_dump(exclude_none=True), sort_keys=False)
        out.write_text(
            "# Slow-stage cost model, t_slow = intercept_s + sum(coefficient * feature) [s].\n"
            "# Load it with --set backend.cost.file=" + str(out) + "\n" + text
        )
    except OSError as exc:
        raise UserError(f"cannot write cost file {out}: {exc.strerror or exc}") from None
    return out
