"""Where each encoder family (text encoders, and the vision transformers ViT and DeiT) keeps its
layers, attention heads and FFN neurons, and how to cut them to a smaller shape: shared by
structured pruning and by loading what it saved.

Pruned models have per-layer shapes no config can express: ``edgetune-shapes.json`` records them
beside the weights (``write_shapes``) and ``load_pruned`` rebuilds the model before reading them.
A channel-pruned CNN records the channels of its coupled layers instead (``objectives.channels``).
A model whose residual stream was narrowed (``keep_channels``) records its width as the config's
hidden size, while its heads keep their size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import prune_linear_layer

from edgetune.objectives.channels import channel_shapes, keep_channel_shapes
from edgetune.objectives.classifiers import AUTO_CLASSES, classifier_kinds
from edgetune.spaces.channels import CHANNEL_PRUNABLE

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
    head_size_field: str = "attention_head_size"  # the heads module's attribute of a head's width


_BERT = Architecture(
    encoder="encoder.layer", layers_attr="num_hidden_layers", heads_attr="num_attention_heads",
    hidden_attr="hidden_size", query="attention.self.query", key="attention.self.key",
    value="attention.self.value", attention_out="attention.output.dense",
    ffn_in="intermediate.dense", ffn_out="output.dense", heads_module="attention.self",
    heads_field="num_attention_heads",
)


# transformers 5's ViT: its reshapes split heads by head size (-1 heads), so any count runs.
_VIT = Architecture(
    encoder="layers", layers_attr="num_hidden_layers", heads_attr="num_attention_heads",
    hidden_attr="hidden_size", query="attention.q_proj", key="attention.k_proj",
    value="attention.v_proj", attention_out="attention.o_proj", ffn_in="mlp.fc1",
    ffn_out="mlp.fc2", heads_module="attention", heads_field="num_attention_heads",
    head_size_field="head_dim",
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
    "vit": ("vit", _VIT),
    "deit": ("deit", _VIT),
}


def encoder_layers(model_config: dict[str, object]) -> int | None:
    """How many encoder layers a model (its ``config.json``) has, where structured pruning knows
    its architecture."""
    known = ARCHITECTURES.get(str(model_config.get("model_type")))
    layers = model_config.get(known[1].layers_attr) if known else None
    return layers if isinstance(layers, int) else None


def write_shapes(model: PreTrainedModel, folder: Path) -> None:
    """Write, beside a saved checkpoint, the shapes ``load_pruned`` needs: an encoder's per-layer
    shapes, or a convolutional classifier's channels (``objectives.channels``)."""
    model_type = model.config.model_type
    if model_type in ARCHITECTURES:
        shapes: dict[str, object] = layer_shapes(model)
    elif model_type in CHANNEL_PRUNABLE:
        shapes = {"channels": channel_shapes(model)}
    else:
        return
    (folder / SHAPES_FILE).write_text(json.dumps(shapes, indent=2))


