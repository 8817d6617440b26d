"""A trial that fails in any stage is FAIL with its stage and message stored; the study goes on.

Faults are injected into one study: a NaN loss provoked by the config (a recovery learning rate
of 1e30), and, patched in, an export error, a model file ONNX Runtime cannot load, and running
out of memory. Each hits one enqueued recipe; a healthy recipe enqueued after them completes.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from edgetune.objectives import export, graph, quantization
from edgetune.search.baselines import DYNAMIC_INT8
from edgetune.search.cli import cli

from helpers import tiny_config, write_config

UNPRUNED = {"pruning.method": "none", "quantization.scheme": "none", "graph.fusion": False}
UNSTRUCTURED = {"pruning.method": "unstructured", "pruning.ratio": 0.5, "recovery.steps": 10,
                "recovery.distillation": False, "quantization.scheme": "none",
                "graph.fusion": False}
# recipe enqueued, stage it fails in, error type, words of the message (trials 3.. in order)
FAULTS = {
    "nan loss": ({**UNSTRUCTURED, "recovery.learning_rate": 1e30}, "prune_recover",
                 "FloatingPointError", "training loss is"),
    "export error": ({**UNSTRUCTURED, "recovery.learning_rate": 1e-3}, "export",
                     "RuntimeError", "not supported"),
    "onnx runtime load error": ({**UNPRUNED, **DYNAMIC_INT8,
                                 "quantization.dynamic.per_channel": True}, "measure",
                                "InvalidProtobuf", "Protobuf parsing failed"),
    "out of memory": ({**UNPRUNED, "graph.fusion": True}, "fuse", "MemoryError",
                      "cannot allocate"),
}
# a recipe new to the study (a repeated one is pruned unbuilt), built without the patched steps
HEALTHY = {**UNPRUNED, "quantization.scheme": "static", "quantization.static.format": "qdq",
           "quantization.static.calibration": "minmax",
           "quantization.static.activation_type": "uint8", "quantization.static.per_channel": False,
           "quantization.static.op_types": "matmul_gather", "quantization.static.keep_fp32": "none"}
FIRST = 3  # trials 0-2: the FP32 reference and the two dynamic INT8 baselines


def export_unsupported(*args: object, **kwargs: object) -> None:
    raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX opset version 17 "
                       "is not supported")


def quantize_to_garbage(source: Path, target: Path, *args: object) -> None:
    target.write_bytes(b"this is not an ONNX model")


def out_of_memory(*args: object, **kwargs: object) -> None:
    raise MemoryError("cannot allocate 17179869184 bytes")


def run_faulty_study(folder: Path, model: Path, data: Path) -> tuple[optuna.Study, list[str]]:
    """Run the reference and baselines, then the faulty recipes with the faults patched in;
    return the study and what ``run``, ``status`` and ``status --json`` printed."""
    config = write_config(folder, tiny_config(
        model, data,
        space={"pruning": {"methods": ["none", "unstructured"]},
               "recovery": {"steps": {"low": 10, "high": 10}, "distillation": [False],
                            "learning_rate": {"low": 1e-3, "high": 1e30, "log": True}},
               "quantization": {"schemes": ["none", "dynamic", "static"]},
               "graph": {"fusion": [False, True]}},
        search={"enqueue": [recipe for recipe, *_ in FAULTS.values()] + [HEALTHY]},
    ))
    args = ["run", str(config), "--run-dir", str(folder / "run")]
    healthy = CliRunner().invoke(cli, [*args, "--trials", str(FIRST)], catch_exceptions=False)
    assert healthy.exit_code == 0, healthy.output
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "export_onnx", export_unsupported)
        patch.setattr(quantization, "quantize_dynamic_int8", quantize_to_garbage)
        patch.setattr(graph, "fuse", out_of_memory)
        faulty = CliRunner().invoke(
            cli, [*args, "--trials", str(FIRST + len(FAULTS) + 1)], catch_exceptions=False)
    assert faulty.exit_code == 0, faulty.output
    status_args = ["status", "--run-dir", str(folder / "run"), "--study", "tiny"]
    status = CliRunner().invoke(cli, status_args, catch_exceptions=False).output
    status_json = CliRunner().invoke(cli, [*status_args, "--json"], catch_exceptions=False)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/run/study.db")
    return study, [faulty.output, status, status_json.stdout]


@pytest.fixture(scope="module")
def faulty_study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
                 tiny_csv: Path) -> tuple[optuna.Study, list[str]]:
    return run_faulty_study(tmp_path_factory.mktemp("faults"), tiny_model, tiny_csv)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_stage_fails_its_trial_with_stage_and_message(
        faulty_study: tuple[optuna.Study, list[str]], fault: str) -> None:
    study, (run_output, status_output, _) = faulty_study
    _, stage, error_type, words = FAULTS[fault]
    trial = study.trials[FIRST + list(FAULTS).index(fault)]
    assert trial.state == TrialState.FAIL
    failure = trial.user_attrs["failure"]
    assert (failure["stage"], failure["type"]) == (stage, error_type)
    assert words in failure["error"] and failure["traceback"]
    assert f"trial {trial.number} failed in {stage}" in run_output  # the progress display
    assert f"trial {trial.number} failed in {stage}: {error_type}: " in status_output


def test_the_study_goes_on_after_failures(faulty_study: tuple[optuna.Study, list[str]]) -> None:
    study, _ = faulty_study
    last = study.trials[-1]
    assert last.number == FIRST + len(FAULTS)
    assert last.state == TrialState.COMPLETE and "failure" not in last.user_attrs
    failed = [t.number for t in study.trials if t.state == TrialState.FAIL]
    assert failed == list(range(FIRST, FIRST + len(FAULTS)))


def test_status_json_lists_failures(faulty_study: tuple[optuna.Study, list[str]]) -> None:
    rows = json.loads(faulty_study[1][2])["failures"]
    assert [(r["trial"], r["stage"]) for r in rows] == [
        (FIRST + i, stage) for i, (_, stage, *_) in enumerate(FAULTS.values())]
    assert all(r["retried_as"] is None for r in rows)  # a failing recipe is not run again
