"""Vocabulary trimming and its build step: slice the word embeddings to the tokens a task uses and
rewrite the tokenizer so that its ids index the slice.

What is kept (``kept_ids``): every token the train split's texts tokenize to (whole texts, not cut
at ``max_length``: a word late in a training text may open a deployed one), every special and
added token, and ``margin`` more in vocabulary order. A WordPiece vocabulary carries no counts;
BERT's lists its special and ``[unusedN]`` tokens, then the single characters, then words and
pieces roughly most frequent first (its ``##`` characters last), so its first ids not kept
already, placeholders skipped, are the honest stand-in for "the most frequent others". New ids
keep the old order, so [PAD] stays 0.

Held-out text (``check_tokenization``): WordPiece takes the longest piece first, so a word whose
pieces are all kept tokenizes exactly as before; a word that used a piece not kept becomes [UNK]
or is spelt with other kept pieces. The build checks the validation texts word by word against
this, fails on any other difference (a broken id mapping), and notes on the trial the share of
validation words that changed and the share that became [UNK]. A trimmed candidate is measured,
and exported, with the rewritten tokenizer (``TrimmedVocabulary.task``), as it will be deployed.

Only WordPiece tokenizers (BERT, DistilBERT, MiniLM, ...) are rewritten: ``check_vocabulary``
refuses a study that would trim another kind before it starts. Search space:
``edgetune.spaces.vocabulary``; the knob ``TRIM`` is an ``edgetune.knobs`` entry point.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel

from edgetune.errors import InputError
from edgetune.objectives.architectures import SHAPES_FILE, write_shapes
from edgetune.objectives.build import Build
from edgetune.objectives.checkpoint import save_classifier
from edgetune.objectives.task import Task
from edgetune.spaces.knob import Knob
from edgetune.spaces.vocabulary import VocabularyRecipe, VocabularySpace

TOKENIZER_FILE = "tokenizer.json"
VOCABULARY_FILE = "vocab.txt"


class UnsupportedTokenizer(ValueError):
    """The tokenizer is not a WordPiece one this module can rewrite."""


class TokenizationMismatch(ValueError):
    """The trimmed tokenizer splits otherwise a word whose pieces were all kept."""


@dataclasses.dataclass(frozen=True, eq=False)
class TrimmedVocabulary:
    kept: np.ndarray  # the original ids kept, in new-id order
    task: Task  # the task as the trimmed model reads it: the rewritten tokenizer

    @property
    def tokenizer(self) -> Any:
        return self.task.tokenizer


@dataclasses.dataclass(frozen=True)
class TokenizationCheck:
    words: int  # words of the texts checked
    changed: float  # share of them tokenized otherwise (a piece was not kept)
    unknown: float  # share of them that became [UNK]


def check_vocabulary(task: Task, space: VocabularySpace | None) -> None:
    """Refuse, before a run starts, a space that trims a tokenizer this module cannot rewrite.

    Raises:
        InputError: naming ``space.vocabulary``.
    """
    if space is None or True not in space.trim:
        return
    try:
        wordpiece_spec(task.tokenizer)
    except UnsupportedTokenizer as error:
        raise InputError("space.vocabulary", f"{error}: remove space.vocabulary, or set its "
                                             "trim to [false]") from error


def wordpiece_spec(tokenizer: Any) -> dict[str, Any]:
    """The fast tokenizer's ``tokenizer.json`` contents, if its model is WordPiece.

    Raises:
        UnsupportedTokenizer: a slow tokenizer, or another model (BPE, Unigram).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedTokenizer(f"vocabulary trimming rewrites fast tokenizers, not "
                                   f"{type(tokenizer).__name__}")
    spec: dict[str, Any] = json.loads(backend.to_str())
    kind = spec["model"]["type"]
    if kind != "WordPiece":
        raise UnsupportedTokenizer(f"vocabulary trimming rewrites WordPiece tokenizers (BERT, "
                                   f"DistilBERT, MiniLM), not {kind} ({type(tokenizer).__name__})")
    return spec


