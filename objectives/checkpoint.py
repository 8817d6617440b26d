"""Loading and saving classification checkpoints as Hugging Face folders.

Every model edgetune trains is saved with ``save_pretrained`` so it opens in any Hugging Face
tool. Structured pruning leaves per-layer shapes a config cannot express; such folders also hold
``edgetune-shapes.json`` (see ``edgetune.objectives.pruning``), which ``load_classifier`` applies
before reading the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from edgetune.objectives.architectures import SHAPES_FILE, load_pruned


def load_classifier(
    folder: Path, label_names: list[str] | None = None, trust_remote_code: bool = False
) -> PreTrainedModel:
    """Load a sequence classifier with eager attention (which ONNX Runtime's fusions recognise).

    With ``label_names`` a new classification head of that size is created when the checkpoint
    has none (a base model about to be fine-tuned).
    """
    if (folder / SHAPES_FILE).exists():
        return load_pruned(folder, trust_remote_code)
    kwargs: dict[str, object] = {}
    if label_names is not None:
        kwargs = {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, **kwargs)
    return AutoModelForSequenceClassification.from_pretrained(
        folder,
        config=config,
        attn_implementation="eager",
        trust_remote_code=trust_remote_code,
        ignore_mismatched_sizes=label_names is not None,  # a head for other labels is replaced
        use_safetensors=any(folder.glob("*.safetensors")) or None,
    ).eval()


def save_classifier(model: PreTrainedModel, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        model.save_pretrained(folder, safe_serialization=True)
