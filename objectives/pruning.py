"""Pruning build step: remove heads, FFN neurons and layers, or zero the smallest weights.

Structured pruning shrinks the ``nn.Linear`` layers themselves with
``transformers.pytorch_utils.prune_linear_layer`` (transformers 5 removed ``prune_heads``), so the
exported ONNX graph has smaller MatMuls. Importance is the L2 norm of the weights a head or
neuron owns. Pruned models have per-layer shapes no config can express: ``edgetune-shapes.json``
records them and ``load_pruned`` rebuilds the model before reading its weights.

Search space: ``edgetune.spaces.pruning``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel
from transformers.pytorch_utils import prune_linear_layer

from edgetune.errors import InputError
from edgetune.objectives.checkpoint import SHAPES_FILE, save_classifier
from edgetune.spaces.pruning import (
    PruningRecipe,
    PruningSpace,
    StructuredPruning,
    UnstructuredPruning,
)


@dataclass(frozen=True)
class Architecture:
    """Where an encoder family keeps the parts structured pruning edits."""

    encoder: str  # dotted path to the ModuleList of layers
    layers_attr: str  # config attribute holding the number of layers
    heads_attr: str  # config attribute holding the number of heads
    query: str
    key: str
    value: str
    attention_out: str
    ffn_in: str
    ffn_out: str
    heads_module: str  # module whose head count attribute must follow the pruning
    heads_field: str


_BERT = Architecture(
    encoder="encoder.layer", layers_attr="num_hidden_layers", heads_attr="num_attention_heads",
    query="attention.self.query", key="attention.self.key", value="attention.self.value",
    attention_out="attention.output.dense", ffn_in="intermediate.dense",
    ffn_out="output.dense", heads_module="attention.self", heads_field="num_attention_heads",
)
ARCHITECTURES: dict[str, tuple[str, Architecture]] = {
    # model_type: (attribute of the task model holding the encoder, architecture)
    "bert": ("bert", _BERT),
    "roberta": ("roberta", _BERT),
    "xlm-roberta": ("roberta", _BERT),
    "distilbert": (
        "distilbert",
        Architecture(
            encoder="transformer.layer", layers_attr="n_layers", heads_attr="n_heads",
            query="attention.q_lin", key="attention.k_lin", value="attention.v_lin",
            attention_out="attention.out_lin", ffn_in="ffn.lin1", ffn_out="ffn.lin2",
            heads_module="attention", heads_field="n_heads",
        ),
    ),
}


def check_supported(model_type: str, recipe_methods: list[str]) -> None:
    """Refuse, before any work starts, a structured-pruning search on an unknown architecture."""
    if "structured" in recipe_methods and model_type not in ARCHITECTURES:
        raise InputError(
            "space.pruning.methods",
            f"structured pruning supports {', '.join(sorted(ARCHITECTURES))}, not {model_type!r}; "
            "remove 'structured' from the methods",
        )


def check_space(model_config: dict[str, object], space: PruningSpace) -> None:
    """Refuse, before any work starts, a pruning space this model cannot take: structured pruning
    of an architecture it does not know, or more encoder layers kept than the model has."""
    model_type = str(model_config.get("model_type"))
    check_supported(model_type, space.methods)
    if "structured" in space.methods:
        layers = model_config.get(ARCHITECTURES[model_type][1].layers_attr)
        high = space.structured.layers_kept.high
        if isinstance(layers, int) and high > layers:
            raise InputError(
                "space.pruning.structured.layers_kept.high",
                f"the model has {layers} encoder layers; cannot keep up to {high}",
            )


def prune(model: PreTrainedModel, recipe: PruningRecipe) -> PreTrainedModel:
    """Apply ``recipe`` to ``model`` in place and return it.

    Unstructured pruning leaves ``torch.nn.utils.prune`` masks in place so that recovery training
    cannot regrow the zeroed weights; ``make_permanent`` removes them before saving.
    """
    if isinstance(recipe, StructuredPruning):
        return _prune_structured(model, recipe)
    if isinstance(recipe, UnstructuredPruning):
        return _prune_unstructured(model, recipe.ratio)
    return model


def save_pruned(model: PreTrainedModel, folder: Path) -> None:
    """Save with ``save_pretrained`` plus the per-layer shapes ``load_pruned`` needs."""
    save_classifier(model, folder)
    if model.config.model_type in ARCHITECTURES:
        (folder / SHAPES_FILE).write_text(json.dumps(_shapes(model), indent=2))


def load_pruned(folder: Path, trust_remote_code: bool = False) -> PreTrainedModel:
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_config(
        config, attn_implementation="eager", trust_remote_code=trust_remote_code)
    attribute, arch = ARCHITECTURES[config.model_type]
    layers = _layers(model, attribute, arch)
    for layer, shape in zip(layers, json.loads((folder / SHAPES_FILE).read_text())["layers"]):
        _keep_heads(layer, arch, list(range(shape["heads"])), shape["head_size"])
        _keep_neurons(layer, arch, list(range(shape["ffn"])))
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    model.load_state_dict(state)
    return model.eval()


def _layers(model: PreTrainedModel, attribute: str, arch: Architecture) -> nn.ModuleList:
    return model.get_submodule(f"{attribute}.{arch.encoder}")  # type: ignore[return-value]


def _head_size(model: PreTrainedModel, arch: Architecture) -> int:
    config = model.config
    hidden = getattr(config, "hidden_size", None) or config.dim
    return hidden // getattr(config, arch.heads_attr)


def _prune_structured(model: PreTrainedModel, recipe: StructuredPruning) -> PreTrainedModel:
    model_type = model.config.model_type
    check_supported(model_type, ["structured"])
    attribute, arch = ARCHITECTURES[model_type]
    layers = _layers(model, attribute, arch)
    total = len(layers)
    if recipe.layers_kept > total:
        raise InputError(
            "space.pruning.structured.layers_kept",
            f"the model has {total} layers; cannot keep {recipe.layers_kept}",
        )
    kept = sorted({int(round(i)) for i in np.linspace(0, total - 1, recipe.layers_kept)})
    encoder_parent, _, name = f"{attribute}.{arch.encoder}".rpartition(".")
    setattr(model.get_submodule(encoder_parent), name, nn.ModuleList(layers[i] for i in kept))
    setattr(model.config, arch.layers_attr, len(kept))
    head_size = _head_size(model, arch)
    for layer in _layers(model, attribute, arch):
        heads = _head_importance(layer, arch, head_size)
        keep = max(1, math.ceil(recipe.heads_kept * len(heads)))
        _keep_heads(layer, arch, sorted(np.argsort(-heads)[:keep].tolist()), head_size)
        neurons = layer.get_submodule(arch.ffn_in).weight.detach().norm(dim=1)
        keep = max(1, math.ceil(recipe.ffn_kept * len(neurons)))
        _keep_neurons(layer, arch, sorted(torch.argsort(-neurons)[:keep].tolist()))
    return model


def _head_importance(layer: nn.Module, arch: Architecture, head_size: int) -> np.ndarray:
    norms = 0.0
    for part in (arch.query, arch.key, arch.value):
        weight = layer.get_submodule(part).weight.detach()
        norms = norms + weight.view(-1, head_size, weight.shape[1]).pow(2).sum(dim=(1, 2))
    out = layer.get_submodule(arch.attention_out).weight.detach()
    norms = norms + out.view(out.shape[0], -1, head_size).pow(2).sum(dim=(0, 2))
    return norms.sqrt().numpy()


def _keep_heads(layer: nn.Module, arch: Architecture, heads: list[int], head_size: int) -> None:
    rows = torch.tensor([h * head_size + i for h in heads for i in range(head_size)])
    for part in (arch.query, arch.key, arch.value):
        _replace(layer, part, prune_linear_layer(layer.get_submodule(part), rows, dim=0))
    _replace(layer, arch.attention_out,
             prune_linear_layer(layer.get_submodule(arch.attention_out), rows, dim=1))
    attention = layer.get_submodule(arch.heads_module)
    setattr(attention, arch.heads_field, len(heads))
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = len(heads) * head_size


def _keep_neurons(layer: nn.Module, arch: Architecture, neurons: list[int]) -> None:
    index = torch.tensor(neurons)
    _replace(layer, arch.ffn_in, prune_linear_layer(layer.get_submodule(arch.ffn_in), index, 0))
    _replace(layer, arch.ffn_out, prune_linear_layer(layer.get_submodule(arch.ffn_out), index, 1))


def _replace(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _shapes(model: PreTrainedModel) -> dict[str, object]:
    attribute, arch = ARCHITECTURES[model.config.model_type]
    head_size = _head_size(model, arch)
    return {
        "layers": [
            {
                "heads": layer.get_submodule(arch.query).out_features // head_size,
                "head_size": head_size,
                "ffn": layer.get_submodule(arch.ffn_in).out_features,
            }
            for layer in _layers(model, attribute, arch)
        ]
    }


def _prune_unstructured(model: PreTrainedModel, ratio: float) -> PreTrainedModel:
    """The seed's recipe: zero the ``ratio`` smallest weights (L1) of every Linear layer."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            torch_prune.l1_unstructured(module, name="weight", amount=ratio)
    return model


def make_permanent(model: PreTrainedModel) -> PreTrainedModel:
    """Fold pruning masks into the weights (``prune.remove``), leaving plain Linear layers."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and torch_prune.is_pruned(module):
            torch_prune.remove(module, "weight")
    return model
