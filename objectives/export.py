"""ONNX export of a torch classifier, in the form ONNX Runtime's transformer fusions recognise.

Two choices were measured on this machine (DESIGN §3, issue #2): eager attention, because the
SDPA export blocks the attention fusion and runs ~14% slower; and the TorchScript exporter
(``dynamo=False``), because ``optimize_model`` fuses Attention and EmbedLayerNormalization in its
graphs but not in the dynamo exporter's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import PreTrainedModel

OPSET = 17
OUTPUT = "logits"


def export_onnx(model: PreTrainedModel, input_names: list[str], path: Path,
                sequence_length: int = 16) -> Path:
    """Write ``model`` to ``path`` as one ONNX file with dynamic batch and sequence axes."""
    model = model.eval()
    example = {name: torch.ones((1, sequence_length), dtype=torch.long) for name in input_names}
    if "token_type_ids" in example:
        example["token_type_ids"] = torch.zeros_like(example["token_type_ids"])
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic_axes[OUTPUT] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            _KeywordInputs(model, input_names),
            tuple(example[name] for name in input_names),
            str(path),
            input_names=input_names,
            output_names=[OUTPUT],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


class _KeywordInputs(torch.nn.Module):
    """Feeds positional export inputs to the model by name and returns only the logits."""

    def __init__(self, model: PreTrainedModel, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs))).logits
