"""Running an exported model (``edgetune export``'s folder) on texts or images:
``edgetune.load(folder)``.

An image classifier's folder holds its image processor (``preprocessor_config.json``) instead of
a tokenizer; its images are prepared at the size the model's input takes, as in the study.

Example:
    >>> import edgetune
    >>> predict = edgetune.load("exports/trial-7")          # doctest: +SKIP
    >>> predict(["Shares rose after the results."])        # doctest: +SKIP
    [{'label': 'business', 'score': 0.98}]
    >>> edgetune.load("exports/photos")(["cat.jpg", Image.open("dog.png")])  # doctest: +SKIP
    [{'label': 'cat', 'score': 0.91}, {'label': 'dog', 'score': 0.87}]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgetune.objectives.images import output_size, pixel_values
from edgetune.objectives.runtimes import RUNTIMES, runtime_of
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.traceable import PIXELS

LABELS_FILE = "labels.json"
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"


class Predictor:
    """An exported model with its tokenizer or image processor: texts (or images: paths or PIL
    images) in, a label and its probability out.

    ``model_file`` defaults to the folder's ``model.onnx``, ``model.tflite`` or ``model.pte``, and
    may name ``model.ort`` instead; ``threads`` defaults to every core.
    """

    def __init__(self, folder: str | Path, model_file: str | None = None,
                 threads: int | None = None) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        self.folder = Path(folder)
        self.labels: list[str] = json.loads((self.folder / LABELS_FILE).read_text())
        target = TargetConfig(threads=threads or os.cpu_count() or 1)
        model = self.folder / (model_file or _model_file(self.folder))
        self.session = runtime_of(model).open(model, target)
        self.reads_images = (self.folder / IMAGE_PROCESSOR_FILE).is_file()
        if self.reads_images:
            self.processor = AutoImageProcessor.from_pretrained(self.folder)
            _, self.channels, self.image_size, _ = next(
                spec.shape for spec in self.session.inputs if spec.name == PIXELS)
            self.native_size = output_size(self.processor, self.channels)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)

    def __call__(self, inputs: str | Path | object | Sequence[object]) -> list[dict[str, object]]:
        """One ``{"label", "score"}`` per text, or per image (a path or a PIL image); a single
        string, path or image counts as one."""
        single = isinstance(inputs, (str, Path)) or not isinstance(inputs, Sequence)
        batch = [inputs] if single else list(inputs)  # type: ignore[arg-type]
        if not batch:
            return []
        logits = self.session(self._encode(batch))
        probabilities = _softmax(logits)
        best = probabilities.argmax(axis=1)
        return [{"label": self.labels[i], "score": float(p[i])}
                for i, p in zip(best, probabilities)]


    def _encode(self, batch: list[object]) -> dict[str, np.ndarray]:
        if self.reads_images:
            return {PIXELS: pixel_values(self.processor, batch, self.image_size, self.channels,
                                         self.native_size)}
        encoded = self.tokenizer(batch, truncation=True, padding=True, return_tensors="np")
        return {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}


def _model_file(folder: Path) -> str:
    """The name of the model an export folder holds, in any runtime's format."""
    for info in RUNTIMES.values():
        if (folder / f"model{info.suffix}").is_file():
            return f"model{info.suffix}"
    raise FileNotFoundError(f"{folder} holds no model file (model.onnx, model.tflite, ...)")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
