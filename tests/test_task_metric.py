"""A study that searches on one class's recall (``task.metric: recall:tech``): the objective is
named after it, every trial's value is that recall, the front is drawn on it, and status, the
report and the export say so. Also: an unset metric leaves every fingerprint as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
from click.testing import CliRunner
from sklearn.metrics import recall_score

from edgetune.objectives.data import DataConfig
from edgetune.objectives.task import Task, TaskConfig, load_task
from edgetune.search.cli import cli
from edgetune.search.config import load_config
from edgetune.search.front import complete, front_of
from edgetune.search.record import TrialRecord

from helpers import run_study, tiny_config

EXAMPLES = Path(__file__).parent.parent / "examples"
LABEL = "tech"


@pytest.fixture(scope="module")
def recall_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
               tiny_csv: Path) -> Path:
    """The tiny study on ``recall:tech``: the FP32 reference and the three baselines, the front
    confirmed and reported as ``edgetune run`` does."""
    config = tiny_config(tiny_model, tiny_csv, task={"metric": f"recall:{LABEL}"})
    return run_study(tmp_path_factory.mktemp("recall-study"), config, trials=4)


@pytest.fixture(scope="module")
def task(tiny_model: Path, tiny_csv: Path) -> Task:
    return load_task(TaskConfig(model=str(tiny_model), data=DataConfig(path=str(tiny_csv)),
                                max_length=32, metric=f"recall:{LABEL}"))


def study_of(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{run / 'study.db'}")


def recall_of(model: Path, task: Task) -> float:
    """The model's recall of ``LABEL`` on validation, by onnxruntime and scikit-learn alone, one
    text at a time as the tiny target runs it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    inputs = task.encoded("validation")
    wanted = {i.name for i in session.get_inputs()}
    predicted = [session.run(None, {name: value[row : row + 1] for name, value in inputs.items()
                                    if name in wanted})[0].argmax(axis=1)[0]
                 for row in range(len(task.labels("validation")))]
    wanted_class = task.label_names.index(LABEL)
    return float(recall_score(task.labels("validation") == wanted_class,
                              np.array(predicted) == wanted_class))


def test_the_first_objective_is_the_recall_of_the_named_class(recall_run: Path,
                                                               task: Task) -> None:
    study = study_of(recall_run)
    assert study.metric_names == [f"recall_{LABEL}", "latency_ms"]
    wanted_class = task.label_names.index(LABEL)
    for record in complete(study):
        assert record.measured is not None and record.measured.confusion is not None
        counts = np.array(record.measured.confusion)
        assert counts.sum() == len(task.labels("validation"))
        assert record.trial.values[0] == (counts[wanted_class, wanted_class]
                                          / counts[wanted_class].sum())


def unbeaten(records: list[TrialRecord], score: Callable[[TrialRecord], float]) -> set[int]:
    """The trials no other beats on (``score``, latency shown): the front, computed by hand."""
    beaten = {r.number for r in records for other in records
              if score(other) >= score(r) and other.latency_ms <= r.latency_ms
              and (score(other), other.latency_ms) != (score(r), r.latency_ms)}
    return {r.number for r in records} - beaten


def accuracy(record: TrialRecord) -> float:
    counts = np.array(record.measured.confusion)  # type: ignore[union-attr]
    return float(np.trace(counts) / counts.sum())


def test_recall_drives_the_front(recall_run: Path) -> None:
    """The front is the trials no other beats on recall and latency, which is not the accuracy
    front: the tiny model calls every sport text tech (all of tech caught, two thirds of texts
    right) until the pruned recipe calls every tech text sport (no tech caught, two thirds
    right). On accuracy, all tie and the fastest alone is the front; on the recall of tech, the
    fastest unpruned trial joins it."""
    study = study_of(recall_run)
    shown = [r for r in complete(study) if r.feasible]
    on_front = {r.number for r in front_of(study)}
    assert on_front == unbeaten(shown, lambda r: r.accuracy)
    assert on_front != unbeaten(shown, accuracy)


def test_the_export_scores_the_recall_its_model_has(recall_run: Path, task: Task,
                                                    tmp_path: Path) -> None:
    study = study_of(recall_run)
    trial = front_of(study)[0]
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", "--run-dir", str(recall_run), "--trial",
                                      str(trial.number), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    here = metrics["remeasured"]
    independent = recall_of(out / "model.onnx", task)
    assert metrics["metric"] == f"recall_{LABEL}"
    assert metrics["trial_figures"][f"recall_{LABEL}"] == independent == trial.accuracy
    assert here[f"validation_recall_{LABEL}"] == independent
    assert metrics["checks"][f"validation_recall_{LABEL}_equals_trial"]
    validation = np.array(here["validation_confusion"])
    assert here["validation_accuracy"] == np.trace(validation) / validation.sum()
    test = np.array(here["test_confusion"])
    wanted_class = task.label_names.index(LABEL)
    assert here[f"test_recall_{LABEL}"] == (test[wanted_class, wanted_class]
                                            / test[wanted_class].sum())
    assert f"validation recall_{LABEL}" in (out / "README.md").read_text()


def test_status_and_the_report_name_the_metric(recall_run: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(recall_run), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metric"] == f"recall_{LABEL}"
    page = (recall_run / "report.html").read_text()
    assert f"validation recall_{LABEL}" in page and "validation accuracy" not in page
    first = front_of(study_of(recall_run))[0].number
    assert f'id="confusion-{first}-validation"' in page
    assert f'id="confusion-{first}-test"' in page  # the run confirmed its front


def test_an_unset_metric_keeps_the_fingerprint_of_earlier_studies() -> None:
    example = EXAMPLES / "bbc-news.yaml"
    assert load_config(example).fingerprint() == "bc53738a4f452499"
    assert load_config(example, {"task.metric": "accuracy"}).fingerprint() == "bc53738a4f452499"
    assert load_config(example, {"task.metric": "macro_f1"}).fingerprint() != "bc53738a4f452499"
