"""`edgetune export` writes a folder someone deploys: the model as measured, in ONNX and ORT
format, with what it takes to run it, and refuses cleanly when it cannot."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import optuna
import pytest
from click.testing import CliRunner

import edgetune
from edgetune.objectives.latency import MeasureConfig, Ratio
from edgetune.objectives.task import load_task
from edgetune.search.baselines import DYNAMIC_INT8
from edgetune.search.cli import cli
from edgetune.search.config import StudyConfig
from edgetune.search.front import front_of
from edgetune.search.readme import unreliable_note
from edgetune.search.reliability import Load, judge

from helpers import run_readme_snippets, run_study, tiny_config

PRUNED_RECIPE = {
    **DYNAMIC_INT8,
    "pruning.method": "structured", "pruning.heads_kept": 0.5, "pruning.ffn_kept": 0.5,
    "pruning.scope": "layer", "pruning.layers_dropped": 1, "pruning.layer_selection": "even",
    "recovery.steps": 10, "recovery.learning_rate": 2e-3,
    "recovery.distillation": True, "recovery.temperature": 2.0, "recovery.alpha": 0.5,
    "graph.fusion": True,
}
PRUNED_TRIAL = 4  # after the FP32 reference and the three baselines


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_csv: Path) -> Path:
    """A finished tiny study whose trial 4 is pruned, recovered with distillation and quantized."""
    config = tiny_config(tiny_model, tiny_csv,
                         space={"pruning": {"methods": ["none", "structured"],
                                            "structured": {
                                                "layers_dropped": {"low": 0, "high": 1}}},
                                "recovery": {"steps": {"low": 10, "high": 10},
                                             "learning_rate": {"low": 1e-3, "high": 3e-3}},
                                "quantization": {"schemes": ["dynamic", "none"]}},
                         search={"trials": 5, "enqueue": [PRUNED_RECIPE]},
                         # Every trial confirmed, trial 4 included wherever its latency falls:
                         # its confirmed figure is what several tests below rewrite.
                         confirm={"margin": 100.0})
    return run_study(tmp_path_factory.mktemp("export-study"), config, trials=5)


@pytest.fixture(scope="module")
def exported(run_dir: Path) -> Path:
    out = run_dir.parent / "exports" / f"trial-{PRUNED_TRIAL}"
    code, output = export(run_dir, "--trial", str(PRUNED_TRIAL), "--out", str(out))
    assert code == 0, output
    return out


def export(run_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["export", "--run-dir", str(run_dir), "--study", "tiny",
                                      *args], catch_exceptions=False)
    return result.exit_code, result.output


def study_at(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")


def validation_inputs(run_dir: Path) -> dict[str, np.ndarray]:
    config = StudyConfig.model_validate(study_at(run_dir).user_attrs["config"])
    return load_task(config.task).encoded("validation")


def logits(model: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})[0]


def copy_run(run_dir: Path, folder: Path, with_artifacts: bool) -> Path:
    copy = folder / "run"
    shutil.copytree(run_dir, copy, ignore=None if with_artifacts else
                    shutil.ignore_patterns("artifacts"))
    return copy


def test_the_folder_holds_everything_to_deploy(exported: Path, run_dir: Path) -> None:
    trial = study_at(run_dir).trials[PRUNED_TRIAL]
    names = {p.name for p in exported.iterdir()}
    assert {"model.onnx", "model.ort", "model.required_operators.config", "labels.json",
            "recipe.json", "metrics.json", "README.md", "tokenizer_config.json"} <= names
    assert json.loads((exported / "labels.json").read_text()) == ["politics", "sport", "tech"]
    assert json.loads((exported / "recipe.json").read_text()) == trial.user_attrs["recipe"]
    assert not list(exported.parent.glob(".*")), "no staging folder is left beside the export"


def test_re_measured_accuracy_equals_the_trials_exactly(exported: Path, run_dir: Path) -> None:
    trial = study_at(run_dir).trials[PRUNED_TRIAL]
    metrics = json.loads((exported / "metrics.json").read_text())
    assert metrics["model_source"] == "artifact"
    assert metrics["remeasured"]["validation_accuracy"] == trial.values[0]
    assert metrics["checks"]["validation_accuracy_equals_trial"] is True
    assert 0 <= metrics["remeasured"]["test_accuracy"] <= 1
    assert metrics["trial_figures"]["measurement"] == trial.user_attrs["measurement"]
    low, high = metrics["checks"]["trial_ratio_range"]
    ranged = (trial.user_attrs["confirmed"]
              if metrics["checks"]["trial_ratio_range_from"] == "confirmation"
              else trial.user_attrs["measurement"])
    assert low <= ranged["ratio"] <= high
    assert metrics["remeasured"]["ratio"] > 0


def test_ort_format_loads_and_predicts_like_the_onnx_model(exported: Path,
                                                          run_dir: Path) -> None:
    inputs = validation_inputs(run_dir)
    from_onnx, from_ort = logits(exported / "model.onnx", inputs), logits(exported / "model.ort",
                                                                         inputs)
    np.testing.assert_array_equal(from_ort.argmax(axis=1), from_onnx.argmax(axis=1))
    np.testing.assert_allclose(from_ort, from_onnx, atol=1e-4)
    operators = (exported / "model.required_operators.config").read_text()
    assert "# - model.ort" in operators  # names the file, not the folder it was converted in
    assert re.search(r"^com\.microsoft;1;.*DynamicQuantizeMatMul|MatMulInteger", operators,
                     re.MULTILINE)


def test_readme_snippets_run_as_written(exported: Path) -> None:
    printed = run_readme_snippets(exported)
    assert len(printed) == 2
    assert re.fullmatch(r"\[\{'label': '(politics|sport|tech)', 'score': 0\.\d+\}\]", printed[0])
    assert re.fullmatch(r"\['(politics|sport|tech)'\]", printed[1])


def test_load_labels_texts_like_the_model(exported: Path, run_dir: Path) -> None:
    study = study_at(run_dir)
    config = StudyConfig.model_validate(study.user_attrs["config"])
    task = load_task(config.task)
    texts = task.dataset.splits["validation"].texts
    predicted = edgetune.load(exported)(texts)
    expected = logits(exported / "model.onnx", task.encoded("validation")).argmax(axis=1)
    assert [p["label"] for p in predicted] == [task.label_names[i] for i in expected]
    assert all(0 < p["score"] <= 1 for p in predicted)
    from_ort = edgetune.load(exported, model_file="model.ort")(texts)
    assert [p["label"] for p in from_ort] == [p["label"] for p in predicted]
    assert [p["score"] for p in from_ort] == pytest.approx([p["score"] for p in predicted],
                                                           abs=1e-4)


def test_importing_edgetune_stays_cheap() -> None:
    code = ("import sys, edgetune; heavy = {'torch', 'transformers', 'onnxruntime', 'optuna'}; "
            "print(sorted(heavy & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_a_model_not_kept_is_rebuilt_identically(exported: Path, run_dir: Path,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # No artifacts, and a cache holding only the fine-tuned base (the study's starting point,
    # not part of a candidate's build): the candidate is pruned, recovered, exported, fused and
    # quantized again.
    cache = tmp_path / "cache"
    shutil.copytree(Path(os.environ["EDGETUNE_CACHE_DIR"]) / "base", cache / "base")
    monkeypatch.setenv("EDGETUNE_CACHE_DIR", str(cache))
    bare = copy_run(run_dir, tmp_path, with_artifacts=False)
    code, output = export(bare, "--trial", str(PRUNED_TRIAL), "--out", str(tmp_path / "rebuilt"))
    assert code == 0, output
    assert "rebuilt from its recipe" in output
    metrics = json.loads((tmp_path / "rebuilt" / "metrics.json").read_text())
    assert metrics["model_source"] == "rebuilt"
    assert metrics["remeasured"]["validation_accuracy"] == (
        study_at(run_dir).trials[PRUNED_TRIAL].values[0])
    inputs = validation_inputs(run_dir)
    np.testing.assert_array_equal(logits(tmp_path / "rebuilt" / "model.onnx", inputs),
                                  logits(exported / "model.onnx", inputs))
    assert (cache / "pruned").is_dir(), "the pruned model was built again, not read from a cache"


def test_an_existing_folder_is_replaced_only_with_force(exported: Path, run_dir: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "again"
    shutil.copytree(exported, out)
    (out / "stale.txt").write_text("from an earlier export")
    code, output = export(run_dir, "--trial", "0", "--out", str(out))
    assert code == 2 and "exists" in output and "--force" in output
    assert (out / "stale.txt").exists()
    code, output = export(run_dir, "--trial", "0", "--out", str(out), "--force")
    assert code == 0, output
    assert json.loads((out / "metrics.json").read_text())["trial"] == 0
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["again"]


def test_force_never_replaces_a_folder_that_is_not_an_export(run_dir: Path,
                                                             tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, output = export(run_dir, "--trial", "0", "--out", str(tmp_path), "--force")
    assert code == 2 and "not an edgetune export" in output
    assert (tmp_path / "notes.txt").read_text() == "mine"


def only_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgetune: error: "), output
    return lines[0]


def assert_nothing_written(folder: Path) -> None:
    assert not (folder / "out").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".out")], "staging left behind"


def test_an_unknown_trial_is_refused(run_dir: Path, tmp_path: Path) -> None:
    code, output = export(run_dir, "--trial", "99", "--out", str(tmp_path / "out"))
    assert code == 2
    assert "no trial 99" in only_error_line(output)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("state", ["fail", "pruned", "running", "waiting"])
def test_a_trial_without_a_finished_model_is_refused(run_dir: Path, tmp_path: Path,
                                                     state: str) -> None:
    copy = copy_run(run_dir, tmp_path, with_artifacts=False)
    study = study_at(copy)
    if state == "running":
        number = study.ask().number
    elif state == "waiting":
        study.enqueue_trial({"pruning.method": "none"})
        number = len(study.trials) - 1
    else:
        state_of = {"fail": optuna.trial.TrialState.FAIL,
                    "pruned": optuna.trial.TrialState.PRUNED}[state]
        study.add_trial(optuna.trial.create_trial(
            state=state_of, user_attrs={"failure": {"stage": "quantize", "type": "ValueError",
                                                    "error": "no scale"}}))
        number = len(study.trials) - 1
    code, output = export(copy, "--trial", str(number), "--out", str(tmp_path / "out"))
    assert code == 2
    line = only_error_line(output)
    assert f"trial {number}" in line and "only a complete trial" in line
    if state == "fail":
        assert "failed in quantize: ValueError: no scale" in line
    assert_nothing_written(tmp_path)


def test_a_model_gone_with_no_way_to_rebuild_is_refused(run_dir: Path, tmp_path: Path) -> None:
    copy = copy_run(run_dir, tmp_path, with_artifacts=False)
    study = study_at(copy)
    config = study.user_attrs["config"]
    study.set_user_attr("config", config | {"task": config["task"] | {
        "model": str(tmp_path / "checkpoint-not-on-this-machine")}})
    code, output = export(copy, "--trial", str(PRUNED_TRIAL), "--out", str(tmp_path / "out"))
    assert code == 2
    line = only_error_line(output)
    assert "not in the artifact store" in line and "cannot be rebuilt here" in line
    assert "task.model: no such folder" in line
    assert_nothing_written(tmp_path)


def test_an_artifact_id_reaching_outside_the_store_is_refused(run_dir: Path,
                                                               tmp_path: Path) -> None:
    copy = copy_run(run_dir, tmp_path, with_artifacts=True)
    (tmp_path / "secret.onnx").write_text("not for export")
    trial_id = study_at(copy).trials[PRUNED_TRIAL]._trial_id
    meta = {"artifact_id": "../../secret.onnx", "filename": "model.onnx",
            "mimetype": "application/octet-stream", "encoding": None}
    # A finished trial's attrs are read-only through Optuna: tamper with the database itself.
    with sqlite3.connect(copy / "study.db") as db:
        changed = db.execute("UPDATE trial_system_attributes SET value_json = ? WHERE trial_id = ?"
                             " AND key LIKE 'artifacts:%'", (json.dumps(json.dumps(meta)),
                                                             trial_id)).rowcount
    assert changed == 1
    code, output = export(copy, "--trial", str(PRUNED_TRIAL), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "would reach outside the artifact store" in only_error_line(output)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("args", [[], ["--trial", "1", "--pick", "fastest"],
                                  ["--trial", "1", "--max-accuracy-drop", "0.01"]])
def test_the_trial_is_named_one_way(run_dir: Path, tmp_path: Path, args: list[str]) -> None:
    code, output = export(run_dir, *args, "--out", str(tmp_path / "out"))
    assert code == 2
    only_error_line(output)
    assert_nothing_written(tmp_path)


def test_pick_exports_the_most_accurate_front_trial(run_dir: Path, tmp_path: Path) -> None:
    code, output = export(run_dir, "--pick", "most-accurate", "--out", str(tmp_path / "best"))
    assert code == 0, output
    study = study_at(run_dir)
    best = max(front_of(study),  # the confirmed front, with its latencies: the run confirmed it
               key=lambda t: (t.accuracy, -t.latency_ms))
    assert f"picked trial {best.number} " in output
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["trial"] == best.number


def test_the_reports_export_command_runs_as_printed(run_dir: Path, tmp_path: Path) -> None:
    from edgetune.reports.context import export_command
    from edgetune.search.study import Location

    words = shlex.split(export_command(Location.resolve("tiny", run_dir), 1))
    assert words[:2] == ["edgetune", "export"]
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=tmp_path):
        result = runner.invoke(cli, words[1:], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert json.loads(Path("export-trial-1/metrics.json").read_text())["trial"] == 1


def test_json_prints_the_metrics_with_the_paired_ratio(run_dir: Path) -> None:
    out = run_dir.parent / "exports" / "as-json"
    result = CliRunner().invoke(cli, ["export", "--run-dir", str(run_dir), "--study", "tiny",
                                      "--trial", "0", "--out", str(out), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    remeasured = json.loads(result.stdout)["remeasured"]
    assert isinstance(remeasured["ratio"], float) and remeasured["ratio_spread"] >= 0


def measured_with(run_dir: Path, folder: Path, measure: dict[str, object],
                  confirm: dict[str, object], trial_reference_ms: float) -> Path:
    """A copy of the study whose stored config measures with these ``measure`` and ``confirm``
    settings (what an export re-measures with), and whose pruned trial's confirmed figure says
    the FP32 reference took ``trial_reference_ms`` beside it."""
    copy = copy_run(run_dir, folder, with_artifacts=True)
    study = study_at(copy)
    config = study.user_attrs["config"]
    study.set_user_attr("config", config | {"measure": config["measure"] | measure,
                                            "confirm": config["confirm"] | confirm})
    confirmed = study.trials[PRUNED_TRIAL].user_attrs["confirmed"]
    confirmed["reference_latency"]["median_ms"] = trial_reference_ms
    # A finished trial's attrs are read-only through Optuna: edit the database itself.
    with sqlite3.connect(copy / "study.db") as db:
        db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND "
                   "key = 'confirmed'", (json.dumps(confirmed),
                                         study.trials[PRUNED_TRIAL]._trial_id))
    return copy


def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The load average of an idle 2-core machine, whatever this one is doing."""
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


