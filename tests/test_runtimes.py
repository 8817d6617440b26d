"""Choosing the runtime a study compiles for: `target.runtime`, `space.runtime`, their extras,
the schemes each runtime can run, and model files found by their runtime's suffix."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner, Result

from edgetune.objectives.runtimes import RUNTIMES, runtime_of
from edgetune.search.baselines import DYNAMIC_SCHEMES, reference_params
from edgetune.search.cli import cli
from edgetune.search.config import StudyConfig

from helpers import run_study, tiny_config, write_config


def config(tiny_model: Path, tiny_csv: Path, **sections: Any) -> StudyConfig:
    return StudyConfig.model_validate(tiny_config(tiny_model, tiny_csv, **sections))


def refused(tmp_path: Path, raw: dict[str, Any]) -> str:
    """The one line ``edgetune run`` refuses ``raw`` with; nothing may be written."""
    path = write_config(tmp_path, raw)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(path), "--run-dir", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert not run_dir.exists()
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr


def test_naming_onnx_runtime_keeps_the_fingerprint_of_a_config_that_does_not(
        tiny_model: Path, tiny_csv: Path) -> None:
    plain = config(tiny_model, tiny_csv)
    named = config(tiny_model, tiny_csv, target={"threads": 1, "batch_size": 1,
                                                 "sequence_length": 32,
                                                 "runtime": "onnxruntime"})
    assert named.fingerprint() == plain.fingerprint()
    assert plain.space.quantization.schemes == ["none", "dynamic", "static", "nncf", "qat"]


@pytest.mark.parametrize(("runtime", "schemes"), [
    ("litert", ["none", "litert-dynamic", "litert-weight-only"]),
    ("executorch", ["none", "executorch-dynamic"]),
])
def test_another_runtime_searches_its_own_schemes_by_default(
        tiny_model: Path, tiny_csv: Path, runtime: str, schemes: list[str]) -> None:
    chosen = config(tiny_model, tiny_csv, target={"runtime": runtime})
    assert chosen.space.quantization.schemes == schemes
    assert chosen.fingerprint() != config(tiny_model, tiny_csv).fingerprint()


def test_a_searched_runtime_adds_its_schemes_to_the_default_ones(tiny_model: Path,
                                                                  tiny_csv: Path) -> None:
    raw = tiny_config(tiny_model, tiny_csv)
    raw["space"]["runtime"] = ["onnxruntime", "executorch"]
    schemes = StudyConfig.model_validate(raw).space.quantization.schemes
    assert schemes == ["none", "dynamic", "static", "nncf", "qat", "executorch-dynamic"]


def test_an_unknown_runtime_is_refused_in_one_line(tmp_path: Path, tiny_model: Path,
                                                   tiny_csv: Path) -> None:
    line = refused(tmp_path, tiny_config(tiny_model, tiny_csv, target={"runtime": "tensorrt"}))
    assert line.startswith("edgetune: error: target.runtime: unknown runtime 'tensorrt'")
    assert "onnxruntime, litert, executorch" in line


def test_a_runtime_whose_extra_is_missing_names_the_extra(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNTIMES, "litert", dataclasses.replace(
        RUNTIMES["litert"], packages=("edgetune_no_such_package",)))
    raw = tiny_config(tiny_model, tiny_csv)
    raw["space"]["runtime"] = ["onnxruntime", "litert"]
    line = refused(tmp_path, raw)
    assert line == ("edgetune: error: space.runtime.1: LiteRT is not installed: "
                    "pip install 'edgetune[litert]'\n")


def test_a_scheme_the_runtime_cannot_run_is_refused_with_the_schemes_it_can(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    raw = tiny_config(tiny_model, tiny_csv, target={"runtime": "litert"})
    raw["space"]["quantization"]["schemes"] = ["none", "static"]
    line = refused(tmp_path, raw)
    assert line.startswith("edgetune: error: space.quantization.schemes.1: 'static' runs on "
                           "ONNX Runtime only, not on LiteRT")
    assert "none, litert-dynamic, litert-weight-only" in line


def test_a_runtime_left_without_a_scheme_is_refused(tmp_path: Path, tiny_model: Path,
                                                    tiny_csv: Path) -> None:
    raw = tiny_config(tiny_model, tiny_csv)
    raw["space"]["runtime"] = ["onnxruntime", "litert"]
    raw["space"]["quantization"]["schemes"] = ["dynamic"]
    assert "none of them runs on LiteRT" in refused(tmp_path, raw)


def test_a_study_for_litert_samples_only_what_litert_builds(tiny_model: Path,
                                                            tiny_csv: Path) -> None:
    chosen = config(tiny_model, tiny_csv, target={"runtime": "litert"})
    study = optuna.create_study(directions=["maximize", "minimize"])
    recipes = [chosen.space.sample(study.ask(), "litert") for _ in range(30)]
    assert {r.quantization.scheme for r in recipes} == set(chosen.space.quantization.schemes)
    assert not any(r.graph.fusion for r in recipes)  # ONNX Runtime's fusions are not LiteRT's
    assert all(r.runtime is None for r in recipes)  # the study's own runtime
    assert "graph.fusion" not in reference_params(chosen.space, "litert")


def test_a_searched_runtime_is_a_parameter_and_each_runtime_has_its_schemes(
        tiny_model: Path, tiny_csv: Path) -> None:
    raw = tiny_config(tiny_model, tiny_csv)
    raw["space"]["runtime"] = ["onnxruntime", "executorch"]
    chosen = StudyConfig.model_validate(raw)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    by_runtime: dict[str | None, set[str]] = {}
    for _ in range(40):
        trial = study.ask()
        recipe = chosen.space.sample(trial, "onnxruntime")
        by_runtime.setdefault(recipe.runtime, set()).add(recipe.quantization.scheme)
        scheme_parameter = ("quantization.scheme" if recipe.runtime is None
                            else "quantization.scheme.executorch")
        assert trial.params[scheme_parameter] == recipe.quantization.scheme
    assert by_runtime[None] <= {"none", "dynamic", "static", "nncf", "qat"}
    assert by_runtime["executorch"] == {"none", "executorch-dynamic"}
    assert reference_params(chosen.space, "onnxruntime")["runtime"] == "onnxruntime"


def test_a_model_file_names_its_runtime_by_its_suffix() -> None:
    assert runtime_of(Path("model.onnx")).name == "onnxruntime"
    assert runtime_of(Path("model.ort")).name == "onnxruntime"
    with pytest.raises(ValueError, match="expected .onnx, .tflite, .pte"):
        runtime_of(Path("model.bin"))



@pytest.fixture(scope="module", params=["litert", "executorch"])
def target_study(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 tiny_model: Path, tiny_csv: Path) -> tuple[str, Path]:
    """A finished tiny study compiled for ``request.param``: the FP32 reference, the baselines
    in the runtime's own dynamic INT8 (one of them half the layers, recovered), and each other
    scheme of the runtime."""
    runtime = request.param
    schemes = StudyConfig.model_validate(
        tiny_config(tiny_model, tiny_csv, target={"runtime": runtime})
    ).space.quantization.schemes
    enqueued = [{"pruning.method": "none", "quantization.scheme": scheme}
                for scheme in schemes if scheme not in ("none", DYNAMIC_SCHEMES[runtime])]
    trials = 3 + len(enqueued)  # the reference, two baselines, the other schemes
    config = tiny_config(tiny_model, tiny_csv,
                         target={"runtime": runtime, "threads": 1, "batch_size": 2,
                                 "sequence_length": 32},
                         space={"pruning": {"methods": ["none", "structured"],
                                            "structured": {"layers_dropped": {"low": 0,
                                                                              "high": 1}}},
                                "recovery": {"steps": {"low": 10, "high": 10},
                                             "learning_rate": {"low": 1e-3, "high": 3e-3}}},
                         search={"trials": trials, "enqueue": enqueued})
    folder = tmp_path_factory.mktemp(f"{runtime}-study")
    return runtime, run_study(folder, config, trials=trials)


def export(run_dir: Path, trial: int, out: Path, *flags: str) -> Result:
    return CliRunner().invoke(cli, ["export", "--run-dir", str(run_dir), "--trial", str(trial),
                                    "--out", str(out), *flags])


def pruned_trial(run_dir: Path) -> int:
    """The layer-halving baseline: pruned, recovered, quantized."""
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    return next(t.number for t in study.trials
                if t.user_attrs["recipe"]["pruning"]["method"] == "structured")


def test_a_study_for_another_runtime_builds_times_and_scores_its_models(
        target_study: tuple[str, Path]) -> None:
    runtime, run_dir = target_study
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    suffix = RUNTIMES[runtime].suffix
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(study.trials), [t.user_attrs.get("failure") for t in study.trials]
    schemes = {t.user_attrs["recipe"]["quantization"]["scheme"] for t in complete}
    assert schemes == set(StudyConfig.model_validate(study.user_attrs["config"])
                          .space.quantization.schemes)
    for trial in complete:
        assert trial.user_attrs["machine"]["runtime"] == runtime
        assert runtime in trial.user_attrs["machine"]
    assert status["front"]
    assert list((run_dir / "artifacts").rglob("*")), "no artifacts kept"
    assert all(path.suffix == suffix for path in (run_dir / "work").rglob("model.*"))


def test_an_export_for_another_runtime_runs_as_its_readme_says(
        target_study: tuple[str, Path], tmp_path: Path) -> None:
    runtime, run_dir = target_study
    out = tmp_path / "export"
    result = export(run_dir, pruned_trial(run_dir), out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / f"model{RUNTIMES[runtime].suffix}").is_file()
    assert metrics["checks"]["validation_accuracy_equals_trial"]
    snippets = re.findall(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S)
    runner = "import json, sys\nfor snippet in json.load(sys.stdin):\n    exec(snippet, {})\n"
    ran = subprocess.run([sys.executable, "-c", runner], input=json.dumps(snippets), cwd=out,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    printed = ran.stdout.strip().splitlines()
    assert re.fullmatch(r"\[\{'label': '(politics|sport|tech)', 'score': 0\.\d+\}\]", printed[0])
    assert re.fullmatch(r"\['(politics|sport|tech)'\]", printed[1])


def test_a_trial_exports_as_a_core_ml_package_checked_but_not_run(
        target_study: tuple[str, Path], tmp_path: Path) -> None:
    runtime, run_dir = target_study
    out = tmp_path / "coreml"
    result = export(run_dir, pruned_trial(run_dir), out, "--format", "coreml")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    # The tiny model holds no weight large enough to quantize (coreml.WEIGHT_THRESHOLD).
    assert metrics["format"] == "coreml" and metrics["coreml"]["fp32_weights"] == 0
    assert metrics["coreml"]["runs_on"] == "macOS/iOS only: not run here"
    assert "It was not run here" in (out / "README.md").read_text()
    assert (out / "model.mlpackage").is_dir() and (out / "labels.json").is_file()


def test_a_format_of_another_runtime_is_refused_in_one_line(
        target_study: tuple[str, Path], tmp_path: Path) -> None:
    runtime, run_dir = target_study
    out = tmp_path / "onnx"
    result = export(run_dir, 0, out, "--format", "onnx")
    assert result.exit_code == 2 and not out.exists()
    title = RUNTIMES[runtime].title
    assert result.stderr.startswith(f"edgetune: error: --format: trial 0 was compiled for "
                                    f"{title}"), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_study_searching_runtimes_times_every_candidate_beside_one_reference(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    raw = tiny_config(tiny_model, tiny_csv, target={"threads": 1, "batch_size": 1,
                                                    "sequence_length": 32},
                      space={"pruning": {"methods": ["none"]}},
                      search={"trials": 5, "enqueue": [
                          {"runtime": runtime, "pruning.method": "none",
                           f"quantization.scheme.{runtime}": scheme}
                          for runtime, scheme in (("litert", "litert-dynamic"),
                                                  ("executorch", "executorch-dynamic"),
                                                  ("litert", "none"))]})
    raw["space"]["runtime"] = ["onnxruntime", "litert", "executorch"]
    run_dir = run_study(tmp_path, raw, trials=5)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    complete = {t.number: t for t in study.trials
                if t.state == optuna.trial.TrialState.COMPLETE}
    runtimes = {t.user_attrs["recipe"].get("runtime") or "onnxruntime" for t in complete.values()}
    assert {"onnxruntime", "litert", "executorch"} <= runtimes
    for trial in complete.values():
        machine = trial.user_attrs["machine"]
        assert machine["runtime"] == "onnxruntime"  # every ratio is to the ONNX Runtime FP32
        own = trial.user_attrs["recipe"].get("runtime")
        assert machine.get("candidate_runtime") == own and (own is None or own in machine)
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(run_dir), "--json"])
    status = json.loads(result.stdout)
    assert len(status["machines"]) == 1  # one front over every runtime
    report = (run_dir / "report.html").read_text()
    assert "colour by runtime" in report and "ExecuTorch" in report


def test_run_runtime_runs_the_config_in_another_runtime_under_its_own_name(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    raw = tiny_config(tiny_model, tiny_csv)
    raw["space"]["quantization"]["schemes"] = ["none", "dynamic"]  # ONNX Runtime's: replaced
    path = write_config(tmp_path, raw)
    result = CliRunner().invoke(cli, ["run", str(path), "--runtime", "onnxruntime,litert",
                                      "--trials", "1", "--run-dir", str(tmp_path / "run"),
                                      "--no-report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny-onnxruntime-litert",
                              storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    stored = StudyConfig.model_validate(study.user_attrs["config"])
    assert stored.target.runtime == "onnxruntime" and stored.runtimes == ["onnxruntime", "litert"]
    assert stored.space.quantization.schemes == ["none", "dynamic", "static", "nncf", "qat",
                                                 "litert-dynamic", "litert-weight-only"]


def test_a_recipe_core_ml_cannot_express_is_refused_in_one_line(
        target_study: tuple[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgetune.search import export_coreml

    _, run_dir = target_study
    monkeypatch.setattr(export_coreml, "coreml_supports",
                        lambda quantization: "it quantizes activations too (full INT8)")
    out = tmp_path / "coreml"
    result = export(run_dir, 0, out, "--format", "coreml")
    assert result.exit_code == 2 and not out.exists() and not list(tmp_path.iterdir())
    assert result.stderr == ("edgetune: error: --format: trial 0 (fp32 reference) cannot be "
                             "expressed in Core ML: it quantizes activations too (full INT8)\n")
