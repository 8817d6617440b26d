"""The task a study compresses for: a fine-tunable checkpoint, labelled data and the metric.

A task is loaded once per process; tokenized splits are kept in memory, since every stage
(training, calibration, accuracy, latency inputs) reads them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field

from edgetune.errors import InputError
from edgetune.objectives.data import DataConfig, Dataset, load_dataset
from edgetune.objectives.paths import resolve_path
from edgetune.spaces.base import Strict

Encoded = dict[str, np.ndarray]


class TaskConfig(Strict):
    """The ``task:`` section: which checkpoint, which data, how texts are tokenized."""

    model: str = Field(description="a local Hugging Face checkpoint folder, or pkg://package/folder")
    data: DataConfig
    max_length: int = Field(default=128, ge=8, le=4096)
    trust_remote_code: bool = False


@dataclass(eq=False)  # hashed by identity: `encoded` caches per task object
class Task:
    config: TaskConfig
    model_path: Path
    dataset: Dataset
    tokenizer: object = field(repr=False)

    @property
    def label_names(self) -> list[str]:
        return self.dataset.label_names

    @functools.cache  # noqa: B019 - one Task per study: the cache lives as long as the task
    def encoded(self, split: str) -> Encoded:
        """The split tokenized to ``max_length`` (padded), as int64 arrays keyed by input name."""
        texts = self.dataset.splits[split].texts
        encoding = self.tokenizer(  # type: ignore[operator]
            texts,
            truncation=True,
            padding="max_length",
            max_length=self.config.max_length,
            return_tensors="np",
        )
        return {name: np.asarray(value, dtype=np.int64) for name, value in encoding.items()}

    def labels(self, split: str) -> np.ndarray:
        return self.dataset.splits[split].labels


def load_task(config: TaskConfig, base: Path | None = None) -> Task:
    """Check the checkpoint folder, read and split the data, load the tokenizer.

    Raises:
        InputError: the model folder is missing or not a Hugging Face checkpoint, or the data is
            bad.
    """
    from transformers import AutoTokenizer

    model_path = checkpoint_folder(config.model, base)
    dataset = load_dataset(config.data, base)
    tokenizer = AutoTokenizer.from_pretrained(
        model_path, trust_remote_code=config.trust_remote_code
    )
    return Task(config=config, model_path=model_path, dataset=dataset, tokenizer=tokenizer)


def checkpoint_folder(location: str, base: Path | None = None) -> Path:
    """Resolve ``location`` to a local checkpoint folder, or say clearly why it is not one."""
    path = resolve_path(location, base, field="task.model")
    if not path.is_dir():
        raise InputError(
            "task.model",
            f"no such folder: {path} (edgetune reads local Hugging Face checkpoint folders and "
            "never downloads at run time)",
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InputError("task.model", f"{path} is not a Hugging Face checkpoint: no config.json")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as error:
        raise InputError("task.model", f"{config_file}: not valid JSON ({error})") from error
    if not model_type:
        raise InputError("task.model", f"{config_file} names no model_type")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(path.glob("*.bin"))
        if not pickled:
            raise InputError("task.model", f"{path} holds no weights (*.safetensors or *.bin)")
        for weights in pickled:
            _check_weights_only(weights)
    return path


def _check_weights_only(weights: Path) -> None:
    """Refuse, before any work, a pickled checkpoint holding anything but tensors.

    Loading a pickle may run code; ``weights_only`` refuses any object but tensors and plain
    containers (as transformers does when it loads the file later).
    """
    import pickle

    import torch

    try:
        torch.load(weights, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:
        reason = next((line.strip().rstrip(".") for line in str(error).splitlines()
                       if "GLOBAL" in line or "Unsupported" in line), type(error).__name__)
        raise InputError(
            "task.model",
            f"{weights} holds more than weights, and loading it could run code ({reason}); "
            "convert the checkpoint to safetensors",
        ) from error

