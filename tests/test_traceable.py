"""The module compilers trace gives the classifier's own logits, the mask built in-graph too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgetune.objectives.traceable import Logits, example_inputs

from conftest import build_tiny_model


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_logits_match_the_classifier_with_and_without_the_additive_mask(
        tmp_path: Path, family: str) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        build_tiny_model(tmp_path / family, family)).eval()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if family == "bert" else [])
    torch.manual_seed(0)
    ids = torch.randint(5, 40, (3, 16))
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, 10:], mask[2, 4:] = 0, 0
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        expected = model(**{name: inputs[name] for name in names}).logits
        for additive in (False, True):
            got = Logits(model, names, additive_mask=additive)(*(inputs[n] for n in names))
            torch.testing.assert_close(got, expected)
        padded_differently = Logits(model, names, additive_mask=True)(
            ids, torch.ones_like(mask), *([torch.zeros_like(ids)] if family == "bert" else []))
    assert not torch.allclose(padded_differently, expected)  # the mask is used, not dropped


def test_example_inputs_follow_the_names_order_and_shape() -> None:
    ids, segments, mask = example_inputs(["input_ids", "token_type_ids", "attention_mask"], 2, 8)
    assert ids.shape == (2, 8) and ids.dtype == torch.long and bool((ids == 1).all())
    assert bool((segments == 0).all()) and bool((mask == 1).all())
