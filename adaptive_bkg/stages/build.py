"""Stage factories: how each stage's heavy objects are built, inside the process that runs it.

A factory is a small picklable object (config + skims); `orchestrate` ships it to every actor,
which calls one method to build its stage there (Pythia, torch models and backends are never
pickled). `replay` calls the same methods in one process. `run.stages=module:Factory` swaps in
a user's own factory (any class taking `(cfg, skims, learn)` with these methods).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from adaptive_bkg.backends import make_backend
from adaptive_bkg.backends.emulator.cost import CostModel
from adaptive_bkg.checkpoints import resolve_checkpoint
from adaptive_bkg.config import Config, ModelConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.generators.pythia import PythiaGenerator
from adaptive_bkg.generators.recorded import FileSource
from adaptive_bkg.interfaces import EventSource, StageFactory
from adaptive_bkg.model.checkpoint import load_checkpoint, save_checkpoint
from adaptive_bkg.model.part import preset
from adaptive_bkg.model.predict import predict_logits, resolve_device
from adaptive_bkg.model.training import Trainer, init_heads_from_prior
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.stages.filter import FilterStage
from adaptive_bkg.stages.generator import GeneratorStage
from adaptive_bkg.stages.learner import LearnerStage, MeanTimes
from adaptive_bkg.stages.simulate import SimulateStage
from adaptive_bkg.stages.types import WeightsSnapshot
from adaptive_bkg.stats.sampling import make_policy
from adaptive_bkg.user_code import load_object

if TYPE_CHECKING:
    from adaptive_bkg.backends.emulator.cost import CostModel
    from adaptive_bkg.model.checkpoint import LoadedModel
    from adaptive_bkg.model.part import ParticleTransformer


class ModelScorer:
    """`Scorer` around a ParticleTransformer: bucketed batched inference (model/predict.py)
    with the `model` section's batch size, bucket edges and bf16 setting."""

    def __init__(self, model: ParticleTransformer, device: torch.device, cfg: ModelConfig) -> None:
        self.model = model
        self.device = device
        self.cfg = cfg

    def logits(self, batch: EventBatch) -> NDArray[np.floating]:

        return predict_logits(
            self.model,
            batch,
            batch_size=self.cfg.predict_batch_size,
            device=self.device,
            max_particles=self.cfg.max_particles,
            edges=self.cfg.bucket_edges,
            autocast_bf16=self.cfg.bf16 and self.device.type == "cuda",
        )

    def load_state_dict(self, state: Any) -> None:
        self.model.load_state_dict(state)


