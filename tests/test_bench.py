"""`edgetune bench MODEL.onnx`: the trial protocol for any ONNX file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgetune.objectives.bench import open_model, synthetic_inputs
from edgetune.objectives.target import TargetConfig
from edgetune.search.cli import cli

FAST = ["--rounds", "2", "--max-rounds", "2", "--runs", "3", "--warmup", "1", "--threads", "1",
        "--sequence-length", "16"]


def bench(*args: str) -> object:
    return CliRunner().invoke(cli, ["bench", *args, *FAST])


def test_json_gives_each_model_its_figures_and_the_ratio(tiny_onnx: Path,
                                                        slow_onnx: Path) -> None:
    result = bench(str(slow_onnx), "--baseline", str(tiny_onnx), "--json")
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert set(output["models"]) == {"model", "baseline"}
    for name, path in (("model", slow_onnx), ("baseline", tiny_onnx)):
        figures = output["models"][name]
        assert figures["path"] == str(path)
        assert set(figures) >= {"median_ms", "p90_ms", "spread", "round_medians_ms"}
        assert len(figures["round_medians_ms"]) == 2
    assert output["ratio"]["value"] > 1  # the slow BERT against the tiny one
    assert output["inputs"] == "synthetic"
    assert output["target"]["threads"] == 1 and output["target"]["sequence_length"] == 16
    assert set(output["machine"]) >= {"cpu", "cores", "threads", "onnxruntime", "edgetune"}


def test_max_rounds_below_rounds_is_a_usage_error(tiny_onnx: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", str(tiny_onnx), "--rounds", "5",
                                      "--max-rounds", "3"])
    assert result.exit_code == 2
    assert "--max-rounds" in result.stderr


def test_without_a_baseline_there_is_no_ratio(tiny_onnx: Path) -> None:
    output = json.loads(bench(str(tiny_onnx), "--json").stdout)
    assert list(output["models"]) == ["model"] and output["ratio"] is None


def test_the_table_shows_median_p90_spread_and_ratio(tiny_onnx: Path, slow_onnx: Path) -> None:
    result = bench(str(slow_onnx), "--baseline", str(tiny_onnx))
    assert result.exit_code == 0
    for heading in ("median ms", "p90 ms", "spread", "baseline"):
        assert heading in result.stdout


def test_real_texts_can_be_timed_with_a_tokenizer(tiny_onnx: Path, tiny_model: Path,
                                                  tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("the team won the cup\nthe minister said the vote is today\n")
    result = bench(str(tiny_onnx), "--tokenizer", str(tiny_model), "--text-file", str(texts),
                   "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inputs"] == "text"
    assert bench(str(tiny_onnx), "--text-file", str(texts)).exit_code == 2


@pytest.mark.parametrize("content, message", [(None, "no such file"),
                                              (b"not a model", "not an ONNX model")])
def test_a_missing_or_invalid_model_is_a_one_line_error(tmp_path: Path, content: bytes | None,
                                                        message: str) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    result = bench(str(path), "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_made_up_inputs_are_valid_token_ids_for_the_model(tiny_onnx: Path) -> None:
    target = TargetConfig(threads=1, batch_size=2, sequence_length=16)
    sessions = {tiny_onnx: open_model(tiny_onnx, "MODEL", target)}
    vocabulary = next(init.dims[0] for init in onnx.load(str(tiny_onnx)).graph.initializer
                      if "word_embeddings" in init.name)
    for batch in synthetic_inputs(sessions, target, count=3):
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
        assert all(value.shape == (2, 16) and value.dtype == np.int64 for value in batch.values())
        assert 0 <= batch["input_ids"].min() and batch["input_ids"].max() < vocabulary
        assert (batch["attention_mask"] == 1).all() and (batch["token_type_ids"] == 0).all()
