"""Vocabulary trimming keeps the embedding rows of the tokens a task uses, with a tokenizer
rewritten to match: the same logits on kept tokens, [UNK] (or a respelling) for the rest, checked
on held-out text, and a smaller file that exports and loads like any other.

transformers is imported after edgetune (inside the tests), which turns its progress bars off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner

import edgetune
from edgetune.objectives.task import load_task
from edgetune.objectives.vocabulary import (
    TokenizationMismatch,
    check_tokenization,
    kept_ids,
    rewritten_tokenizer,
    trim_embeddings,
)
from edgetune.search.cli import cli
from edgetune.search.config import StudyConfig
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.space import SearchSpace
from edgetune.spaces.vocabulary import VocabularyRecipe

from conftest import FILLER, TOPICS, make_texts, write_csv
from helpers import run_study, tiny_config, write_config

SPECIALS = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = sorted({w for text in TOPICS.values() for w in text.split()} | set(FILLER))
# "football" and "zebra" are in the vocabulary but never in the train texts: "zebra" cannot be
# spelt from kept pieces, so it becomes [UNK]; "football" is spelt "foot ##ball", pieces the train
# texts use ("goalball" is "goal ##ball").
UNUSED = ["football", "foot", "##ball", "zebra", *(f"spare{i}" for i in range(1000))]
TRAIN_TEXTS = [" ".join(WORDS), "foot goalball"]
KEPT = len(SPECIALS) - 1 + len(WORDS) + 2  # all but [unused0], the words, "foot", "##ball"


def tiny_classifier(folder: Path) -> Path:
    """A 2-layer BERT whose vocabulary holds the tiny texts' words and 1,004 tokens they never
    use (a [unusedN] placeholder among the specials, as in BERT's own)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join([*SPECIALS, *WORDS, *UNUSED]) + "\n")
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(
        vocab_size=len(SPECIALS) + len(WORDS) + len(UNUSED), hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=3)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("large-vocabulary"))


