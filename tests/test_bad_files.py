"""Any data file or checkpoint folder a user points at loads and runs, or is refused with one line
naming the field and the file: never a traceback.

Files are generated (hypothesis): CSV, JSON Lines and ``<label>/*.txt`` folders in several
encodings, with ragged rows, empty and huge cells, binary bytes, one label or rare ones; and the
tiny checkpoint with its config.json, safetensors and tokenizer edited, truncated or garbled. The
loading functions are called directly, so that hundreds of cases run in seconds; the command
line's one line, exit code 2 and empty workspace are checked for such files in test_bad_input.py.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgetune.errors import InputError
from edgetune.objectives.data import DataConfig, Dataset, load_dataset

from conftest import make_texts
from helpers import tokenizer_of_another_model

PROPERTY = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def refused_in_one_line(error: InputError, fields: set[str]) -> None:
    """What the CLI prints is ``edgetune: error: <where>: <message>``: one line, a known field."""
    assert error.where in fields or error.where.startswith("task.data.splits."), error
    assert error.message and "\n" not in str(error) and "\r" not in str(error), error


# --- data files ---------------------------------------------------------------------------------

DATA_FIELDS = {"task.data.path", "task.data.encoding", "task.data.text_column",
               "task.data.label_column", "task.data.format"}
ODD_TEXTS = st.one_of(
    st.text(max_size=40),  # any characters: controls, quotes, separators, line breaks, emoji
    st.sampled_from(["", " ", "£5.8m signing", 'he said "no", then left', "a\nb", "a\r\nb"]),
    st.just("a long text " * 30_000),  # a huge cell
)


@dataclass
class DataFile:
    """A generated data set: its rows, how they are encoded and read, and the damage done."""

    rows: list[tuple[str, str]]
    format: str
    file_encoding: str
    config_encoding: str
    damage: str  # "none" when every row is written whole and the file decodes as configured
    binary: bytes  # inserted when the damage is "binary bytes"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis shows a case
        printer.text(repr(self))

    def __repr__(self) -> str:  # a huge cell abbreviated
        rows = [(text if len(text) < 80 else f"{text[:40]}...({len(text)} chars)", label)
                for text, label in self.rows]
        return (f"DataFile({self.format} in {self.file_encoding} read as {self.config_encoding}, "
                f"damage: {self.damage}, rows: {rows!r})")

    def write(self, folder: Path) -> Path:
        if self.format == "folders":
            return self._write_folders(folder / "texts")
        path = folder / f"texts.{self.format}"
        lines = (self._csv_lines() if self.format == "csv" else
                 [json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n"
                  for t, label in self.rows])
        if self.damage == "ragged row":
            lines.insert(len(lines) // 2, "a lone field\n" if self.format == "csv"
                         else '{"text": "no label here"}\n')
        if self.damage == "blank label":
            lines.insert(len(lines) // 2, "a text,  \n" if self.format == "csv"
                         else '{"text": "a text", "label": null}\n')
        if self.damage == "long row":
            lines.insert(len(lines) // 2, "one,two,three\n" if self.format == "csv"
                         else "[1, 2, 3]\n")
        content = "".join(lines).encode(self.file_encoding, errors="replace")
        if self.damage == "binary bytes":
            content = content[: len(content) // 2] + self.binary + content[len(content) // 2:]
        path.write_bytes(content)
        return path

    def _csv_lines(self) -> list[str]:
        """The header and each row as csv writes them (a quoted cell may span lines)."""
        lines = []
        for row in [("text", "label"), *self.rows]:
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerow(row)
            lines.append(out.getvalue())
        return lines

    def _write_folders(self, root: Path) -> Path:
        root.mkdir()
        for i, (text, label) in enumerate(self.rows):
            (root / label).mkdir(exist_ok=True)
            content = text.encode(self.file_encoding, errors="replace")
            if self.damage == "binary bytes" and i == 0:
                content += self.binary
            (root / label / f"{i}.txt").write_bytes(content)
        (root / "notes").mkdir()  # a folder without texts is not a label
        (root / "README.md").write_text("not a text")
        return root


@st.composite
def data_files(draw: st.DrawFn) -> DataFile:
    labels = draw(st.sampled_from([{"sport": "sport"}, {"sport": "£"}, {"tech": "1"}, {}]))
    rows = make_texts(draw(st.integers(1, 25)), seed=draw(st.integers(0, 3)), labels=labels)
    kept = draw(st.sets(st.sampled_from(["politics", "sport", "tech"]), min_size=1))
    rows = [row for row in rows if row[1] in {labels.get(t, t) for t in kept}]
    odd = draw(st.lists(st.tuples(ODD_TEXTS, st.sampled_from(["politics", "sport", "rare"])),
                        max_size=6))
    for position, row in zip(draw(st.lists(st.integers(0, len(rows)), min_size=len(odd),
                                           max_size=len(odd))), odd):
        rows.insert(position, row)
    fmt = draw(st.sampled_from(["csv", "jsonl", "folders"]))
    damages = ["none", "none", "binary bytes"] + (["ragged row", "long row", "blank label"]
                                                  if fmt != "folders" else [])
    return DataFile(
        rows=rows, format=fmt,
        file_encoding=draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "cp1252", "utf-16"])),
        config_encoding=draw(st.sampled_from(["auto", "auto", "auto", "utf-8", "latin-1"])),
        damage=draw(st.sampled_from(damages)),
        binary=draw(st.binary(min_size=1, max_size=16)),
    )


def reads_back_as_written(data: DataFile) -> bool:
    """Whether the loaded rows must be exactly the written ones (whole, decoded as written)."""
    utf8 = data.file_encoding == "utf-8" and data.config_encoding in ("auto", "utf-8")
    utf8_sig = data.file_encoding == "utf-8-sig" and data.config_encoding == "auto"
    return data.damage == "none" and (utf8 or utf8_sig)


def assert_sound(dataset: Dataset) -> None:
    """Two labels at least, every split filled, every held-out label known to train."""
    assert len(dataset.label_names) >= 2
    trained = set(dataset.splits["train"].labels.tolist())
    for split in dataset.splits.values():
        assert len(split) and set(split.labels.tolist()) <= trained
        assert all(isinstance(text, str) for text in split.texts)


@PROPERTY
@given(data=data_files())
def test_a_data_file_loads_or_names_the_field(data: DataFile) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = data.write(Path(folder))
        try:
            dataset = load_dataset(DataConfig(path=str(path), encoding=data.config_encoding))
        except InputError as error:
            refused_in_one_line(error, DATA_FIELDS)
            event(f"refused: {error.where}")
            return
    event("loaded" + (" and read back" if reads_back_as_written(data) else ""))
    assert_sound(dataset)
    if reads_back_as_written(data):
        written = set(data.rows)
        loaded = [(text, dataset.label_names[label]) for split in dataset.splits.values()
                  for text, label in zip(split.texts, split.labels.tolist())]
        assert set(loaded) <= written
        assert len(loaded) + dataset.repeats_dropped == len(data.rows)


# --- checkpoint folders -------------------------------------------------------------------------

MODEL_FIELDS = {"task.model", "task.max_length"}
ODD_VALUES = st.sampled_from([None, True, 0, -1, 1, 3, 7, 16, 100, 32.5, "32", "", "gpt2",
                              "distilbert", "no-such-thing", "float16", "bfloat16", "relu", [],
                              ["GPT2ForSequenceClassification"], {"0": "a"}, {"x": 1}])
CONFIG_KEYS = ["model_type", "vocab_size", "hidden_size", "num_hidden_layers",
               "num_attention_heads", "intermediate_size", "max_position_embeddings",
               "type_vocab_size", "hidden_act", "dtype", "architectures", "num_labels",
               "id2label", "label2id", "pad_token_id", "layer_norm_eps", "tie_word_embeddings"]
GARBLED_JSON = st.sampled_from([b"", b"{", b"[]", b"null", b'{"model_type": "bert"', b"\xff\xfe"])
DELETE = "<deleted>"  # a config.json key removed


@dataclass(frozen=True)
class Edit:
    """One change to one part of a copy of the tiny checkpoint (a case edits each part once)."""

    part: str  # config.json, weights, tokenizer or extra file
    description: str
    apply: Callable[[Path], object]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis shows a case
        printer.text(self.description)


def edit_config(folder: Path, changes: dict[str, Any]) -> None:
    """Set (or, to ``DELETE``, remove) keys of config.json."""
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                    if v != DELETE}))


def garble(file: Path, at: float, junk: bytes) -> None:
    """Overwrite bytes of ``file`` from the fraction ``at`` of its length."""
    content = bytearray(file.read_bytes())
    start = int(at * len(content))
    content[start:start + len(junk)] = junk
    file.write_bytes(bytes(content))


def truncate(file: Path, at: float) -> None:
    file.write_bytes(file.read_bytes()[: int(at * file.stat().st_size)])


def renumbered_token(folder: Path) -> None:
    """One word of the tokenizer mapped to an id past the model's embeddings."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab[max(vocab, key=vocab.get)] = 500
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