def load_pruned(folder: Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """Rebuild the shapes recorded in ``edgetune-shapes.json``, then read the weights."""
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    shapes = json.loads((folder / SHAPES_FILE).read_text())
    if "channels" in shapes:
        model = _from_config(config, trust_remote_code)
        keep_channel_shapes(model, shapes["channels"])
    else:
        model = _encoder_of_shapes(config, shapes["layers"], trust_remote_code)
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    model.load_state_dict(state)
    return model.eval()


def _encoder_of_shapes(config: PretrainedConfig, shapes: list[dict[str, int]],
                       trust_remote_code: bool) -> PreTrainedModel:
    attribute, arch = ARCHITECTURES[config.model_type]
    width = getattr(config, arch.hidden_attr)
    # transformers sizes heads as hidden size / head count (and refuses a hidden size the count
    # does not divide), which a narrowed residual stream no longer gives: build the model at the
    # width its heads were made at, then narrow it as it was.
    setattr(config, arch.hidden_attr, getattr(config, arch.heads_attr) * shapes[0]["head_size"])
    model = _from_config(config, trust_remote_code)
    for layer, shape in zip(encoder_layer_list(model, attribute, arch), shapes, strict=True):
        keep_heads(layer, arch, list(range(shape["heads"])), shape["head_size"])
        keep_neurons(layer, arch, list(range(shape["ffn"])))
    if width != getattr(model.config, arch.hidden_attr):
        keep_channels(model, list(range(width)))
    return model


def _from_config(config: PretrainedConfig, trust_remote_code: bool) -> PreTrainedModel:
    return AUTO_CLASSES[classifier_kinds(config)[0]].from_config(
        config, attn_implementation="eager", trust_remote_code=trust_remote_code)


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
    """The width of one head, as the attention modules hold it: hidden size / head count no longer
    gives it once the residual stream is narrowed."""
    attribute, _ = ARCHITECTURES[model.config.model_type]
    attention = encoder_layer_list(model, attribute, arch)[0].get_submodule(arch.heads_module)
    return int(getattr(attention, arch.head_size_field))


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


@dataclass(frozen=True)
class ClassifierHead:
    """Where a family's classification head reads the residual stream (the hidden width), which
    ``keep_channels`` narrows along with the encoder layers' projections."""

    reads: tuple[str, ...]  # Linear layers of the task model whose inputs have the stream's width
    writes: tuple[str, ...]  # Linear layers of the task model whose outputs have it


_ROBERTA_CLASSIFIER = ClassifierHead(reads=("classifier.dense", "classifier.out_proj"),
                                     writes=("classifier.dense",))
# By model_type: the families whose width can be pruned.
CLASSIFIER_HEADS: dict[str, ClassifierHead] = {
    "bert": ClassifierHead(reads=("bert.pooler.dense", "classifier"),
                           writes=("bert.pooler.dense",)),
    "roberta": _ROBERTA_CLASSIFIER,
    "xlm-roberta": _ROBERTA_CLASSIFIER,
    "distilbert": ClassifierHead(reads=("pre_classifier", "classifier"),
                                 writes=("pre_classifier",)),
}


def keep_channels(model: PreTrainedModel, channels: list[int]) -> None:
    """Keep only ``channels`` (sorted indices) of the residual stream, in every module that reads
    or writes it, and record the new width as the config's hidden size.

    Every ``nn.Embedding`` and ``nn.LayerNorm`` of these families is in the stream's width. The
    attention's inner width (heads × head size) and the FFN's stay as they are: Q, K, V and the
    FFN input lose input columns, the attention output and FFN output lose output rows.
    """
    attribute, arch = ARCHITECTURES[model.config.model_type]
    head = CLASSIFIER_HEADS[model.config.model_type]
    index = torch.tensor(channels)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Embedding):
            replace_module(model, name, nn.Embedding.from_pretrained(
                module.weight.detach()[:, index].clone(),
                freeze=not module.weight.requires_grad, padding_idx=module.padding_idx))
        elif isinstance(module, nn.LayerNorm):
            narrowed = nn.LayerNorm(len(channels), eps=module.eps, bias=module.bias is not None)
            narrowed.load_state_dict({k: v[index] for k, v in module.state_dict().items()})
            replace_module(model, name, narrowed)
    layers = [f"{attribute}.{arch.encoder}.{i}"
              for i in range(len(encoder_layer_list(model, attribute, arch)))]
    reads = [f"{layer}.{part}" for layer in layers
             for part in (arch.query, arch.key, arch.value, arch.ffn_in)] + list(head.reads)
    writes = [f"{layer}.{part}" for layer in layers
              for part in (arch.attention_out, arch.ffn_out)] + list(head.writes)
    for names, dim in ((reads, 1), (writes, 0)):
        for name in names:
            replace_module(model, name, prune_linear_layer(model.get_submodule(name), index, dim))
    setattr(model.config, arch.hidden_attr, len(channels))


def replace_module(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)

