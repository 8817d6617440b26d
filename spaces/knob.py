"""A knob: one way to compress a model, declared in one place with everything edgetune needs of it.

A knob fills a slot of the recipe (``pruning``: a method; ``quantization``: a scheme; ``graph``:
the fusions; ``vocabulary``: trimming) and declares, beside each other:

- ``recipe``: what it samples into (a strict model whose discriminator field, ``method`` or
  ``scheme``, is the knob's ``name``), and ``space``: its config section
  (``space.<slot>.<name>``), whose ``sample(trial)`` returns a recipe; no space samples
  ``recipe()`` as it is;
- ``steps``: its build step for each stage it runs in (``STAGES``, in build order; compilation
  for the recipe's runtime runs between ``trim_vocabulary`` and ``fuse``), each called with the
  candidate being built (``edgetune.objectives.build.Build``), and the ``runtimes`` it can build
  for;
- what it composes with: ``PruningMethod.recovers`` (a method whose model is then recovered by
  fine-tuning), ``QuantizationScheme.fusion`` (how a scheme takes ONNX Runtime's graph fusions),
  and ``training`` (the training loops it will run, for early stopping);
- its legend in the report: ``colour``, ``symbol`` (Plotly's marker names) and ``label``.

Knobs are registered in ``edgetune.spaces.registry``; docs/knobs.md shows how to add one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgetune.spaces.base import Strict

Slot = Literal["pruning", "quantization", "graph", "vocabulary"]
Stage = Literal["prune_recover", "qat", "trim_vocabulary", "fuse", "quantize"]
STAGES: tuple[Stage, ...] = ("prune_recover", "qat", "trim_vocabulary", "fuse", "quantize")
# The stages before the ONNX export. Vocabulary trimming comes last: the training before it reads
# the original tokenizer's ids.
TORCH_STAGES: tuple[Stage, ...] = ("prune_recover", "qat", "trim_vocabulary")
# How the graph fusions compose with a recipe: all of them, all but the attention fusion, none.
FusionMode = Literal["full", "without_attention", "none"]
Step = Callable[[Any], None]  # called with the ``objectives.build.Build`` of a candidate
Phases = list[tuple[str, int]]  # (training phase, steps)
DEFAULT_RUNTIME = "onnxruntime"  # a target's runtime unless it names another
ONNX_RUNTIME_ONLY = frozenset({DEFAULT_RUNTIME})  # knobs built with ONNX Runtime's own tools


@dataclass(frozen=True, kw_only=True)
class Knob:
    slot: Slot
    name: str
    recipe: type[Strict]
    space: type[Strict] | None = None
    steps: Mapping[Stage, Step] = field(default_factory=dict)
    # (recipe, workbench) -> the training loops the knob's steps will run for that recipe
    training: Callable[[Any, Any], Phases] | None = None
    colour: str = "#7f7f7f"
    symbol: str = "circle"
    label: str | None = None  # the legend's name where the knob's own would mislead
    # The runtimes (``objectives.runtimes.RUNTIMES`` names) whose models it can build: None for
    # every runtime (the torch stages); the search samples it only for these.
    runtimes: frozenset[str] | None = None
    # Its ``quantize`` step compiles the torch checkpoint itself (PT2E quantization happens before
    # lowering): the recipe's runtime then compiles no FP32 model first.
    compiles: bool = False

    @property
    def legend(self) -> str:
        return self.label or self.name

    def runs_on(self, runtime: str) -> bool:
        return self.runtimes is None or runtime in self.runtimes


def _unchanged(model: Any, recipe: Strict, task: Any) -> Any:
    return model


@dataclass(frozen=True, kw_only=True)
class PruningMethod(Knob):
    """A pruning method: ``prune(model, recipe, task)`` edits the torch model in place and returns
    it; a method that ``recovers`` has its model fine-tuned after (``recovery`` settings)."""

    slot: Slot = "pruning"
    prune: Callable[[Any, Any, Any], Any] = _unchanged
    recovers: bool = False


def _fully_fusable(recipe: Strict) -> FusionMode:
    return "full"


@dataclass(frozen=True, kw_only=True)
class QuantizationScheme(Knob):
    """A quantization scheme: ``fusion(recipe)`` says how its recipe composes with the graph
    fusions, which run before post-training quantization."""

    slot: Slot = "quantization"
    fusion: Callable[[Any], FusionMode] = _fully_fusable