@dataclass(frozen=True)
class DefaultStages:
    """Pythia generator (or a recorded source), the configured backend, ParT from a checkpoint.

    `source_path`: read events from this file (events or labelled-events) instead of Pythia;
    with the `replay` backend on the same labelled file this replays a recorded production.
    """

    cfg: Config
    skims: tuple[str, ...]
    learn: bool = True
    source_path: Path | None = None

    @property
    def virtual_clock(self) -> bool:
        return self.cfg.backend.name != "external" and self.cfg.backend.clock == "virtual"

    @cached_property
    def checkpoint_path(self) -> Path:
        return resolve_checkpoint(self.cfg.model.checkpoint, self.cfg.model.preset)

    @cached_property
    def cost_model(self) -> CostModel | None:
        if self.cfg.backend.name == "external":
            return None  # real compute: measured wall times

        return CostModel.from_config(self.cfg.backend)

    def _device(self) -> torch.device:

        return resolve_device(self.cfg.model.device)

    def _load(self, device: torch.device | str = "cpu") -> LoadedModel:

        loaded = load_checkpoint(
            self.checkpoint_path,
            skims=self.skims,
            new_head_skims_ok=True,
            expect_config=preset(self.cfg.model.preset, self.cfg.generator),
            device=device,
        )
        # A head for a skim the checkpoint never saw starts at the prior (zero weights, bias =
        # logit of the expected pass rate), identically in every actor: random heads rank
        # sub-percent skims worse than random for hundreds of steps (docs/training.md).
        new = [s for s in self.skims if s not in self._pretrained_skims]
        if new:
            prior = self.cfg.learner.new_head_pass_rate
            init_heads_from_prior(loaded.model, rates=[prior] * len(self.skims), skims=new)
        return loaded

    @cached_property
    def _pretrained_skims(self) -> tuple[str, ...]:

        return load_checkpoint(self.checkpoint_path).skims

    @cached_property
    def _skeleton(self) -> ParticleTransformer:
        """A CPU model of the right shape, to turn snapshots into checkpoint files."""
        return self._load().model

    def validate(self) -> None:
        # Skims, policy and backend are checked before this, without torch, by plan_run
        # (pipeline/preflight.check_stage_inputs): here only what needs the model.
        self._device()
        self._load()  # wrong or missing checkpoint -> UserError now, before any file exists

    def _times(self) -> MeanTimes:
        if self.cost_model is None:
            return MeanTimes(1e-3, 1e-3, 1e-1)  # only a prior: replaced by measured means
        return MeanTimes(*self.cost_model.mean_times)

    def generator(self, worker: int, run: int, incarnation: int = 0) -> GeneratorStage:
        source: EventSource
        if self.source_path is not None:
            source = FileSource(self.source_path)
        else:
            source = PythiaGenerator(
                self.cfg.generator,
                worker=worker,
                run=run,
                incarnation=incarnation,
                n_workers=self.cfg.ray.generators,
            )
        cost = self.cost_model.fast_cost if self.cost_model is not None else None
        return GeneratorStage(source, fast_cost=cost)

    def filter(self) -> FilterStage:
        torch.set_num_threads(max(1, int(self.cfg.ray.filter_cpus)))
        device = self._device()
        scorer = ModelScorer(self._load(device).model, device, self.cfg.model)
        nn_cost = self.cost_model.nn_cost if self.cost_model is not None else None
        return FilterStage(
            scorer,
            self.skims,
            seed=self.cfg.run.seed,
            nn_cost=nn_cost,
            probe_size=self.cfg.run.probe_events,
        )

    def simulator(self, index: int) -> SimulateStage:

        # Same backend seed in every simulator: an event's flags must not depend on which
        # actor simulated it (the emulator's flags are deterministic per seed and event id).
        backend = make_backend(self.cfg.backend, self.skims, Beams.of(self.cfg.generator))
        return SimulateStage(backend, self.skims)

    def learner(self) -> LearnerStage:

        torch.set_num_threads(max(1, int(self.cfg.ray.learner_cpus)))
        torch.manual_seed(self.cfg.learner.seed)  # the new head's initialisation
        device = self._device()
        model = self._load(device).model
        trainer = Trainer(
            model,
            self.cfg.learner,
            device,
            self.cfg.model.max_particles,
            backbone_lr_factor=self.cfg.learner.backbone_lr_factor,
            p_min=self.cfg.policy.p_min,
        )
        # The policy is fitted on q as the filter computes it: same batching, same precision.
        scorer = ModelScorer(model, device, self.cfg.model)

        def score(batch: EventBatch) -> NDArray[np.floating]:
            logits = scorer.logits(batch)
            model.train()
            return logits

        return LearnerStage(
            trainer,
            score,
            make_policy(self.cfg.policy, self.skims),
            self.skims,
            self.cfg.learner,
            self._times(),
            learn=self.learn,
            seed=self.cfg.run.seed,
            device_sync=torch.cuda.synchronize if device.type == "cuda" else None,
        )

    def save_checkpoint(self, path: Path, snapshot: WeightsSnapshot) -> None:

        if snapshot.state_dict is None:
            raise ValueError("save_checkpoint needs a snapshot with weights")
        model = self._skeleton
        model.load_state_dict(snapshot.state_dict)
        save_checkpoint(
            path,
            model,
            extra={
                "version": snapshot.version,
                "policy": json.dumps(snapshot.policy_state.to_dict()),
                "preset": self.cfg.model.preset,
            },
        )


def make_factory(cfg: Config, skims: tuple[str, ...], learn: bool) -> StageFactory:
    """The configured factory: `run.stages` = "default" or an import path module:Factory."""
    if cfg.run.stages == "default":
        return DefaultStages(cfg, skims, learn)
    factory_cls: Callable[..., StageFactory] = load_object(cfg.run.stages, "stage factory")
    if not callable(factory_cls):
        raise UserError(
            f"stage factory '{cfg.run.stages}' is not a class taking (cfg, skims, learn)"
        )
    return factory_cls(cfg, skims, learn)
