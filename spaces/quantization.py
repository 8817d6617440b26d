"""Quantization knob: how the exported ONNX model is brought to INT8.

- ``dynamic``: ONNX Runtime quantizes weights ahead of time and activations at run time;
- ``static``: ONNX Runtime quantizes activations too, with ranges calibrated on the calibration
  split (what INT8-only edge NPUs need);
- ``qat``: quantization-aware training with NNCF (see ``edgetune.spaces.qat``).

QAT is a scheme here rather than a separate switch because it decides how the model is
quantized: sampling it beside a post-training scheme would sample settings that are then ignored.
Build step: ``edgetune.objectives.quantization``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import optuna
from pydantic import Field

from edgetune.spaces.base import Strict, suggest_choice
from edgetune.spaces.qat import QatRecipe, QatSpace

Scheme = Literal["none", "dynamic", "static", "qat"]
Calibration = Literal["minmax", "entropy", "percentile"]


class NoQuantization(Strict):
    scheme: Literal["none"] = "none"

    def short(self) -> str:
        return "fp32"


class DynamicQuantization(Strict):
    scheme: Literal["dynamic"] = "dynamic"
    per_channel: bool = False

    def short(self) -> str:
        return "dyn-int8" + ("-pc" if self.per_channel else "")


class StaticQuantization(Strict):
    scheme: Literal["static"] = "static"
    calibration: Calibration = "minmax"
    per_channel: bool = False

    def short(self) -> str:
        return f"static-int8-{self.calibration}" + ("-pc" if self.per_channel else "")


QuantizationRecipe = Annotated[
    NoQuantization | DynamicQuantization | StaticQuantization | QatRecipe,
    Field(discriminator="scheme"),
]


class DynamicSpace(Strict):
    per_channel: list[bool] = Field(default=[False, True], min_length=1)


class StaticSpace(Strict):
    calibration: list[Calibration] = Field(
        default=["minmax", "entropy", "percentile"], min_length=1
    )
    per_channel: list[bool] = Field(default=[False, True], min_length=1)


class QuantizationSpace(Strict):
    schemes: list[Scheme] = Field(default=["none", "dynamic", "static", "qat"], min_length=1)
    dynamic: DynamicSpace = DynamicSpace()
    static: StaticSpace = StaticSpace()
    qat: QatSpace = QatSpace()

    def sample(self, trial: optuna.Trial) -> QuantizationRecipe:
        scheme = suggest_choice(trial, "quantization.scheme", self.schemes)
        if scheme == "dynamic":
            return DynamicQuantization(
                per_channel=suggest_choice(
                    trial, "quantization.per_channel", self.dynamic.per_channel
                )
            )
        if scheme == "static":
            return StaticQuantization(
                calibration=suggest_choice(
                    trial, "quantization.calibration", self.static.calibration
                ),
                per_channel=suggest_choice(
                    trial, "quantization.static_per_channel", self.static.per_channel
                ),
            )
        if scheme == "qat":
            return self.qat.sample(trial)
        return NoQuantization()
