"""Helpers for image-task tests: a generated image folder and tiny vision classifiers built from
configs, with their image processors saved beside them. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SIDE = 32  # pixels: every tiny model and image processor works at 32x32
# Each class's dominant colour channel: learnable in tens of steps, yet every image differs.
CLASSES = {"red": 0, "green": 1, "blue": 2}


def image_pixels(label: str, rng: np.random.Generator) -> np.ndarray:
    """A noisy ``SIDE`` x ``SIDE`` RGB image whose ``label`` channel is brightest, with a random
    bright square in it."""
    pixels = rng.integers(0, 90, size=(SIDE, SIDE, 3), dtype=np.uint8)
    pixels[..., CLASSES[label]] += np.uint8(110)
    top, left = rng.integers(0, SIDE - 8, size=2)
    pixels[top:top + 8, left:left + 8, CLASSES[label]] = 255
    return pixels


def write_image_folder(root: Path, per_label: int = 30, seed: int = 0,
                       suffix: str = ".png") -> Path:
    """``root/<label>/<n><suffix>`` for each class of ``CLASSES``: a deterministic image folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_label):
            Image.fromarray(image_pixels(label, rng)).save(root / label / f"{n}{suffix}")
    return root


FAMILIES = ("vit", "deit", "convnext", "resnet", "mobilenet_v2", "efficientnet")
TRANSFORMERS = ("vit", "deit")


def build_tiny_vision_model(folder: Path, family: str = "vit") -> Path:
    """A ``family`` (one of ``FAMILIES``) image classifier of a few thousand weights for 32x32
    RGB images, with seeded random weights and its image processor."""
    import torch
    from transformers import (
        AutoModelForImageClassification,
        ConvNextConfig,
        ConvNextImageProcessor,
        DeiTConfig,
        EfficientNetConfig,
        MobileNetV2Config,
        ResNetConfig,
        ViTConfig,
        ViTImageProcessor,
    )

    transformer = {"image_size": SIDE, "patch_size": 8, "hidden_size": 32,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    configs: dict[str, Any] = {
        "vit": ViTConfig(**transformer),
        # transformers builds DeiT from its config only when told which of its two heads
        "deit": DeiTConfig(**transformer, architectures=["DeiTForImageClassification"]),
        "convnext": ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "resnet": ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
        "mobilenet_v2": MobileNetV2Config(image_size=SIDE, depth_multiplier=0.35),
        # hidden_dim is the last convolution's width: 1280 scaled by width_coefficient
        "efficientnet": EfficientNetConfig(image_size=SIDE, width_coefficient=0.1,
                                           depth_coefficient=0.1, hidden_dim=128),
    }
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(configs[family])
    model.save_pretrained(folder)
    if family in TRANSFORMERS:
        processor: Any = ViTImageProcessor(size={"height": SIDE, "width": SIDE})
    else:
        processor = ConvNextImageProcessor(size={"shortest_edge": SIDE})
    processor.save_pretrained(folder)
    return folder


def vision_config(model: Path, data: Path, **sections: Any) -> dict[str, Any]:
    """A study config for a tiny image classifier: ONNX Runtime's dynamic and static INT8."""
    config: dict[str, Any] = {
        "study": "tiny-vision",
        "task": {"model": str(model), "data": {"path": str(data)}},
        "finetune": {"steps": 40, "batch_size": 16, "learning_rate": 3.0e-3},
        "target": {"threads": 1, "batch_size": 1},
        "measure": {"warmup": 2, "rounds": 2, "max_rounds": 2, "runs": 5, "inputs": 2},
        "space": {
            "pruning": {"methods": ["none"]},
            "quantization": {"schemes": ["none", "dynamic", "static"],
                             "static": {"op_types": ["all"], "per_channel": [True],
                                        "format": ["qdq"], "keep_fp32": ["none"]}},
            "graph": {"fusion": [False]},
        },
        "search": {"trials": 3},
    }
    for name, value in sections.items():
        config[name] = value if not isinstance(value, dict) else {**config.get(name, {}), **value}
    return config
