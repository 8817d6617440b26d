"""Width pruning: narrow the residual stream (the hidden width) of the whole model, keeping the
channels that carry the most activation on train rows, as Minitron does for LLMs (Muralidharan
et al., "Compact Language Models via Pruning and Knowledge Distillation", 2024).

A channel's importance is its mean absolute value in the output of every LayerNorm (the
embeddings' and each layer's two), over the non-padding tokens of a few train rows. Those outputs
are the residual stream as every later block reads it, so a channel they keep small is one the
model relies on little; weight norms cannot say this, since each LayerNorm rescales what it
reads. The cut itself, in every module that reads or writes the stream:
``objectives.architectures.keep_channels``. LayerNorm over fewer channels computes other
statistics, which is why the structured method recovers the narrowed model with distillation.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from edgetune.objectives.architectures import ARCHITECTURES, keep_channels


def keep_width(model: PreTrainedModel, fraction: float,
               inputs: dict[str, torch.Tensor]) -> PreTrainedModel:
    """Keep the ``fraction`` of hidden channels (at least one) most important on ``inputs``, a
    tokenized batch of train rows; edit ``model`` in place and return it."""
    _, arch = ARCHITECTURES[model.config.model_type]
    importance = channel_importance(model, inputs)
    count = max(1, round(getattr(model.config, arch.hidden_attr) * fraction))
    keep_channels(model, sorted(torch.argsort(importance, descending=True)[:count].tolist()))
    return model


@torch.no_grad()
def channel_importance(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per hidden channel, the mean |activation| of each LayerNorm's output over the real
    (non-padding) tokens of ``inputs``, summed over the LayerNorms."""
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    total = torch.zeros(())

    def add(module: nn.Module, args: object, output: torch.Tensor) -> None:
        nonlocal total
        total = total + (output.abs() * mask).sum(dim=(0, 1)) / mask.sum()

    hooks = [module.register_forward_hook(add) for module in model.modules()
             if isinstance(module, nn.LayerNorm)]
    was_training = model.training
    try:
        model.eval()
        model(**inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total
