"""The ``target:`` section: the device a model is measured for, whatever runtime runs it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgetune.spaces.base import Strict
from edgetune.spaces.knob import DEFAULT_RUNTIME

GraphOptimization = Literal["disable", "basic", "extended", "all"]


class TargetConfig(Strict):
    """The device a candidate is timed and scored for (not searched), and the runtime every
    candidate is compiled for and run in (``objectives.runtimes.RUNTIMES``)."""

    runtime: str = Field(default=DEFAULT_RUNTIME,
                         description="onnxruntime, litert or executorch")

    threads: int = Field(default=2, ge=1, description="intra-op threads: the device's cores")
    batch_size: int = Field(default=1, ge=1)
    sequence_length: int = Field(default=128, ge=1)
    image_size: int | None = Field(
        default=None, ge=1, description="an image task's fixed input side in pixels (default: "
        "the checkpoint's image processor's)")
    graph_optimization: GraphOptimization = Field(
        default="all", description="how much the runtime may rewrite the graph when it loads it")
    device: str | None = Field(
        default=None, min_length=1, pattern=r"^[A-Za-z0-9._-]+$",
        description="the name of the measurement agent (edgetune agent --device NAME) whose "
                    "figures the trials take; this machine then only builds")
