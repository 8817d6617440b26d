"""The Core ML export writes packages that check as specs (Core ML runs only on Apple platforms):
the inputs edgetune names, one ``logits`` output, INT8 weights when asked; and says which
quantization recipes a Core ML package cannot express."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgetune.objectives.coreml import (
    WEIGHT_THRESHOLD,
    check_coreml,
    coreml_int8_weights,
    coreml_supports,
    export_coreml,
)
from edgetune.spaces.qat import QatRecipe
from edgetune.spaces.quantization import (
    DynamicQuantization,
    NncfQuantization,
    NoQuantization,
    StaticQuantization,
)

from conftest import build_tiny_model

pytest.importorskip("coremltools")

NAMES = {"bert": ["input_ids", "token_type_ids", "attention_mask"],
         "distilbert": ["input_ids", "attention_mask"]}
LABELS, BATCH, SEQUENCE = 3, 2, 16


def wide_model(folder: Path, family: str) -> torch.nn.Module:
    """The tiny model's vocabulary with hidden 64 and FFN 256: its weight matrices hold more
    than ``WEIGHT_THRESHOLD`` values, so they are quantized (the tiny model's 32 × 32 are not)."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    vocab = BertConfig.from_pretrained(build_tiny_model(folder, family)).vocab_size
    torch.manual_seed(0)
    if family == "bert":
        model = BertForSequenceClassification(BertConfig(
            vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=256, max_position_embeddings=64, num_labels=LABELS))
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=vocab, dim=64, n_layers=2, n_heads=4, hidden_dim=256,
            max_position_embeddings=64, pad_token_id=0, num_labels=LABELS))
    assert 64 * 64 > WEIGHT_THRESHOLD
    return model.eval()


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    """FP32 and INT8-weight packages of a BERT and a DistilBERT, written once."""
    written = {}
    for family in NAMES:
        model = wide_model(tmp_path_factory.mktemp(family), family)
        for int8 in (False, True):
            folder = tmp_path_factory.mktemp("coreml")
            written[family, int8] = export_coreml(model, NAMES[family], folder / "model.mlpackage",
                                                  BATCH, SEQUENCE, int8_weights=int8)
    return written


