"""A user's own skims and backends: one identity each, their `name`.

A skim (or backend) may be given by catalogue name or by import path `my_module:MySkim`.
`resolve_plugins` runs once, before anything starts: it imports every import path, registers
the object under its `name` in this process, rewrites the config to that name and records the
import path in `backend.plugins` (and the folder it was imported from in `backend.plugin_path`).
Every other process (Ray actors, sweep workers) calls `load_plugins(cfg.backend)` before it
builds a backend, so it knows the same names. From then on only names travel: columns
(`pass_<name>`), model heads, records, summaries and plots all use the skim's `name`, so a
labelled file written with `--skim my_module:MySkim` replays and fine-tunes with the same
option (or with `--skim my-skim` once the plugin is loaded).

Import paths resolve against `sys.path` and, like `python -m`, the current directory.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from adaptive_bkg.backends import register_backend, registered_backends
from adaptive_bkg.backends.emulator.skims import Skim, register_skim
from adaptive_bkg.config import BackendConfig, Config, with_overrides
from adaptive_bkg.errors import UserError
from adaptive_bkg.user_code import load_object

_LOADED: dict[str, str] = {}  # import path -> name, in this process


def _importable_cwd() -> None:
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)  # appended: a user module never shadows an installed one


def _module_root(path: str) -> str | None:
    """The sys.path folder that `path`'s module was imported from (None: not a file)."""
    module_name = path.partition(":")[0]
    file = getattr(sys.modules.get(module_name), "__file__", None)
    if not file:
        return None
    root = Path(file).resolve().parent
    if Path(file).name == "__init__.py":
        root = root.parent
    for _ in range(module_name.count(".")):
        root = root.parent
    return str(root)


def _register(path: str) -> str:
    """Import `path`, register it (skim or backend) by its `name`; returns the name."""
    if path in _LOADED:
        return _LOADED[path]
    obj = load_object(path, "plugin")
    if (isinstance(obj, type) and issubclass(obj, Skim)) or isinstance(obj, Skim):
        skim = obj() if isinstance(obj, type) else obj
        register_skim(skim)
        name = skim.name
    else:
        # A backend: by its `name` if it has one, else its import path is its identity.
        own = getattr(obj, "name", None)
        name = own if isinstance(own, str) and own and ":" not in own else path
        if not callable(obj):
            raise UserError(f"backend '{path}' is not a class or factory taking (cfg, skims)")
        if name != path:
            if name in registered_backends() and name not in _LOADED.values():
                raise UserError(
                    f"plugin backend '{path}' is named '{name}', a built-in backend; "
                    "give it another name"
                )
            register_backend(name, obj)
    _LOADED[path] = name
    return name


def load_plugins(cfg: BackendConfig) -> None:
    """Import and register `cfg.plugins` in this process (idempotent; cheap when loaded)."""
    for folder in cfg.plugin_path:
        if folder not in sys.path:
            sys.path.append(folder)
    for path in cfg.plugins:
        _register(path)


def _recorded(cfg: Config, paths: Sequence[str]) -> Config:
    """`cfg` with `paths` (and the folders they came from) in backend.plugins/plugin_path."""
    plugins = list(cfg.backend.plugins)
    folders = list(cfg.backend.plugin_path)
    for path in paths:
        if path not in plugins:
            plugins.append(path)
        root = _module_root(path)
        if root is not None and root not in folders:
            folders.append(root)
    if plugins == list(cfg.backend.plugins) and folders == list(cfg.backend.plugin_path):
        return cfg
    overrides = [
        f"backend.plugins={json.dumps(plugins)}",
        f"backend.plugin_path={json.dumps(folders)}",
    ]
    return with_overrides(cfg, overrides)


def resolve_skims(cfg: Config, specs: Sequence[str]) -> tuple[Config, tuple[str, ...]]:
    """Skim names for `specs` (catalogue names, plugin names or import paths), and `cfg`
    with the plugins recorded so that other processes load them too."""
    _importable_cwd()
    load_plugins(cfg.backend)
    names: list[str] = []
    paths: list[str] = []
    for spec in specs:
        if ":" in spec:
            obj = load_object(spec, "skim")
            if not ((isinstance(obj, type) and issubclass(obj, Skim)) or isinstance(obj, Skim)):
                raise UserError(
                    f"skim '{spec}' is a {type(obj).__name__}, not an "
                    "adaptive_bkg.backends.emulator.skims.Skim subclass (docs/skims.md)"
                )
            names.append(_register(spec))
            paths.append(spec)
        else:
            names.append(spec)
    if len(set(names)) != len(names):
        raise UserError(f"skims {list(specs)} name the same skim twice ({', '.join(names)})")
    return _recorded(cfg, paths), tuple(names)


def resolve_plugins(cfg: Config) -> Config:
    """`cfg` with every skim and the backend given by name (run.skims, backend.skims,
    backend.name), the plugins they came from recorded in `backend.plugins`."""
    cfg, run_skims = resolve_skims(cfg, cfg.run.skims)
    overrides = []
    if run_skims != tuple(cfg.run.skims):
        overrides.append(f"run.skims={json.dumps(list(run_skims))}")
    given = cfg.backend.skims
    if given is not None:
        cfg, backend_skims = resolve_skims(cfg, given)
        if backend_skims != tuple(given):
            overrides.append(f"backend.skims={json.dumps(list(backend_skims))}")
    if ":" in cfg.backend.name:
        try:
            name = _register(cfg.backend.name)
        except UserError as exc:
            raise UserError(
                f"{exc}; registered backends: {', '.join(registered_backends())}"
            ) from None
        if name != cfg.backend.name:
            cfg = _recorded(cfg, [cfg.backend.name])
            overrides.append(f"backend.name={json.dumps(name)}")
    return with_overrides(cfg, overrides) if overrides else cfg
