"""Where each encoder family keeps its layers, attention heads and FFN neurons, and how to cut
them to a smaller shape: shared by structured pruning and by loading what it saved.

Pruned models have per-layer shapes no config can express: ``edgetune-shapes.json`` records them
beside the weights (``write_shapes``) and ``load_pruned`` rebuilds the model before reading them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel
from transformers.pytorch_utils import prune_linear_layer

SHAPES_FILE = "edgetune-shapes.json"  # per-layer shapes beside a structurally pruned checkpoint


@dataclass(frozen=True)
class Architecture:
    """Where an encoder family keeps the parts structured pruning edits."""

    encoder: str  # dotted path, below the task model's base attribute, to the ModuleList of layers
    layers_attr: str  # config attribute holding the number of layers
    heads_attr: str  # config attribute holding the number of heads
    hidden_attr: str  # config attribute holding the hidden size
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
    hidden_attr="hidden_size", query="attention.self.query", key="attention.self.key",
    value="attention.self.value", attention_out="attention.output.dense",
    ffn_in="intermediate.dense", ffn_out="output.dense", heads_module="attention.self",
    heads_field="num_attention_heads",
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
            hidden_attr="dim", query="attention.q_lin", key="attention.k_lin",
            value="attention.v_lin", attention_out="attention.out_lin", ffn_in="ffn.lin1",
            ffn_out="ffn.lin2", heads_module="attention", heads_field="n_heads",
        ),
    ),
}


def encoder_layers(model_config: dict[str, object]) -> int | None:
    """How many encoder layers a model (its ``config.json``) has, where structured pruning knows
    its architecture."""
    known = ARCHITECTURES.get(str(model_config.get("model_type")))
    layers = model_config.get(known[1].layers_attr) if known else None
    return layers if isinstance(layers, int) else None


def write_shapes(model: PreTrainedModel, folder: Path) -> None:
    """Write, beside a saved checkpoint, the per-layer shapes ``load_pruned`` needs."""
    if model.config.model_type in ARCHITECTURES:
        (folder / SHAPES_FILE).write_text(json.dumps(layer_shapes(model), indent=2))


def load_pruned(folder: Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """Rebuild the per-layer shapes recorded in ``edgetune-shapes.json``, then read the weights."""
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_config(
        config, attn_implementation="eager", trust_remote_code=trust_remote_code)
    attribute, arch = ARCHITECTURES[config.model_type]
    shapes = json.loads((folder / SHAPES_FILE).read_text())["layers"]
    for layer, shape in zip(encoder_layer_list(model, attribute, arch), shapes, strict=True):
        keep_heads(layer, arch, list(range(shape["heads"])), shape["head_size"])
        keep_neurons(layer, arch, list(range(shape["ffn"])))
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    model.load_state_dict(state)
    return model.eval()


def layer_shapes(model: PreTrainedModel) -> dict[str, list[dict[str, int]]]:
    """Heads, head size and FFN width of every encoder layer, in order."""
    attribute, arch = ARCHITECTURES[model.config.model_type]
    head_size = size_of_heads(model, arch)
    return {
        "layers": [
            {
                "heads": layer.get_submodule(arch.query).out_features // head_size,
                "head_size": head_size,
                "ffn": layer.get_submodule(arch.ffn_in).out_features,
            }
            for layer in encoder_layer_list(model, attribute, arch)
        ]
    }


def encoder_layer_list(model: PreTrainedModel, attribute: str, arch: Architecture) -> nn.ModuleList:
    return model.get_submodule(f"{attribute}.{arch.encoder}")  # type: ignore[return-value]


def set_encoder_layers(model: PreTrainedModel, attribute: str, arch: Architecture,
                layers: list[nn.Module]) -> None:
    replace_module(model, f"{attribute}.{arch.encoder}", nn.ModuleList(layers))
    setattr(model.config, arch.layers_attr, len(layers))


def size_of_heads(model: PreTrainedModel, arch: Architecture) -> int:
    config = model.config
    return getattr(config, arch.hidden_attr) // getattr(config, arch.heads_attr)


def keep_heads(layer: nn.Module, arch: Architecture, heads: list[int], head_size: int) -> None:
    rows = torch.tensor([h * head_size + i for h in heads for i in range(head_size)])
    for part in (arch.query, arch.key, arch.value):
        replace_module(layer, part, prune_linear_layer(layer.get_submodule(part), rows, dim=0))
    replace_module(layer, arch.attention_out,
             prune_linear_layer(layer.get_submodule(arch.attention_out), rows, dim=1))
    attention = layer.get_submodule(arch.heads_module)
    setattr(attention, arch.heads_field, len(heads))
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = len(heads) * head_size


def keep_neurons(layer: nn.Module, arch: Architecture, neurons: list[int]) -> None:
    index = torch.tensor(neurons)
    for part, dim in ((arch.ffn_in, 0), (arch.ffn_out, 1)):
        replace_module(layer, part, prune_linear_layer(layer.get_submodule(part), index, dim))


def replace_module(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)