FRACTIONS = st.floats(0, 1)
JUNK = st.binary(min_size=1, max_size=64)
MODEL_EDITS = st.one_of(
    st.builds(lambda changes: Edit("config.json", f"config.json with {changes!r}",
                                   lambda f: edit_config(f, changes)),
              st.dictionaries(st.sampled_from(CONFIG_KEYS), ODD_VALUES | st.just(DELETE),
                              min_size=1, max_size=2)),
    st.builds(lambda junk: Edit("config.json", f"config.json is {junk!r}",
                                lambda f: (f / "config.json").write_bytes(junk)), GARBLED_JSON),
    st.builds(lambda at: Edit("weights", f"safetensors cut at {at:.3f}",
                              lambda f: truncate(f / "model.safetensors", at)), FRACTIONS),
    st.builds(lambda at, junk: Edit("weights", f"safetensors garbled at {at:.3f} with {junk!r}",
                                    lambda f: garble(f / "model.safetensors", at, junk)),
              st.one_of(st.floats(0, 0.01), FRACTIONS), JUNK),  # the header, or anywhere
    st.builds(lambda junk: Edit("extra file", f"a second safetensors file of {junk!r}",
                                lambda f: (f / "extra.safetensors").write_bytes(junk)), JUNK),
    st.sampled_from([
        Edit("weights", "no safetensors", lambda f: (f / "model.safetensors").unlink()),
        Edit("tokenizer", "the tokenizer of another model", tokenizer_of_another_model),
        Edit("tokenizer", "a token id past the embeddings", renumbered_token),
        Edit("tokenizer", "no tokenizer", lambda f: [(f / name).unlink()
                                                     for name in ("vocab.txt", "tokenizer.json")]),
    ]),
    st.builds(lambda name, at: Edit("tokenizer", f"{name} cut at {at:.3f}",
                                    lambda f: truncate(f / name, at)),
              st.sampled_from(["tokenizer.json", "tokenizer_config.json", "vocab.txt"]),
              FRACTIONS),
)


@PROPERTY
@given(edits=st.lists(MODEL_EDITS, max_size=3, unique_by=lambda edit: edit.part),
       max_length=st.sampled_from([8, 32, 128]))  # the tiny model has 64 positions
def test_a_checkpoint_folder_runs_or_names_the_field(
        edits: list[Edit], max_length: int, tiny_model: Path, tiny_csv: Path) -> None:
    import torch

    from edgetune.objectives.checkpoint import load_classifier
    from edgetune.objectives.task import TaskConfig, load_task

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(shutil.copytree(tiny_model, Path(scratch) / "model"))
        for edit in edits:
            edit.apply(folder)
        config = TaskConfig(model=str(folder), data=DataConfig(path=str(tiny_csv)),
                            max_length=max_length)
        try:
            task = load_task(config)
        except InputError as error:
            refused_in_one_line(error, MODEL_FIELDS)
            event(f"refused: {error.where}")
            return
        event("runs")
        model = load_classifier(task.model_path, task.label_names)
        batch = {name: torch.from_numpy(ids[:4]) for name, ids in task.encoded("test").items()}
        with torch.no_grad():
            assert model(**batch).logits.shape == (4, len(task.label_names))
