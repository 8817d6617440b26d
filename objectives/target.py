"""The ``target:`` section: the device a model is measured for, whatever runtime runs it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgetune.spaces.base import Strict

GraphOptimization = Literal["disable", "basic", "extended", "all"]


class TargetConfig(Strict):
    """The device a candidate is timed and scored for (not searched)."""

    threads: int = Field(default=2, ge=1, description="intra-op threads: the device's cores")
    batch_size: int = Field(default=1, ge=1)
    sequence_length: int = Field(default=128, ge=1)
    graph_optimization: GraphOptimization = Field(
        default="all", description="how much the runtime may rewrite the graph when it loads it")
