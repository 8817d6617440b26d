"""The ``int4`` scheme: ONNX Runtime's 4-bit weights (MatMulNBits, GatherBlockQuantized) run on
the CPU provider, stay close to the FP32 logits, shrink the file below dynamic INT8's, compose
with the fusions, layer dropping and vocabulary trimming, and are searched only where a config
lists them.

Built on the tiny fine-tuned BERT (hidden 32, 2 layers; RoBERTa and DistilBERT exports too):
blocks of 16 and 32 weights, since a block larger than a weight's input dimension is padded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from edgetune.objectives.accuracy import predict
from edgetune.objectives.build import Candidate, Workbench
from edgetune.objectives.candidate import build
from edgetune.objectives.checkpoint import load_classifier
from edgetune.objectives.export import export_onnx
from edgetune.objectives.quantization import quantize_int4
from edgetune.search.cli import cli
from edgetune.search.config import StudyConfig
from edgetune.spaces.graph import GraphRecipe
from edgetune.spaces.pruning import StructuredPruning
from edgetune.spaces.quantization import DynamicQuantization, Int4Quantization, Int4Space
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.recovery import RecoveryRecipe
from edgetune.spaces.vocabulary import VocabularyRecipe

from conftest import LABELS, build_tiny_model
from helpers import Build, op_counts, run_study, tiny_config, write_config

WORD_EMBEDDINGS = "model.bert.embeddings.word_embeddings.weight"
ENQUEUED = {"pruning.method": "none", "quantization.scheme": "int4",
            "quantization.int4.block_size": 16, "quantization.int4.symmetric": True,
            "quantization.int4.accuracy_level": 4, "quantization.int4.op_types": "matmul_gather",
            "graph.fusion": False}


def logits(model: Path, bench: Workbench) -> np.ndarray:
    return predict(model, bench.task.encoded("validation"), bench.target)


def initializer_names(model: Path) -> set[str]:
    return {i.name for i in onnx.load(str(model)).graph.initializer}


def test_int4_quantizes_the_matmuls_and_the_embedding_tables_and_keeps_the_logits(
        tiny_build: Build, study_bench: Workbench) -> None:
    model = tiny_build(Recipe(quantization=Int4Quantization(block_size=16)))
    ops = op_counts(model)
    assert ops["MatMulNBits"] == 12  # 6 projections in each of 2 layers (pooler, head: Gemm)
    assert ops["MatMul"] == 4  # the attentions' products of activations: no weights
    assert ops["GatherBlockQuantized"] == 3  # word, position and token type embeddings
    assert f"{WORD_EMBEDDINGS}_Q4" in initializer_names(model)
    reference, quantized = logits(study_bench.reference(), study_bench), logits(model, study_bench)
    assert np.abs(quantized - reference).max() < 0.25 * np.abs(reference).max()
    assert (quantized.argmax(1) == reference.argmax(1)).mean() >= 0.9


def test_without_the_gathers_the_embedding_tables_stay_in_float(tiny_build: Build) -> None:
    model = tiny_build(Recipe(quantization=Int4Quantization(block_size=16, op_types="matmul")))
    ops = op_counts(model)
    assert ops["MatMulNBits"] == 12 and "GatherBlockQuantized" not in ops
    assert WORD_EMBEDDINGS in initializer_names(model)


def test_the_settings_reach_the_stored_operators(tiny_build: Build) -> None:
    def attributes(recipe: Int4Quantization) -> tuple[dict[str, Any], int]:
        graph = onnx.load(str(tiny_build(Recipe(quantization=recipe)))).graph
        matmul = next(n for n in graph.node if n.op_type == "MatMulNBits")
        return ({a.name: onnx.helper.get_attribute_value(a) for a in matmul.attribute},
                len(matmul.input))

    attrs, inputs = attributes(Int4Quantization(block_size=32, accuracy_level=4))
    assert attrs["block_size"] == 32 and attrs["accuracy_level"] == 4
    assert inputs == 4  # asymmetric: zero points
    attrs, inputs = attributes(Int4Quantization(block_size=16, symmetric=True,
                                                accuracy_level=0))
    assert attrs["block_size"] == 16 and "accuracy_level" not in attrs
    assert inputs == 3  # symmetric: no zero points


def test_the_int4_file_is_smaller_than_dynamic_int8s(tiny_build: Build) -> None:
    int8 = tiny_build(Recipe(quantization=DynamicQuantization()))
    int4 = tiny_build(Recipe(quantization=Int4Quantization(block_size=32, symmetric=True)))
    assert int4.stat().st_size < int8.stat().st_size


def test_after_the_fusions_every_weight_matrix_is_still_4_bit(
        tiny_build: Build, study_bench: Workbench) -> None:
    """int4 fuses without attention: a fused Attention's packed Q/K/V weight and the fused
    embeddings (EmbedLayerNormalization) would stay FP32."""
    model = tiny_build(Recipe(quantization=Int4Quantization(block_size=16),
                              graph=GraphRecipe(fusion=True)))
    ops = op_counts(model)
    assert ops["MatMulNBits"] == 12 and ops["GatherBlockQuantized"] == 3
    assert "Attention" not in ops and "EmbedLayerNormalization" not in ops
    assert ops["SkipLayerNormalization"] > 0
    reference, quantized = logits(study_bench.reference(), study_bench), logits(model, study_bench)
    assert (quantized.argmax(1) == reference.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_other_encoder_families_quantize_to_the_same_operators(family: str, study_bench: Workbench,
                                                               tmp_path: Path) -> None:
    """RoBERTa's positions start after the padding index; DistilBERT has no token types."""
    model = load_classifier(build_tiny_model(tmp_path / family, family), LABELS)
    fp32 = export_onnx(model, ["input_ids", "attention_mask"], tmp_path / "fp32.onnx")
    int4 = tmp_path / "int4.onnx"
    quantize_int4(fp32, int4, Int4Quantization(block_size=16))
    ops = op_counts(int4)
    assert ops["MatMulNBits"] == 12 and ops["GatherBlockQuantized"] >= 2
    inputs = {name: value for name, value in study_bench.task.encoded("validation").items()
              if name in ("input_ids", "attention_mask")}
    reference = predict(fp32, inputs, study_bench.target)
    quantized = predict(int4, inputs, study_bench.target)
    assert np.abs(quantized - reference).max() < 0.25 * np.abs(reference).max()


