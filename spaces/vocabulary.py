"""Vocabulary knob: keep only the embedding rows of the tokens the task's texts use.

A fine-tuned BERT-family classifier embeds its whole pretraining vocabulary: all-MiniLM-L6-v2's
30,522 x 384 word-embedding table is over half of its FP32 file, though a topic corpus uses a
fraction of those tokens. Trimming keeps the rows of the train texts' tokens, the special tokens
and a ``margin`` of others, and rewrites the tokenizer to match: the download shrinks and the
latency does not change (one row is gathered per token either way).

Where it lives: a slot with one knob, as the graph fusions are, and a small section,
``space.vocabulary``, sampled beside the pruning method and quantization scheme, so that it
composes with all of them rather than belonging to one. Its step runs in the ``trim_vocabulary``
stage, the last torch stage (after pruning, recovery and QAT, which train on the original
tokenizer's ids), before the compilation, so every runtime gets it. It does not compose with
QAT's ``qdq`` export, which writes the final model from its own stage.

Off unless a config names the section: a default is part of every config's fingerprint, and
trimming trades accuracy on texts with words the train split never used for size; a study that
optimizes ``size_mb`` opts in. Build step and knob declaration: ``edgetune.objectives.vocabulary``.
"""

from __future__ import annotations

import optuna
from pydantic import Field, model_validator

from edgetune.spaces.base import Strict, suggest_choice
from edgetune.spaces.qat import QatRecipe


class VocabularyRecipe(Strict):
    trim: bool = False
    margin: int = Field(default=0, ge=0,
                        description="tokens kept beyond the train texts' and the special ones")

    @model_validator(mode="after")
    def _margin_only_when_trimming(self) -> VocabularyRecipe:
        if self.margin and not self.trim:
            raise ValueError("margin is set only when trim is true")
        return self

    def short(self) -> str:
        return f"vocab+{self.margin}" if self.trim else ""


def composes_with(quantization: Strict) -> bool:
    """Whether trimming can follow ``quantization``'s torch stage: QAT's ``qdq`` export writes the
    final model itself, so no later torch stage runs."""
    return not (isinstance(quantization, QatRecipe) and quantization.export == "qdq")


class VocabularySpace(Strict):
    """The ``space.vocabulary`` section: whether to trim (searched), and the margins tried.

    Example:
        >>> from edgetune.spaces.quantization import NoQuantization
        >>> trial = optuna.trial.FixedTrial({"vocabulary.trim": True, "vocabulary.margin": 1000})
        >>> VocabularySpace(margin=[1000]).sample(trial, NoQuantization())
        VocabularyRecipe(trim=True, margin=1000)
    """

    trim: list[bool] = Field(default=[False, True], min_length=1)
    # From benchmarks/RESULTS.md (vocabulary trimming): on the default task 2000 more rows than
    # the train texts' 17,914 cost 3.1 MB in FP32 (0.7 MB in INT8) and cut the validation words
    # tokenized otherwise from 0.90% to 0.73%, at the same test accuracy: a cheap guard for
    # deployed texts further from the train split than validation is.
    margin: list[int] = Field(default=[2000], min_length=1)

    @model_validator(mode="after")
    def _margins_not_negative(self) -> VocabularySpace:
        if any(margin < 0 for margin in self.margin):
            raise ValueError("a margin counts tokens: 0 or more")
        return self

    def sample(self, trial: optuna.Trial, quantization: Strict) -> VocabularyRecipe:
        """A recipe for a candidate quantized with ``quantization``."""
        if not composes_with(quantization):
            return VocabularyRecipe()
        if not suggest_choice(trial, "vocabulary.trim", self.trim):
            return VocabularyRecipe()
        return VocabularyRecipe(trim=True,
                                margin=suggest_choice(trial, "vocabulary.margin", self.margin))
