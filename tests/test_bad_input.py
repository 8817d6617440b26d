"""Bad input gets one line naming the field or file and what was expected, exit code 2, and
nothing written: no run folder, no database, no cache entry.

Every case goes through the command line, as a user meets it. The last test mutates a valid
config at random (hypothesis): it loads, or the error names a real field path; never anything
else.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from edgetune.errors import InputError
from edgetune.search.baselines import DYNAMIC_INT8
from edgetune.search.cli import cli
from edgetune.search.config import StudyConfig, load_config
from edgetune.spaces.registry import SlotSpace, knobs

from conftest import make_texts
from helpers import edgetune_command, tiny_config, tokenizer_of_another_model, write_config

Setup = Callable[[Path, dict[str, Any]], None]  # (inputs folder, config) -> edits the config


def model_copy(source: Path, edit: Callable[[Path], None]) -> Setup:
    def setup(inputs: Path, config: dict[str, Any]) -> None:
        folder = shutil.copytree(source, inputs / "model")
        edit(folder)
        config["task"]["model"] = str(folder)
    return setup


def data_file(name: str, content: bytes, **data: Any) -> Setup:
    def setup(inputs: Path, config: dict[str, Any]) -> None:
        (inputs / name).write_bytes(content)
        config["task"]["data"] = {"path": str(inputs / name), **data}
    return setup


def change(**sections: Any) -> Setup:
    def setup(inputs: Path, config: dict[str, Any]) -> None:
        for name, value in sections.items():
            section = config
            *parents, last = name.split("__")
            for key in parents:
                section = section.setdefault(key, {})
            section[last] = value
    return setup


def folder_read_as_csv(inputs: Path, config: dict[str, Any]) -> None:
    (inputs / "texts" / "sport").mkdir(parents=True)
    (inputs / "texts" / "sport" / "1.txt").write_text("a goal")
    config["task"]["data"] = {"path": str(inputs / "texts"), "format": "csv"}


def unseen_labels(inputs: Path, config: dict[str, Any]) -> None:
    import datasets

    rows = make_texts(20)
    full = datasets.Dataset.from_dict({"text": [t for t, _ in rows],
                                       "label": [label for _, label in rows]})
    datasets.DatasetDict({"train": full.filter(lambda row: row["label"] != "tech"),
                          "validation": full, "test": full}).save_to_disk(str(inputs / "dd"))
    config["task"]["data"] = {"path": str(inputs / "dd")}


def gpt2_checkpoint(tiny_model: Path) -> Setup:
    def setup(inputs: Path, config: dict[str, Any]) -> None:
        from transformers import GPT2Config, GPT2ForSequenceClassification

        folder = inputs / "gpt2"
        GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64,
                                                 pad_token_id=0)).save_pretrained(folder)
        for tokenizer_file in ("vocab.txt", "tokenizer_config.json"):
            shutil.copy(tiny_model / tokenizer_file, folder)
        config["task"]["model"] = str(folder)
        config["space"]["pruning"]["methods"] = ["none", "structured"]
    return setup


def pickled_code(folder: Path) -> None:
    """Weights replaced by a pickle that would create a file named PWNED if it ever ran."""
    import torch

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {folder / 'PWNED'}",))

    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": Payload()},
               folder / "pytorch_model.bin")


def cut_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


CSV_HEAD = b"text,label\n"
CASES: dict[str, tuple[Setup, str, str]] = {
    # case: (setup, where, words of the message)
    "unknown key": (change(search__trails=5), "search.trails", "unknown key"),
    "wrong type": (change(target__threads="two"), "target.threads", "valid integer"),
    "ratio of 1": (change(space__pruning__unstructured={"ratio": {"low": 0.1, "high": 1.0}}),
                   "space.pruning.unstructured.ratio.high", "less than 1"),
    "negative ratio": (change(space__pruning__unstructured={"ratio": {"low": -0.1, "high": 0.5}}),
                       "space.pruning.unstructured.ratio.low", "greater than 0"),
    "no heads kept": (change(space__pruning__structured={"heads_kept": {"low": 0, "high": 1}}),
                      "space.pruning.structured.heads_kept.low", "greater than 0"),
    "as many layers dropped as the model has": (
        change(space__pruning__structured={"layers_dropped": {"low": 0, "high": 2}}),
        "space.pruning.structured.layers_dropped.high", "the model has 2 encoder layers"),
    "negative fine-tuning steps": (change(finetune__steps=-5), "finetune.steps",
                                   "greater than or equal to 0"),
    "negative recovery steps": (change(space__recovery__steps={"low": -1, "high": 3}),
                                "space.recovery.steps.low", "greater than or equal to 0"),
    "empty choice list": (change(space__quantization__schemes=[]),
                          "space.quantization.schemes", "at least 1 item"),
    "splits not adding up": (change(task__data__splits={"train": 0.9}), "task.data.splits",
                             "must be 1"),
    "enqueued recipe outside the space": (change(search__enqueue=[{"pruning.method": "magic"}]),
                                          "search.enqueue.0", "not a recipe of this space"),
    "bad study name": (change(study="../elsewhere"), "study", "should match pattern"),
    "fewer rounds at most than at least": (change(confirm={"rounds": 40, "max_rounds": 5}),
                                           "confirm", "must be at least rounds (40)"),
    "missing model folder": (change(task__model="/nonexistent/model"), "task.model",
                             "no such folder"),
    "not a checkpoint": (None, "task.model", "is not a Hugging Face checkpoint"),  # set below
    "architecture structured pruning cannot handle": (None, "space.pruning.methods",
                                                      "structured pruning supports"),
    "pickled code instead of weights": (None, "task.model", "loading it could run code"),
    "weights cut short": (None, "task.model", "cannot load it as a classifier"),
    "the tokenizer of another model": (None, "task.model", "tokenizer belongs to another model"),
    "inputs longer than the model takes": (change(task__max_length=128), "task.max_length",
                                           "runs on 8 tokens, not on 128"),
    "model in a package that is not installed": (change(task__model="pkg://no_such_pkg/model"),
                                                  "task.model", "no installed Python package"),
    "missing data file": (change(task__data={"path": "/nonexistent/texts.csv"}),
                          "task.data.path", "no such file"),
    "data in a package that is not installed": (change(task__data={"path": "pkg://no_such_pkg/d"}),
                                                "task.data.path", "no installed Python package"),
    "a folder read as csv": (folder_read_as_csv, "task.data.path", "is a folder"),
    "one label for every row": (data_file("one.csv", CSV_HEAD + b"".join(
        b"text %d,sport\n" % i for i in range(40))), "task.data.path", "at least two labels"),
    "a JSON line that is not an object": (data_file("texts.jsonl", b'{"text": "a", "label": "b"}'
                                                                  b"\n[1, 2, 3]\n"),
                                          "task.data.path", "cannot read as jsonl"),
    "a row without a label": (data_file("ragged.csv", CSV_HEAD + b"a goal,sport\na lone field\n"),
                              "task.data.label_column", "row 2 has no 'label'"),
    "empty data file": (data_file("empty.csv", CSV_HEAD), "task.data.path", "holds no rows"),
    "zero-byte data file": (data_file("zero.csv", b""), "task.data.path", "cannot read as csv"),
    "missing label column": (data_file("topics.csv", b"text,topic\nhello,a\n"),
                             "task.data.label_column", "no column 'label'"),
    "labels that train lacks": (unseen_labels, "task.data.path", "labels that train lacks: tech"),
    "undecodable text": (data_file("latin.csv", CSV_HEAD + "café,a\n".encode("latin-1"),
                                   encoding="utf-8"), "task.data.encoding", "not valid utf-8"),
    "unknown codec": (change(task__data__encoding="utf-9"), "task.data.encoding",
                      "auto or a Python codec name"),
    "unknown data format": (data_file("texts.txt", b"hello"), "task.data.format",
                            "cannot tell the format"),
    "unknown metric": (change(task__metric="f1"), "task.metric",
                       "expected accuracy, macro_f1 or recall:LABEL"),
    "recall of a label that is not a class": (change(task__metric="recall:defect"),
                                              "task.metric", "'defect' is not a class of the "
                                              "data (its classes: politics, sport, tech)"),
}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder (holding the cache too) that a refused run must leave empty."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("EDGETUNE_CACHE_DIR", str(work / "cache"))
    return work


def refused(args: list[str], where: str, words: str, workspace: Path) -> str:
    """Run the CLI; check exit code 2, one line naming ``where``, and an untouched workspace."""
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"edgetune: error: {where}: "), lines[0]
    assert words in lines[0], lines[0]
    assert not list(workspace.iterdir()), "a refused run wrote files"
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_line(case: str, tmp_path: Path, workspace: Path,
                                          tiny_model: Path, tiny_csv: Path) -> None:
    setup, where, words = CASES[case]
    setup = {
        "not a checkpoint": model_copy(tiny_model, lambda m: (m / "config.json").unlink()),
        "architecture structured pruning cannot handle": gpt2_checkpoint(tiny_model),
        "pickled code instead of weights": model_copy(tiny_model, pickled_code),
        "weights cut short": model_copy(tiny_model, cut_weights),
        "the tokenizer of another model": model_copy(tiny_model, tokenizer_of_another_model),
    }.get(case, setup)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    config = tiny_config(tiny_model, tiny_csv)
    setup(inputs, config)
    refused(["run", str(write_config(inputs, config))], where, words, workspace)
    assert not list(inputs.rglob("PWNED")), "loading the checkpoint ran its code"


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path, workspace: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("study: x\ntask: [unclosed\n")
    refused(["run", str(path)], f"{path}:3", "not valid YAML", workspace)


def test_a_config_that_is_not_a_mapping_is_refused(tmp_path: Path, workspace: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("- study\n- task\n")
    refused(["run", str(path)], str(path), "expected a mapping", workspace)


def test_missing_config_file_is_named(tmp_path: Path, workspace: Path) -> None:
    refused(["run", str(tmp_path / "absent.yaml")], str(tmp_path / "absent.yaml"),
            "cannot read the config", workspace)


def test_an_existing_study_with_another_config_is_left_untouched(
        tmp_path: Path, workspace: Path, tiny_model: Path, tiny_csv: Path) -> None:
    from edgetune.search.study import Location, make_storage, open_study

    location = Location.resolve("tiny", workspace / "runs" / "tiny")
    location.run_dir.mkdir(parents=True)
    original = StudyConfig.model_validate(tiny_config(tiny_model, tiny_csv))
    open_study(original, "tiny", make_storage(location.storage))
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    changed = write_config(tmp_path, tiny_config(tiny_model, tiny_csv, target={"threads": 2}))
    result = CliRunner().invoke(cli, ["run", str(changed)], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr.startswith("edgetune: error: study: a study named 'tiny' already exists")
    assert "different config" in result.stderr and len(result.stderr.splitlines()) == 1
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()} == before


def test_an_unreachable_database_fails_fast_in_one_line(tmp_path: Path, tiny_model: Path,
                                                        tiny_csv: Path) -> None:
    """As a user sees it: a real process, its whole stderr, no traceback and no long hang."""
    config = write_config(tmp_path, tiny_config(tiny_model, tiny_csv))
    start = time.monotonic()
    result = subprocess.run(
        edgetune_command("run", config, "--storage", "postgresql://nobody@127.0.0.1:1/x"),
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert time.monotonic() - start < 60
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("edgetune: error: --storage: cannot open "
                                    "postgresql://nobody@127.0.0.1:1/x: ")
    assert "Connection refused" in result.stderr or "connection failed" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


# --- property: any mutation of a valid config loads, or names a real field --------------------

VALID = tiny_config(Path("model"), Path("texts.csv"), search={
    "trials": 3, "enqueue": [{**DYNAMIC_INT8, "graph.fusion": False}]})
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested dict/list, the root included."""
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += paths(value, (*prefix, index))
    return found


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    config = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(config)))
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add key"]))
        if not path or action == "add key":
            target = config if not path else parent[path[-1]]
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(VALUES)
    return config


def names_a_real_field(where: str, raw: dict[str, Any]) -> bool:
    """``where`` is a key path in what the user wrote, or a field of the config's schema."""
    if where in {".".join(map(str, path)) for path in paths(raw)}:
        return True
    model: type[BaseModel] = StudyConfig
    for part in where.split("."):
        field = model.model_fields.get(part)
        if field is None and issubclass(model, SlotSpace):  # a knob's section
            section = knobs(model.slot).get(part)
            if section is None or section.space is None:
                return False
            model = section.space
            continue
        if field is None:
            return False
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return True  # a leaf, or a union or list whose inside is the user's own
        model = field.annotation
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(config=mutated_configs())
def test_mutated_configs_load_or_name_a_real_field(config: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        load_config(path)
    except InputError as error:
        assert names_a_real_field(error.where, config), (error.where, json.dumps(config,
                                                                                 default=str))
        assert error.message
