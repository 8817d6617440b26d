"""Loading and saving classification checkpoints as Hugging Face folders: text classifiers
(``AutoModelForSequenceClassification``) and image classifiers
(``AutoModelForImageClassification``).

Every model edgetune trains is saved with ``save_pretrained`` so it opens in any Hugging Face
tool. Structured pruning leaves per-layer shapes a config cannot express; such folders also hold
``edgetune-shapes.json`` (see ``edgetune.objectives.architectures``), which ``load_classifier``
applies before reading the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PreTrainedModel

from edgetune.errors import InputError
from edgetune.objectives.architectures import SHAPES_FILE, load_pruned
from edgetune.objectives.classifiers import AUTO_CLASSES, TaskKind, classifier_kinds


def load_classifier(
    folder: Path, label_names: list[str] | None = None, trust_remote_code: bool = False,
    kind: TaskKind | None = None,
) -> PreTrainedModel:
    """Load a sequence classifier with eager attention (which ONNX Runtime's fusions recognise).

    With ``label_names`` a new classification head of that size is created when the checkpoint
    has none (a base model about to be fine-tuned). ``kind`` is the classifier's: by default the
    first of ``classifier_kinds``.
    """
    if (folder / SHAPES_FILE).exists():
        return load_pruned(folder, trust_remote_code)
    return _from_pretrained(folder, label_names, trust_remote_code, kind).eval()


def load_users_classifier(folder: Path, label_names: list[str], trust_remote_code: bool = False,
                          kind: TaskKind | None = None) -> PreTrainedModel:
    """Load a user's checkpoint as fine-tuning does, refusing what would not train: a config.json
    transformers cannot build, weights it cannot read, weights of other shapes than config.json
    gives them (transformers would start them from random), or weights of another model.

    Raises:
        InputError: naming ``task.model``, the folder and what is wrong.
    """
    try:
        model, loading = _from_pretrained(folder, label_names, trust_remote_code, kind,
                                           output_loading_info=True)
    # Building a model from any config.json and reading weight files raises a zoo of errors
    # (IndexError for a vocabulary of 0, SafetensorError, ...): all of them are the folder's.
    except Exception as error:
        raise InputError("task.model", f"{folder}: transformers cannot load it as a "
                                       f"classifier ({type(error).__name__}: {error})") from error
    encoder = f"{model.base_model_prefix}."  # the weights apart from the classification head
    misfits = sorted((name, tuple(stored), tuple(expected))
                     for name, stored, expected in loading["mismatched_keys"]
                     if name.startswith(encoder))
    if misfits:
        name, stored, expected = misfits[0]
        raise InputError("task.model", f"{folder}: {len(misfits)} weights do not have the shape "
                                       f"config.json gives them, e.g. {name} is {stored}, not "
                                       f"{expected}")
    if all(name in loading["missing_keys"] for name in model.state_dict()
           if name.startswith(encoder)):
        raise InputError("task.model", f"{folder}: none of its weights belongs to the "
                                       f"{model.config.model_type} model config.json describes")
    return model.eval()


def _from_pretrained(folder: Path, label_names: list[str] | None, trust_remote_code: bool,
                     kind: TaskKind | None, **options: object) -> Any:
    kwargs: dict[str, object] = {}
    if label_names is not None:
        kwargs = {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, **kwargs)
    auto_class = AUTO_CLASSES[kind or classifier_kinds(config)[0]]
    return auto_class.from_pretrained(
        folder,
        config=config,
        attn_implementation="eager",
        trust_remote_code=trust_remote_code,
        ignore_mismatched_sizes=label_names is not None,  # a head for other labels is replaced
        use_safetensors=any(folder.glob("*.safetensors")) or None,
        **options,
    )


def save_classifier(model: PreTrainedModel, folder: Path) -> None:
    """Save ``model`` with its weights named as its modules are: transformers 5 would otherwise
    rename some families' weights back to their old checkpoint names (a ViT's ``layers.N`` to
    ``encoder.layer.N``), which ``load_pruned`` reads without renaming; transformers loads both."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        model.save_pretrained(folder, safe_serialization=True, save_original_format=False)
