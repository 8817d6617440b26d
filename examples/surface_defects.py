"""The vision demo's data and model, generated: ``python examples/surface_defects.py``.

A camera over a production line photographs brushed-metal parts; most are fine, some carry a
scratch, a dent or a spot. No pretrained vision weights and no such data set install from PyPI,
so this script makes both, deterministically (same seed, same bytes):

- ``surface-defects/data/<label>/<n>.png``: 128 x 128 RGB photographs of textured surfaces,
  imbalanced as a line is (``COUNTS``: 70 % ``ok``). Every image differs in brightness, grain,
  direction and lighting; every defect in place, size, angle and contrast, down to defects barely
  above the grain, so that the task is not solved perfectly and compression has something to lose.
- ``surface-defects/model/``: a ResNet of about 1.2 M weights built from its config with seeded
  random weights, and its image processor. ``finetune`` in ``surface-defects.yaml`` trains it on
  the task, as it fine-tunes a pretrained checkpoint for a text task.

Then ``edgetune run examples/surface-defects.yaml`` searches its compression (README, "Image
classification"). Both folders are written beside this script unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SIDE = 128  # pixels: the demo camera's crop, and the model's input
# Images per class: a line's imbalance. 2,000 images make 300 validation images with ~30 of
# each defect, enough for macro F1 to move in steps of about a point.
COUNTS = {"ok": 1400, "scratch": 240, "dent": 200, "spot": 160}
SEED = 0


def surface(rng: np.random.Generator) -> np.ndarray:
    """A brushed-metal texture as float grey levels: grain along a random direction, a lighting
    gradient and sensor noise."""
    grain = rng.normal(0, 1, (SIDE, SIDE))
    # Brushing: average the noise along one axis, then rotate the streaks by a random multiple
    # of 90 degrees (with a transpose, which keeps the pixel grid).
    width = int(rng.integers(4, 12))
    grain = np.apply_along_axis(lambda row: np.convolve(row, np.ones(width) / width, "same"),
                                1, grain)
    if rng.random() < 0.5:
        grain = grain.T
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    angle = rng.uniform(0, 2 * np.pi)
    light = (np.cos(angle) * x + np.sin(angle) * y) * rng.uniform(0, 40)
    base = rng.uniform(100, 170)
    return base + light + grain * rng.uniform(6, 14) + rng.normal(0, 3, (SIDE, SIDE))


def scratch(pixels: np.ndarray, rng: np.random.Generator) -> None:
    """A thin straight line, brighter or darker than the surface, faded at its ends."""
    length = rng.uniform(18, 50)
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(20, SIDE - 20, size=2)
    t = np.linspace(-length / 2, length / 2, int(length * 3))
    ys, xs = cy + t * np.sin(angle), cx + t * np.cos(angle)
    contrast = rng.uniform(14, 50) * rng.choice([-1, 1])
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    for py, px, fade in zip(ys, xs, np.cos(t / length * np.pi) ** 0.5, strict=True):
        near = (y - py) ** 2 + (x - px) ** 2 < 0.8
        if not near.any():  # a point between pixels, or off the image
            continue
        pixels[near] = np.where(np.abs(pixels[near] - pixels[near].mean()) < abs(contrast),
                                pixels[near] + contrast * fade / 3, pixels[near])


def dent(pixels: np.ndarray, rng: np.random.Generator) -> None:
    """A shallow round dent: lit on one side, shadowed on the other."""
    radius = rng.uniform(4, 11)
    cy, cx = rng.uniform(radius + 4, SIDE - radius - 4, size=2)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    dy, dx = (y - cy) / radius, (x - cx) / radius
    inside = np.clip(1 - dy**2 - dx**2, 0, None)
    light = rng.uniform(0, 2 * np.pi)
    pixels += (np.cos(light) * dx + np.sin(light) * dy) * inside * rng.uniform(12, 40)


def spot(pixels: np.ndarray, rng: np.random.Generator) -> None:
    """A small dark stain with soft edges."""
    radius = rng.uniform(1.5, 4.5)
    cy, cx = rng.uniform(8, SIDE - 8, size=2)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
    pixels -= blob * rng.uniform(18, 60)


DEFECTS = {"scratch": scratch, "dent": dent, "spot": spot}


def photograph(label: str, rng: np.random.Generator) -> np.ndarray:
    """One ``label`` part as 8-bit RGB: a grey surface, slightly tinted as a camera sees it."""
    pixels = surface(rng)
    if label in DEFECTS:
        DEFECTS[label](pixels, rng)
    tint = rng.uniform(0.95, 1.05, size=3)
    return np.clip(pixels[..., None] * tint, 0, 255).astype(np.uint8)


def write_data(folder: Path, seed: int = SEED, counts: dict[str, int] = COUNTS) -> None:
    """``folder/<label>/<n>.png`` for every class of ``counts``, drawn from one seeded stream."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, count in counts.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            Image.fromarray(photograph(label, rng)).save(folder / label / f"{n:04d}.png")


def write_model(folder: Path, seed: int = SEED) -> None:
    """A small ResNet (basic blocks, two per stage, half of ResNet-18's widths) with seeded
    random weights, and the image processor that makes its 128 x 128 inputs."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    labels = list(COUNTS)
    config = ResNetConfig(
        embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[2, 2, 2, 2],
        layer_type="basic", num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    ResNetForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": SIDE, "width": SIDE}, image_mean=[0.5] * 3,
                      image_std=[0.25] * 3).save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "surface-defects",
                        help="where data/ and model/ go [default: beside this script]")
    out = parser.parse_args().out
    write_data(out / "data")
    write_model(out / "model")
    print(f"wrote {sum(COUNTS.values())} images to {out / 'data'} and a model to {out / 'model'}")


if __name__ == "__main__":
    main()