@pytest.fixture(scope="module")
def tokenizer(classifier: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(classifier)


def logits_of(model: Any, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def test_the_train_tokens_special_tokens_and_margin_are_kept(tokenizer: Any) -> None:
    vocabulary = tokenizer.get_vocab()
    kept = set(kept_ids(tokenizer, TRAIN_TEXTS, margin=2).tolist())
    assert {vocabulary[w] for w in WORDS} <= kept
    assert set(tokenizer.all_special_ids) <= kept
    # The margin: the first two tokens in vocabulary order not kept already that text can
    # tokenize to; "[unused0]" cannot ("[" is split off), nor "foot" and "##ball" (kept already).
    assert vocabulary["[unused0]"] not in kept
    assert {vocabulary["football"], vocabulary["zebra"]} <= kept
    assert vocabulary["spare0"] not in kept
    assert len(kept) == KEPT + 2


def test_a_trimmed_model_gives_the_same_logits_on_text_whose_tokens_were_kept(
        classifier: Path, tokenizer: Any) -> None:
    from transformers import BertForSequenceClassification

    kept = kept_ids(tokenizer, TRAIN_TEXTS, margin=0)
    trimmed_tokenizer = rewritten_tokenizer(tokenizer, kept)
    model = BertForSequenceClassification.from_pretrained(classifier).eval()
    texts = [text for text, _ in make_texts(5, seed=1)]
    before = logits_of(model, tokenizer, texts)
    trimmed = trim_embeddings(model, kept)
    assert trimmed.get_input_embeddings().num_embeddings == len(kept) == trimmed.config.vocab_size
    torch.testing.assert_close(logits_of(trimmed, trimmed_tokenizer, texts), before,
                               rtol=0, atol=0)


def test_a_word_whose_pieces_were_not_kept_becomes_unknown_or_is_respelt(tokenizer: Any) -> None:
    kept = kept_ids(tokenizer, TRAIN_TEXTS, margin=0)
    trimmed = rewritten_tokenizer(tokenizer, kept)
    assert trimmed.tokenize("zebra goal") == ["[UNK]", "goal"]
    assert trimmed.tokenize("football") == ["foot", "##ball"]
    check = check_tokenization(tokenizer, trimmed, kept, ["zebra goal", "football team"])
    assert check.words == 4
    assert check.changed == pytest.approx(2 / 4)
    assert check.unknown == pytest.approx(1 / 4)


def test_the_tokenization_check_catches_a_broken_id_mapping(tokenizer: Any) -> None:
    kept = kept_ids(tokenizer, TRAIN_TEXTS, margin=0)
    trimmed = rewritten_tokenizer(tokenizer, kept)
    texts = [text for text, _ in make_texts(3, seed=2)]
    assert check_tokenization(tokenizer, trimmed, kept, texts).changed == 0
    shifted = np.concatenate([kept[:10], kept[11:], kept[10:11]])  # one row out of place
    with pytest.raises(TokenizationMismatch, match="though every piece was kept"):
        check_tokenization(tokenizer, trimmed, shifted, texts)


def test_an_untrimmed_recipe_is_stored_as_before_vocabulary_trimming() -> None:
    assert "vocabulary" not in Recipe().model_dump(mode="json")
    trimmed = Recipe(vocabulary=VocabularyRecipe(trim=True, margin=100))
    assert Recipe.model_validate(trimmed.model_dump(mode="json")) == trimmed
    assert trimmed.short() == "vocab+100 · fp32"


def test_a_space_with_a_vocabulary_section_samples_trimming() -> None:
    space = SearchSpace.model_validate({"vocabulary": {"trim": [True], "margin": [0, 50]}})
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    recipes = [space.sample(study.ask()) for _ in range(8)]
    assert {r.vocabulary.margin for r in recipes} == {0, 50}
    assert all(r.vocabulary.trim for r in recipes)
    without = SearchSpace.model_validate({})
    assert not without.sample(study.ask()).vocabulary.trim


def test_trimming_never_follows_qat_exported_as_qdq() -> None:
    """QAT's qdq export writes the final model in its own stage: no torch stage follows it."""
    from edgetune.spaces.qat import QatRecipe
    from edgetune.spaces.vocabulary import VocabularySpace

    qdq = QatRecipe(steps=10, export="qdq")
    with pytest.raises(ValueError, match="does not compose"):
        Recipe(quantization=qdq, vocabulary=VocabularyRecipe(trim=True))
    assert VocabularySpace(trim=[True]).sample(optuna.trial.FixedTrial({}), qdq) == (
        VocabularyRecipe())


@pytest.mark.parametrize("pruning", [{"layers_dropped": 1, "layer_selection": "even"},
                                     {"hidden_kept": 0.5}], ids=["layers", "width"])
def test_trimming_composes_with_structured_pruning(pruning: dict[str, Any], study_bench: Any,
                                                   tmp_path: Path) -> None:
    """The pruned checkpoint (with its per-layer shapes, and a narrower embedding table when the
    width is pruned) is trimmed, reloaded and compiled; on the shared tiny task every token is
    used, so the model and its accuracy stay the same."""
    from edgetune.objectives.build import Candidate
    from edgetune.objectives.candidate import build, evaluate
    from edgetune.spaces.pruning import StructuredPruning
    from edgetune.spaces.recovery import RecoveryRecipe

    pruned = Recipe(pruning=StructuredPruning(**pruning),
                    recovery=RecoveryRecipe(steps=10, learning_rate=2e-3))
    trimmed = pruned.model_copy(update={"vocabulary": VocabularyRecipe(trim=True)})
    scores = []
    for name, recipe in (("pruned", pruned), ("trimmed", trimmed)):
        candidate = build(recipe, study_bench, Candidate(path=tmp_path / name / "model.onnx"))
        assert (candidate.task is not None) == (name == "trimmed")
        scores.append(evaluate(candidate, study_bench).accuracy)
    assert scores[0] == scores[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "texts.csv", make_texts(40))


TRIMMED = {"pruning.method": "none", "quantization.scheme": "none", "graph.fusion": False,
           "vocabulary.trim": True, "vocabulary.margin": 0}
TRIMMED_TRIAL = 3  # after the FP32 reference and the two dynamic INT8 baselines


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, classifier: Path, data: Path) -> Path:
    config = tiny_config(classifier, data,
                         space={"pruning": {"methods": ["none"]},
                                "quantization": {"schemes": ["none", "dynamic"]},
                                "vocabulary": {"margin": [0]}},
                         search={"trials": 4, "enqueue": [TRIMMED]})
    return run_study(tmp_path_factory.mktemp("vocabulary-study"), config, trials=4)


def trials(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny",
                             storage=f"sqlite:///{run_dir / 'study.db'}").trials


def test_a_trimmed_trial_is_smaller_and_notes_its_vocabulary(run_dir: Path) -> None:
    reference, trimmed = trials(run_dir)[0], trials(run_dir)[TRIMMED_TRIAL]
    assert trimmed.user_attrs["recipe"]["vocabulary"] == {"trim": True, "margin": 0}
    assert "vocabulary" not in reference.user_attrs["recipe"]
    measured = trimmed.user_attrs["measurement"]
    assert measured["vocabulary_rows"] == len(SPECIALS) - 1 + len(WORDS)  # the data's words
    assert measured["vocabulary_unknown_words"] == 0  # the held-out texts use the same words
    assert measured["size_mb"] < 0.75 * reference.user_attrs["measurement"]["size_mb"]
    assert "trim_vocabulary" in trimmed.user_attrs["stage_seconds"]


def test_the_export_of_a_trimmed_trial_loads_and_predicts_as_the_study_measured(
        run_dir: Path) -> None:
    from transformers import AutoTokenizer

    out = run_dir.parent / "export"
    result = CliRunner().invoke(cli, ["export", "--run-dir", str(run_dir), "--study", "tiny",
                                      "--trial", str(TRIMMED_TRIAL), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checks"]["validation_accuracy_equals_trial"] is True
    assert len(AutoTokenizer.from_pretrained(out)) == len(SPECIALS) - 1 + len(WORDS)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    task = load_task(StudyConfig.model_validate(study.user_attrs["config"]).task)
    split = task.dataset.splits["validation"]
    predicted = [p["label"] for p in edgetune.load(out)(split.texts)]
    accuracy = np.mean([p == task.label_names[label] for p, label in zip(predicted,
                                                                           split.labels)])
    assert accuracy == trials(run_dir)[TRIMMED_TRIAL].values[0]


def test_confirmation_measures_a_trimmed_trial_on_its_own_tokens(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgetune.search import confirm
    from edgetune.search.front import complete

    monkeypatch.setattr(confirm, "candidates", lambda study, margin: [
        t for t in complete(study) if t.number == TRIMMED_TRIAL])
    result = CliRunner().invoke(cli, ["confirm", "--run-dir", str(run_dir), "--study", "tiny"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    confirmed = trials(run_dir)[TRIMMED_TRIAL].user_attrs["confirmed"]
    assert confirmed["ratio"] > 0
    assert confirmed["on_front"] is False or 0 <= confirmed["test_accuracy"] <= 1


def test_trimming_is_refused_for_a_study_measured_on_a_device(classifier: Path,
                                                              data: Path) -> None:
    from edgetune.errors import InputError

    config = tiny_config(classifier, data, target={"device": "board"}, space={"vocabulary": {}})
    with pytest.raises(InputError, match="space.vocabulary: not with target.device"):
        StudyConfig.model_validate(config)


def bpe_tokenizer(folder: Path) -> None:
    """Replace the checkpoint's tokenizer with a BPE one over the same ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)
    vocabulary = {token: i for i, token in enumerate([*SPECIALS, *WORDS])}
    backend = Tokenizer(models.BPE(vocab=vocabulary, merges=[], unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]").save_pretrained(folder)


def test_trimming_a_tokenizer_other_than_wordpiece_is_refused_in_one_line(
        tmp_path: Path, data: Path) -> None:
    model = tiny_classifier(tmp_path / "bpe")
    bpe_tokenizer(model)
    config = write_config(tmp_path, tiny_config(model, data, space={"vocabulary": {}}))
    result = CliRunner().invoke(cli, ["run", str(config), "--run-dir", str(tmp_path / "run")],
                                catch_exceptions=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edgetune: error: space.vocabulary: "), lines[0]
    assert "WordPiece" in lines[0] and "BPE" in lines[0]
