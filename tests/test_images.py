"""Image data: image folders and image columns, deduplication by bytes, seeded splits, the task
kind from the checkpoint, pixel values at a fixed size, and bad input refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetune.errors import InputError
from edgetune.objectives.data import DataConfig, load_dataset
from edgetune.objectives.task import TaskConfig, load_task

from conftest import build_tiny_model
from vision import SIDE, build_tiny_vision_model, write_image_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images") / "data", per_label=12)


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vision_model(tmp_path_factory.mktemp("vit") / "model", "vit")


def copy_of(images: Path, folder: Path) -> Path:
    return Path(shutil.copytree(images, folder / "data"))


def test_image_folders_split_seeded_and_stratified(images: Path) -> None:
    dataset = load_dataset(DataConfig(path=str(images)))  # format auto: image-folders
    again = load_dataset(DataConfig(path=str(images), format="image-folders"))
    assert dataset.holds_images and dataset.label_names == ["blue", "green", "red"]
    assert dataset.fingerprint == again.fingerprint
    assert {name: len(split) for name, split in dataset.splits.items()} == {
        "train": 21, "calibration": 3, "validation": 6, "test": 6}
    for split in dataset.splits.values():
        assert sorted(set(split.labels.tolist())) == [0, 1, 2] and split.texts == []
    every = [image for split in dataset.splits.values() for image in split.images]
    assert len(set(every)) == 36
    reseeded = load_dataset(DataConfig(path=str(images), splits={"seed": 1}))
    assert reseeded.fingerprint != dataset.fingerprint


def test_identical_images_are_kept_once_and_the_fingerprint_ignores_where_they_lie(
        images: Path, tmp_path: Path) -> None:
    data = copy_of(images, tmp_path)
    shutil.copy(data / "red" / "0.png", data / "red" / "copy.png")
    shutil.copy(data / "green" / "1.png", data / "red" / "mislabelled-copy.png")
    dataset = load_dataset(DataConfig(path=str(data)))
    assert dataset.repeats_dropped == 2
    moved = load_dataset(DataConfig(path=str(images)))
    assert moved.fingerprint == dataset.fingerprint


def test_an_image_column_reads_paths_relative_to_the_file(images: Path, tmp_path: Path) -> None:
    data = copy_of(images, tmp_path)
    rows = [f"{file.relative_to(data)},{file.parent.name}" for file in sorted(data.glob("*/*"))]
    (data / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    from_csv = load_dataset(DataConfig(path=str(data / "labels.csv"), image_column="file"))
    from_folders = load_dataset(DataConfig(path=str(data)))
    assert from_csv.fingerprint == from_folders.fingerprint  # the same images, in the same order
    assert from_csv.splits["train"].images == from_folders.splits["train"].images


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda data: (data / "red" / "3.png").write_bytes(b"not a png"), "task.data.path",
     "3.png: cannot read the image"),
    (lambda data: [shutil.rmtree(data / name) for name in ("green", "blue")], "task.data.path",
     "images of at least two labels"),
])
def test_bad_image_folders_are_refused_naming_the_file(images: Path, tmp_path: Path, change,
                                                       field: str, words: str) -> None:
    data = copy_of(images, tmp_path)
    change(data)
    with pytest.raises(InputError) as error:
        load_dataset(DataConfig(path=str(data)))
    assert error.value.where == field and words in str(error.value)


@pytest.mark.parametrize(("path", "words"), [
    ("../outside.png", "is outside"), ("red/missing.png", "no such file")])
def test_an_image_column_may_name_only_files_inside_its_folder(images: Path, tmp_path: Path,
                                                                path: str, words: str) -> None:
    data = copy_of(images, tmp_path)
    shutil.copy(data / "red" / "0.png", tmp_path / "outside.png")
    (data / "labels.jsonl").write_text(
        '{"image": "red/1.png", "label": "red"}\n'
        f'{{"image": "{path}", "label": "blue"}}\n')
    with pytest.raises(InputError) as error:
        load_dataset(DataConfig(path=str(data / "labels.jsonl"), image_column="image"))
    assert error.value.where == "task.data.image_column"
    assert f"row 2's image {path!r}" in str(error.value) and words in str(error.value)


def test_the_task_kind_comes_from_the_checkpoint(images: Path, vit: Path,
                                                 tmp_path: Path) -> None:
    task = load_task(TaskConfig(model=str(vit), data=DataConfig(path=str(images))))
    assert task.kind == "image" and task.image_size == SIDE
    pixels = task.encoded("validation")["pixel_values"]
    assert pixels.shape == (6, 3, SIDE, SIDE) and pixels.dtype == np.float32
    with pytest.raises(InputError) as error:
        load_task(TaskConfig(model=str(vit), kind="text", data=DataConfig(path=str(images))))
    assert error.value.where == "task.kind" and "is an image classifier (vit)" in str(error.value)
    text_model = build_tiny_model(tmp_path / "bert")
    with pytest.raises(InputError) as error:
        load_task(TaskConfig(model=str(text_model), data=DataConfig(path=str(images))))
    assert error.value.where == "task.data" and "its data must be texts" in str(error.value)


def test_a_text_task_takes_no_image_size(tmp_path: Path) -> None:
    from conftest import make_texts

    model = build_tiny_model(tmp_path / "bert")
    data = tmp_path / "texts.csv"
    data.write_text("text,label\n" + "\n".join(f"{t},{label}" for t, label in make_texts(30)))
    with pytest.raises(InputError) as error:
        load_task(TaskConfig(model=str(model), data=DataConfig(path=str(data))), image_size=64)
    assert error.value.where == "target.image_size"


def test_a_fixed_size_is_one_the_model_must_run_at(images: Path, vit: Path,
                                                   tmp_path: Path) -> None:
    config = TaskConfig(model=str(vit), data=DataConfig(path=str(images)))
    with pytest.raises(InputError) as error:
        load_task(config, image_size=48)  # a ViT runs at its position embeddings' size only
    assert error.value.where == "target.image_size" and "48x48" in str(error.value)
    resnet = build_tiny_vision_model(tmp_path / "resnet", "resnet")
    task = load_task(TaskConfig(model=str(resnet), data=DataConfig(path=str(images))),
                     image_size=48)
    assert task.encoded("train")["pixel_values"].shape[1:] == (3, 48, 48)


def test_grayscale_and_palette_images_are_converted_to_the_models_colours(
        images: Path, vit: Path, tmp_path: Path) -> None:
    data = copy_of(images, tmp_path)
    Image.open(data / "red" / "0.png").convert("L").save(data / "red" / "0.png")
    Image.open(data / "blue" / "0.png").convert("P").save(data / "blue" / "0.png")
    task = load_task(TaskConfig(model=str(vit), data=DataConfig(path=str(data))))
    every = np.concatenate([task.encoded(split)["pixel_values"] for split in task.dataset.splits])
    assert every.shape == (36, 3, SIDE, SIDE) and np.isfinite(every).all()


def test_pixel_values_are_the_same_decoded_in_chunks_or_alone(images: Path, vit: Path) -> None:
    from transformers import AutoImageProcessor

    from edgetune.objectives.images import DECODED_AT_ONCE, pixel_values

    processor = AutoImageProcessor.from_pretrained(vit)
    files = sorted(images.glob("*/*.png")) * 2
    assert DECODED_AT_ONCE < len(files) < 2 * DECODED_AT_ONCE + 1
    together = pixel_values(processor, files, 24, 3, SIDE)  # resized by edgetune: not native
    alone = np.concatenate([pixel_values(processor, [file], 24, 3, SIDE) for file in files])
    assert together.shape == (len(files), 3, 24, 24)
    np.testing.assert_array_equal(together, alone)


def test_a_16_bit_grayscale_image_keeps_its_levels(tmp_path: Path) -> None:
    from edgetune.objectives.images import open_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    rgb = np.asarray(open_image(tmp_path / "ramp.png", "RGB"))
    assert rgb.shape == (64, 64, 3) and rgb.min() == 0 and rgb.max() == 255
    assert abs(rgb.mean() - 127.5) < 2  # not clipped to white
