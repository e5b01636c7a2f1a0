"""One frozen configuration tree for every command.

Sources, later wins: built-in defaults < `--config FILE` (YAML) < repeated
`--set section.key=value`.
Every field is validated; an unknown key or bad value becomes a one-line `UserError` naming the
key, the value and what is allowed. Sections are plain frozen pydantic models so that a stage
receives exactly the section it needs, typed, and nothing else.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adaptive_bkg.errors import UserError
from adaptive_bkg.physics.processes import BKG_TYPES, CROSS_SECTIONS_NB, parse_bkg_types

MAX_SEED = (1 << 63) - 1
"""Largest generator base seed (an int64 in every file that stores it)."""

MAX_BATCH_EVENTS = 100_000
"""Upper bound on a batch (run.batch_size, generator.batch_size): ~150 MiB of events in memory
and in the object store; beyond it one batch can exhaust either before any output appears."""


def fresh_seed() -> int:
    """A base seed from OS entropy: what `generator.seed: null` means (never repeats)."""
    return 1 + secrets.randbelow(MAX_SEED)


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class GeneratorConfig(Section):
    """Pythia 8 e+e- -> Upsilon(4S) / continuum / tau pairs at Belle II energies."""

    types: tuple[str, ...] = Field(default=BKG_TYPES, description="background types to generate")
    fractions: dict[str, float] | None = Field(
        default=None, description="mixture fractions per type; null = by cross section"
    )
    seed: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SEED,
        description="base seed; null = fresh from OS entropy (a production writes the drawn "
        "value to its config.yaml). Physics depends on (seed, run number, worker, restart)",
    )
    batch_size: int = Field(
        default=2000, gt=0, le=MAX_BATCH_EVENTS, description="events per Pythia call (generate)"
    )
    e_minus_gev: float = Field(default=7.004, gt=0, description="HER energy (basf2 Y4S preset)")
    e_plus_gev: float = Field(default=4.002, gt=0, description="LER energy (basf2 Y4S preset)")
    crossing_angle_rad: float = Field(default=0.083, ge=0, lt=0.5, description="full angle")
    energy_spread: bool = Field(default=True, description="Gaussian beam energy spread")
    e_minus_spread_gev: float = Field(default=5.13e-3, ge=0)
    e_plus_spread_gev: float = Field(default=2.375e-3, ge=0)
    belle2_fragmentation: bool = Field(
        default=True, description="basf2 pythia_belle2.dat continuum fragmentation settings"
    )
    tau_decays: Literal["uncorrelated", "isotropic"] = Field(
        default="uncorrelated",
        description="Pythia TauDecays:mode 3 (hadronic currents, ~1 ms/event) or 0 (old "
        "isotropic model, ~20x faster)",
    )

    @field_validator("types", mode="before")
    @classmethod
    def _types(cls, value: Any) -> tuple[str, ...]:
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
            raise ValueError(
                f"unknown background types {unknown} (allowed: {', '.join(BKG_TYPES)})"
            )
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


class CostConfig(Section):
    """Per-event cost of the three stages (backends/emulator/cost.py, docs/backends.md)."""

    file: Path | None = Field(
        default=None, description="calibrated cost YAML (adaptive-bkg calibrate); null = built-in"
    )
    ratio: tuple[float, float, float] = Field(
        default=(1.0, 1.0, 100.0), description="mean t_fast : t_NN : t_slow on the generic mixture"
    )
    t_slow_mean_s: float | None = Field(
        default=None,
        gt=0,
        description="mean slow-stage seconds per event; null = 0.1 s built-in or the file's scale",
    )
    wall_speedup: float = Field(
        default=1.0, gt=0, description="wall clock spends cost / wall_speedup real seconds"
    )

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value):
            raise ValueError("all three ratio entries must be > 0, e.g. [1, 1, 100]")
        return value


class ExternalConfig(Section):
    """A user command (e.g. a basf2 steering script) run on a Parquet file of kept events."""

    command: str = Field(
        default="", description="template with {input}, {output} (and optional {skims}, {seed})"
    )
    timeout_s: float = Field(default=3600.0, gt=0, description="kill the command after this")
    retries: int = Field(
        default=2,
        ge=0,
        le=20,
        description="retries of a batch whose command failed (exit status, timeout, no output) "
        "before the run stops",
    )
    retry_pause_s: float = Field(
        default=5.0, ge=0, description="pause before retry n: n x this, at most 60 s"
    )
    workdir: Path | None = Field(default=None, description="where to put in/out files; null = tmp")
    keep_files: bool = Field(default=False, description="keep the input/output files (debugging)")


class ReplayConfig(Section):
    """Labels looked up in a recorded, fully simulated dataset (`labels` Parquet file)."""

    path: Path | None = Field(default=None, description="labels file written by record_labels")


class BackendConfig(Section):
    """The slow stage: detector simulation + reconstruction + skims, or a stand-in for it."""

    name: str = Field(default="emulator", description="emulator | external | replay | module:Class")
    skims: tuple[str, ...] | None = Field(default=None, description="skims to evaluate; null = all")
    conditions: str = Field(default="nominal", description="emulator detector conditions")
    clock: Literal["virtual", "wall"] = "virtual"
    seed: int = Field(default=7, ge=0)
    cost: CostConfig = CostConfig()
    external: ExternalConfig = ExternalConfig()
    replay: ReplayConfig = ReplayConfig()
    plugins: tuple[str, ...] = Field(
        default=(),
        description="import paths of plugin skims/backends, loaded in every process (filled in "
        "from --skim my_module:MySkim, which then goes by the skim's name)",
    )
    plugin_path: tuple[str, ...] = Field(
        default=(), description="folders put on sys.path before the plugins are imported"
    )


class ModelConfig(Section):
    """The filter network (adaptive_bkg/model/, docs/model.md)."""

    preset: Literal["part-small", "part-2m", "part-phys-small"] = "part-small"
    checkpoint: Path | None = Field(default=None, description="start from this checkpoint")
    max_particles: int = Field(default=128, gt=0, le=1024, description="truncate beyond this")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    predict_batch_size: int = Field(default=1024, gt=0, description="events per forward pass")
    bucket_edges: tuple[int, ...] | None = Field(
        default=(16, 24, 32, 40, 48, 56, 64, 80, 96, 128),
        description="multiplicity bucket edges for batching; null = no bucketing",
    )
    bf16: bool = Field(
        default=True, description="bfloat16 autocast for inference on a GPU (ignored on CPU)"
    )

    @field_validator("bucket_edges")
    @classmethod
    def _edges(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or list(value) != sorted(set(value))):
            raise ValueError("bucket edges must be a non-empty strictly increasing list")
        if value is not None and value[0] < 1:
            raise ValueError("bucket edges must be >= 1")
        return value


# The policies of stats/sampling.py, named here: sampling imports this module, not the reverse.
POLICY_NAMES: tuple[str, ...] = (
    "sqrt-optimal",
    "identity",
    "skewed-sigmoid",
    "basf2-exp",
    "hard-cut",
    "none",
)


class PolicyConfig(Section):
    """Keep-probability policy (adaptive_bkg/stats/sampling.py, docs/statistics.md). a, b, c:
    shape parameters of skewed-sigmoid and basf2-exp; their forms and defaults are in sampling."""

    name: str = Field(
        default="sqrt-optimal",
        description=" | ".join(POLICY_NAMES) + " (hard-cut is BIASED: demonstrations only)",
    )
    p_min: float = Field(default=0.01, gt=0, le=1, description="floor on p; bounds w <= 1/p_min")
    k: float = Field(
        default=1.0, gt=0, description="sqrt-optimal p = min(1, k·sqrt(q)) before the first fit"
    )
    a: float | None = Field(default=None, gt=0, description="shape a (null = policy default)")
    b: float | None = Field(default=None, description="offset b on the logit (null = default)")
    c: float | None = Field(default=None, gt=0, description="slope c (null = policy default)")
    threshold: float = Field(default=0.5, ge=0, le=1, description="hard-cut: keep iff q > this")
    refit: bool = Field(
        default=True, description="fit() refits k / (a, b, c); false keeps the configured values"
    )
    fit_max_events: int = Field(
        default=200_000, gt=0, description="fit() uses at most this many events (subsampled)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value not in POLICY_NAMES:
            raise ValueError(f"unknown policy (allowed: {', '.join(POLICY_NAMES)})")
        return value


class LearnerConfig(Section):
    enabled: bool = True
    loss: Literal["bce", "weighted-bce", "focal", "speedup", "entropeedup"] = "bce"
    lr: float = Field(default=3e-4, gt=0)
    batch_size: int = Field(default=256, gt=0)
    replay_buffer_events: int = Field(default=50_000, gt=0)
    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    publish_every_steps: int = Field(default=20, gt=0)
    publish_every_s: float = Field(default=30.0, gt=0)
    new_head_pass_rate: float = Field(
        default=0.01, gt=0, lt=1, description="prior pass rate a new skim head starts from"
    )
    # Offline training (adaptive-bkg pretrain / finetune; training.py, recipes.py).
    epochs: int = Field(default=3, gt=0, description="passes over the training set")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW decoupled weight decay")
    grad_clip: float = Field(default=1.0, gt=0, description="max global gradient norm")
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="cosine", description="cosine decays to 0 over the run; online learning: constant"
    )
    warmup_steps: int = Field(default=50, ge=0, description="linear lr warm-up steps")
    focal_gamma: float = Field(default=2.0, ge=0, description="focal loss exponent")
    class_weights: bool = Field(
        default=False,
        description="weight positives by n_neg/n_pos per skim (weighted-bce always does)",
    )
    backbone_lr_factor: float = Field(
        default=0.1, gt=0, le=1, description="fine-tuning: backbone lr = lr x this factor"
    )
    ssl_mask_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="self-supervised: fraction of PDG ids masked"
    )
    seed: int = Field(default=0, ge=0, description="init, shuffling and masking seed")
    cpu_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch threads for offline training on CPU; null = torch's default "
        "(1 is much faster on a machine shared with other jobs)",
    )


class RunConfig(Section):
    """A production (`adaptive-bkg run`, docs/pipeline.md); the first stop condition wins."""

    skims: tuple[str, ...] = Field(
        default=("dstar-d0pi",), description="skims to produce for (default: the demo skim)"
    )
    budget: str | None = Field(
        default=None,
        description="e.g. 24h, 90m, 30s; emulated compute on the virtual clock, else wall time",
    )
    events: int | None = Field(default=None, gt=0, description="stop after this many generated")
    target_neff: float | None = Field(default=None, gt=0, description="stop at this N_eff (min)")
    batch_size: int = Field(
        default=2000,
        ge=1,
        le=MAX_BATCH_EVENTS,
        description="events per pipeline batch (2000 events are ~3 MiB in the object store)",
    )
    seed: int = Field(default=1, ge=0, description="keep-decision and learner seed")
    run_number: int = Field(
        default=0, ge=0, le=(1 << 20) - 1, description="event-id run field; new one per extension"
    )
    out: Path | None = Field(default=None, description="run directory; null = runs/<time>-<skim>")
    metrics_every_s: float = Field(default=2.0, gt=0, description="metrics.jsonl / live period")
    probe_events: int = Field(
        default=128, ge=1, description="unfiltered events per batch sent to refit the policy"
    )
    learner_max_pending: int = Field(
        default=2,
        ge=1,
        description="labelled batches queued at the learner; beyond, recorded but not trained on",
    )
    wait_for_learner: bool = Field(
        default=False,
        description="production pauses while the learner is busy, instead of skipping it",
    )
    stages: str = Field(
        default="default",
        description="stage factory: default (Pythia + backend + ParT) or module:Factory",
    )
    plots: bool = Field(default=True, description="write plots at the end of the run")


class RayConfig(Section):
    """Actors and resources of `adaptive-bkg run` (docs/cluster.md)."""

    address: str | None = Field(
        default=None, description="null = fresh local instance; auto; ray://host:port"
    )
    num_cpus: int | None = Field(default=None, gt=0, description="local instance CPUs")
    object_store_mb: int = Field(default=256, ge=64, description="local instance object store")
    generators: int = Field(default=1, ge=1, description="generator actors")
    simulators: int = Field(default=1, ge=1, description="simulate actors")
    max_in_flight: int = Field(default=4, ge=1, description="batches in flight in the pipeline")
    generator_cpus: float = Field(default=0.25, ge=0)
    filter_cpus: float = Field(default=0.5, ge=0)
    simulator_cpus: float = Field(default=0.25, ge=0)
    learner_cpus: float = Field(default=0.5, ge=0)
    use_gpu: bool | None = Field(
        default=None, description="null = filter and learner on GPU if the cluster has one"
    )


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
    return _validated(tree, overrides)


def with_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """Apply further `section.key=value` overrides to an existing config."""
    return _validated(config.model_dump(mode="json"), overrides)


def _validated(tree: dict[str, Any], overrides: Sequence[str]) -> Config:
    """Apply `overrides` to a raw config tree and validate it once; errors as one line."""
    for assignment in overrides:
        _set_override(tree, assignment)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UserError(_describe(dict(first)) + more) from None


def with_fresh_seed(config: Config) -> Config:
    """`config` with a drawn `generator.seed` if it had none, so that a production's
    config.yaml names the seed that repeats it (`run --reproduce`)."""
    if config.generator.seed is not None:
        return config
    return with_overrides(config, [f"generator.seed={fresh_seed()}"])
