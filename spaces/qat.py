"""Quantization-aware training knob: NNCF inserts fake-quantizers, the model trains with them.

QAT recovers accuracy that INT8 rounding costs, at the price of training steps. Two ways out to
ONNX Runtime (``export``):

- ``dynamic``: train with NNCF's weight quantizers only, bake the trained INT8-grid weights into
  FP32 weights, and let ONNX Runtime's per-channel dynamic INT8 put them back on the same grid
  (composes with the graph fusions: the fastest path on CPUs);
- ``qdq``: train with weight and activation quantizers and export NNCF's own
  QuantizeLinear/DequantizeLinear graph: full INT8, what INT8-only NPUs run.

Sampled as the ``qat`` quantization scheme. Build step: ``edgetune.objectives.qat``.
"""

from __future__ import annotations

from typing import Literal

import optuna
from pydantic import Field, field_validator

from edgetune.spaces.base import (
    CountRange,
    FloatRange,
    Precision,
    PrecisionSetting,
    Strict,
    resolve_precision,
    suggest_choice,
)

QatExport = Literal["dynamic", "qdq"]


class QatRecipe(Strict):
    scheme: Literal["qat"] = "qat"
    steps: int = Field(ge=1)
    learning_rate: float = Field(default=1e-5, gt=0)
    export: QatExport = "dynamic"
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout rate while training")
    batch_size: int | None = Field(default=None, ge=1,
                                   description="rows a step (None: the fine-tuning's batch size)")
    precision: Precision = Field(default="fp32", description="bf16: forward under autocast")

    def short(self) -> str:
        return f"qat{self.steps}-{self.export}"


class QatSpace(Strict):
    steps: CountRange = CountRange(low=10, high=40, step=10)
    learning_rate: FloatRange = FloatRange(low=5e-6, high=5e-5, log=True)
    export: list[QatExport] = Field(default=["dynamic", "qdq"], min_length=1)
    # Not searched: tens of steps on a fine-tuned model, as for recovery (spaces/recovery.py).
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # Not searched. 16 from benchmarks/RESULTS.md (training, QAT batch): 0.55x the time of 32
    # rows a step at the same validation accuracy.
    batch_size: int | None = Field(default=16, ge=1)
    # Not searched, as for recovery (spaces/recovery.py): 30 QAT steps under bfloat16 autocast
    # took 0.43x the time of fp32 at the same test accuracy, 1 text less on validation.
    precision: PrecisionSetting = "auto"

    @field_validator("steps")
    @classmethod
    def _trains(cls, steps: CountRange) -> CountRange:
        if steps.low < 1:
            raise ValueError("QAT needs at least 1 training step (low >= 1)")
        return steps

    def sample(self, trial: optuna.Trial) -> QatRecipe:
        return QatRecipe(
            steps=self.steps.suggest(trial, "qat.steps"),
            learning_rate=self.learning_rate.suggest(trial, "qat.learning_rate"),
            export=suggest_choice(trial, "qat.export", self.export),
            dropout=self.dropout,
            batch_size=self.batch_size,
            precision=resolve_precision(self.precision),
        )
