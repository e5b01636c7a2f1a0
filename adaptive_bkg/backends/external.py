"""`external` backend: run a user command (e.g. a basf2 steering script) on a file of events.

Per batch the backend writes the kept events to `events.parquet` (the `events` kind of
`adaptive_bkg.formats.events`), the backend config to `backend.yaml`, and runs the command template
`backend.external.command` with these placeholders filled in (each shell-quoted):

    {input}   the events Parquet file         {output}  where the command must write its labels
    {skims}   comma-separated skim names      {seed}    backend.seed
    {config}  the backend config as YAML      {conditions}  backend.conditions

e.g. `basf2 sims/steering_example.py -- --in {input} --out {output} --skims {skims}`.
The command runs without a shell and must write `{output}` as Parquet or CSV with columns
`event_id`, one boolean column per skim (named exactly like the skim) and `cost_s` (the
seconds it spent on each event). Rows may come in any order; every input id must appear
exactly once. Anything else is a `UserError` naming the problem.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import yaml
from numpy.typing import NDArray

from adaptive_bkg.config import BackendConfig
from adaptive_bkg.errors import UserError, first_line
from adaptive_bkg.formats.events import EventBatch, write_events
from adaptive_bkg.interfaces import SimResult


class BatchFailed(UserError):
    """The command failed on one batch in a way a retry may cure: a non-zero exit status, a
    timeout or no output. Malformed output is a bug in the command and is not retried."""


PLACEHOLDERS: tuple[str, ...] = ("input", "output", "skims", "seed", "config", "conditions")
_SHOWN_IDS = 5  # ids named in an error message; the rest are counted


def empty_result(n_skims: int) -> SimResult:
    return SimResult(
        np.zeros(0, np.uint64), np.zeros((0, n_skims), np.bool_), np.zeros(0, np.float64)
    )


def show_ids(ids: NDArray[np.uint64]) -> str:
    """The first few ids of `ids` for an error message, and how many more there are."""
    shown = ", ".join(str(int(i)) for i in ids[:_SHOWN_IDS])
    return shown + (f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else "")


def align_labels(
    expected_ids: NDArray[np.uint64],
    ids: NDArray[np.uint64],
    flags: NDArray[np.bool_],
    cost_s: NDArray[np.float64],
    what: str,
) -> SimResult:
    """Reorder labels (any order) to `expected_ids`; missing/extra/duplicate ids -> UserError."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    duplicated = np.unique(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]])
    if len(duplicated):
        raise UserError(f"{what}: duplicate event ids {show_ids(duplicated)}")
    missing = np.setdiff1d(expected_ids, sorted_ids)
    if len(missing):
        raise UserError(f"{what}: no labels for event ids {show_ids(missing)}")
    extra = np.setdiff1d(sorted_ids, expected_ids)
    if len(extra):
        raise UserError(f"{what}: labels for event ids that were not sent: {show_ids(extra)}")
    position = order[np.searchsorted(sorted_ids, expected_ids)]
    return SimResult(expected_ids.copy(), flags[position], cost_s[position])


def _read_table(path: Path, what: str) -> pa.Table:
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        raise BatchFailed(f"{what} wrote no output file {path}") from None
    try:
        if magic == b"PAR1":
            return pq.read_table(path)
        # Ids use all 64 bits: type inference would read those above 2^63 as doubles.
        options = pa_csv.ConvertOptions(column_types={"event_id": pa.uint64()})
        return pa_csv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, OSError) as exc:
        first = first_line(exc)
        raise UserError(f"{what}: cannot read output {path.name} ({first})") from None


def _bool_column(table: pa.Table, name: str, what: str) -> NDArray[np.bool_]:
    column = table.column(name)
    if column.null_count:
        raise UserError(f"{what}: skim column '{name}' has {column.null_count} missing values")
    values = column.to_numpy()
    if values.dtype == np.bool_:
        return values
    if np.issubdtype(values.dtype, np.integer) and np.isin(values, (0, 1)).all():
        return values.astype(np.bool_)
    raise UserError(f"{what}: skim column '{name}' must be boolean (true/false or 0/1)")


