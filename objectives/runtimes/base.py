"""The runtime seam: what edgetune needs of an inference runtime to time, score and ship a model.

A runtime opens a model file with the target's settings (``Runtime.open``) as a ``Session`` that
runs batches of named arrays; latency (``objectives.latency``), accuracy (``objectives.accuracy``),
``edgetune bench``, the predictor and export all go through it. What edgetune knows of a runtime
without loading it (its names, file suffix, the extra that installs it, where its two sides
live) is its ``RuntimeInfo``, one line of ``objectives.runtimes.RUNTIMES`` (docs/runtimes.md).

Example:
    >>> from edgetune.objectives.runtimes import for_target
    >>> from edgetune.objectives.target import TargetConfig
    >>> for_target(TargetConfig()).name
    'onnxruntime'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.objectives.target import TargetConfig

Batch = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """One input a model takes: its name, its shape (a string or None for a dimension the model
    leaves open) and its element type (None where numpy has no match)."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: type[np.generic] | None
    type_name: str  # as the runtime names the type, for messages


class Session(ABC):
    """A model opened for inference with the target's settings."""

    @property
    @abstractmethod
    def inputs(self) -> list[InputSpec]:
        """The model's inputs, in its own order."""

    @abstractmethod
    def bind(self, batch: Batch) -> object:
        """``batch`` made ready to run: the arrays of this model's own inputs (a DistilBERT takes
        no token_type_ids), in whatever form the runtime runs fastest. Timing runs a bound batch
        again and again, so that this work stays outside the timed call."""

    @abstractmethod
    def run(self, bound: object) -> np.ndarray:
        """The model's first output (the logits) for a batch from ``bind``."""

    def __call__(self, batch: Batch) -> np.ndarray:
        return self.run(self.bind(batch))


@dataclass(frozen=True)
class RuntimeInfo:
    """A runtime as edgetune knows it before loading it."""

    name: str  # its key in configs and machine records, e.g. "onnxruntime"
    title: str  # its name for people, e.g. "ONNX Runtime"
    label: str  # how a machine key names it, e.g. "ORT"
    model_kind: str  # what it loads, for messages, e.g. "an ONNX model"
    suffix: str  # its model files' suffix, e.g. ".onnx": a file's suffix names its runtime
    session: str  # "module:Class" of its ``Runtime``: the run side, no torch
    compiler: str  # "module:function" compiling a torch checkpoint to its format: the build side
    extra: str | None = None  # the pip extra that installs it (None: installed with edgetune)
    packages: tuple[str, ...] = ()  # what that extra installs, by import name
    other_suffixes: tuple[str, ...] = ()  # of other files it runs (ONNX Runtime's ``.ort``)
    colour: str = "#7f7f7f"  # its points in the report, where a study searches runtimes

    def runs(self, model: Path) -> bool:
        return model.suffix in (self.suffix, *self.other_suffixes)


class Runtime(ABC):
    """An inference runtime: opens models, names its version, writes the files to deploy."""

    def __init__(self, info: RuntimeInfo) -> None:
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def title(self) -> str:
        return self.info.title

    @property
    def model_kind(self) -> str:
        return self.info.model_kind

    @abstractmethod
    def open(self, model: Path, target: TargetConfig) -> Session:
        """``model`` ready to run on ``target``'s threads.

        Raises:
            Exception: the runtime's own error for a file it cannot load.
        """

    @abstractmethod
    def version(self) -> str:
        """The runtime's version: latencies of different versions are never compared."""

    def files_section(self, model: Path, deploy_files: list[Path]) -> str:
        """The export README's list of ``model`` and ``deploy_files`` (Markdown items)."""
        return (f"- `{model.name}`: the model. Its inputs are the tokenizer's outputs; its output, "
                "the logits, has\n  one column per label, in the order of `labels.json`.")

    @abstractmethod
    def usage(self, model: Path, texts: str) -> str:
        """The export README's code running ``model`` on ``texts`` (a Python list literal) with
        this runtime and transformers alone, from the export folder (a test runs it)."""

    @abstractmethod
    def deploy_files(self, model: Path) -> list[Path]:
        """Write, beside ``model``, the files a deployment of it needs besides the model itself
        (a mobile format, the operator list of a reduced build); return their paths."""
