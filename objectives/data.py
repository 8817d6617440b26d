"""Labelled data, texts or images: loading a user's file or folder and splitting it, seeded and
stratified (images themselves: ``objectives.images``).

Four splits with one job each (docs/architecture.md): ``train`` for fine-tuning, recovery and QAT;
``calibration`` for post-training quantization; ``validation`` for the objective the search sees;
``test`` reported for the front only, never used to choose.

A text or image is held out only if training never saw it: each distinct text (compared with its
runs of whitespace collapsed), or image (compared by its bytes), is kept once, where it first
occurs, before the splits are drawn. Corpora repeat texts more often than one would think: BBC
News, the default task's, holds 100 texts twice, and a random split put 25 test and 13
validation texts beside their copy in train.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from edgetune.errors import InputError
from edgetune.objectives.images import (
    DIGEST_COLUMN,
    IMAGE_COLUMN,
    IMAGE_SUFFIXES,
    read_image_folders,
    resolve_image_column,
)
from edgetune.objectives.paths import resolve_path
from edgetune.spaces.base import Strict

SPLITS = ("train", "calibration", "validation", "test")
FALLBACK_ENCODING = "cp1252"  # for a file that is not UTF-8, under ``encoding: auto``
DataFormat = Literal["auto", "csv", "jsonl", "folders", "image-folders", "datasets"]
FOLDER_FORMATS = ("folders", "image-folders", "datasets")


class SplitConfig(Strict):
    train: float = Field(default=0.6, gt=0, lt=1)
    calibration: float = Field(default=0.05, gt=0, lt=1)
    validation: float = Field(default=0.15, gt=0, lt=1)
    test: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.calibration + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + calibration + validation + test must be 1, not {total:g}")
        return self


class DataConfig(Strict):
    """Where the labelled texts or images are and how to read them.

    ``format: folders`` reads ``<path>/<label>/*.txt`` (one file per text), ``image-folders``
    ``<path>/<label>/*.png|jpg|jpeg|bmp``; ``csv`` and ``jsonl`` read the ``text_column`` (or,
    given an ``image_column``, image paths relative to the file) and the ``label_column``;
    ``datasets`` reads a folder written by
    ``datasets.Dataset.save_to_disk`` (a ``DatasetDict`` with ``train``/``validation``/``test``
    keeps those splits and carves calibration from train).

    ``encoding: auto`` (the default) reads each file as UTF-8 and a file that is not UTF-8 as
    cp1252, the Windows superset of latin-1 that files called latin-1 are usually written in.
    Before ``auto``, the default task read its UTF-8 corpus as latin-1 ("£" as "Â£"): its texts,
    so its split fingerprint and its cached fine-tuned base, changed with it.
    """

    path: str
    format: DataFormat = "auto"
    text_column: str = "text"
    image_column: str | None = Field(
        default=None, description="csv or jsonl: the column of image paths, relative to the file")
    label_column: str = "label"
    encoding: str = Field(
        default="auto", description="auto (UTF-8, else cp1252, file by file) or a Python codec")
    splits: SplitConfig = SplitConfig()
    deduplicate: bool = Field(
        default=True, description="keep each distinct text once, where it first occurs")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        if encoding != "auto":
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise ValueError(f"auto or a Python codec name, not {encoding!r}") from None
        return encoding


@dataclass(frozen=True)
class Split:
    texts: list[str]  # empty in image data
    labels: np.ndarray  # int64 indices into Dataset.label_names
    images: list[Path] = field(default_factory=list)  # empty in text data

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    label_names: list[str]
    splits: dict[str, Split]
    fingerprint: str  # sha256 of every text, label and split assignment
    repeats_dropped: int = 0

    @property
    def holds_images(self) -> bool:
        return bool(self.splits["train"].images)

    def summary(self) -> dict[str, object]:
        """What a study records about its data: sizes, labels, repeats dropped, the fingerprint."""
        return {
            "labels": self.label_names,
            "sizes": {name: len(split) for name, split in self.splits.items()},
            "repeats_dropped": self.repeats_dropped,
            "fingerprint": self.fingerprint,
        }


def load_dataset(config: DataConfig, base: Path | None = None) -> Dataset:
    """Read the texts or images and labels ``config`` names and split them.

    Raises:
        InputError: the file is missing, empty, lacks the named columns, cannot be decoded, holds
            one label only, or a held-out split has labels that train lacks; an image does not
            decode or lies outside the data file's folder.
    """
    path = resolve_path(config.path, base, field="task.data.path")
    if not path.exists():
        raise InputError("task.data.path", f"no such file or folder: {path}")
    fmt = _detect_format(path) if config.format == "auto" else config.format
    reads_a_folder = fmt in FOLDER_FORMATS
    if path.is_dir() != reads_a_folder:
        kind, expected = ("a folder", "a file") if path.is_dir() else ("a file", "a folder")
        raise InputError("task.data.path", f"{path} is {kind}, but format {fmt} reads {expected}")
    if config.image_column is not None and fmt not in ("csv", "jsonl"):
        raise InputError("task.data.image_column", f"only csv and jsonl files have an image "
                                                   f"column, not format {fmt}")
    if fmt == "datasets":
        frames = _read_datasets_folder(path, config)
    else:
        frames = {"all": _read_table(path, fmt, config)}
    for name, frame in frames.items():
        if frame.empty:
            part = "the file" if name == "all" else f"the {name} split"
            raise InputError("task.data.path", f"{path}: {part} holds no rows")
    repeats = 0
    if config.deduplicate:
        frames, repeats = _drop_repeats(frames)
    labels = pd.concat([frame["label"] for frame in frames.values()]).unique()
    if len(labels) < 2:
        examples = "images" if IMAGE_COLUMN in frames[next(iter(frames))] else "texts"
        raise InputError("task.data.path", f"{path}: every row has the label {labels[0]!r}; a "
                                           f"classifier needs {examples} of at least two labels")
    return replace(_split(frames, config.splits), repeats_dropped=repeats)


def _drop_repeats(frames: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], int]:
    """Each distinct text or image once, at its first occurrence in the order of ``frames``
    (train before the held-out splits a dataset brings), and how many rows were dropped."""
    seen: set[str] = set()
    kept: dict[str, pd.DataFrame] = {}
    for name, frame in frames.items():
        keys = (frame[DIGEST_COLUMN] if DIGEST_COLUMN in frame
                else frame["text"].str.split().str.join(" "))
        first = ~keys.duplicated() & ~keys.isin(seen)
        seen.update(keys[first])
        kept[name] = frame[first.to_numpy()]
    dropped = sum(len(frame) for frame in frames.values()) - sum(map(len, kept.values()))
    return kept, dropped


def _detect_format(path: Path) -> DataFormat:
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
            return "datasets"
        holds_texts = any(path.glob("*/*.txt"))
        holds_images = any(file.suffix.lower() in IMAGE_SUFFIXES for file in path.glob("*/*"))
        return "image-folders" if holds_images and not holds_texts else "folders"
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise InputError(
        "task.data.format",
        f"cannot tell the format of {path.name}: set format to csv, jsonl, folders or datasets",
    )