def kept_ids(tokenizer: Any, texts: Sequence[str], margin: int) -> np.ndarray:
    """The ids ``texts`` tokenize to, the special and added tokens' ids, and the first ``margin``
    other ids of the vocabulary, in ascending order."""
    spec = wordpiece_spec(tokenizer)
    used = {i for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
            for i in ids}
    used |= set(tokenizer.all_special_ids) | {token["id"] for token in spec["added_tokens"]}
    prefix = spec["model"]["continuing_subword_prefix"]
    others = [i for token, i in sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])
              if i not in used and _producible(tokenizer.backend_tokenizer, token, prefix)]
    return np.array(sorted(used | set(others[:margin])), dtype=np.int64)


def _producible(backend: Any, token: str, prefix: str) -> bool:
    """Whether tokenizing text can give ``token``: its text (without the continuing-subword
    prefix) comes through normalization and pre-tokenization whole. BERT's 994 ``[unusedN]``
    placeholders do not (the brackets are split off), so a margin is not spent on them."""
    text = token.removeprefix(prefix) if token != prefix else token
    normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
    words = backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer else [
        (normalized, None)]
    return len(words) == 1 and words[0][0] == text


def rewritten_tokenizer(tokenizer: Any, kept: np.ndarray) -> Any:
    """``tokenizer`` with only the ``kept`` tokens, numbered by their place in ``kept``: the
    WordPiece vocabulary, the added tokens, the post-processor's and the padding's ids."""
    spec = wordpiece_spec(tokenizer)
    new_id = {int(old): new for new, old in enumerate(kept)}
    token_of = {i: token for token, i in spec["model"]["vocab"].items()}
    spec["model"]["vocab"] = {token_of[int(old)]: new for new, old in enumerate(kept)}
    for added in spec["added_tokens"]:
        added["id"] = new_id[added["id"]]
    if spec.get("post_processor"):
        _renumber_processor(spec["post_processor"], new_id)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    with tempfile.TemporaryDirectory(prefix="edgetune-vocabulary-") as scratch:
        folder = Path(scratch)
        tokenizer.save_pretrained(folder)
        (folder / TOKENIZER_FILE).write_text(json.dumps(spec, ensure_ascii=False))
        (folder / VOCABULARY_FILE).write_text(
            "".join(f"{token_of[int(old)]}\n" for old in kept), encoding="utf-8")
        return AutoTokenizer.from_pretrained(folder)


def _renumber_processor(processor: dict[str, Any], new_id: dict[int, int]) -> None:
    """Renumber the special tokens' ids a post-processor adds (BERT's [CLS] and [SEP])."""
    for special in (processor.get("special_tokens") or {}).values():  # TemplateProcessing
        special["ids"] = [new_id[i] for i in special["ids"]]
    for key in ("sep", "cls"):  # BertProcessing: [token, id]
        if key in processor:
            processor[key][1] = new_id[processor[key][1]]
    for inner in processor.get("processors") or []:  # Sequence
        _renumber_processor(inner, new_id)


def check_tokenization(original: Any, trimmed: Any, kept: np.ndarray,
                       texts: Sequence[str]) -> TokenizationCheck:
    """Tokenize ``texts`` with both tokenizers and compare them word by word (see the module
    docstring): the special tokens and each word whose pieces were all kept must come out the
    same, mapped back through ``kept``.

    Raises:
        TokenizationMismatch: naming the first text and word that differ.
    """
    kept_set = set(kept.tolist())
    unknown = trimmed.unk_token_id
    old, new = original(list(texts)), trimmed(list(texts))
    words = changed = became_unknown = 0
    for row in range(len(texts)):
        old_words = _pieces_by_word(old["input_ids"][row], old.word_ids(row))
        new_words = _pieces_by_word([int(kept[i]) for i in new["input_ids"][row]],
                                    new.word_ids(row))
        for word, pieces in old_words.items():
            again = new_words.get(word, [])
            if word is not None:
                words += 1
            if set(pieces) <= kept_set:
                if again != pieces:
                    what = "special tokens" if word is None else f"word {word}"
                    raise TokenizationMismatch(
                        f"text {row}, {what}: {original.convert_ids_to_tokens(pieces)} became "
                        f"{original.convert_ids_to_tokens(again)} though every piece was kept")
                continue
            changed += 1
            became_unknown += again == [int(kept[unknown])]
    return TokenizationCheck(words=words, changed=changed / max(words, 1),
                             unknown=became_unknown / max(words, 1))


