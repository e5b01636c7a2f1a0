"""Registry of slow-stage backends.

A backend is anything with `.skims` and `.simulate(batch) -> SimResult` (see
`adaptive_bkg.interfaces.SimulationBackend`), built by a factory `(cfg, skims) -> backend`.
Built-in names: `emulator` (parametric Belle II-like detector + skims, the default),
`external` (a user command such as a basf2 steering script), `replay` (labels looked up in a
recorded dataset). A user's own backend loads by import path: `backend.name=my_module:MyBackend`
where `MyBackend` is a class or factory called as `MyBackend(cfg, skims)`.

The beams (`cfg.generator`) reach a factory that takes a keyword `beams` (the emulator does:
its skims work in the CMS frame): `make_backend(cfg.backend, skims, beams=Beams.of(cfg.generator))`.

Factories import their module lazily, so `import adaptive_bkg.backends` stays cheap and a
backend's heavy dependencies load only when that backend is used.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from adaptive_bkg.errors import UserError, describe
from adaptive_bkg.interfaces import SimulationBackend
from adaptive_bkg.user_code import load_object

if TYPE_CHECKING:
    from adaptive_bkg.backends.emulator.skims import Skim
    from adaptive_bkg.config import BackendConfig
    from adaptive_bkg.physics.beams import Beams

BackendFactory = Callable[["BackendConfig", Sequence[str] | None], SimulationBackend]

_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `factory(cfg, skims)` available as `backend.name=<name>` (re-registering replaces)."""
    if not name or ":" in name:
        raise ValueError(f"backend name {name!r} must be non-empty and contain no ':'")
    _REGISTRY[name] = factory


def registered_backends() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def _takes_beams(factory: Callable[..., Any]) -> bool:
    try:
        return "beams" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False


def make_backend(
    cfg: BackendConfig, skims: Sequence[str] | None = None, beams: Beams | None = None
) -> SimulationBackend:
    """Build the backend `cfg.name` for `skims` (None: `cfg.skims`, and None there = all).

    `beams` (from `cfg.generator`) go to a factory that takes a keyword `beams`; None there means
    the configuration's default beams."""
    from adaptive_bkg.backends.plugins import load_plugins  # lazy: plugins imports the registry

    load_plugins(cfg)  # in a fresh process (a Ray actor): the plugins the driver resolved
    chosen = tuple(skims) if skims is not None else cfg.skims
    name = cfg.name
    if ":" in name:
        try:
            factory = load_object(name, "backend")
        except UserError as exc:
            raise UserError(
                f"{exc}; registered backends: {', '.join(registered_backends())}"
            ) from None
        if not callable(factory):
            raise UserError(f"backend '{name}' is not a class or factory taking (cfg, skims)")
    elif name in _REGISTRY:
        factory = _REGISTRY[name]
    else:
        raise UserError(
            f"unknown backend '{name}' (registered: {', '.join(registered_backends())}; "
            "or give an import path my_module:MyBackend)"
        )
    try:
        if beams is not None and _takes_beams(factory):
            backend = factory(cfg, chosen, beams=beams)
        else:
            backend = factory(cfg, chosen)
    except UserError:
        raise
    except TypeError as exc:
        if ":" not in name:
            raise  # a built-in backend: a bug, not bad input
        raise UserError(f"backend '{name}' cannot be called as {name}(cfg, skims): {exc}") from None
    except Exception as exc:
        if ":" not in name:
            raise
        # A user's plugin failing to build is the user's to fix: one line, like an import error.
        raise UserError(f"backend '{name}' failed to build: {describe(exc)[:250]}") from None
    if not isinstance(backend, SimulationBackend):
        raise UserError(
            f"backend '{name}' built a {type(backend).__name__}, which lacks .skims and "
            ".simulate(batch); see adaptive_bkg.interfaces.SimulationBackend"
        )
    return backend


def resolve_skim(name: str) -> Skim:
    """A skim by registry name (the emulator's `SKIMS`) or by import path `my_module:MySkim`.

    The emulator's `get_skims` owns both forms (an import path must give a `Skim` subclass or
    instance); this is the one-name convenience for callers outside the emulator.
    """
    from adaptive_bkg.backends.emulator.skims import get_skims  # lazy: see the module docstring

    (skim,) = get_skims([name])
    return skim


# ---------------------------------------------------------------------------------------------
def _emulator(
    cfg: BackendConfig, skims: Sequence[str] | None, beams: Beams | None = None
) -> SimulationBackend:
    from adaptive_bkg.backends.emulator import EmulatorBackend  # lazy: see the module docstring

    backend: SimulationBackend = EmulatorBackend(cfg, skims, beams)
    return backend


def _external(cfg: BackendConfig, skims: Sequence[str] | None) -> SimulationBackend:
    from adaptive_bkg.backends.external import ExternalBackend  # lazy: see the module docstring

    return ExternalBackend(cfg, skims)


def _replay(cfg: BackendConfig, skims: Sequence[str] | None) -> SimulationBackend:
    from adaptive_bkg.backends.labelled import ReplayBackend  # lazy: see the module docstring

    return ReplayBackend(cfg, skims)


register_backend("emulator", _emulator)
register_backend("external", _external)
register_backend("replay", _replay)
