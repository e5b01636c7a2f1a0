"""Calibrating the slow-stage cost model: `adaptive-bkg calibrate TIMINGS.csv`.

Fits t_slow = intercept + Σ coefficient_f · feature_f to measured per-event timings (e.g. the
`cost_s` an external basf2 backend reports) with a robust Huber loss, so that the first event
of a job (geometry and conditions loading) or a node that swapped does not pull the line.
The table is read with `pyarrow.csv`, the fit is `scipy.optimize.least_squares(loss="huber")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import yaml
from numpy.typing import NDArray
from scipy.optimize import least_squares

from adaptive_bkg.backends.emulator.cost import FEATURES, CostFile, event_features
from adaptive_bkg.errors import UserError, first_line
from adaptive_bkg.formats.events import read_events

REQUIRED_COLUMNS: tuple[str, ...] = ("t_slow_s", "n_particles", "e_visible_gev")
MAD_TO_SIGMA = 1.4826  # median absolute deviation of a Gaussian, in standard deviations


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


def _read_csv(path: Path) -> pa.Table:
    # Every cell as text: the checks below name the line and the cell as the user wrote it.
    read = pa_csv.ReadOptions(autogenerate_column_names=False)
    convert = pa_csv.ConvertOptions(
        null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False
    )
    try:
        with path.open("rb") as handle:
            header = handle.readline().decode("utf-8", "replace").strip()
        names = [h.strip() for h in header.split(",")] if header else []
        convert.column_types = {name: pa.string() for name in names}
        return pa_csv.read_csv(path, read_options=read, convert_options=convert)
    except FileNotFoundError:
        raise UserError(f"timing table {path} not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        first = first_line(exc)
        if "Empty CSV file" in first:
            return pa.table({})
        raise UserError(f"timing table {path} cannot be read ({first})") from None


def _first_bad(path: Path, name: str, cells: pa.Array, bad: NDArray[np.bool_], what: str) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"timing table {path} line {row + 2}: {name} = {cells[row].as_py()!r} {what}"
        )


def _numbers(path: Path, name: str, cells: pa.Array) -> NDArray[np.float64]:
    text = pc.utf8_trim_whitespace(cells)
    numeric = pc.match_substring_regex(
        text,
        r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|nan|inf|infinity)$",
        ignore_case=True,
    )
    _first_bad(path, name, text, ~numeric.to_numpy(zero_copy_only=False), "is not a number")
    values = pc.cast(text, pa.float64()).to_numpy()
    _first_bad(path, name, text, ~np.isfinite(values), "is not finite")
    return values


def read_timing_table(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> TimingTable:
    """Parse a CSV of per-event timings: `t_slow_s`, feature columns and optionally event_id."""
    path = Path(path)
    table = _read_csv(path)
    header = [h.strip() for h in table.column_names]
    if not header:
        raise UserError(f"timing table {path} is empty; expected a header {','.join(required)}")
    if len(set(header)) != len(header):
        raise UserError(f"timing table {path}: duplicate column names in header {header}")
    table = table.rename_columns(header)
    missing = [c for c in required if c not in header]
    if missing:
        optional = [f for f in FEATURES if f not in required]
        raise UserError(
            f"timing table {path} lacks columns {missing} (needs {', '.join(required)}; "
            f"optional {', '.join(optional)})"
        )
    if table.num_rows == 0:
        raise UserError(f"timing table {path} has a header but no rows")
    event_id = None
    if "event_id" in header:
        # Parsed as integers: event ids use all 64 bits, floats would round them.
        cells = pc.utf8_trim_whitespace(table.column("event_id").combine_chunks())
        digits = pc.match_substring_regex(cells, r"^\d{1,20}$").to_numpy(zero_copy_only=False)
        values = cells.to_pylist()
        fits = np.array([ok and int(v) < 2**64 for ok, v in zip(digits, values, strict=True)])
        _first_bad(path, "event_id", cells, ~fits, "is not an unsigned 64-bit integer")
        event_id = pc.cast(cells, pa.uint64()).to_numpy()
    used = [c for c in header if c == "t_slow_s" or c in FEATURES]
    columns = {name: _numbers(path, name, table.column(name).combine_chunks()) for name in used}
    if (columns["t_slow_s"] <= 0).any():
        line = int(np.flatnonzero(columns["t_slow_s"] <= 0)[0]) + 2
        raise UserError(f"timing table {path} line {line}: t_slow_s must be > 0")
    ignored = tuple(c for c in header if c not in used and c != "event_id")
    return TimingTable(columns, event_id, ignored)


def _features_from_events(
    table: TimingTable, events_path: Path, names: Sequence[str], source: Path
) -> dict[str, NDArray[np.float64]]:
    """Feature columns computed from the generator events, in the timing table's row order."""

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


def _robust_sigma(residual: NDArray[np.float64]) -> float:
    return MAD_TO_SIGMA * float(np.median(np.abs(residual - np.median(residual))))


def fit_cost_table(
    path: Path,
    events: Path | None = None,
    features: Sequence[str] | None = None,
    huber_k: float = 1.345,
) -> CostFit:
    """Robust (Huber) least squares of t_slow_s on features.

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

    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    # Huber with threshold k·sigma, sigma from the residuals' MAD (robust to the outliers the
    # loss down-weights); two rounds let sigma settle once the outliers stop pulling.
    for _ in range(2):
        sigma = _robust_sigma(y - design @ beta)
        if sigma == 0:  # an exact fit: nothing to reweight
            break
        beta = least_squares(
            lambda b: design @ b - y, beta, loss="huber", f_scale=huber_k * sigma, method="trf"
        ).x

    residual = y - design @ beta
    sigma = _robust_sigma(residual)
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
