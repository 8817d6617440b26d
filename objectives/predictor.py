"""Running an exported model (``edgetune export``'s folder) on texts: ``edgetune.load(folder)``.

Example:
    >>> import edgetune
    >>> predict = edgetune.load("exports/trial-7")          # doctest: +SKIP
    >>> predict(["Shares rose after the results."])        # doctest: +SKIP
    [{'label': 'business', 'score': 0.98}]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgetune.objectives.runtimes import RUNTIMES, runtime_of
from edgetune.objectives.target import TargetConfig

LABELS_FILE = "labels.json"


class Predictor:
    """An exported model with its tokenizer: texts in, a label and its probability out.

    ``model_file`` defaults to the folder's ``model.onnx``, ``model.tflite`` or ``model.pte``, and
    may name ``model.ort`` instead; ``threads`` defaults to every core.
    """

    def __init__(self, folder: str | Path, model_file: str | None = None,
                 threads: int | None = None) -> None:
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.labels: list[str] = json.loads((self.folder / LABELS_FILE).read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        target = TargetConfig(threads=threads or os.cpu_count() or 1)
        model = self.folder / (model_file or _model_file(self.folder))
        self.session = runtime_of(model).open(model, target)

    def __call__(self, texts: str | Sequence[str]) -> list[dict[str, object]]:
        """One ``{"label", "score"}`` per text (a single string counts as one text)."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            return []
        encoded = self.tokenizer(batch, truncation=True, padding=True, return_tensors="np")
        inputs = {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}
        logits = self.session(inputs)
        probabilities = _softmax(logits)
        best = probabilities.argmax(axis=1)
        return [{"label": self.labels[i], "score": float(p[i])}
                for i, p in zip(best, probabilities)]


def _model_file(folder: Path) -> str:
    """The name of the model an export folder holds, in any runtime's format."""
    for info in RUNTIMES.values():
        if (folder / f"model{info.suffix}").is_file():
            return f"model{info.suffix}"
    raise FileNotFoundError(f"{folder} holds no model file (model.onnx, model.tflite, ...)")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
