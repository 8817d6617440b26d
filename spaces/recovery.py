"""Recovery knob: fine-tuning after pruning, optionally distilled from the unpruned model.

Pruning costs accuracy; a few hundred examples of further training win most of it back. With
distillation the pruned student also matches the fine-tuned teacher's softened logits.
Sampled only when the recipe prunes. Build step: ``edgetune.objectives.recovery``.
"""

from __future__ import annotations

import optuna
from pydantic import Field

from edgetune.spaces.base import (
    CountRange,
    FloatRange,
    Precision,
    PrecisionSetting,
    Strict,
    resolve_precision,
    suggest_choice,
)


class RecoveryRecipe(Strict):
    steps: int = Field(ge=0)
    learning_rate: float = Field(default=5e-5, gt=0)
    distillation: bool = False
    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1, description="weight of the distillation loss")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout rate while recovering")
    batch_size: int | None = Field(default=None, ge=1,
                                   description="rows a step (None: the fine-tuning's batch size)")
    precision: Precision = Field(default="fp32", description="bf16: forward under autocast")

    def short(self) -> str:
        if self.steps == 0:
            return ""
        kd = f"+kd(T{self.temperature:g},a{self.alpha:g})" if self.distillation else ""
        return f"rec{self.steps}@{self.learning_rate:.1e}{kd}"


class RecoverySpace(Strict):
    # From benchmarks/pruning.py on the default task: 3 of 6 layers kept recovered to -0.0 pt test
    # accuracy in 50 distilled steps at 1e-4 (-1.4 pt at 5e-5, -0.7 pt at 2e-4); 100 steps closed
    # 1.5 more points of validation accuracy. Fewer than 50 steps are not searched by default.
    steps: CountRange = CountRange(low=50, high=100, step=25)
    # A grid rather than a continuous range: a recovered model is cached per distinct recipe, so
    # recipes that repeat (as samplers converge, or across samplers and seeds) train once; the
    # grid's steps are finer than the accuracy differences they make. 5e-5 recovered 1.4 points
    # less than 1e-4 (benchmarks/RESULTS.md, structured pruning); 3e-4 lets the sampler look
    # past 2e-4, the rate of the best recoveries measured there.
    learning_rate: FloatRange = FloatRange(low=1e-4, high=3e-4, step=1e-4)
    distillation: list[bool] = Field(default=[True, False], min_length=1)
    temperature: FloatRange = FloatRange(low=1.0, high=4.0, step=0.5)
    alpha: FloatRange = FloatRange(low=0.3, high=0.9, step=0.1)
    # Not searched. 0 from benchmarks/RESULTS.md (training): on the default task, recoveries
    # without dropout reached the same test accuracy (validation within 1.5 points either way,
    # 5 of 334 texts) in 17-21% less time a step.
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # Not searched. 16 from benchmarks/RESULTS.md (training): on the default task, distilled
    # steps of 16 rows recovered as well as steps of 32 (validation and test within 1 point, 3
    # texts, either way) in 0.54-0.75x the time. None trains at finetune.batch_size.
    batch_size: int | None = Field(default=16, ge=1)
    # Not searched. From benchmarks/RESULTS.md (training, precision): on the default task,
    # recoveries under bfloat16 autocast reached the same validation and test accuracy as in
    # fp32, to the text, in 0.43-0.44x the time, on a CPU with AVX512-BF16. ``auto`` trains so
    # where the CPU computes in bfloat16 natively; elsewhere emulating it would be slower than fp32.
    precision: PrecisionSetting = "auto"

    def sample(self, trial: optuna.Trial) -> RecoveryRecipe:
        steps = self.steps.suggest(trial, "recovery.steps")
        if steps == 0:
            return RecoveryRecipe(steps=0)
        learning_rate = self.learning_rate.suggest(trial, "recovery.learning_rate")
        settings = {"dropout": self.dropout, "batch_size": self.batch_size,
                    "precision": resolve_precision(self.precision)}
        if not suggest_choice(trial, "recovery.distillation", self.distillation):
            return RecoveryRecipe(steps=steps, learning_rate=learning_rate, **settings)
        return RecoveryRecipe(
            steps=steps,
            learning_rate=learning_rate,
            **settings,
            distillation=True,
            temperature=self.temperature.suggest(trial, "recovery.temperature"),
            alpha=self.alpha.suggest(trial, "recovery.alpha"),
        )
