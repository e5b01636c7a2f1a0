"""The filter network: ParT-style transformer, its inputs, losses, checkpoints and export.

Public entry points (import from the submodules; torch is imported only when they are):
- `features`: `ModelInputs`, `to_model_inputs`, `pdg_vocab`, `bucket_indices`, `bucketed_batches`
- `part`: `PartConfig`, `PRESETS`, `preset`, `ParticleTransformer`
- `losses`: `bce_loss`, `class_weighted_bce_loss`, `focal_loss`, `speedup_loss`, `entropeedup_loss`
- `checkpoint`: `save_checkpoint`, `load_checkpoint`, `LoadedModel`
- `predict`: `predict_logits`, `predict_q`, `resolve_device`
- `onnx_export`: `export_onnx`
- `synthetic`: `synthetic_events` (Pythia-free test/benchmark events)
"""