def remeasured(copy: Path, out: Path) -> tuple[dict[str, Any], str]:
    """The metrics of the pruned trial's export from ``copy`` to ``out``, and what it printed."""
    code, output = export(copy, "--trial", str(PRUNED_TRIAL), "--out", str(out))
    assert code == 0, output
    return json.loads((out / "metrics.json").read_text()), output


def test_a_latency_that_cannot_reach_precision_is_marked_unreliable_everywhere(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = measured_with(run_dir, tmp_path, measure={"rounds": 2, "max_rounds": 2,
                                                     "precision": 1e-9},
                         confirm={"rounds": 3, "max_rounds": 3}, trial_reference_ms=1e9)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.1, 3.0, 2.9))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    metrics, output = remeasured(copy, tmp_path / "out")
    verdict = metrics["remeasured"]["reliability"]
    assert verdict["reliable"] is False
    assert verdict["rounds"] == verdict["max_rounds"] == 6, "twice the confirmation's 3 rounds"
    low, high = metrics["remeasured"]["ratio_interval"]
    assert verdict["reason"] == (f"the machine was busy: load 3.1 on 2 cores; the ratio's 95% "
                                 f"interval {low:.2f}–{high:.2f} is wider than ±1e-07% after "
                                 "6 rounds")
    assert metrics["checks"]["remeasured_reliable"] is False
    assert metrics["checks"]["remeasured_unreliable_because"] == verdict["reason"]
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| re-measured at export (**unreliable**, see below) |" in readme
    note = f"The latency re-measured at export is unreliable: {verdict['reason']}."
    assert note in readme
    assert note in " ".join(output.split())


