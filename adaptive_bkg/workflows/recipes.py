"""Whole training runs behind `adaptive-bkg pretrain` and `finetune`: data in, checkpoint,
learning curve and metrics JSON out, each returning a typed record of what it wrote.

The step-level machinery (Trainer, epoch loops, validation) lives in `training.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.cost import CostModel
from adaptive_bkg.config import Config
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import EventBatch, read_events
from adaptive_bkg.formats.labelled import LABELLED_KIND, LabelledEvents, read_labelled
from adaptive_bkg.model import losses
from adaptive_bkg.model.checkpoint import load_checkpoint, save_checkpoint
from adaptive_bkg.model.features import bucket_edges, bucketed_batches, check_finite
from adaptive_bkg.model.fitting import (
    FitProgress,
    MaskedPdgEpoch,
    TrainingHistory,
    fit,
    fit_masked_pdg,
)
from adaptive_bkg.model.part import PartConfig, ParticleTransformer, preset
from adaptive_bkg.model.predict import resolve_device
from adaptive_bkg.model.training import Trainer, init_heads_from_prior
from adaptive_bkg.workflows.label import label_in_memory

# Whole runs (what `adaptive-bkg pretrain` / `finetune` call): data in, checkpoint + curve out.
FINETUNE_MODES: tuple[str, ...] = ("full", "head", "scratch")


@dataclass(frozen=True)
class TrainRun:
    """What a pretrain / finetune run wrote and measured."""

    checkpoint: Path
    curve_png: Path
    metrics_json: Path
    history: TrainingHistory
    mode: str  # pretrain | full | head | scratch
    n_train: int
    n_val: int
    n_parameters: int
    n_trainable: int
    wall_s: float


@dataclass(frozen=True)
class MaskedPdgRun:
    checkpoint: Path
    metrics_json: Path
    epochs: list[MaskedPdgEpoch]
    n_train: int
    n_val: int
    wall_s: float


def companion_paths(checkpoint: Path) -> tuple[Path, Path]:
    """(learning-curve PNG, metrics JSON) written next to a checkpoint."""
    checkpoint = Path(checkpoint)
    stem = checkpoint.with_suffix("") if checkpoint.suffix == ".pt" else checkpoint
    return stem.with_name(stem.name + ".curve.png"), stem.with_name(stem.name + ".metrics.json")


def _stage_times(cfg: Config) -> tuple[float, float, float]:

    t_fast, t_nn, t_slow = CostModel.from_config(cfg.backend).mean_times
    return float(t_fast), float(t_nn), float(t_slow)


def _set_threads(cfg: Config) -> None:
    # Oversubscribed intra-op threads spin: on a shared 2-core machine 1 thread ran 5x faster.
    if cfg.learner.cpu_threads is not None:
        torch.set_num_threads(cfg.learner.cpu_threads)


def _check_out(out: Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a checkpoint file name such as model.pt")
    return out


def _write_json(path: Path, payload: dict[str, Any]) -> None:

    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _history_meta(history: TrainingHistory) -> dict[str, float | int | str]:
    meta: dict[str, float | int | str] = {}
    if history.epochs:
        for skim, v in history.last.skims.items():
            meta[f"val_auc.{skim}"] = v.auc
            meta[f"val_speedup.{skim}"] = v.speedup
            meta[f"val_fraction_of_oracle.{skim}"] = v.fraction_of_oracle
    return meta


def build_trainer(
    cfg: Config,
    model: ParticleTransformer,
    n_particles: NDArray[np.int64],
    epochs: int,
    backbone_lr_factor: float = 1.0,
    freeze_backbone: bool = False,
    times: tuple[float, float, float] | None = None,
) -> Trainer:
    """A Trainer with a cosine schedule over `epochs` passes of events of these sizes."""

    lcfg = cfg.learner
    edges = bucket_edges(cfg.model.max_particles)
    steps_per_epoch = len(bucketed_batches(n_particles, lcfg.batch_size, edges))
    return Trainer(
        model,
        lcfg,
        resolve_device(cfg.model.device),
        cfg.model.max_particles,
        total_steps=steps_per_epoch * epochs,
        backbone_lr_factor=backbone_lr_factor,
        freeze_backbone=freeze_backbone,
        times=losses.StageTimes(*(times or _stage_times(cfg))),
        p_min=cfg.policy.p_min,
    )


def _train_and_save(
    cfg: Config,
    model: ParticleTransformer,
    train: LabelledEvents,
    val: LabelledEvents,
    out: Path,
    mode: str,
    epochs: int,
    extra_meta: dict[str, float | int | str],
    progress: Callable[[FitProgress], None] | None,
    backbone_lr_factor: float = 1.0,
    freeze_backbone: bool = False,
) -> TrainRun:

    start = time.perf_counter()
    out = _check_out(out)  # before training, not after it
    _set_threads(cfg)
    check_finite(train.batch)  # a NaN is named now, not after an hour of training
    check_finite(val.batch)
    times = _stage_times(cfg)
    lcfg = cfg.learner
    trainer = build_trainer(
        cfg, model, train.batch.n_particles, epochs, backbone_lr_factor, freeze_backbone, times
    )
    history = fit(
        trainer,
        train,
        val,
        epochs,
        batch_size=lcfg.batch_size,
        times=times,
        policy_cfg=cfg.policy,
        seed=lcfg.seed,
        progress=progress,
    )
    wall = time.perf_counter() - start
    meta: dict[str, float | int | str] = {
        "task": mode,
        "train_events": len(train),
        "val_events": len(val),
        "epochs": epochs,
        "steps": trainer.step,
        "loss": lcfg.loss,
        "seed": lcfg.seed,
        "max_particles": cfg.model.max_particles,
        **extra_meta,
        **_history_meta(history),
    }
    save_checkpoint(out, model.cpu(), extra=meta)
    curve, metrics = companion_paths(out)
    from adaptive_bkg.pipeline.plots import (
        plot_learning_curve,  # lazy: matplotlib only when drawing
    )

    plot_learning_curve(history, curve, title=f"{mode}: {', '.join(model.skims)}")
    pdg_head = {id(p) for p in model.pdg_head.parameters()}  # untouched without SSL
    n_trainable = sum(p.numel() for p in trainer.trainable if id(p) not in pdg_head)
    _write_json(
        metrics,
        {
            "checkpoint": out,
            "mode": mode,
            "n_train": len(train),
            "n_val": len(val),
            "n_parameters": model.n_parameters(),
            "n_trainable": n_trainable,
            "wall_s": wall,
            "stage_times_s": times,
            "meta": meta,
            "history": history.to_dict(),
        },
    )
    return TrainRun(
        out, curve, metrics, history, mode, len(train), len(val), model.n_parameters(),
        n_trainable, wall,
    )  # fmt: skip


def pretrain(
    cfg: Config,
    data: Path,
    out: Path,
    skims: Sequence[str] | None = None,
    epochs: int | None = None,
    max_events: int | None = None,
    progress: Callable[[FitProgress], None] | None = None,
) -> TrainRun:
    """Multi-skim pretraining from scratch on a labelled-events file (`cfg.model.preset`)."""

    labelled = read_labelled(data, skims)
    if max_events is not None:
        labelled = labelled.head(max_events)
    train, val = labelled.split(cfg.learner.validation_fraction or 0.1, cfg.learner.seed)
    torch.manual_seed(cfg.learner.seed)
    model = ParticleTransformer(preset(cfg.model.preset, cfg.generator), labelled.skims)
    return _train_and_save(
        cfg, model, train, val, out, "pretrain", epochs or cfg.learner.epochs,
        {"preset": cfg.model.preset, "data": str(data)}, progress,
    )  # fmt: skip


def _check_finetune_mode(mode: str, source: Path | None) -> None:
    if mode not in FINETUNE_MODES:
        raise UserError(f"unknown fine-tuning mode '{mode}' (allowed: {', '.join(FINETUNE_MODES)})")
    if source is None and mode != "scratch":
        raise UserError(f"--mode {mode} needs a checkpoint to start from (--from ckpt.pt)")


def finetune(
    cfg: Config,
    source: Path | None,
    skims: Sequence[str],
    mode: str,
    n_events: int,
    out: Path,
    data: Path | None = None,
    val_data: Path | None = None,
    val_events: int | None = None,
    epochs: int | None = None,
    expect_preset: str | None = None,
    progress: Callable[[FitProgress], None] | None = None,
    label_progress: Callable[[int], None] | None = None,
) -> TrainRun:
    """New heads for `skims` on top of a checkpoint, trained on `n_events` labelled events.

    mode: full (all parameters, backbone at lr x backbone_lr_factor), head (frozen backbone:
    feature extraction), scratch (fresh initialisation, the checkpoint's architecture or the
    preset). Events come from `data` (a random, seeded subset) or are generated and labelled;
    validation events from `val_data`, else from the rest of `data` / freshly labelled ones.
    """

    _check_finetune_mode(mode, source)
    if not skims:
        raise UserError("give at least one skim to fine-tune for (--skim NAME)")
    if n_events <= 0:
        raise UserError(f"--events must be positive, got {n_events}")
    expect = preset(expect_preset, cfg.generator) if expect_preset else None
    lcfg = cfg.learner
    frac = lcfg.validation_fraction or 0.1
    n_val = val_events or max(1, round(n_events * frac / (1.0 - frac)))
    train, val = _finetune_data(cfg, skims, n_events, n_val, data, val_data, label_progress)

    model, extra = finetune_model(cfg, source, skims, mode, expect)
    init_heads_from_prior(model, train.labels)
    return _train_and_save(
        cfg, model, train, val, out, mode, epochs or lcfg.epochs, extra, progress,
        backbone_lr_factor=lcfg.backbone_lr_factor if mode == "full" else 1.0,
        freeze_backbone=mode == "head",
    )  # fmt: skip


def finetune_model(
    cfg: Config,
    source: Path | None,
    skims: Sequence[str],
    mode: str,
    expect: PartConfig | None = None,
) -> tuple[ParticleTransformer, dict[str, float | int | str]]:
    """The model a fine-tuning `mode` starts from, with fresh heads for `skims` (seeded by
    learner.seed), and checkpoint meta describing where it came from."""

    _check_finetune_mode(mode, source)
    torch.manual_seed(cfg.learner.seed)
    extra: dict[str, float | int | str] = {"source": str(source) if source else "none"}
    if source is not None:
        loaded = load_checkpoint(source, expect_config=expect)
        config = loaded.config
        extra["source_skims"] = ",".join(loaded.skims)
        extra["source_task"] = str(loaded.meta.get("task", "unknown"))
    else:
        config = expect or preset(cfg.model.preset, cfg.generator)
    if mode == "scratch":
        return ParticleTransformer(config, tuple(skims)), extra
    model = loaded.model
    torch.manual_seed(cfg.learner.seed)
    model.replace_heads(tuple(skims))  # new, freshly initialised heads
    return model, extra


def _finetune_data(
    cfg: Config,
    skims: Sequence[str],
    n_events: int,
    n_val: int,
    data: Path | None,
    val_data: Path | None,
    label_progress: Callable[[int], None] | None,
) -> tuple[LabelledEvents, LabelledEvents]:

    val = read_labelled(val_data, skims) if val_data is not None else None
    if data is not None:
        pool = read_labelled(data, skims)
        order = np.random.default_rng(cfg.learner.seed).permutation(len(pool))
        need = n_events + (0 if val is not None else n_val)
        if len(pool) < need:
            raise UserError(
                f"{data} holds {len(pool)} events; --events {n_events} needs {need} "
                f"(training + validation): label more or lower --events"
            )
        train = pool.take(np.sort(order[:n_events]))
        if val is None:
            val = pool.take(np.sort(order[n_events:need]))
        return train, val
    need = n_events + (0 if val is not None else n_val)
    fresh = label_in_memory(cfg.generator, cfg.backend, need, skims, progress=label_progress)
    train = fresh.head(n_events)
    if val is None:
        val = fresh.take(np.arange(n_events, need))
    return train, val


def pretrain_masked_pdg(
    cfg: Config,
    data: Path,
    out: Path,
    epochs: int | None = None,
    max_events: int | None = None,
    progress: Callable[[FitProgress], None] | None = None,
) -> MaskedPdgRun:
    """Self-supervised masked-PDG pretraining on an `events` (or labelled-events) file."""

    start = time.perf_counter()
    out = _check_out(out)  # before training, not after it
    _set_threads(cfg)
    batch = read_any_events(data)
    if max_events is not None:
        batch = batch.take(np.arange(min(max_events, len(batch))))
    check_finite(batch)
    lcfg = cfg.learner
    frac = lcfg.validation_fraction or 0.1
    order = np.random.default_rng(lcfg.seed).permutation(len(batch))
    n_val = max(1, round(frac * len(batch)))
    if n_val >= len(batch):
        raise UserError(f"{len(batch)} events are too few to split off a validation set")
    train, val = batch.take(np.sort(order[n_val:])), batch.take(np.sort(order[:n_val]))
    torch.manual_seed(lcfg.seed)
    model = ParticleTransformer(preset(cfg.model.preset, cfg.generator), ())
    epochs = epochs or lcfg.epochs
    steps_per_epoch = len(
        bucketed_batches(train.n_particles, lcfg.batch_size, bucket_edges(cfg.model.max_particles))
    )
    trainer = Trainer(
        model, lcfg, resolve_device(cfg.model.device), cfg.model.max_particles,
        total_steps=steps_per_epoch * epochs,
    )  # fmt: skip
    history = fit_masked_pdg(
        trainer, train, val, epochs, batch_size=lcfg.batch_size, seed=lcfg.seed, progress=progress
    )
    wall = time.perf_counter() - start
    meta: dict[str, float | int | str] = {
        "task": "masked-pdg",
        "preset": cfg.model.preset,
        "train_events": len(train),
        "val_events": len(val),
        "epochs": epochs,
        "steps": trainer.step,
        "seed": lcfg.seed,
        "mask_fraction": lcfg.ssl_mask_fraction,
        "val_masked_accuracy": history[-1].val_accuracy,
        "data": str(data),
    }
    save_checkpoint(out, model.cpu(), extra=meta)
    _, metrics = companion_paths(out)
    _write_json(
        metrics,
        {"checkpoint": out, "meta": meta, "wall_s": wall, "epochs": [asdict(e) for e in history]},
    )
    return MaskedPdgRun(out, metrics, history, len(train), len(val), wall)


def read_any_events(path: Path) -> EventBatch:
    """The events of an `events` file or of a `labelled-events` file (labels ignored)."""

    try:
        return read_events(path)
    except UserError as exc:
        if f"found a '{LABELLED_KIND}' file" not in str(exc):
            raise
    return read_labelled(path).batch
