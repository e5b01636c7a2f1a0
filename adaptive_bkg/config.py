"""One frozen configuration tree for every command.

Sources, later wins: built-in defaults < `--config FILE` (YAML) < repeated `--set section.key=value`.
Every field is validated; an unknown key or bad value becomes a one-line `UserError` naming the
key, the value and what is allowed. Sections are plain frozen pydantic models so that a stage
receives exactly the section it needs, typed, and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adaptive_bkg.errors import UserError
from adaptive_bkg.events import BKG_TYPES, CROSS_SECTIONS_NB


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class GeneratorConfig(Section):
    """Pythia 8 e+e- -> Upsilon(4S) / continuum / tau pairs at Belle II energies."""

    types: tuple[str, ...] = Field(default=BKG_TYPES, description="background types to generate")
    fractions: dict[str, float] | None = Field(
        default=None, description="mixture fractions per type; null = by cross section"
    )
    seed: int = Field(default=1, ge=1, le=900_000_000 // 4096, description="base seed")
    batch_size: int = Field(default=2000, gt=0, le=1_000_000)
    e_minus_gev: float = Field(default=7.004, gt=0, description="HER energy (basf2 Y4S preset)")
    e_plus_gev: float = Field(default=4.002, gt=0, description="LER energy (basf2 Y4S preset)")
    crossing_angle_rad: float = Field(default=0.083, ge=0, lt=0.5, description="full angle")
    energy_spread: bool = Field(default=True, description="Gaussian beam energy spread")
    e_minus_spread_gev: float = Field(default=5.13e-3, ge=0)
    e_plus_spread_gev: float = Field(default=2.375e-3, ge=0)
    belle2_fragmentation: bool = Field(
        default=True, description="basf2 pythia_belle2.dat continuum fragmentation settings"
    )

    @field_validator("types", mode="before")
    @classmethod
    def _types(cls, value: Any) -> tuple[str, ...]:
        from adaptive_bkg.events import parse_bkg_types

        if isinstance(value, str | list | tuple):
            try:
                return parse_bkg_types(value)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        raise ValueError("expected a list of background types or 'all'")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - set(BKG_TYPES))
        if unknown:
            raise ValueError(f"unknown background types {unknown} (allowed: {', '.join(BKG_TYPES)})")
        if any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("fractions must be >= 0 with a positive sum")
        return value

    def mixture(self) -> dict[str, float]:
        """Normalised fractions of the configured types."""
        raw = self.fractions or CROSS_SECTIONS_NB
        weights = {t: float(raw.get(t, 0.0)) for t in self.types}
        total = sum(weights.values())
        if total <= 0:
            raise UserError(f"generator.fractions give zero weight to all of {list(self.types)}")
        return {t: w / total for t, w in weights.items()}


class BackendConfig(Section):
    """The slow stage: detector simulation + reconstruction + skims, or a stand-in for it."""

    name: str = Field(default="emulator", description="emulator | external | replay | module:Class")
    skims: tuple[str, ...] | None = Field(default=None, description="skims to evaluate; null = all")
    conditions: str = Field(default="nominal", description="emulator detector conditions")
    clock: Literal["virtual", "wall"] = "virtual"
    seed: int = Field(default=7, ge=0)


class ModelConfig(Section):
    preset: Literal["part-small", "part-2m"] = "part-small"
    checkpoint: Path | None = Field(default=None, description="start from this checkpoint")
    max_particles: int = Field(default=128, gt=0, le=1024)
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")


class PolicyConfig(Section):
    name: str = Field(default="sqrt-optimal", description="keep-probability policy")
    p_min: float = Field(default=0.01, gt=0, le=1, description="floor on p; bounds w <= 1/p_min")


class LearnerConfig(Section):
    enabled: bool = True
    loss: Literal["bce", "weighted-bce", "focal", "speedup", "entropeedup"] = "bce"
    lr: float = Field(default=3e-4, gt=0)
    batch_size: int = Field(default=256, gt=0)
    replay_buffer_events: int = Field(default=50_000, gt=0)
    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    publish_every_steps: int = Field(default=20, gt=0)
    publish_every_s: float = Field(default=30.0, gt=0)


class RunConfig(Section):
    skims: tuple[str, ...] = Field(default=("taugeneric",), description="skims to produce for")
    budget: str | None = Field(default=None, description="e.g. 24h, 90m, 30s")
    events: int | None = Field(default=None, gt=0)
    target_neff: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=2000, ge=1)
    seed: int = Field(default=1, ge=0)
    out: Path | None = None
    metrics_every_s: float = Field(default=2.0, gt=0)


class RayConfig(Section):
    address: str | None = Field(default=None, description="null = local; auto; ray://host:port")
    num_cpus: int | None = Field(default=None, gt=0)
    object_store_mb: int = Field(default=256, ge=64)
    generators: int = Field(default=1, ge=1)
    simulators: int = Field(default=1, ge=1)
    max_in_flight: int = Field(default=4, ge=1, description="batches in flight per stage")


class Config(Section):
    generator: GeneratorConfig = GeneratorConfig()
    backend: BackendConfig = BackendConfig()
    model: ModelConfig = ModelConfig()
    policy: PolicyConfig = PolicyConfig()
    learner: LearnerConfig = LearnerConfig()
    run: RunConfig = RunConfig()
    ray: RayConfig = RayConfig()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------------
def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        section = _section_at(error["loc"][:-1])
        allowed = ", ".join(section.model_fields) if section else ""
        return f"unknown config key '{key}'" + (f" (allowed here: {allowed})" if allowed else "")
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    return f"invalid config value {key} = {value!r}: {message}"


def _section_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _set_override(tree: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise UserError(
            f"bad override '{assignment}': expected section.key=value, e.g. run.events=20000"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"bad override '{assignment}': {part} is not a section")
        node = child
    node[parts[-1]] = value


def load_config(path: Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then a YAML file, then `section.key=value` overrides; validated once."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise UserError(f"config file {path} not found") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise UserError(f"config file {path} is not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"config file {path} must hold a mapping of sections")
        tree = loaded or {}
    for assignment in overrides:
        _set_override(tree, assignment)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UserError(_describe(dict(first)) + more) from None


def with_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """Apply further `section.key=value` overrides to an existing config."""
    tree = config.model_dump(mode="json")
    for assignment in overrides:
        _set_override(tree, assignment)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise UserError(_describe(dict(exc.errors()[0]))) from None
