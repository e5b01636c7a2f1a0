"""Every configuration key is read somewhere in the package (no setting that nothing reads).

A simple, strict-enough check: for each field of every config section, some module other than
config.py must access it as an attribute (`.name`). A key a user can set but no code reads
would silently do nothing; this test fails on such a key."""

from __future__ import annotations

import ast
from pathlib import Path

from pydantic import BaseModel

import adaptive_bkg
from adaptive_bkg.config import Config

PACKAGE = Path(adaptive_bkg.__file__).parent


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _fields(annotation, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", name))
    return out


def _attributes_read() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "config.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
    return names


def test_every_config_key_is_read() -> None:
    read = _attributes_read()
    unread = [key for key, name in _fields(Config) if name not in read]
    assert not unread, f"config keys no code reads: {unread}"
