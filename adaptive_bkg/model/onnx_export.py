"""ONNX export with basf2-like inputs, so that the graph can run where basf2 runs.

Graph inputs (B events, N particle slots, both dynamic):
    features    float32 [B, N, 8]  t, x, y, z, E, px, py, pz (events.BASF2_FEATURE_ORDER;
                                   ns, cm, GeV as basf2's MCParticle getters give them)
    pdg         int64   [B, N]     PDG code, 0 marks an empty (padding) slot
    mother      int64   [B, N]     mother index within the event, -1 for none
    bkg_type    int64   [B]        index into events.BKG_TYPES
Output:
    logits      float32 [B, n_skims]  (skim names are in the model's metadata_props)

Everything else (PDG vocabulary lookup, charge, log/angle features, pair features, padding
mask; for physics inputs also the CMS boost, decay tree, acceptance and event shapes) happens
inside the graph; `model_inputs` and `cms_beams` in metadata_props say which. The PDG lookup
compares against the sorted vocabulary codes ([B, N, V] equality, fine for basf2's batch
sizes); attention is spelled out (no SDPA) because that exports cleanly with the TorchScript
exporter at every opset we tried.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from adaptive_bkg.errors import UserError, first_line
from adaptive_bkg.model.features import N_RESERVED_IDS, PAD_ID, UNKNOWN_ID, ModelInputs, pdg_vocab
from adaptive_bkg.model.part import ParticleTransformer

INPUT_NAMES = ("features", "pdg", "mother", "bkg_type")
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17


class Basf2InputsModel(nn.Module):
    """Raw basf2-like tensors in, logits out: the module that gets exported."""

    codes: Tensor

    def __init__(self, model: ParticleTransformer) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("codes", torch.from_numpy(pdg_vocab().codes.copy()), persistent=False)

    def vocabulary_ids(self, pdg: Tensor) -> Tensor:
        """PDG codes -> vocabulary ids by equality against the sorted codes (exportable)."""
        hit = pdg.unsqueeze(-1) == self.codes  # [B, N, V]
        position = torch.arange(self.codes.numel(), device=pdg.device) + N_RESERVED_IDS
        ids = (hit.to(torch.int64) * position).sum(-1)
        unknown = torch.full_like(ids, UNKNOWN_ID)
        ids = torch.where(hit.any(-1), ids, unknown)
        return torch.where(pdg == 0, torch.full_like(ids, PAD_ID), ids)

    def forward(self, features: Tensor, pdg: Tensor, mother: Tensor, bkg_type: Tensor) -> Tensor:
        pdg = pdg.to(torch.int64)
        mask = pdg != 0
        mother = torch.where(mask, mother.to(torch.int64), torch.full_like(pdg, -1))
        inputs = ModelInputs(
            features=features.float(),
            pdg=self.vocabulary_ids(pdg),
            mother=mother,
            mask=mask,
            bkg_type=bkg_type.to(torch.int64),
        )
        out: Tensor = self.model(inputs)
        return out


def export_onnx(model: ParticleTransformer, path: Path | str, opset: int = DEFAULT_OPSET) -> Path:
    """Export `model` (copied into math-attention, eval mode) to `path`; returns the path."""
    import onnx  # lazy: only the export needs it (~1 s to import)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_model = copy.deepcopy(model).cpu().eval()
    export_model.set_math_attention(True)
    wrapper = Basf2InputsModel(export_model).eval()
    # Example inputs: 2 events x 5 slots, the second event padded after 3 particles.
    features = torch.rand(2, 5, 8)
    pdg = torch.tensor([[211, -211, 22, 22, 111], [321, -321, 22, 0, 0]])
    mother = torch.tensor([[-1, -1, 4, 4, -1], [-1, -1, -1, -1, -1]])
    bkg_type = torch.tensor([0, 2])
    dynamic = {"features": {0: "batch", 1: "particles"}, "pdg": {0: "batch", 1: "particles"}}
    dynamic |= {"mother": {0: "batch", 1: "particles"}, "bkg_type": {0: "batch"}}
    dynamic |= {OUTPUT_NAME: {0: "batch"}}
    try:
        with warnings.catch_warnings():
            # The dynamo exporter needs onnxscript (not a dependency); the TorchScript one works
            # and warns (DeprecationWarning) that it is legacy; shape-to-int casts are intended.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                (features, pdg, mother, bkg_type),
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
                opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types; name the cause in one line
        raise UserError(
            f"ONNX export to {path} failed at opset {opset}: {first_line(exc)[:200]}"
        ) from None
    proto = onnx.load(str(path))
    entries = {"skims": ",".join(model.skims), "pdg_vocab_version": pdg_vocab().version}
    entries["input_feature_order"] = "t,x,y,z,E,px,py,pz"
    entries["model_inputs"] = model.cfg.inputs  # raw, or physics in the CMS of these beams:
    if model.cfg.inputs == "physics":
        beams = model.cfg.beams
        entries["cms_beams"] = (
            f"e_minus_gev={beams.e_minus_gev},e_plus_gev={beams.e_plus_gev},"
            f"crossing_angle_rad={beams.crossing_angle_rad}"
        )
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, str(path))
    return path
