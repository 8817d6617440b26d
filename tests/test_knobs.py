"""Knobs are plug-ins: a quantization scheme declared in this file alone, with its recipe, space,
build step and legend, is sampled, built, measured, stored, reported and exported like edgetune's
own, and the config validates against whatever is registered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import onnx
import optuna
import pytest
from click.testing import CliRunner
from onnxruntime.quantization import QuantType, quantize_dynamic
from optuna.trial import TrialState

from edgetune.objectives.quantization import post_training
from edgetune.search.cli import cli
from edgetune.search.config import StudyConfig
from edgetune.spaces.base import Strict, suggest_choice
from edgetune.spaces.knob import QuantizationScheme
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.registry import knobs, registered

from helpers import tiny_config, write_config


class MatMulWeights(Strict):
    """INT8 weights for MatMul nodes only, everything else left in FP32."""

    scheme: Literal["matmul-weights"] = "matmul-weights"
    per_channel: bool = False

    def short(self) -> str:
        return "matmul-weights" + ("-pc" if self.per_channel else "")


class MatMulWeightsSpace(Strict):
    per_channel: list[bool] = [False, True]

    def sample(self, trial: optuna.Trial) -> MatMulWeights:
        return MatMulWeights(per_channel=suggest_choice(
            trial, "quantization.matmul-weights.per_channel", self.per_channel))


def matmul_weights(source: Path, target: Path, recipe: MatMulWeights, calibration: dict) -> None:
    quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul"],
                     per_channel=recipe.per_channel, weight_type=QuantType.QInt8)


SCHEME = QuantizationScheme(
    name="matmul-weights", recipe=MatMulWeights, space=MatMulWeightsSpace,
    steps={"quantize": post_training(matmul_weights)},
    fusion=lambda recipe: "none", colour="#e377c2", symbol="star-triangle-up",
    label="MatMul weights INT8",
)
ENQUEUED = [{"pruning.method": "none", "quantization.scheme": "matmul-weights",
             "quantization.matmul-weights.per_channel": per_channel}
            for per_channel in (False, True)]


@pytest.fixture
def matmul_scheme() -> object:
    with registered(SCHEME) as scheme:
        yield scheme


def config(model: Path, data: Path) -> dict:
    return tiny_config(model, data,
                       space={"pruning": {"methods": ["none"]},
                              "quantization": {"schemes": ["none", "matmul-weights"],
                                               "matmul-weights": {"per_channel": [False, True]}},
                              "graph": {"fusion": [False]}},
                       search={"trials": 3, "enqueue": ENQUEUED})


def test_a_scheme_registered_from_outside_runs_a_trial_like_any_other(
        matmul_scheme: QuantizationScheme, tmp_path: Path, tiny_model: Path,
        tiny_csv: Path) -> None:
    path = write_config(tmp_path, config(tiny_model, tiny_csv))
    run = CliRunner().invoke(cli, ["run", str(path), "--run-dir", str(tmp_path / "run")],
                             catch_exceptions=False)
    assert run.exit_code == 0, run.output

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/run/study.db")
    reference, *built = study.get_trials(deepcopy=False)
    assert [t.state for t in built] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["recipe_short"] for t in built] == ["matmul-weights",
                                                             "matmul-weights-pc"]
    assert all(Recipe.model_validate(t.user_attrs["recipe"]).quantization == MatMulWeights(
        per_channel=pc) for t, pc in zip(built, (False, True)))
    assert all("quantize" in t.user_attrs["stage_seconds"] for t in built)
    fp32_mb = reference.user_attrs["measurement"]["size_mb"]
    assert all(t.user_attrs["measurement"]["size_mb"] < fp32_mb for t in built)

    exported = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", "--run-dir", str(tmp_path / "run"), "--trial",
                                      str(built[1].number), "--out", str(exported), "--json"])
    assert result.exit_code == 0, result.output
    ops = {node.op_type for node in onnx.load(str(exported / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops and "Gather" in ops  # MatMuls quantized, embeddings not
    assert json.loads((exported / "recipe.json").read_text())["quantization"] == {
        "scheme": "matmul-weights", "per_channel": True}
    assert "MatMul weights INT8" in (tmp_path / "run" / "report.html").read_text()


def test_the_scheme_composes_as_it_declares(matmul_scheme: QuantizationScheme) -> None:
    with pytest.raises(ValueError, match="graph fusion does not compose with matmul-weights"):
        Recipe.model_validate({"quantization": {"scheme": "matmul-weights"},
                               "graph": {"fusion": True}})


def test_installing_a_scheme_leaves_the_configs_that_do_not_choose_it_as_they_were(
        tiny_model: Path, tiny_csv: Path) -> None:
    """A config's sections are part of its study's fingerprint: a plug-in's must not join them
    unless chosen, or every existing study would refuse to resume once it is installed."""
    plain = tiny_config(tiny_model, tiny_csv)
    before = StudyConfig.model_validate(plain).fingerprint()
    with registered(SCHEME):
        assert StudyConfig.model_validate(plain).fingerprint() == before
        chosen = StudyConfig.model_validate(config(tiny_model, tiny_csv))
        assert chosen.space.quantization.section("matmul-weights") == MatMulWeightsSpace()


def test_a_config_naming_a_scheme_nobody_registered_is_a_one_line_error(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    assert "matmul-weights" not in knobs("quantization")
    path = write_config(tmp_path, config(tiny_model, tiny_csv))
    result = CliRunner().invoke(cli, ["run", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "space.quantization.schemes.1" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
