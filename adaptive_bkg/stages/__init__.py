"""Pipeline stages as plain Python classes (no Ray): generator, filter, simulate, learner, recorder.

`pipeline.orchestrate` wraps them as Ray actors; `pipeline.replay` chains them in one
process. See docs/pipeline.md.
"""

from adaptive_bkg.stages.filter import FilterStage
from adaptive_bkg.stages.generator import GeneratorStage
from adaptive_bkg.stages.learner import LearnerStage, LearnerStatus, MeanTimes
from adaptive_bkg.stages.recorder import (
    RecorderStage,
    RecorderStatus,
    load_summary,
    summarize_by_version,
    summarize_records,
)
from adaptive_bkg.stages.simulate import SimulateStage
from adaptive_bkg.stages.types import (
    Decisions,
    FilterOutput,
    GeneratedBatch,
    LabelledBatch,
    RecordBatch,
    WeightsSnapshot,
)
from adaptive_bkg.stats.sampling import sigmoid

__all__ = [
    "Decisions",
    "FilterOutput",
    "FilterStage",
    "GeneratedBatch",
    "GeneratorStage",
    "LabelledBatch",
    "LearnerStage",
    "LearnerStatus",
    "MeanTimes",
    "RecordBatch",
    "RecorderStage",
    "RecorderStatus",
    "SimulateStage",
    "WeightsSnapshot",
    "load_summary",
    "sigmoid",
    "summarize_by_version",
    "summarize_records",
]
