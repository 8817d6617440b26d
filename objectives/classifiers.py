"""The two kinds of classifier edgetune compresses, text and image, and which one a checkpoint's
config makes: the auto class that builds it, for fine-tuning, loading and rebuilding a pruned
model alike."""

from __future__ import annotations

from typing import Literal

from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    PretrainedConfig,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

TaskKind = Literal["text", "image"]
AUTO_CLASSES = {"text": AutoModelForSequenceClassification,
                "image": AutoModelForImageClassification}
_ARCHITECTURE_SUFFIXES = {"text": "ForSequenceClassification", "image": "ForImageClassification"}
_MODEL_TYPES = {"text": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
                "image": MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES}


def classifier_kinds(model_config: PretrainedConfig) -> list[TaskKind]:
    """The kinds of classifier a checkpoint's config makes: the one its ``architectures`` name
    (a classifier's own checkpoint), else every kind transformers builds of its model type
    (a base model; text when it knows of none, as for remote code)."""
    named = model_config.architectures
    # A hand-edited config.json may hold anything here: loading a classifier does not need it.
    names = [name for name in named if isinstance(name, str)] if isinstance(named, list) else []
    for kind, suffix in _ARCHITECTURE_SUFFIXES.items():
        if any(name.endswith(suffix) for name in names):
            return [kind]  # type: ignore[list-item]
    return [kind for kind, types in _MODEL_TYPES.items()  # type: ignore[misc]
            if model_config.model_type in types] or ["text"]
