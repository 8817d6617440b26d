"""ExecuTorch programs compiled by edgetune give the torch model's logits, INT8 ones stay close
and smaller, and a session runs the batches latency and accuracy give it.

Programs are compiled from tiny models built from configs (``conftest.build_tiny_model``); every
session uses one thread, as ExecuTorch's thread pool is one per process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgetune.objectives.executorch import Delegation, compile_executorch, compile_program
from edgetune.objectives.runtimes import RUNTIMES, runtime
from edgetune.objectives.runtimes.base import InputSpec
from edgetune.objectives.target import TargetConfig

from conftest import build_tiny_model

TARGET = TargetConfig(threads=1, batch_size=4, sequence_length=16)
NAMES = {"bert": ["input_ids", "token_type_ids", "attention_mask"],
         "distilbert": ["input_ids", "attention_mask"]}
# Per layer Q, K, V, attention output, FFN in and out; then BERT's pooler or DistilBERT's
# pre-classifier, and the classifier.
LINEARS = 2 * 6 + 2


def _batch(rows: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids with a padded tail on every row but the first, as the tokenizer pads."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 40, (rows, length)).astype(np.int64)
    mask = np.ones((rows, length), dtype=np.int64)
    for row in range(1, rows):
        mask[row, length - 1 - row:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _torch_logits(model: torch.nn.Module, batch: dict[str, np.ndarray],
                  names: list[str]) -> np.ndarray:
    with torch.no_grad():
        return model(**{name: torch.from_numpy(batch[name]) for name in names}).logits.numpy()


@pytest.fixture(scope="module", params=["bert", "distilbert"])
def fp32_program(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(torch model, its input names, its FP32 program for up to 4 rows of 16 tokens, and how
    much of it XNNPACK runs)."""
    from transformers import AutoModelForSequenceClassification

    family = request.param
    folder = build_tiny_model(tmp_path_factory.mktemp(family), family)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, attn_implementation="eager").eval()
    path = folder / "model.pte"
    delegation = compile_program(model, NAMES[family], path, TARGET.batch_size,
                                 TARGET.sequence_length)
    return model, NAMES[family], path, delegation


def test_fp32_program_gives_the_torch_models_logits(fp32_program) -> None:
    model, names, path, _ = fp32_program
    session = runtime("executorch").open(path, TARGET)
    batch = _batch(4, 16)
    np.testing.assert_allclose(session(batch), _torch_logits(model, batch, names),
                               rtol=1e-4, atol=1e-5)


def test_every_linear_layer_runs_in_xnnpack(fp32_program) -> None:
    delegation: Delegation = fp32_program[3]
    assert delegation.linear == (LINEARS, 0)


def test_session_names_the_inputs_in_the_programs_order(fp32_program) -> None:
    _, names, path, _ = fp32_program
    assert runtime("executorch").open(path, TARGET).inputs == [
        InputSpec(name, ("batch", "sequence"), np.int64, "Long") for name in names]


