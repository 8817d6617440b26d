"""Labelled images: finding them on disk, checking they decode, and turning them into the
``pixel_values`` a vision classifier reads.

Images are read from ``<path>/<label>/*.png|jpg|jpeg|bmp`` (``format: image-folders``) or from a
CSV or JSON Lines file whose ``image_column`` holds paths relative to the file, which must stay
inside the file's folder. Each image is decoded once while the data is loaded, so a file that
does not decode is refused before any work, naming it. Two files with the same bytes are the
same image (``digest``): deduplication and the data's fingerprint compare those digests, so a
study's data is the same wherever its folder lies.

Pixels: every image is converted to the model's colour mode (RGB, or L for a one-channel model),
so a folder mixing grayscale (8 or 16 bits), palette and RGBA files reads as one kind. At the
checkpoint processor's own output size the processor does everything (resize, crop, rescale,
normalise); at another fixed size (``target.image_size``) the image is first resized to that
square and the processor only rescales and normalises, so every input has exactly the shape the
exported model takes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from edgetune.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_COLUMN = "image"  # the column of absolute image paths in a data frame
DIGEST_COLUMN = "digest"  # the column of each image's sha256
DECODED_AT_ONCE = 64  # images decoded together when making pixel values


def read_image_folders(root: Path) -> pd.DataFrame:
    """Every ``<root>/<label>/<image>`` as (image path, label, digest) rows, sorted by path."""
    rows = [
        (str(file), folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for file in sorted(folder.iterdir())
        if file.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not rows:
        raise InputError("task.data.path", f"{root}: no <label>/*.png|jpg|bmp images in this "
                                           "folder")
    return with_digests(pd.DataFrame(rows, columns=[IMAGE_COLUMN, "label"]), "task.data.path")


def resolve_image_column(frame: pd.DataFrame, data_file: Path) -> pd.DataFrame:
    """``frame``'s image paths (relative to ``data_file``) made absolute, refusing one that
    leaves the file's folder or names no file; with each image's digest."""
    folder = data_file.parent.resolve()
    paths = []
    for row, relative in enumerate(frame[IMAGE_COLUMN], start=1):
        path = (folder / relative).resolve()
        if not path.is_relative_to(folder):
            raise InputError("task.data.image_column", f"{data_file}: row {row}'s image "
                                                       f"{relative!r} is outside {folder}")
        if not path.is_file():
            raise InputError("task.data.image_column", f"{data_file}: row {row}'s image "
                                                       f"{relative!r}: no such file")
        paths.append(str(path))
    return with_digests(frame.assign(**{IMAGE_COLUMN: paths}), "task.data.image_column")


def with_digests(frame: pd.DataFrame, field: str) -> pd.DataFrame:
    """``frame`` with the sha256 of each image's bytes, after checking that each decodes."""
    return frame.assign(**{DIGEST_COLUMN: [_checked_digest(Path(p), field)
                                           for p in frame[IMAGE_COLUMN]]})


def _checked_digest(file: Path, field: str) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        content = file.read_bytes()
        with Image.open(file) as image:
            image.load()
    except OSError as error:  # PIL's truncated and undecodable files are OSErrors too
        reason = error.strerror or str(error) or type(error).__name__
        if isinstance(error, UnidentifiedImageError):
            reason = "not an image PIL can decode"
        raise InputError(field, f"{file}: cannot read the image ({reason})") from error
    return hashlib.sha256(content).hexdigest()


def open_image(source: str | Path | object, mode: str) -> object:
    """A PIL image from a path or a PIL image, in colour ``mode`` (``RGB`` or ``L``)."""
    from PIL import Image

    image = source if isinstance(source, Image.Image) else Image.open(source)
    # Palette images with transparency warn unless they go through RGBA first.
    if image.mode == "P":
        image = image.convert("RGBA")
    # PIL clips 16-bit grayscale (PNG's, opened as I;16 or I) to 8 bits: nearly all white.
    if image.mode.startswith("I;16") or image.mode == "I":
        levels = np.asarray(image, dtype=np.float64) / 257  # 65535 -> 255
        image = Image.fromarray(np.clip(levels, 0, 255).round().astype(np.uint8))
    return image.convert(mode)


def colour_mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def output_size(processor: object, channels: int) -> int:
    """The side of the square ``processor`` makes of an image (its own resize and crop)."""
    from PIL import Image

    blank = Image.new(colour_mode(channels), (97, 89))  # neither square nor its size already
    shape = processor(images=[blank], return_tensors="np")["pixel_values"].shape  # type: ignore[operator]
    if shape[-1] != shape[-2]:
        raise InputError("task.model", f"its image processor makes {shape[-2]}x{shape[-1]} "
                                       "images; edgetune takes square ones: set target.image_size")
    return int(shape[-1])


def pixel_values(processor: object, images: Sequence[object], size: int, channels: int,
                 native_size: int) -> np.ndarray:
    """``images`` (paths or PIL images) as float32 ``(n, channels, size, size)`` pixel values,
    decoded ``DECODED_AT_ONCE`` at a time: a split's decoded photos would take many times the
    memory of their pixel values."""
    from PIL import Image

    mode = colour_mode(channels)
    options = {} if size == native_size else {"do_resize": False, "do_center_crop": False}
    chunks = [np.empty((0, channels, size, size), dtype=np.float32)]
    for start in range(0, len(images), DECODED_AT_ONCE):
        opened = [open_image(image, mode) for image in images[start:start + DECODED_AT_ONCE]]
        if options:
            opened = [image.resize((size, size), Image.Resampling.BICUBIC)  # type: ignore[attr-defined]
                      for image in opened]
        encoded = processor(images=opened, return_tensors="np", **options)  # type: ignore[operator]
        chunks.append(np.asarray(encoded["pixel_values"], dtype=np.float32))
    return np.concatenate(chunks)