def size_on_disk(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("family", list(NAMES))
def test_package_loads_as_a_spec_with_edgetunes_inputs_and_logits(
        packages: dict[tuple[str, bool], Path], family: str, int8: bool) -> None:
    import coremltools as ct

    path = packages[family, int8]
    assert path.is_dir() and path.suffix == ".mlpackage"
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert [feature.name for feature in spec.description.input] == NAMES[family]
    assert [feature.name for feature in spec.description.output] == ["logits"]
    checked = check_coreml(path, NAMES[family], BATCH, SEQUENCE, LABELS, int8_weights=int8)
    assert checked["inputs"] == {name: f"INT32 [{BATCH}, {SEQUENCE}]" for name in NAMES[family]}
    assert checked["output"] == {"logits": f"FLOAT32 [{BATCH}, {LABELS}]"}
    assert checked["runs_on"] == "macOS/iOS only: not run here"
    # Each layer's 4 attention and 2 FFN matrices, and the word and position embeddings, are
    # above the threshold: INT8 in one package, FP32 in the other.
    big_weights = 2 * 6 + 2
    if int8:
        assert checked["int8_weights"] == big_weights and checked["fp32_weights"] == 0
    else:
        assert checked["int8_weights"] == 0 and checked["fp32_weights"] == big_weights


@pytest.mark.parametrize("family", list(NAMES))
def test_int8_package_is_under_four_tenths_of_the_fp32_one(
        packages: dict[tuple[str, bool], Path], family: str) -> None:
    """Weight matrices go from 4 bytes a value to 1; biases, norms, the per-channel scales and
    the spec stay (0.34x for these small matrices)."""
    fp32, int8 = size_on_disk(packages[family, False]), size_on_disk(packages[family, True])
    assert int8 < 0.4 * fp32


def test_int8_weights_dequantize_to_the_models_weights(
        packages: dict[tuple[str, bool], Path], tmp_path: Path) -> None:
    """The INT8 values times their per-channel scale give back the torch weights to within half
    a step: the package holds this model's weights, quantized, not other numbers."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    mlmodel = ct.models.MLModel(str(packages["distilbert", True]), skip_model_load=True)
    spec = mlmodel.get_spec()
    program = load(spec, spec.specificationVersion, mlmodel.weights_dir)
    dequantized = {op.name: op for op in program.functions["main"].operations
                   if op.op_type == "constexpr_affine_dequantize"}
    weight = wide_model(tmp_path / "again", "distilbert").distilbert.embeddings.word_embeddings
    expected = weight.weight.detach().numpy()
    (op,) = [op for name, op in dequantized.items() if "word_embeddings" in name]
    quantized = op.quantized_data.val.astype(np.float32)
    scale = op.scale.val.reshape(-1, 1)
    assert op.quantized_data.val.dtype == np.int8
    assert np.all(np.abs(quantized * scale - expected) <= scale / 2 + 1e-6)


def test_check_raises_naming_what_does_not_match(
        packages: dict[tuple[str, bool], Path]) -> None:
    distilbert, bert_fp32 = packages["distilbert", True], packages["bert", False]
    with pytest.raises(ValueError, match=r"inputs \['input_ids', 'attention_mask'\], expected"):
        check_coreml(distilbert, NAMES["bert"], BATCH, SEQUENCE, LABELS)
    with pytest.raises(ValueError, match=r"input input_ids is INT32 \[2, 16\], expected INT32 "
                                         r"\[2, 32\]"):
        check_coreml(distilbert, NAMES["distilbert"], BATCH, 32, LABELS)
    with pytest.raises(ValueError, match=r"output logits is FLOAT32 \[2, 3\], expected FLOAT32 "
                                         r"\[2, 5\]"):
        check_coreml(distilbert, NAMES["distilbert"], BATCH, SEQUENCE, 5)
    with pytest.raises(ValueError, match="14 FP32 weights of more than 2048 values left"):
        check_coreml(bert_fp32, NAMES["bert"], BATCH, SEQUENCE, LABELS, int8_weights=True)
    with pytest.raises(ValueError, match="14 INT8 weights in an FP32 export"):
        check_coreml(distilbert, NAMES["distilbert"], BATCH, SEQUENCE, LABELS,
                     int8_weights=False)


def test_check_refuses_a_folder_that_is_not_a_package(tmp_path: Path) -> None:
    (tmp_path / "empty.mlpackage").mkdir()
    for path in (tmp_path / "empty.mlpackage", tmp_path / "missing.mlpackage"):
        with pytest.raises(ValueError, match="not a Core ML package"):
            check_coreml(path, NAMES["bert"], BATCH, SEQUENCE, LABELS)


def test_recipes_core_ml_expresses_map_to_fp32_or_int8_weights() -> None:
    assert coreml_supports(NoQuantization()) is None
    assert coreml_int8_weights(NoQuantization()) is False
    for recipe in (DynamicQuantization(), DynamicQuantization(per_channel=True,
                                                              weight_type="uint8"),
                   QatRecipe(steps=10, export="dynamic")):
        assert coreml_supports(recipe) is None
        assert coreml_int8_weights(recipe) is True


@pytest.mark.parametrize(("recipe", "reason"), [
    (StaticQuantization(), "static quantization makes activations INT8"),
    (NncfQuantization(), "nncf quantization makes activations INT8"),
    (QatRecipe(steps=10, export="qdq"), "QAT with the qdq export quantizes activations"),
    (DynamicQuantization(op_types="matmul"), "FP32 embedding tables"),
    (DynamicQuantization(keep_fp32="attention"), "keep_fp32: attention"),
])
def test_recipes_core_ml_cannot_express_give_a_reason(recipe: object, reason: str) -> None:
    assert reason in (coreml_supports(recipe) or "")
    with pytest.raises(ValueError, match=reason):
        coreml_int8_weights(recipe)