def test_session_runs_fewer_rows_and_other_lengths_than_compiled(fp32_program) -> None:
    """Accuracy's last batch has fewer rows; its texts are padded to the task's max_length,
    which may be longer or shorter than the program's sequence."""
    model, names, path, _ = fp32_program
    session = runtime("executorch").open(path, TARGET)
    short = _batch(3, 9, seed=1)
    np.testing.assert_allclose(session(short), _torch_logits(model, short, names),
                               rtol=1e-4, atol=1e-5)
    one = _batch(1, 16, seed=2)
    assert session(one).shape == (1, 2)
    np.testing.assert_allclose(session(one), _torch_logits(model, one, names),
                               rtol=1e-4, atol=1e-5)
    long = _batch(2, 24, seed=3)
    cut = {name: value[:, :16] for name, value in long.items()}
    np.testing.assert_allclose(session(long), _torch_logits(model, cut, names),
                               rtol=1e-4, atol=1e-5)
    # Padding past the program's length is cut away without changing a logit.
    padded = {name: np.pad(value, ((0, 0), (0, 8))) for name, value in short.items()}
    np.testing.assert_allclose(session(padded), session(short), rtol=1e-5, atol=1e-6)
    more = _batch(5, 16, seed=4)  # more rows than compiled for: run in chunks
    np.testing.assert_allclose(session(more), _torch_logits(model, more, names),
                               rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Delegation]:
    """A BERT wide enough (hidden 128, FFN 512) for INT8 weights to shrink its file, compiled
    for one row of up to 16 tokens in FP32 and INT8 (and how much of the INT8 one XNNPACK
    runs)."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("wide-bert")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=64, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=512, max_position_embeddings=64)).eval()
    fp32 = compile_executorch(model, NAMES["bert"], folder / "fp32.pte", 1, 16)
    int8 = folder / "int8.pte"
    delegation = compile_program(model, NAMES["bert"], int8, 1, 16, quantize=True)
    return {"fp32": fp32, "int8": int8}, delegation


@pytest.fixture(scope="module")
def programs(wide: tuple[dict[str, Path], Delegation]) -> dict[str, Path]:
    return wide[0]


def test_quantized_program_is_smaller_and_close_to_fp32(programs: dict[str, Path]) -> None:
    assert programs["int8"].stat().st_size < 0.5 * programs["fp32"].stat().st_size
    target = TargetConfig(threads=1, batch_size=1, sequence_length=16)
    fp32, int8 = (runtime("executorch").open(programs[kind], target) for kind in ("fp32", "int8"))
    rows = [_batch(1, 16, seed) for seed in range(8)]
    expected = np.concatenate([fp32(row) for row in rows])
    got = np.concatenate([int8(row) for row in rows])
    assert not np.array_equal(got, expected)  # INT8 arithmetic, not FP32 under another name
    # Dynamic INT8 moves logits by ~1% of their spread; a wrong scale or a dropped layer moves
    # them by tens of percent.
    spread = expected.max() - expected.min()
    assert np.abs(got - expected).max() < 0.05 * spread


def test_every_linear_layer_of_the_quantized_program_runs_in_xnnpack(
        wide: tuple[dict[str, Path], Delegation]) -> None:
    assert wide[1].linear == (LINEARS, 0)


def test_a_one_row_program_has_a_static_batch(programs: dict[str, Path]) -> None:
    target = TargetConfig(threads=1, batch_size=1, sequence_length=16)
    session = runtime("executorch").open(programs["int8"], target)
    assert [spec.shape for spec in session.inputs] == [(1, "sequence")] * 3
    assert session(_batch(1, 7)).shape == (1, 2)


def test_opening_a_file_that_is_not_a_program_raises(tmp_path: Path) -> None:
    model = tmp_path / "model.pte"
    model.write_bytes(b"not an ExecuTorch program" * 10)
    with pytest.raises(RuntimeError):
        runtime("executorch").open(model, TARGET)


def test_opening_a_program_without_input_names_raises(tmp_path: Path) -> None:
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(torch.nn.Linear(4, 2), (torch.ones(1, 4),))
    model = tmp_path / "linear.pte"
    model.write_bytes(to_edge_transform_and_lower(exported).to_executorch().buffer)
    with pytest.raises(ValueError, match="names"):
        runtime("executorch").open(model, TARGET)


def test_the_thread_pool_has_the_targets_threads_and_is_not_resized(
        fp32_program) -> None:
    from executorch.extension.pybindings import portable_lib

    path = fp32_program[2]
    runtime("executorch").open(path, TARGET)
    assert portable_lib._threadpool_get_thread_count() == TARGET.threads
    with pytest.raises(RuntimeError, match="threads"):
        runtime("executorch").open(path, TARGET.model_copy(update={"threads": TARGET.threads + 1}))
    assert portable_lib._threadpool_get_thread_count() == TARGET.threads


def test_version_is_the_installed_packages() -> None:
    from importlib.metadata import version

    from executorch.version import __version__

    assert runtime("executorch").version() == __version__
    assert runtime("executorch").version().split("+")[0] == version("executorch")


def test_a_program_ships_alone(fp32_program) -> None:
    assert runtime("executorch").deploy_files(fp32_program[2]) == []
    assert RUNTIMES["executorch"].suffix == ".pte"
