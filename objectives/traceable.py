"""A Hugging Face classifier as the module compilers trace: positional tensors in, logits out.

ONNX export, LiteRT conversion and ``torch.export`` for ExecuTorch all trace a module called with
positional tensors; a classifier takes keyword inputs and returns a ``ModelOutput``. With
``additive_mask`` the padding mask is turned into the 4-D additive mask inside the traced graph
and given to the model as such, so the graph holds none of the mask-building code transformers
runs for a 2-D mask: its ``aten.index`` with a non-integer index breaks ExecuTorch's PT2E
calibration (issue 21). The logits are the same either way (``tests/test_traceable.py``).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

MASK = "attention_mask"
PIXELS = "pixel_values"  # an image classifier's one input


class Logits(torch.nn.Module):
    """``model`` called with its inputs by name, in ``input_names``' order; returns the logits."""

    def __init__(self, model: PreTrainedModel, input_names: list[str],
                 additive_mask: bool = False) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.additive_mask = additive_mask

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.input_names, inputs))
        if self.additive_mask and MASK in named:
            keep = named[MASK][:, None, None, :].to(torch.float32)
            named[MASK] = (1.0 - keep) * torch.finfo(torch.float32).min
        return self.model(**named).logits


def example_inputs(input_names: list[str], batch_size: int, sequence_length: int,
                   image_shape: tuple[int, int, int] | None = None) -> tuple[torch.Tensor, ...]:
    """Token ids, a mask of ones and zero segment ids, or pixel values of ``image_shape``
    (channels, height, width), in ``input_names``' order: what a compiler traces the model with."""
    if input_names == [PIXELS]:
        assert image_shape is not None, "an image classifier is traced at its image size"
        return (torch.zeros((batch_size, *image_shape)),)
    shape = (batch_size, sequence_length)
    zeros = {"token_type_ids"}
    return tuple(torch.zeros(shape, dtype=torch.long) if name in zeros
                 else torch.ones(shape, dtype=torch.long) for name in input_names)