def _pieces_by_word(ids: Sequence[int],
                    word_ids: Sequence[int | None]) -> dict[int | None, list[int]]:
    """Token ids grouped by the word they belong to; the special tokens under None."""
    grouped: dict[int | None, list[int]] = {}
    for token, word in zip(ids, word_ids):
        grouped.setdefault(word, []).append(int(token))
    return grouped


@functools.cache
def trimmed_vocabulary(task: Task, margin: int) -> TrimmedVocabulary:
    """``task``'s vocabulary trimmed to its train texts' tokens and ``margin`` more: what a recipe
    that trims builds and is measured with (computed once per task and margin: a second or two)."""
    kept = kept_ids(task.tokenizer, task.dataset.splits["train"].texts, margin)
    tokenizer = rewritten_tokenizer(task.tokenizer, kept)
    return TrimmedVocabulary(kept=kept, task=dataclasses.replace(task, tokenizer=tokenizer))


def model_task(task: Task, vocabulary: VocabularyRecipe) -> Task:
    """The task as a model built with ``vocabulary`` reads its texts: with the trimmed tokenizer
    where it trims, else ``task`` itself."""
    if not vocabulary.trim:
        return task
    return trimmed_vocabulary(task, vocabulary.margin).task


def trim_embeddings(model: PreTrainedModel, kept: np.ndarray) -> PreTrainedModel:
    """Keep the word-embedding rows of ``kept`` (in that order) in place; return ``model``."""
    embeddings = model.get_input_embeddings()
    new_id = {int(old): new for new, old in enumerate(kept)}
    padding = embeddings.padding_idx
    trimmed = nn.Embedding(len(kept), embeddings.embedding_dim,
                           padding_idx=None if padding is None else new_id[padding])
    with torch.no_grad():
        trimmed.weight.copy_(embeddings.weight[torch.as_tensor(kept)])
    model.set_input_embeddings(trimmed)
    model.config.vocab_size = len(kept)
    if model.config.pad_token_id is not None:
        model.config.pad_token_id = new_id[model.config.pad_token_id]
    return model


def trimmed_checkpoint(build: Build) -> None:
    """The ``trim_vocabulary`` stage: the current checkpoint with its embeddings trimmed and the
    rewritten tokenizer beside it (cached), checked on the validation texts; the candidate is
    measured with the rewritten tokenizer from here on."""
    settings: VocabularyRecipe = build.recipe.vocabulary
    bench, source = build.bench, build.checkpoint
    vocabulary = trimmed_vocabulary(bench.task, settings.margin)
    check = check_tokenization(bench.task.tokenizer, vocabulary.tokenizer, vocabulary.kept,
                               bench.task.dataset.splits["validation"].texts)

    def write(folder: Path) -> None:
        model = trim_embeddings(bench.load(source), vocabulary.kept)
        save_classifier(model, folder)
        if (source / SHAPES_FILE).exists():  # a pruned checkpoint: it loads by its shapes
            write_shapes(model, folder)
        vocabulary.tokenizer.save_pretrained(folder)

    # The checkpoint's folder name identifies the base, and so the tokenizer and the train texts.
    build.checkpoint = bench.cache.get_or_build(
        "vocabulary", {"stage": "trim_vocabulary", "checkpoint": source.name,
                       "margin": settings.margin}, write)
    build.candidate.task = vocabulary.task
    build.candidate.notes |= {"vocabulary_rows": len(vocabulary.kept),
                              "vocabulary_changed_words": round(check.changed, 5),
                              "vocabulary_unknown_words": round(check.unknown, 5)}


TRIM = Knob(slot="vocabulary", name="trim", recipe=VocabularyRecipe, space=VocabularySpace,
            steps={"trim_vocabulary": trimmed_checkpoint}, label="trimmed vocabulary")