def test_a_reference_slower_than_beside_the_trials_figure_marks_it_unreliable(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """However precise: load slows models unequally, and the interval does not show it."""
    quiet_machine(monkeypatch)
    copy = measured_with(run_dir, tmp_path, measure={"rounds": 2, "max_rounds": 2,
                                                     "precision": 10.0},
                         confirm={"rounds": 3, "max_rounds": 3}, trial_reference_ms=1e-6)
    metrics, output = remeasured(copy, tmp_path / "out")
    verdict = metrics["remeasured"]["reliability"]
    assert verdict["reliable"] is False and verdict["reference_slowdown"] > 1.5
    assert verdict["reason"].startswith("the FP32 reference ran ")
    assert "slower than beside the trial's figure" in verdict["reason"]
    assert f"unreliable: {verdict['reason']}." in " ".join(output.split())


def test_a_precise_latency_on_a_quiet_machine_is_marked_reliable(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quiet_machine(monkeypatch)
    copy = measured_with(run_dir, tmp_path, measure={"rounds": 2, "max_rounds": 2,
                                                     "precision": 10.0},
                         confirm={"rounds": 3, "max_rounds": 3}, trial_reference_ms=1e9)
    metrics, output = remeasured(copy, tmp_path / "out")
    verdict = metrics["remeasured"]["reliability"]
    assert verdict["reliable"] is True and verdict["reason"] is None
    assert verdict["rounds"] == 2, "precise at the least rounds: no more are measured"
    assert metrics["checks"]["remeasured_reliable"] is True
    assert "unreliable" not in (tmp_path / "out" / "README.md").read_text()
    assert "unreliable" not in output


def test_the_verdict_needs_precision_an_unslowed_reference_and_a_quiet_machine() -> None:
    protocol = MeasureConfig(rounds=8, max_rounds=16, precision=0.02)
    precise, noisy = Ratio(0.5, 0.02, (0.495, 0.505)), Ratio(0.5, 1.4, (0.2, 0.9))
    quiet, busy = Load(before=0.4, after=2.0, cores=2), Load(before=1.8, after=3.1, cores=2)
    assert judge(precise, 8, protocol, quiet, 7.0, 7.2).reliable
    assert judge(precise, 8, protocol, quiet, 16.8, None).reliable  # no figure of this machine
    assert judge(noisy, 16, protocol, quiet, 7.0, 7.2).reason == (
        "the ratio's 95% interval 0.20–0.90 is wider than ±2% after 16 rounds")
    assert judge(precise, 8, protocol, quiet, 16.8, 7.3).reason == (
        "the FP32 reference ran 2.3× slower than beside the trial's figure (16.80 ms against "
        "7.30 ms)")
    assert judge(precise, 8, protocol, busy, 7.0, 7.2).reason == (
        "the machine was busy: load 3.1 on 2 cores")


@pytest.mark.parametrize(("interval", "advice"), [
    ((0.335, 0.345), "Trust the trial's confirmed figure (1.20 ms, 0.34× FP32), or measure again "
                     "on a quiet machine"),
    ((0.29, 0.43), "The trial's confirmed figure (0.34× FP32, 95% interval 0.29–0.43) is not "
                   "precise either: measure again on a quiet machine"),
])
def test_an_unreliable_figure_points_to_the_trials_only_when_that_one_is_precise(
        interval: tuple[float, float], advice: str) -> None:
    metrics = {
        "remeasured": {"reliability": {"reliable": False, "reason": "why", "precision": 0.02}},
        "trial_figures": {"latency_ms": 1.3, "measurement": {"ratio": 0.36},
                          "shown_latency_ms": 1.2, "shown_ratio": 0.34,
                          "confirmed": {"latency_ms": 1.2, "ratio": 0.34,
                                        "ratio_interval": interval}},
    }
    assert unreliable_note(metrics) == (
        f"The latency re-measured at export is unreliable: why. {advice} (export again, or "
        "`edgetune bench`).")


def test_exporting_a_model_leaves_it_in_eval_mode(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from edgetune.objectives.export import export_onnx

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    export_onnx(model, ["input_ids", "attention_mask", "token_type_ids"], tmp_path / "m.onnx")
    assert not any(module.training for module in model.modules())
