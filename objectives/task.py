"""The task a study compresses for: a fine-tunable checkpoint, labelled data and the metric.

A task is text or image classification: the checkpoint's config says which (``task.kind`` may
state it, and must when the model type makes both). A text task reads ``input_ids`` (and the
tokenizer's other inputs) tokenized to ``max_length``; an image task reads ``pixel_values`` made
by the checkpoint's image processor at a fixed square size (``target.image_size``, by default the
processor's own), which the exported model then takes as its fixed input resolution.

A task is loaded once per process; encoded splits are kept in memory, since every stage
(training, calibration, accuracy, latency inputs) reads them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from edgetune.errors import InputError
from edgetune.objectives.checkpoint import load_users_classifier
from edgetune.objectives.classifiers import TaskKind, classifier_kinds
from edgetune.objectives.data import DataConfig, Dataset, load_dataset
from edgetune.objectives.images import output_size, pixel_values
from edgetune.objectives.metrics import ACCURACY, Metric
from edgetune.objectives.paths import resolve_path
from edgetune.spaces.base import Strict

Encoded = dict[str, np.ndarray]
A_CLASSIFIER = {"text": "a text classifier", "image": "an image classifier"}
SHORTEST = 8  # tokens: the least max_length allowed


class TaskConfig(Strict):
    """The ``task:`` section: which checkpoint, its kind, which data, how texts are tokenized,
    and the metric the first objective scores (``objectives.metrics``)."""

    model: str = Field(description="a local Hugging Face checkpoint folder, or pkg://package/folder")
    kind: TaskKind | None = Field(
        default=None, description="text or image classification (default: the checkpoint's)")
    data: DataConfig
    max_length: int = Field(default=128, ge=SHORTEST, le=4096)
    trust_remote_code: bool = False
    metric: str = Field(default=ACCURACY, description="accuracy, macro_f1 or recall:LABEL")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        Metric.parse(metric)  # InputError, not ValueError: it names the field itself
        return metric

    @property
    def metric_name(self) -> str:
        """The first objective's name: ``accuracy``, ``macro_f1`` or ``recall_<label>``."""
        return Metric.parse(self.metric).name


@dataclass(eq=False)  # hashed by identity: `encoded` caches per task object
class Task:
    config: TaskConfig
    model_path: Path
    dataset: Dataset
    tokenizer: object = field(repr=False)  # an image task's is its image processor
    kind: TaskKind = "text"
    image_size: int | None = None  # an image task's side in pixels
    channels: int = 3  # an image task's colour channels

    @property
    def label_names(self) -> list[str]:
        return self.dataset.label_names

    @functools.cache  # noqa: B019 - one Task per study: the cache lives as long as the task
    def encoded(self, split: str) -> Encoded:
        """The split's model inputs keyed by input name: texts tokenized to ``max_length``
        (padded) as int64 arrays, images as float32 ``pixel_values`` of ``image_size``."""
        if self.kind == "image":
            assert self.image_size is not None
            images = self.dataset.splits[split].images
            return {"pixel_values": pixel_values(self.tokenizer, images, self.image_size,
                                                 self.channels, self.native_size)}
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

    @functools.cached_property
    def native_size(self) -> int:
        """The side of the images an image task's processor makes by itself."""
        return output_size(self.tokenizer, self.channels)


def load_task(config: TaskConfig, base: Path | None = None,
              image_size: int | None = None) -> Task:
    """Check the checkpoint folder, read and split the data, load the tokenizer (or image
    processor), and check that the checkpoint loads as a classifier of the data's labels and runs
    on its inputs; an image task's at ``image_size`` (``target.image_size``; by default the image
    processor's output size).

    Raises:
        InputError: the model folder is missing, not a Hugging Face checkpoint, or one that does
            not load or run with its tokenizer or image processor; the data is bad, or of
            another kind than the checkpoint; or the metric's label is not one of its classes.
    """
    model_path = checkpoint_folder(config.model, base, config.trust_remote_code)
    kind, channels = _kind(config, model_path)
    dataset = load_dataset(config.data, base)
    Metric.parse(config.metric).check(dataset.label_names)
    if dataset.holds_images != (kind == "image"):
        wanted = ("images (format: image-folders, or an image_column)" if kind == "image"
                  else "texts")
        raise InputError("task.data", f"{model_path} is {A_CLASSIFIER[kind]}: its data must be "
                                      f"{wanted}")
    if kind == "text":
        if image_size is not None:
            raise InputError("target.image_size", f"{model_path} is a text classifier: it reads "
                                                  "tokens, not images; remove image_size")
        task = Task(config=config, model_path=model_path, dataset=dataset,
                    tokenizer=_load_tokenizer(model_path, config.trust_remote_code))
        _check_runs(task)
        return task
    processor = _load_image_processor(model_path, config.trust_remote_code)
    task = Task(config=config, model_path=model_path, dataset=dataset, tokenizer=processor,
                kind=kind, image_size=image_size or output_size(processor, channels),
                channels=channels)
    _check_runs_on_images(task, image_size is not None)
    return task