def _read_table(path: Path, fmt: DataFormat, config: DataConfig) -> pd.DataFrame:
    if fmt == "folders":
        return _read_label_folders(path, config.encoding)
    if fmt == "image-folders":
        return read_image_folders(path)
    text = io.StringIO(_decode(path, config.encoding))
    try:
        if fmt == "csv":
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pd.read_csv(text, sep=sep, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_json(text, lines=True, dtype=False)
    # TypeError is pandas' answer to a JSON line that is not an object
    except (pd.errors.EmptyDataError, ValueError, TypeError) as error:
        raise InputError("task.data.path", f"{path}: cannot read as {fmt}: {error}") from error
    selected = _select_columns(frame, config, str(path))
    return selected if config.image_column is None else resolve_image_column(selected, path)


def _read_label_folders(root: Path, encoding: str) -> pd.DataFrame:
    rows = [
        (_decode(file, encoding), folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for file in sorted(folder.glob("*.txt"))
    ]
    if not rows:
        raise InputError("task.data.path", f"{root}: no <label>/*.txt files in this folder")
    return pd.DataFrame(rows, columns=["text", "label"])


def _decode(file: Path, encoding: str) -> str:
    """The text of ``file`` in ``encoding``; under ``auto``, UTF-8 (a byte-order mark dropped),
    else ``FALLBACK_ENCODING``."""
    try:
        content = file.read_bytes()
    except OSError as error:
        raise InputError("task.data.path", f"{file}: cannot read: {error.strerror}") from error
    try:
        if encoding != "auto":
            return content.decode(encoding)
        try:
            return content.decode("utf-8-sig")
        except UnicodeDecodeError:
            return content.decode(FALLBACK_ENCODING)
    except UnicodeDecodeError as error:
        tried = f"UTF-8 or {FALLBACK_ENCODING}" if encoding == "auto" else encoding
        raise InputError(
            "task.data.encoding", f"{file}: not valid {tried} text ({error.reason} at byte "
            f"{error.start}); set encoding to the file's encoding"
        ) from error


def _select_columns(frame: pd.DataFrame, config: DataConfig, source: str) -> pd.DataFrame:
    """The text (or image) and label columns as strings, refusing a row without either (or a
    blank label)."""
    content = ("text_column", config.text_column) if config.image_column is None else (
        "image_column", config.image_column)
    for setting, column in (content, ("label_column", config.label_column)):
        if column not in frame.columns:
            raise InputError(
                f"task.data.{setting}",
                f"{source} has no column {column!r} "
                f"(columns: {', '.join(map(str, frame.columns))})",
            )
        absent = frame[column].isna()
        if setting == "label_column":
            absent |= frame[column].astype(str).str.strip() == ""
        if absent.any():
            row = int(np.argmax(absent.to_numpy())) + 1
            raise InputError(f"task.data.{setting}",
                             f"{source}: row {row} has no {column!r} (rows count from 1)")
    name = "text" if config.image_column is None else IMAGE_COLUMN
    selected = frame[[content[1], config.label_column]].copy()
    selected.columns = [name, "label"]
    selected[name] = selected[name].astype(str)
    selected["label"] = selected["label"].astype(str)
    return selected


def _read_datasets_folder(path: Path, config: DataConfig) -> dict[str, pd.DataFrame]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise InputError("task.data.path",
                         f"{path}: not a folder written by datasets' save_to_disk") from error
    if isinstance(loaded, datasets.DatasetDict):
        missing = {"train", "validation", "test"} - set(loaded)
        if missing:
            raise InputError(
                "task.data.path",
                f"{path}: a DatasetDict needs train, validation and test splits "
                f"(missing: {', '.join(sorted(missing))})",
            )
        return {
            name: _select_columns(_named_labels(loaded[name]).to_pandas(), config,
                                  f"{path}[{name}]")
            for name in ("train", "validation", "test")
        }
    return {"all": _select_columns(_named_labels(loaded).to_pandas(), config, str(path))}


def _named_labels(split: object) -> object:
    """Replace ClassLabel integers by their names so labels compare across splits."""
    import datasets

    for name, feature in split.features.items():  # type: ignore[attr-defined]
        if isinstance(feature, datasets.ClassLabel):
            split = split.cast_column(name, datasets.Value("string"))  # type: ignore[attr-defined]
            names = feature.names
            split = split.map(lambda row, n=name: {n: names[int(row[n])]})  # type: ignore
    return split


def _split(frames: dict[str, pd.DataFrame], config: SplitConfig) -> Dataset:
    rng = np.random.default_rng(config.seed)
    if "all" in frames:
        frame = frames["all"]
        assignment = _stratified_assignment(frame["label"].to_numpy(), config, rng)
        parts = {name: frame[assignment == name] for name in SPLITS}
    else:
        train = frames["train"]
        fraction = config.calibration / (config.train + config.calibration)
        is_calibration = _stratified_take(train["label"].to_numpy(), fraction, rng)
        parts = {
            "train": train[~is_calibration],
            "calibration": train[is_calibration],
            "validation": frames["validation"],
            "test": frames["test"],
        }
    label_names = sorted(parts["train"]["label"].unique())
    index = {label: i for i, label in enumerate(label_names)}
    for name in SPLITS[1:]:
        unknown = sorted(set(parts[name]["label"]) - set(index))
        if unknown:
            raise InputError(
                "task.data.path",
                f"the {name} split has labels that train lacks: {', '.join(unknown[:5])}",
            )
    splits = {name: _split_of(part, index) for name, part in parts.items()}
    for name, split in splits.items():
        if len(split) == 0:
            raise InputError(
                f"task.data.splits.{name}", "too few rows for this split: give it a larger share"
            )
    identities = {name: part[DIGEST_COLUMN if DIGEST_COLUMN in part else "text"].tolist()
                  for name, part in parts.items()}
    return Dataset(label_names, splits, _fingerprint(label_names, identities, splits))


def _split_of(part: pd.DataFrame, index: dict[str, int]) -> Split:
    labels = part["label"].map(index).to_numpy(dtype=np.int64)
    if IMAGE_COLUMN in part:
        return Split(texts=[], labels=labels, images=[Path(p) for p in part[IMAGE_COLUMN]])
    return Split(texts=part["text"].tolist(), labels=labels)


def _stratified_assignment(labels: np.ndarray, config: SplitConfig,
                           rng: np.random.Generator) -> np.ndarray:
    """Assign each row to a split, keeping each label's share the same in every split, and at
    least one row of every label in train (a label too rare for its share would otherwise be
    held out only, and never learned)."""
    assignment = np.empty(len(labels), dtype=object)
    shares = np.cumsum([getattr(config, name) for name in SPLITS])
    for label in sorted(set(labels)):
        rows = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.maximum(np.round(shares * len(rows)).astype(int), 1)
        for name, start, stop in zip(SPLITS, np.r_[0, bounds[:-1]], bounds):
            assignment[rows[start:stop]] = name
    return assignment


def _stratified_take(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Rows to take, ``fraction`` of each label's, leaving at least one of every label."""
    taken = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        rows = rng.permutation(np.flatnonzero(labels == label))
        taken[rows[: min(int(round(fraction * len(rows))), len(rows) - 1)]] = True
    return taken


def _fingerprint(label_names: list[str], identities: dict[str, list[str]],
                 splits: dict[str, Split]) -> str:
    """A hash of the labels and each split's rows: a text itself, an image its bytes' digest."""
    digest = hashlib.sha256(json.dumps(label_names).encode())
    for name, split in splits.items():
        digest.update(name.encode())
        for identity, label in zip(identities[name], split.labels.tolist()):
            digest.update(identity.encode("utf-8", "surrogatepass"))
            digest.update(label.to_bytes(4, "little"))
    return digest.hexdigest()