def test_int4_composes_with_dropped_layers_and_a_trimmed_vocabulary(
        study_bench: Workbench, tmp_path: Path) -> None:
    recipe = Recipe(pruning=StructuredPruning(layers_dropped=1, layer_selection="even"),
                    recovery=RecoveryRecipe(steps=10, learning_rate=2e-3),
                    vocabulary=VocabularyRecipe(trim=True, margin=0),
                    quantization=Int4Quantization(block_size=16))
    candidate = build(recipe, study_bench, Candidate(path=tmp_path / "model.onnx"))
    ops = op_counts(candidate.path)
    assert ops["MatMulNBits"] == 6 and ops["GatherBlockQuantized"] == 3
    assert candidate.task is not None  # measured on the trimmed tokenizer's ids
    predicted = predict(candidate.path, candidate.task.encoded("validation"), study_bench.target)
    assert np.isfinite(predicted).all()


def int4_config(model: Path, data: Path, **int4: Any) -> dict[str, Any]:
    return tiny_config(model, data,
                       space={"pruning": {"methods": ["none"]},
                              "quantization": {"schemes": ["none", "int4"], "int4": int4},
                              "graph": {"fusion": [False]}},
                       search={"trials": 4, "objectives": ["accuracy", "latency_ms", "size_mb"],
                               "enqueue": [ENQUEUED]})


def test_a_study_listing_int4_completes_and_exports_an_int4_trial(tmp_path: Path, tiny_model: Path,
                                                      tiny_csv: Path) -> None:
    run = run_study(tmp_path, int4_config(tiny_model, tiny_csv, block_size=[16]), trials=2)
    reference, enqueued = optuna.load_study(
        study_name="tiny", storage=f"sqlite:///{run / 'study.db'}").get_trials()[:2]
    assert enqueued.state == TrialState.COMPLETE
    assert enqueued.user_attrs["recipe_short"] == "int4-b16-sym"
    assert enqueued.user_attrs["recipe"]["quantization"] == {
        "scheme": "int4", "block_size": 16, "symmetric": True, "accuracy_level": 4,
        "op_types": "matmul_gather"}
    assert "quantize" in enqueued.user_attrs["stage_seconds"]
    size_mb = enqueued.user_attrs["measurement"]["size_mb"]
    assert size_mb < reference.user_attrs["measurement"]["size_mb"]
    assert enqueued.values[2] == size_mb  # size_mb, the third objective

    exported = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", "--run-dir", str(run), "--trial",
                                      str(enqueued.number), "--out", str(exported), "--json"])
    assert result.exit_code == 0, result.output
    assert op_counts(exported / "model.onnx")["GatherBlockQuantized"] == 3
    assert (exported / "model.ort").stat().st_size > 0  # the mobile format takes the contrib ops


def test_a_bad_int4_setting_is_refused_in_one_line_naming_it(tmp_path: Path, tiny_model: Path,
                                                             tiny_csv: Path) -> None:
    path = write_config(tmp_path, int4_config(tiny_model, tiny_csv, block_size=[100]))
    result = CliRunner().invoke(cli, ["run", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "space.quantization.int4.block_size.0" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_int4_joins_a_configs_fingerprint_only_where_chosen(tiny_model: Path,
                                                            tiny_csv: Path) -> None:
    plain = StudyConfig.model_validate(tiny_config(tiny_model, tiny_csv))
    assert plain.space.quantization.section("int4") == Int4Space()
    assert "int4" not in plain.model_dump()["space"]["quantization"]
    chosen = tiny_config(tiny_model, tiny_csv, space={"quantization": {"schemes": ["int4"]}})
    dumped = StudyConfig.model_validate(chosen).model_dump()["space"]["quantization"]
    assert dumped["int4"] == Int4Space().model_dump()
