"""The vision demo (``examples/surface-defects.yaml``): its generated photographs and model are
the same on every machine, and its config runs on them as an image task scored by macro F1."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from edgetune.search.config import load_config

EXAMPLES = Path(__file__).parents[1] / "examples"
FEW = {"ok": 6, "scratch": 2, "dent": 2, "spot": 2}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("surface_defects",
                                                  EXAMPLES / "surface_defects.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digests(folder: Path) -> dict[str, str]:
    return {str(file.relative_to(folder)): hashlib.sha256(file.read_bytes()).hexdigest()
            for file in sorted(folder.rglob("*.png"))}


def test_the_photographs_are_the_same_bytes_wherever_they_are_generated(tmp_path: Path) -> None:
    generator = _generator()
    generator.write_data(tmp_path / "a", counts=FEW)
    generator.write_data(tmp_path / "b", counts=FEW)
    first = _digests(tmp_path / "a")
    assert first == _digests(tmp_path / "b")
    assert len(first) == sum(FEW.values()) and len(set(first.values())) == len(first)
    image = Image.open(tmp_path / "a" / "scratch" / "0000.png")
    assert image.mode == "RGB" and image.size == (generator.SIDE, generator.SIDE)


def test_a_defect_changes_the_surface_it_is_drawn_on() -> None:
    generator = _generator()
    for defect in generator.DEFECTS.values():
        surface = generator.surface(np.random.default_rng(1))
        marked = surface.copy()
        defect(marked, np.random.default_rng(2))
        changed = np.abs(marked - surface) > 5
        assert 0 < changed.sum() < surface.size / 4  # a mark on the part, not a new part


def test_the_demo_config_is_an_image_task_scored_by_macro_f1(tmp_path: Path) -> None:
    generator = _generator()
    demo = tmp_path / "surface-defects"
    generator.write_data(demo / "data", counts=FEW)
    generator.write_model(demo / "model")
    config_file = tmp_path / "surface-defects.yaml"
    shutil.copy(EXAMPLES / "surface-defects.yaml", config_file)
    config = load_config(config_file)
    assert config.objective_names == ["macro_f1", "latency_ms"]
    assert config.target.image_size == generator.SIDE
    assert "static" in config.space.quantization.schemes
    assert config.space.pruning.methods == ["none", "channels"]  # a ResNet's defaults
