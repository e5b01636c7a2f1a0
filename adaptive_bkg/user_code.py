"""Loading a user's code by import path (`my_module:MyClass`): backends, skims, plugins and
stage factories, each failure one line naming the path and what went wrong."""

from __future__ import annotations

import importlib
from typing import Any

from adaptive_bkg.errors import UserError, describe


def load_object(path: str, what: str) -> Any:
    """Import `package.module:attribute` (attribute may be dotted); UserError on any failure."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UserError(f"{what} '{path}': an import path must look like my_module:MyClass")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is the user's to fix
        raise UserError(
            f"{what} '{path}': cannot import module {module_name} ({describe(exc)})"
        ) from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{what} '{path}': module {module_name} has no attribute {attribute}")
        obj = getattr(obj, part)
    return obj
