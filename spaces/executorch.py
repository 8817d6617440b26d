"""ExecuTorch's quantization knob: INT8 through PyTorch 2 export (PT2E) with the XNNPACK quantizer.

- ``executorch-dynamic``: weights INT8 per output channel, activations quantized at run time,
  as the XNNPACK backend's dynamically quantized linear layers take them. PT2E quantizes the
  exported torch graph before it is lowered, so this scheme compiles the program itself.

Full-integer static INT8 is not offered: converted here it agreed with FP32 on ~52% of labels
(issue 21's probe). The scheme has no settings to search.
Build step and knob declaration: ``edgetune.objectives.executorch``.
"""

from __future__ import annotations

from typing import Literal

from edgetune.spaces.base import Strict

EXECUTORCH_ONLY = frozenset({"executorch"})


class ExecuTorchDynamic(Strict):
    scheme: Literal["executorch-dynamic"] = "executorch-dynamic"

    def short(self) -> str:
        return "et-dyn-int8"
