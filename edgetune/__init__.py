"""edgetune: search compression recipes for a fine-tuned transformer and ship the best on the edge.

The package is laid out by concept (docs/architecture.md):

- ``edgetune.search``: config, Optuna study, trials, Pareto front and the ``edgetune`` CLI;
- ``edgetune.spaces``: what can be tried, one module per knob, sampled into a ``Recipe``, and the
  registry of knobs (plug-ins, declared beside their build steps);
- ``edgetune.objectives``: how a recipe becomes a model file and measured numbers, through the
  runtime seam (``edgetune.objectives.runtimes``);
- ``edgetune.reports``: the HTML report people read to choose.

``edgetune.load(folder)`` runs a model ``edgetune export`` wrote.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgetune.objectives.predictor import Predictor

__version__ = "0.1.0"

# Offline and private: no model hub, no telemetry (docs/architecture.md). NNCF replaces its
# telemetry with a stub when NNCF_CI is set. Each default yields to a value the user set explicitly.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_OFFLINE": "1",
    "NNCF_CI": "1",
    "DO_NOT_TRACK": "1",
    # Quiet libraries: progress and load reports belong to edgetune's own progress display.
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' bars too
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets' (its map over a ClassLabel column)
}.items():
    os.environ.setdefault(_name, _value)

# torchao (imported by transformers and nncf) warns about optional CUDA kernels it cannot load on
# a CPU machine, and torch's pytree about enum registrations: neither concerns a user here.
for _logger in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_logger).setLevel(logging.ERROR)


def load(folder: str | Path, model_file: str | None = None,
         threads: int | None = None) -> Predictor:
    """The model ``edgetune export`` wrote to ``folder``, ready to label texts: its
    ``model.onnx``, ``model.tflite`` or ``model.pte`` unless ``model_file`` names another.

    ``predictor(["text", ...])`` returns one ``{"label", "score"}`` per text. Imported on first
    use, so ``import edgetune`` stays cheap.
    """
    from edgetune.objectives.predictor import Predictor

    return Predictor(folder, model_file, threads)
