"""Helpers tests share: writing study configs for the tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def tiny_config(model: Path, data: Path, **sections: Any) -> dict[str, Any]:
    """A study config for the tiny BERT that trains in seconds and measures in milliseconds."""
    config: dict[str, Any] = {
        "study": "tiny",
        "task": {"model": str(model), "data": {"path": str(data)}, "max_length": 32},
        "finetune": {"steps": 60, "batch_size": 16, "learning_rate": 3.0e-3},
        "target": {"threads": 1, "batch_size": 1, "sequence_length": 32},
        "measure": {"warmup": 2, "rounds": 2, "runs": 5, "inputs": 2},
        "space": {
            "pruning": {"structured": {"layers_kept": {"low": 1, "high": 2}}},
            "recovery": {"steps": {"low": 10, "high": 20, "step": 10},
                         "learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
            "quantization": {"qat": {"steps": {"low": 5, "high": 10, "step": 5}}},
        },
        "search": {"trials": 4},
    }
    for name, value in sections.items():
        config[name] = value if not isinstance(value, dict) else {**config.get(name, {}), **value}
    return config


def write_config(folder: Path, config: dict[str, Any], name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def op_counts(model: Path) -> dict[str, int]:
    """How many nodes of each operator type an ONNX file holds."""
    import collections

    import onnx

    return dict(collections.Counter(node.op_type for node in onnx.load(str(model)).graph.node))


def tiny_qat(export: str = "dynamic"):  # type: ignore[no-untyped-def]
    """A QAT recipe that trains the tiny model enough to move its weights, in seconds."""
    from edgetune.spaces.qat import QatRecipe

    return QatRecipe(steps=2, learning_rate=1e-3, export=export)