def checkpoint_classifier(location: str, base: Path | None,
                          trust_remote_code: bool = False) -> tuple[TaskKind, str] | None:
    """The one kind of classifier the checkpoint at ``location`` (``task.model``) makes, and its
    model type, if it makes only one kind: what a config's defaults follow when ``task.kind`` is
    unset. None when the checkpoint does not load (loading the task says why) or makes both."""
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(resolve_path(location, base, field="task.model"),
                                                  trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - any failure is reported when the task itself is loaded
        return None
    kinds = classifier_kinds(model_config)
    return (kinds[0], model_config.model_type) if len(kinds) == 1 else None


def _kind(config: TaskConfig, model_path: Path) -> tuple[TaskKind, int]:
    """The task's kind (``task.kind``, or the checkpoint's) and its images' colour channels."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(model_path,
                                              trust_remote_code=config.trust_remote_code)
    kinds = classifier_kinds(model_config)
    if config.kind is not None and config.kind not in kinds:
        raise InputError("task.kind", f"{model_path} is {A_CLASSIFIER[kinds[0]]} "
                                      f"({model_config.model_type}), not {config.kind}")
    return config.kind or kinds[0], int(getattr(model_config, "num_channels", 3))


def _load_image_processor(model_path: Path, trust_remote_code: bool) -> object:
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except Exception as error:  # OSError without the file, ValueError for an unknown one, ...
        raise InputError("task.model", f"{model_path}: transformers cannot load its image "
                                       f"processor ({type(error).__name__}: {error})") from error


def _check_runs_on_images(task: Task, size_given: bool) -> None:
    """Load the checkpoint as fine-tuning will and run it on two training images at the task's
    size: a ViT, for one, takes only the size its position embeddings were made for."""
    import torch

    model = load_users_classifier(task.model_path, task.label_names,
                                  task.config.trust_remote_code, kind="image")
    images = task.dataset.splits["train"].images[:2]
    assert task.image_size is not None
    inputs = pixel_values(task.tokenizer, images, task.image_size, task.channels,
                          task.native_size)
    try:
        with torch.no_grad():
            model(pixel_values=torch.from_numpy(inputs))
    except Exception as error:  # any: with trust_remote_code, the code is the checkpoint's own
        field = "target.image_size" if size_given else "task.model"
        raise InputError(field, f"{task.model_path}: the model fails on {task.image_size}x"
                                f"{task.image_size} images ({type(error).__name__}: "
                                f"{error})") from error


def _load_tokenizer(model_path: Path, trust_remote_code: bool) -> object:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except Exception as error:  # the tokenizers library raises a bare Exception, among others
        raise InputError("task.model", f"{model_path}: transformers cannot load its tokenizer "
                                       f"({type(error).__name__}: {error})") from error


def _check_runs(task: Task) -> None:
    """Load the checkpoint as fine-tuning will and run it on two training texts: the tokenizer's
    ids must be ones the model embeds, and the model must take ``max_length`` tokens."""
    model = load_users_classifier(task.model_path, task.label_names,
                                  task.config.trust_remote_code, kind="text")
    embedded = model.get_input_embeddings().num_embeddings
    highest = max(task.tokenizer.get_vocab().values())  # type: ignore[attr-defined]
    if highest >= embedded:
        raise InputError("task.model", f"{task.model_path}: its tokenizer gives ids up to "
                                       f"{highest}, but the model embeds {embedded} tokens: the "
                                       "tokenizer belongs to another model")
    texts = task.dataset.splits["train"].texts[:2]
    failure = _failure(model, task.tokenizer, texts, task.config.max_length)
    if failure is None:
        return
    if _failure(model, task.tokenizer, texts, SHORTEST) is None:
        raise InputError("task.max_length", f"{task.model_path}: the model runs on {SHORTEST} "
                                            f"tokens, not on {task.config.max_length} ({failure})")
    raise InputError("task.model", f"{task.model_path}: the model fails on its tokenizer's "
                                   f"inputs ({failure})")


def _failure(model: object, tokenizer: object, texts: list[str], length: int) -> str | None:
    """Why ``model`` fails on ``texts`` padded to ``length`` tokens, or None if it runs."""
    import torch

    batch = tokenizer(texts, truncation=True, padding="max_length",  # type: ignore[operator]
                      max_length=length, return_tensors="pt")
    try:
        with torch.no_grad():
            model(**batch)  # type: ignore[operator]
    except Exception as error:  # any: with trust_remote_code, the code is the checkpoint's own
        return f"{type(error).__name__}: {error}"
    return None


def checkpoint_folder(location: str, base: Path | None = None,
                      trust_remote_code: bool = False) -> Path:
    """Resolve ``location`` to a local checkpoint folder, or say clearly why it is not one."""
    from transformers import AutoConfig

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
        model_config = json.loads(config_file.read_text())
    except ValueError as error:  # not UTF-8, or not JSON
        raise InputError("task.model", f"{config_file}: not valid JSON ({error})") from error
    model_type = model_config.get("model_type") if isinstance(model_config, dict) else None
    if not model_type:
        raise InputError("task.model", f"{config_file} names no model_type")
    try:
        AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as error:  # transformers validates each field, raising several kinds
        raise InputError("task.model", f"{config_file}: transformers cannot read it "
                                       f"({type(error).__name__}: {error})") from error
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

