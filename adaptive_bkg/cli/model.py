"""The model: `pretrain`, `finetune` and `export-onnx` (library code in workflows/recipes.py and
model/). Each imports torch when it runs, not at CLI start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID

from adaptive_bkg.cli.common import (
    ConfigOption,
    SetOption,
    console,
    resolve_config,
    resolve_skim_specs,
    split_skims,
    user_errors,
)
from adaptive_bkg.cli.render import epoch_progress, print_masked_pdg, print_training, progress_bar
from adaptive_bkg.errors import UserError


def _training_overrides(
    set_: list[str] | None,
    epochs: int | None,
    loss: str | None,
    seed: int | None,
    preset: str | None = None,
) -> list[str]:
    overrides = list(set_ or [])
    if epochs is not None:
        overrides.append(f"learner.epochs={epochs}")
    if loss is not None:
        overrides.append(f"learner.loss={loss}")
    if seed is not None:
        overrides.append(f"learner.seed={seed}")
    if preset is not None:
        overrides.append(f"model.preset={preset}")
    return overrides


EpochsOption = Annotated[int | None, typer.Option("--epochs", help="learner.epochs")]
LossOption = Annotated[
    str | None,
    typer.Option("--loss", help="bce | weighted-bce | focal | speedup | entropeedup"),
]
TrainSeedOption = Annotated[int | None, typer.Option("--seed", help="learner.seed")]


@user_errors
def pretrain_command(
    data: Annotated[Path, typer.Option("--data", help="labelled-events (or events) file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write (.pt).")],
    skims: Annotated[
        str | None, typer.Option("--skims", help="Comma list; default: all in --data.")
    ] = None,
    self_supervised: Annotated[
        bool,
        typer.Option(
            "--self-supervised", help="Masked-PDG pretraining on unlabelled events (no labels)."
        ),
    ] = False,
    epochs: EpochsOption = None,
    loss: LossOption = None,
    seed: TrainSeedOption = None,
    preset: Annotated[str | None, typer.Option("--preset", help="model.preset")] = None,
    max_events: Annotated[
        int | None, typer.Option("--max-events", help="Use only the first N events.")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Pretrain a model: multi-skim on labelled events, or self-supervised on events."""
    from adaptive_bkg.workflows.recipes import pretrain, pretrain_masked_pdg  # torch: start-up

    cfg = resolve_config(config, _training_overrides(set_, epochs, loss, seed, preset))
    if max_events is not None and max_events <= 0:
        raise UserError(f"--max-events must be positive, got {max_events}")
    bar, _ = progress_bar("training", 1)
    progress = epoch_progress(bar)
    with bar:
        if self_supervised:
            if skims is not None or loss is not None:
                raise UserError("--self-supervised uses no labels: drop --skims and --loss")
            ssl = pretrain_masked_pdg(cfg, data, out, max_events=max_events, progress=progress)
        else:
            cfg, names = resolve_skim_specs(cfg, split_skims(skims))
            run = pretrain(cfg, data, out, names, max_events=max_events,
                           progress=progress)  # fmt: skip
    if self_supervised:
        print_masked_pdg(ssl)
    else:
        print_training(run)


@user_errors
def finetune_command(
    skim: Annotated[str, typer.Option("--skim", help="Skim (or comma list) to add heads for.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write (.pt).")],
    source: Annotated[
        Path | None, typer.Option("--from", help="Checkpoint to start from (not for scratch).")
    ] = None,
    events: Annotated[
        int, typer.Option("--events", "-n", help="Labelled training events.")
    ] = 10_000,
    mode: Annotated[str, typer.Option("--mode", help="full | head | scratch")] = "full",
    data: Annotated[
        Path | None,
        typer.Option("--data", help="labelled-events file; default: generate and label."),
    ] = None,
    val_data: Annotated[
        Path | None, typer.Option("--val-data", help="labelled-events file for validation.")
    ] = None,
    val_events: Annotated[
        int | None, typer.Option("--val-events", help="Validation events (without --val-data).")
    ] = None,
    epochs: EpochsOption = None,
    loss: LossOption = None,
    seed: TrainSeedOption = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Refuse a checkpoint of another architecture.")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Fine-tune a checkpoint for new skims (new heads): full, head-only or from scratch."""
    from adaptive_bkg.workflows.recipes import finetune  # torch: start-up

    cfg = resolve_config(config, _training_overrides(set_, epochs, loss, seed, preset))
    cfg, names = resolve_skim_specs(cfg, split_skims(skim))
    skims = names or []
    bar, _ = progress_bar("preparing", 1)
    progress = epoch_progress(bar)

    def label_progress(done: int) -> None:
        bar.update(TaskID(0), total=events, completed=done, description="labelling")

    with bar:
        run = finetune(
            cfg, source, skims, mode, events, out, data=data, val_data=val_data,
            val_events=val_events, expect_preset=preset, progress=progress,
            label_progress=label_progress,
        )  # fmt: skip
    print_training(run)


@user_errors
def export_onnx_command(
    checkpoint: Annotated[Path, typer.Argument(help="Model checkpoint (.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 17,
) -> None:
    """Export a checkpoint to ONNX with basf2-like inputs (see docs/model.md)."""
    # torch and onnx: imported when the command runs, not at CLI start-up.
    from adaptive_bkg.model.checkpoint import load_checkpoint
    from adaptive_bkg.model.onnx_export import export_onnx

    loaded = load_checkpoint(checkpoint)
    path = export_onnx(loaded.model, out, opset=opset)
    console.print(
        f"wrote {path}: inputs features[B,N,8] (t,x,y,z,E,px,py,pz), pdg[B,N] (0 = empty), "
        f"mother[B,N], bkg_type[B] -> logits[B,{len(loaded.skims)}] for {', '.join(loaded.skims)}"
    )
