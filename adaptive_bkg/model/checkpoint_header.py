"""Read a checkpoint's header without torch: is this an adaptive-bkg checkpoint at all?

A `.pt` written by `torch.save` is a zip holding `<name>/data.pkl`, a pickle whose tensors are
references to storages kept beside it. Unpickling it with every tensor replaced by a
placeholder gives the plain part of the payload (format, version, skims, config) in
milliseconds, with no torch import: `run` uses it to reject a wrong `model.checkpoint` before
it imports torch (~3 CPU-s). As with `torch.load(weights_only=True)` no pickled code runs: only
the few globals a tensor payload needs are resolved, and to inert stand-ins.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

from adaptive_bkg.errors import UserError

FORMAT = "adaptive-bkg-model"
FORMAT_VERSION = 1
HINT = "give a .pt written by pretrain, finetune or run"


class _Placeholder:
    """Stands for a tensor or storage; accepts whatever it is called with."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass


def _placeholder(*args: object, **kwargs: object) -> _Placeholder:
    return _Placeholder()


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module.split(".")[0] == "torch":  # tensor rebuilders, storage types, dtypes
            return _placeholder
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a checkpoint")

    def persistent_load(self, pid: Any) -> _Placeholder:
        return _Placeholder()


def read_header(path: Path) -> dict[str, Any]:
    """The checkpoint payload with placeholders for tensors; UserError (one line) if `path` is
    missing, not a torch file, or not an adaptive-bkg checkpoint of the version this reads."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ValueError("no data.pkl")
            with archive.open(pickles[0]) as stream:
                payload = _HeaderUnpickler(stream).load()
    except (zipfile.BadZipFile, ValueError, pickle.UnpicklingError, EOFError, OSError) as exc:
        reason = "not a torch checkpoint" if isinstance(exc, zipfile.BadZipFile) else str(exc)
        raise UserError(f"{path} is not an adaptive-bkg checkpoint ({reason}); {HINT}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not an adaptive-bkg checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {payload.get('format_version')}; "
            f"this adaptive-bkg reads version {FORMAT_VERSION}"
        )
    return payload
