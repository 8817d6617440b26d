"""Data loads from CSV, JSON Lines, label folders and datasets folders, split seeded and
stratified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgetune.errors import InputError
from edgetune.objectives.data import DataConfig, SplitConfig, load_dataset

from conftest import make_texts, write_csv


def test_splits_are_stratified_seeded_and_disjoint(tiny_csv: Path) -> None:
    first = load_dataset(DataConfig(path=str(tiny_csv)))
    again = load_dataset(DataConfig(path=str(tiny_csv)))
    other_seed = load_dataset(DataConfig(path=str(tiny_csv), splits=SplitConfig(seed=1)))
    assert first.fingerprint == again.fingerprint != other_seed.fingerprint
    sizes = {name: len(split) for name, split in first.splits.items()}
    assert sizes == {"train": 180, "calibration": 15, "validation": 45, "test": 60}
    for split in first.splits.values():  # every label in every split, in equal shares
        assert sorted(np.bincount(split.labels).tolist()) == [len(split) // 3] * 3
    texts = [set(s.texts) for s in first.splits.values()]
    assert sum(len(t) for t in texts) == len(set().union(*texts))


def test_jsonl_and_label_folders_read_like_csv(tmp_path: Path) -> None:
    rows = make_texts(20)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": t, "topic": label}) for t, label in rows))
    folders = tmp_path / "folders"
    for i, (text, label) in enumerate(rows):
        (folders / label).mkdir(parents=True, exist_ok=True)
        (folders / label / f"{i}.txt").write_text(text)
    from_jsonl = load_dataset(DataConfig(path=str(jsonl), text_column="body", label_column="topic"))
    from_folders = load_dataset(DataConfig(path=str(folders)))
    assert from_jsonl.label_names == from_folders.label_names == ["politics", "sport", "tech"]
    assert sum(map(len, from_jsonl.splits.values())) == sum(map(len, from_folders.splits.values()))


def test_datasets_folder_keeps_its_splits(tmp_path: Path) -> None:
    import datasets

    rows = make_texts(30)
    as_dict = {"text": [t for t, _ in rows], "label": [label for _, label in rows]}
    full = datasets.Dataset.from_dict(as_dict)
    dataset_dict = datasets.DatasetDict({"train": full.select(range(60)),
                                         "validation": full.select(range(60, 75)),
                                         "test": full.select(range(75, 90))})
    dataset_dict.save_to_disk(str(tmp_path / "dd"))
    loaded = load_dataset(DataConfig(path=str(tmp_path / "dd")))
    assert len(loaded.splits["validation"]) == 15 and len(loaded.splits["test"]) == 15
    assert len(loaded.splits["train"]) + len(loaded.splits["calibration"]) == 60


@pytest.mark.parametrize(("content", "config", "where", "words"), [
    ("text,label\n", {}, "task.data.path", "holds no rows"),
    ("body,label\nhello,a\n", {}, "task.data.text_column", "no column 'text'"),
    (b"text,label\ncaf\xe9,a\n", {"encoding": "utf-8"}, "task.data.encoding", "not valid utf-8"),
    ("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(60)) + "a lone field\n",
     {}, "task.data.label_column", "row 61 has no 'label'"),
])
def test_bad_data_files_are_named(tmp_path: Path, content: str | bytes, config: dict,
                                  where: str, words: str) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError) as error:
        load_dataset(DataConfig(path=str(path), **config))
    assert error.value.where == where and words in error.value.message


@pytest.mark.parametrize(("kind", "fmt", "expected"), [
    ("folder", "csv", "is a folder, but format csv reads a file"),
    ("folder", "jsonl", "is a folder, but format jsonl reads a file"),
    ("file", "folders", "is a file, but format folders reads a folder"),
    ("file", "datasets", "is a file, but format datasets reads a folder"),
    ("folder", "datasets", "not a folder written by datasets' save_to_disk"),
])
def test_a_path_of_the_wrong_kind_for_its_format_is_named(tmp_path: Path, kind: str, fmt: str,
                                                          expected: str) -> None:
    path = tmp_path / "texts"
    if kind == "folder":
        (path / "sport").mkdir(parents=True)
        (path / "sport" / "1.txt").write_text("a goal")
    else:
        path.write_text("text,label\na goal,sport\n")
    with pytest.raises(InputError) as error:
        load_dataset(DataConfig(path=str(path), format=fmt))
    assert error.value.where == "task.data.path" and expected in error.value.message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_dataset(DataConfig(path=str(tmp_path / "absent.csv")))


def test_held_out_labels_unknown_to_train_are_refused(tmp_path: Path) -> None:
    import datasets

    rows = make_texts(20)
    full = datasets.Dataset.from_dict({"text": [t for t, _ in rows],
                                       "label": [label for _, label in rows]})
    train = full.filter(lambda r: r["label"] != "tech")
    datasets.DatasetDict({"train": train, "validation": full, "test": full}).save_to_disk(
        str(tmp_path / "dd"))
    with pytest.raises(InputError, match="labels that train lacks: tech"):
        load_dataset(DataConfig(path=str(tmp_path / "dd")))


def test_a_repeated_text_is_kept_once_so_no_held_out_text_was_trained_on(tmp_path: Path) -> None:
    rows = make_texts(30)
    repeats = [(f"  {text}\n", label) for text, label in rows[:40]]  # same words, other spacing
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": label})
                              for t, label in rows + repeats))
    loaded = load_dataset(DataConfig(path=str(path)))
    assert loaded.repeats_dropped == 40 and loaded.summary()["repeats_dropped"] == 40
    assert sum(map(len, loaded.splits.values())) == len(rows)
    kept_all = load_dataset(DataConfig(path=str(path), deduplicate=False))
    assert kept_all.repeats_dropped == 0
    assert sum(map(len, kept_all.splits.values())) == len(rows) + len(repeats)


def test_held_out_texts_that_train_holds_are_dropped_from_a_datasets_folder(
        tmp_path: Path) -> None:
    import datasets

    rows = make_texts(30)
    full = datasets.Dataset.from_dict({"text": [t for t, _ in rows],
                                       "label": [label for _, label in rows]})
    datasets.DatasetDict({"train": full.select(range(60)),
                          "validation": full.select(range(50, 75)),  # 10 texts of train
                          "test": full.select(range(70, 90))}).save_to_disk(  # 5 of validation
        str(tmp_path / "dd"))
    loaded = load_dataset(DataConfig(path=str(tmp_path / "dd")))
    assert (len(loaded.splits["validation"]), len(loaded.splits["test"])) == (15, 15)
    assert loaded.repeats_dropped == 15

def test_every_label_keeps_a_training_row(tmp_path: Path) -> None:
    """A label too rare for its share of train is still trained on, never only held out."""
    rows = make_texts(20) + [("a lone text about weather", "weather")]
    path = write_csv(tmp_path / "texts.csv", rows)
    loaded = load_dataset(DataConfig(path=str(path), splits=SplitConfig(
        train=0.3, calibration=0.1, validation=0.2, test=0.4)))
    train = loaded.splits["train"]
    assert sorted(set(train.labels.tolist())) == list(range(len(loaded.label_names)))
    assert "weather" in loaded.label_names



def test_calibration_carved_from_a_datasets_train_split_leaves_every_label_in_train(
        tmp_path: Path) -> None:
    import datasets

    rows = make_texts(20) + [("a lone text about weather", "weather")]
    as_dict = {"text": [t for t, _ in rows], "label": [label for _, label in rows]}
    full = datasets.Dataset.from_dict(as_dict)
    weather = len(rows) - 1
    datasets.DatasetDict({"train": full.select([*range(40), weather]),
                          "validation": full.select(range(40, 50)),
                          "test": full.select(range(50, 60))}).save_to_disk(str(tmp_path / "dd"))
    loaded = load_dataset(DataConfig(path=str(tmp_path / "dd"), splits=SplitConfig(
        train=0.2, calibration=0.4, validation=0.2, test=0.2)))
    assert "weather" in loaded.label_names
    train = loaded.splits["train"]
    assert "a lone text about weather" in train.texts
    assert sorted(set(train.labels.tolist())) == list(range(len(loaded.label_names)))

def test_each_text_file_is_read_as_utf8_or_else_as_cp1252(tmp_path: Path) -> None:
    """The default encoding (auto): a corpus of UTF-8 files with one Windows-encoded file
    reads "£" in all of them."""
    for label in ("business", "sport"):
        (tmp_path / label).mkdir()
        for i in range(20):
            (tmp_path / label / f"{i}.txt").write_text(f"{label} {i} costs £{i}m", "utf-8")
    (tmp_path / "sport" / "0.txt").write_text("sport 0 costs £0m – a record", "cp1252")
    loaded = load_dataset(DataConfig(path=str(tmp_path)))
    texts = [text for split in loaded.splits.values() for text in split.texts]
    assert len(texts) == 40 and all("£" in text and "Â" not in text for text in texts)
    assert "sport 0 costs £0m – a record" in texts


@pytest.mark.parametrize("encoding", ["auto", "cp1252"])
def test_a_windows_encoded_csv_reads_with_auto_or_its_named_encoding(tmp_path: Path,
                                                                     encoding: str) -> None:
    rows = [(f"{text} £", label) for text, label in make_texts(20)]
    path = tmp_path / "texts.csv"
    path.write_bytes(write_csv(tmp_path / "utf8.csv", rows).read_text().encode("cp1252"))
    loaded = load_dataset(DataConfig(path=str(path), encoding=encoding))
    assert all(text.endswith(" £") for split in loaded.splits.values() for text in split.texts)


def test_a_named_encoding_is_used_as_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "texts.csv", [(f"{t} £", label) for t, label in make_texts(20)])
    loaded = load_dataset(DataConfig(path=str(path), encoding="latin-1"))
    assert all(text.endswith(" Â£") for split in loaded.splits.values() for text in split.texts)