def parse_labels(
    table: pa.Table, expected_ids: NDArray[np.uint64], skims: Sequence[str], what: str
) -> SimResult:
    """Validate a labels table (event_id, one bool column per skim, cost_s) against the input."""
    needed = ["event_id", *skims, "cost_s"]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise UserError(
            f"{what}: output lacks columns {missing} (needs event_id, one boolean column per "
            f"skim: {', '.join(skims)}, and cost_s)"
        )
    id_column = table.column("event_id")
    if id_column.null_count or not pa.types.is_integer(id_column.type):
        raise UserError(f"{what}: event_id must be integers without missing values")
    ids = id_column.to_numpy().astype(np.uint64)
    cost_column = table.column("cost_s")
    if cost_column.null_count:
        raise UserError(f"{what}: cost_s has {cost_column.null_count} missing values")
    try:
        cost = cost_column.to_numpy().astype(np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{what}: cost_s must be numeric seconds") from None
    if not np.isfinite(cost).all() or (cost < 0).any():
        raise UserError(f"{what}: cost_s must be finite and >= 0 seconds")
    flags = np.zeros((len(ids), len(skims)), dtype=np.bool_)
    for j, skim in enumerate(skims):
        flags[:, j] = _bool_column(table, skim, what)
    return align_labels(expected_ids, ids, flags, cost, what)


class ExternalBackend:
    """Runs `backend.external.command` once per batch; see the module docstring."""

    def __init__(self, cfg: BackendConfig, skims: Sequence[str] | None = None) -> None:
        chosen = tuple(skims) if skims is not None else cfg.skims
        if not chosen:
            raise UserError(
                "the external backend needs the skim names its command reports "
                "(backend.skims=[dstar-d0pi, ...])"
            )
        template = cfg.external.command.strip()
        if not template:
            raise UserError(
                "backend.external.command is empty; set e.g. "
                "'basf2 my_steering.py -- --in {input} --out {output}'"
            )
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise UserError(f"backend.external.command: bad template ({exc})") from None
        allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        unknown = sorted(fields - set(PLACEHOLDERS))
        if unknown:
            raise UserError(
                f"backend.external.command: unknown placeholders {unknown} (allowed: {allowed})"
            )
        if not {"input", "output"} <= fields:
            raise UserError("backend.external.command must contain {input} and {output}")
        self.cfg = cfg
        self._skims = chosen
        self._template = template
        self.calls = 0
        try:
            self.command_line(Path("in"), Path("out"), Path("cfg"))
        except ValueError as exc:  # e.g. an unbalanced quote
            raise UserError(f"backend.external.command: cannot split into words ({exc})") from None

    @property
    def skims(self) -> tuple[str, ...]:
        return self._skims

    def command_line(self, input_path: Path, output_path: Path, config_path: Path) -> list[str]:
        values = {
            "input": str(input_path),
            "output": str(output_path),
            "skims": ",".join(self._skims),
            "seed": str(self.cfg.seed),
            "config": str(config_path),
            "conditions": self.cfg.conditions,
        }
        filled = self._template.format(**{k: shlex.quote(v) for k, v in values.items()})
        return shlex.split(filled)

    def simulate(self, batch: EventBatch) -> SimResult:
        if len(batch) == 0:
            return empty_result(len(self._skims))
        workdir = self.cfg.external.workdir
        try:
            if workdir is not None:
                workdir.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="adaptive-bkg-external-", dir=workdir))
        except OSError as exc:
            raise UserError(
                f"backend.external.workdir {workdir}: cannot create files ({exc.strerror or exc})"
            ) from None
        attempts = self.cfg.external.retries + 1
        try:
            for attempt in range(1, attempts + 1):
                try:
                    return self._run(batch, folder / f"attempt-{attempt}")
                except BatchFailed as exc:
                    if attempt == attempts:
                        raise BatchFailed(
                            f"{exc} ({attempts} attempts; backend.external.retries sets how many)"
                        ) from None
                # A grid node's hiccup (lost mount, pre-empted job) is retried after a pause.
                time.sleep(min(self.cfg.external.retry_pause_s * attempt, 60.0))
            raise AssertionError("unreachable: the last attempt returns or raises")
        finally:
            if not self.cfg.external.keep_files:
                shutil.rmtree(folder, ignore_errors=True)

    def _run(self, batch: EventBatch, folder: Path) -> SimResult:
        folder.mkdir()
        input_path, output_path = folder / "events.parquet", folder / "labels.parquet"
        config_path = folder / "backend.yaml"
        write_events(input_path, batch)
        config_path.write_text(yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False))
        argv = self.command_line(input_path, output_path, config_path)
        what = f"external command '{Path(argv[0]).name}'"
        self.calls += 1
        returncode, stderr = _run_command(argv, self.cfg.external.timeout_s, what, len(batch))
        if returncode != 0:
            lines = [line for line in stderr.splitlines() if line.strip()]
            last = lines[-1].strip() if lines else "no stderr output"
            raise BatchFailed(f"{what} failed with exit status {returncode}: {last}")
        table = _read_table(output_path, what)
        return parse_labels(table, batch.event_id, self._skims, what)


def _run_command(argv: list[str], timeout_s: float, what: str, n_events: int) -> tuple[int, str]:
    """Run without a shell in a new process group, so a timeout also ends its children."""
    try:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError:
        raise UserError(f"{what}: program not found (backend.external.command)") from None
    except PermissionError:
        raise UserError(f"{what}: not executable (backend.external.command)") from None
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the group we started, and nothing else
        process.communicate()
        raise BatchFailed(
            f"{what} timed out after {timeout_s:g} s on {n_events} events "
            "(raise backend.external.timeout_s)"
        ) from None
    except BaseException:  # Ctrl-C or an actor being cancelled: do not leave basf2 running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return process.returncode, stderr
