"""Crash-safe, self-describing Parquet files shared by events and run records.

Every file we write carries two metadata keys: what it holds (`kind`) and the schema version of
that kind. Readers check both, so a file of another kind or version fails with one clear line
instead of a KeyError deep inside a stage.

Crash safety: Parquet writes its footer only on close, so a crashed writer leaves an unreadable
file. `ShardedParquetWriter` therefore flushes each row group as a complete file (a "shard")
into `<path>.partial/`; closing merges the shards into `<path>` and removes the folder. After
a crash the folder still holds every flushed row group, and all readers here accept it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import pyarrow as pa
import pyarrow.parquet as pq

from adaptive_bkg.errors import UserError, first_line

KIND_KEY = b"adaptive_bkg.kind"
VERSION_KEY = b"adaptive_bkg.schema_version"
PARTIAL_SUFFIX = ".partial"


def with_kind(
    schema: pa.Schema, kind: str, version: int, extra: dict[str, str] | None = None
) -> pa.Schema:
    meta = {KIND_KEY: kind.encode(), VERSION_KEY: str(version).encode()}
    for key, value in (extra or {}).items():
        meta[f"adaptive_bkg.{key}".encode()] = value.encode()
    return schema.with_metadata(meta)


def partial_dir(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _shard_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise UserError(f"{path}: folder holds no .parquet files")
        return files
    if path.exists():
        return [path]
    partial = partial_dir(path)
    if partial.is_dir():
        raise UserError(
            f"{path} was not closed cleanly (crashed writer?); its flushed row groups are in "
            f"{partial}/ - pass that folder instead"
        )
    raise UserError(f"{path}: no such file")


def open_checked(path: Path, kind: str, version: int) -> pq.ParquetFile:
    """Open one Parquet file and check it holds `kind` at schema `version`."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({first_line(exc)})") from exc
    meta = pf.schema_arrow.metadata or {}
    found_kind = meta.get(KIND_KEY, b"").decode() or None
    if found_kind != kind:
        what = f"a '{found_kind}' file" if found_kind else "not an adaptive-bkg file"
        raise UserError(f"{path}: expected an adaptive-bkg '{kind}' file, found {what}")
    found_version = int(meta.get(VERSION_KEY, b"0"))
    if found_version != version:
        raise UserError(
            f"{path}: '{kind}' schema version {found_version}, this adaptive-bkg reads version "
            f"{version}; regenerate the file with this version"
        )
    return pf


Source = Path | Sequence[Path]
"""A file, a folder of shards, or an explicit list of files."""


def checked_files(path: Source, kind: str, version: int) -> list[tuple[Path, pq.ParquetFile]]:
    """All Parquet files behind `path` (a file, a folder of shards, a list), each checked."""
    files = [Path(p) for p in path] if isinstance(path, Sequence) else _shard_files(Path(path))
    return [(p, open_checked(p, kind, version)) for p in files]


def write_durable(table: pa.Table, path: Path, row_group_size: int | None = None) -> None:
    """Write `table` to `path` atomically and durably: a complete file reaches the disk (fsync)
    under a temporary name, then is renamed; a crash leaves the file whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as sink:
        pq.write_table(table, sink, row_group_size=row_group_size, compression="zstd")
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(tmp, path)


def read_table(
    path: Source, kind: str, version: int, columns: Sequence[str] | None = None
) -> pa.Table:
    tables = []
    for file_path, pf in checked_files(path, kind, version):
        try:
            tables.append(pf.read(columns=list(columns) if columns else None))
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{file_path}: corrupt Parquet data ({first_line(exc)})") from exc
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def iter_row_groups(
    path: Source, kind: str, version: int, columns: Sequence[str] | None = None
) -> Iterator[pa.Table]:
    """Stream row groups one at a time: memory stays at one row group."""
    for file_path, pf in checked_files(path, kind, version):
        for i in range(pf.num_row_groups):
            try:
                table = pf.read_row_group(i, columns=list(columns) if columns else None)
            except (pa.ArrowInvalid, OSError) as exc:
                raise UserError(f"{file_path}: corrupt row group {i} ({first_line(exc)})") from exc
            yield table


class ShardedParquetWriter:
    """Buffers tables and flushes each full row group as its own complete Parquet file.

    `close()` merges the shards into the final file (or, with `keep_shards=True`, leaves a
    folder of shards at `path`, as run records do). Until then every flushed row group
    survives a crash in `<path>.partial/`.
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        row_group_size: int = 10_000,
        keep_shards: bool = False,
        first_shard: int = 0,
    ) -> None:
        if row_group_size <= 0:
            raise UserError(f"row_group_size must be positive, got {row_group_size}")
        self.path = Path(path)
        self.schema = schema
        self.row_group_size = row_group_size
        self.keep_shards = keep_shards
        self._shard_dir = self.path if keep_shards else partial_dir(self.path)
        try:
            self._shard_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write to {self.path}: {exc.strerror or exc}") from exc
        if not os.access(self._shard_dir, os.W_OK):
            raise UserError(f"cannot write to {self.path}: permission denied")
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._next_shard = first_shard
        self.rows_written = 0
        self.closed = False

    def write(self, table: pa.Table) -> None:
        if self.closed:
            raise RuntimeError("write() after close()")
        table = table.cast(self.schema) if table.schema != self.schema else table
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= self.row_group_size:
            self._flush(self.row_group_size)

    def flush(self) -> None:
        """Write whatever is buffered as a (possibly short) row group."""
        if self._pending_rows:
            self._flush(self._pending_rows)

    def _flush(self, n_rows: int) -> None:
        merged = pa.concat_tables(self._pending)
        head, tail = merged.slice(0, n_rows), merged.slice(n_rows)
        shard = self._shard_dir / f"part-{self._next_shard:06d}.parquet"
        tmp = shard.with_suffix(".tmp")
        pq.write_table(head, tmp, row_group_size=n_rows, compression="zstd")
        os.replace(tmp, shard)  # atomic: a shard is either complete or absent
        self._next_shard += 1
        self.rows_written += n_rows
        self._pending = [tail] if tail.num_rows else []
        self._pending_rows = tail.num_rows

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self.keep_shards:
            return
        shards = sorted(self._shard_dir.glob("part-*.parquet"))
        tmp = self.path.with_name(self.path.name + ".tmp")
        with pq.ParquetWriter(tmp, self.schema, compression="zstd") as out:
            for shard in shards:
                # Each shard is one row group; rewriting keeps that row-group layout.
                out.write_table(pq.read_table(shard), row_group_size=self.row_group_size)
        os.replace(tmp, self.path)
        shutil.rmtree(self._shard_dir)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On KeyboardInterrupt or a user error we still finish cleanly: nothing flushed is lost.
        self.close()
