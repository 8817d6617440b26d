"""LiteRT as a runtime: a converted classifier gives the torch model's logits, both INT8 modes
are smaller and close to FP32, a session fits any batch to the model's static shape, and the
libraries' chatter stays off the terminal."""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedModel

from edgetune.objectives.checkpoint import load_classifier
from edgetune.objectives.litert import compile_litert, quantize_litert
from edgetune.objectives.native_output import native_stderr_quiet
from edgetune.objectives.runtimes import runtime
from edgetune.objectives.runtimes.litert import LiteRtSession
from edgetune.objectives.target import TargetConfig

from conftest import build_tiny_model

BATCH, SEQUENCE = 4, 16
TARGET = TargetConfig(threads=2, batch_size=BATCH, sequence_length=SEQUENCE)
NAMES = {"bert": ["input_ids", "token_type_ids", "attention_mask"],
         "distilbert": ["input_ids", "attention_mask"]}


def token_batch(rows: int, length: int, real: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """int64 arrays as the tokenizer gives them: ``real[i]`` tokens in row ``i``, then padding
    (id 0, mask 0)."""
    ids = np.random.default_rng(seed).integers(5, 40, (rows, length))
    mask = (np.arange(length)[None, :] < np.array(real)[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask,
            "token_type_ids": np.zeros_like(ids)}


def torch_logits(model: PreTrainedModel, batch: dict[str, np.ndarray],
                 names: list[str]) -> np.ndarray:
    with torch.no_grad():
        return model(**{name: torch.from_numpy(batch[name]) for name in names}).logits.numpy()


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[PreTrainedModel, Path]:
    """The tiny BERT and its FP32 LiteRT file (batch 4 x 16 tokens)."""
    folder = tmp_path_factory.mktemp("litert-bert")
    model = load_classifier(build_tiny_model(folder / "model", "bert"))
    return model, compile_litert(model, NAMES["bert"], folder / "fp32.tflite", BATCH, SEQUENCE)


def test_fp32_conversion_gives_the_torch_logits(bert: tuple[PreTrainedModel, Path]) -> None:
    model, path = bert
    session = runtime("litert").open(path, TARGET)
    batch = token_batch(BATCH, SEQUENCE, [16, 9, 4, 12])
    expected = torch_logits(model, batch, NAMES["bert"])
    np.testing.assert_allclose(session(batch), expected, rtol=1e-4, atol=1e-6)
    # The tolerance tells a masked padding from a read one: unmasked, the same ids give other
    # logits, outside it.
    unmasked = torch_logits(model, {**batch, "attention_mask": np.ones_like(batch["input_ids"])},
                            NAMES["bert"])
    assert not np.allclose(unmasked, expected, rtol=1e-4, atol=1e-6)


def test_distilbert_converts_without_token_type_ids_and_quietly(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = load_classifier(build_tiny_model(tmp_path / "model", "distilbert"))
    capfd.readouterr()
    path = compile_litert(model, NAMES["distilbert"], tmp_path / "fp32.tflite", BATCH, SEQUENCE)
    session = runtime("litert").open(path, TARGET)
    assert capfd.readouterr() == ("", "")  # no progress, notes or native log lines
    assert [spec.name for spec in session.inputs] == NAMES["distilbert"]
    batch = token_batch(BATCH, SEQUENCE, [16, 3, 10, 7], seed=1)
    np.testing.assert_allclose(session(batch), torch_logits(model, batch, NAMES["distilbert"]),
                               rtol=1e-4, atol=1e-6)


def test_inputs_are_named_as_the_tokenizer_names_them_and_typed_as_converted(
        bert: tuple[PreTrainedModel, Path]) -> None:
    inputs = runtime("litert").open(bert[1], TARGET).inputs
    assert [(spec.name, spec.shape) for spec in inputs] == [
        (name, (BATCH, SEQUENCE)) for name in NAMES["bert"]]
    assert {(spec.dtype, spec.type_name) for spec in inputs} == {(np.int32, "int32")}


def op_names(session: LiteRtSession) -> set[str]:
    return {op["op_name"] for op in session.interpreter._get_ops_details()}


def int8_tensors(session: LiteRtSession) -> int:
    return sum(tensor["dtype"] == np.int8 for tensor in session.interpreter.get_tensor_details())


@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_quantized_modes_are_smaller_int8_files_close_to_fp32(
        bert: tuple[PreTrainedModel, Path], tmp_path: Path, mode: str,
        capfd: pytest.CaptureFixture[str]) -> None:
    fp32 = bert[1]
    capfd.readouterr()
    path = quantize_litert(fp32, tmp_path / f"{mode}.tflite", mode)  # type: ignore[arg-type]
    assert capfd.readouterr() == ("", "")  # no progress bars or size report
    assert path.stat().st_size < 0.85 * fp32.stat().st_size
    reference, session = runtime("litert").open(fp32, TARGET), runtime("litert").open(path, TARGET)
    assert int8_tensors(reference) == 0 and int8_tensors(session) > 0
    # weight_only computes in FP32 from dequantized weights; dynamic runs INT8 kernels on them.
    assert ("DEQUANTIZE" in op_names(session)) == (mode == "weight_only")
    batch = token_batch(BATCH, SEQUENCE, [16, 9, 4, 12], seed=2)
    expected, got = reference(batch), session(batch)
    assert not np.array_equal(got, expected)
    # Within a tenth of how much the logits vary between rows: a model that ignored its inputs
    # (or garbled them) would be off by about half that spread.
    spread = (expected.max(axis=0) - expected.min(axis=0)).min()
    assert np.abs(got - expected).max() < 0.1 * spread


def test_a_session_fits_any_batch_to_the_models_shape(bert: tuple[PreTrainedModel, Path]) -> None:
    """Rows are padded up to the model's batch (or run in several calls), the sequence padded or
    cut to its length; one row of logits comes back per row given."""
    model, path = bert
    session = runtime("litert").open(path, TARGET)
    names = NAMES["bert"]
    # Fewer rows, padded to a longer max_length than the model's: only padding is cut.
    long = token_batch(3, 24, [16, 5, 11])
    assert np.allclose(session(long), torch_logits(model, long, names), rtol=1e-4, atol=1e-6)
    # Fewer rows and a shorter sequence: padded with masked zeros.
    short = token_batch(1, 10, [8], seed=3)
    assert session(short).shape == (1, 2)
    assert np.allclose(session(short), torch_logits(model, short, names), rtol=1e-4, atol=1e-6)
    # More rows than the model's batch, as bind once and run many times does.
    many = token_batch(BATCH + 2, SEQUENCE, [16, 2, 3, 4, 5, 6, 7, 8][: BATCH + 2], seed=4)
    bound = session.bind(many)
    np.testing.assert_allclose(session.run(bound), torch_logits(model, many, names),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(session.run(bound), session.run(bound))
    # A text longer than the model's sequence keeps its first tokens.
    over = token_batch(2, 20, [20, 18], seed=5)
    cut = {name: value[:, :SEQUENCE] for name, value in over.items()}
    np.testing.assert_allclose(session(over), torch_logits(model, cut, names),
                               rtol=1e-4, atol=1e-6)


def test_sessions_run_on_xnnpack(bert: tuple[PreTrainedModel, Path]) -> None:
    assert "DELEGATE" in op_names(runtime("litert").open(bert[1], TARGET))


def test_opening_a_file_that_is_not_a_litert_model_raises(tmp_path: Path) -> None:
    (tmp_path / "model.tflite").write_bytes(b"not a flatbuffer, some text " * 40)
    with pytest.raises(ValueError):
        runtime("litert").open(tmp_path / "model.tflite", TARGET)
    with pytest.raises(ValueError):
        runtime("litert").open(tmp_path / "missing.tflite", TARGET)


def test_version_is_the_installed_ai_edge_litert() -> None:
    assert runtime("litert").version() == importlib.metadata.version("ai-edge-litert")


def test_native_chatter_is_dropped_but_other_lines_and_failures_are_shown(
        capfd: pytest.CaptureFixture[str]) -> None:
    with native_stderr_quiet():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: something native went wrong\n")
    assert capfd.readouterr().err == "ERROR: something native went wrong\n"
    with pytest.raises(RuntimeError), native_stderr_quiet():
        os.write(2, b"INFO: the detail that explains the failure\n")
        raise RuntimeError("failed")
    assert capfd.readouterr().err == "INFO: the detail that explains the failure\n"


def test_bench_times_a_litert_model_beside_an_onnx_one(bert: tuple[PreTrainedModel, Path],
                                                       tiny_onnx: Path) -> None:
    """`edgetune bench` opens each file in its own runtime and pairs them by round."""
    from click.testing import CliRunner

    from edgetune.search.cli import cli

    _, path = bert
    result = CliRunner().invoke(cli, ["bench", str(path), "--baseline", str(tiny_onnx),
                                      "--threads", "1", "--batch-size", str(BATCH),
                                      "--sequence-length", str(SEQUENCE), "--rounds", "3",
                                      "--max-rounds", "3", "--runs", "2", "--warmup", "1",
                                      "--json"])
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["ratio"]["value"] > 0
    assert output["machine"]["runtime"] == "onnxruntime"
    assert output["machine"]["candidate_runtime"] == "litert"
    assert output["machine"]["litert"] == importlib.metadata.version("ai-edge-litert")
