"""LiteRT's quantization knobs: what the AI Edge Quantizer does to a converted ``.tflite`` model.

- ``litert-dynamic``: dynamic-range INT8, weights stored in INT8 per channel and activations
  quantized at run time (XNNPACK's dynamically quantized kernels);
- ``litert-weight-only``: INT8 weights turned back into FP32 when the model loads: a smaller file
  at FP32 speed.

Full-integer static INT8 is not offered: converted here it agreed with FP32 on ~52% of labels
(issue 21's probe), garbage rather than a trade-off. Neither scheme has settings to search.
Build steps and knob declarations: ``edgetune.objectives.litert``.
"""

from __future__ import annotations

from typing import Literal

from edgetune.spaces.base import Strict

LITERT_ONLY = frozenset({"litert"})


class LiteRtDynamic(Strict):
    scheme: Literal["litert-dynamic"] = "litert-dynamic"

    def short(self) -> str:
        return "litert-dyn-int8"


class LiteRtWeightOnly(Strict):
    scheme: Literal["litert-weight-only"] = "litert-weight-only"

    def short(self) -> str:
        return "litert-int8-weights"
