"""ONNX export: basf2-like raw inputs, parity with torch at several particle counts, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_helpers import TINY, TINY_PHYS
from typer.testing import CliRunner

from adaptive_bkg.cli import app
from adaptive_bkg.formats.events import pad_events
from adaptive_bkg.model.checkpoint import save_checkpoint
from adaptive_bkg.model.onnx_export import export_onnx
from adaptive_bkg.model.part import ParticleTransformer
from adaptive_bkg.model.predict import predict_logits
from adaptive_bkg.model.synthetic import synthetic_events

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SKIMS = ("jpsi-ll", "tau-3prong")


@pytest.fixture(scope="module", params=[TINY, TINY_PHYS], ids=["raw", "physics"])
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ParticleTransformer, Path]:
    torch.manual_seed(0)
    model = ParticleTransformer(request.param, SKIMS).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


def run_onnx(path: Path, padded) -> np.ndarray:  # type: ignore[no-untyped-def]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {
        "features": padded.features,
        "pdg": padded.pdg.astype(np.int64),
        "mother": padded.mother.astype(np.int64),
        "bkg_type": padded.bkg_type.astype(np.int64),
    }
    out: np.ndarray = session.run(["logits"], feeds)[0]
    return out


@pytest.mark.parametrize(("n_events", "mean_particles"), [(3, 8), (9, 60)])
def test_onnx_matches_torch_on_raw_inputs(exported, n_events: int, mean_particles: int) -> None:  # type: ignore[no-untyped-def]
    model, path = exported
    batch = synthetic_events(n_events, seed=mean_particles, mean_particles=mean_particles)
    batch = batch.take(np.arange(n_events))
    # an unknown PDG code must take the unknown bucket in both paths
    batch.pdg[1] = 987654
    padded = pad_events(batch, max_particles=128)
    onnx_logits = run_onnx(path, padded)
    torch_logits = predict_logits(model, batch, edges=None)
    assert onnx_logits.shape == (n_events, len(SKIMS))
    # fp32 both ways, same math modulo kernel order: observed ~2e-7
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=0)


def test_onnx_metadata_names_skims_and_inputs(exported) -> None:  # type: ignore[no-untyped-def]
    _, path = exported
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["skims"] == ",".join(SKIMS)
    assert meta["input_feature_order"] == "t,x,y,z,E,px,py,pz"
    model, _ = exported
    assert meta["model_inputs"] == model.cfg.inputs
    assert ("cms_beams" in meta) == (model.cfg.inputs == "physics")
    if model.cfg.inputs == "physics":
        assert "e_minus_gev=7.004" in meta["cms_beams"]
    assert [i.name for i in proto.graph.input] == ["features", "pdg", "mother", "bkg_type"]


def test_export_onnx_cli(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "m.pt", ParticleTransformer(TINY, SKIMS))
    runner = CliRunner()
    result = runner.invoke(app, ["export-onnx", str(ckpt), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").stat().st_size > 10_000
    assert "jpsi-ll" in result.output
    missing = runner.invoke(app, ["export-onnx", str(tmp_path / "nope.pt"), "--out", "x.onnx"])
    assert missing.exit_code == 2
    assert "not found" in missing.output
