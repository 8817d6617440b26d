"""Building blocks shared by every knob's search space: ranges, choices and strict models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeVar

import optuna
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgetune.cpu import native_bf16

T = TypeVar("T")

Precision = Literal["fp32", "bf16"]
PrecisionSetting = Literal["auto", "fp32", "bf16"]


def resolve_precision(setting: PrecisionSetting) -> Precision:
    """``auto``: bf16 where the CPU computes in it natively, else fp32. A recipe records the
    resolved precision, so that it says how its model was trained."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16() else "fp32"


class Strict(BaseModel):
    """A config or recipe model that refuses unknown keys and cannot be changed once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatRange(Strict):
    """A float parameter searched between ``low`` and ``high`` (inclusive)."""

    low: float
    high: float
    step: float | None = Field(default=None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("a log-scaled range cannot have a step")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def nearest(self, value: float) -> float:
        """The value this range samples that is closest to ``value`` (on its grid, if stepped)."""
        value = min(max(value, self.low), self.high)
        if self.step is None:
            return value
        steps = min(round((value - self.low) / self.step),
                    math.floor((self.high - self.low) / self.step + 1e-9))
        return round(self.low + steps * self.step, 12)  # 0.1 + 2 * 0.2 is 0.5000000000000001

    def middle(self) -> float:
        """The sampled value nearest the middle of the range (geometric, if log-scaled)."""
        return self.nearest(math.sqrt(self.low * self.high) if self.log
                            else (self.low + self.high) / 2)


class IntRange(Strict):
    """An integer parameter searched between ``low`` and ``high`` (inclusive)."""

    low: int
    high: int
    step: int = Field(default=1, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    @property
    def highest(self) -> int:
        """The largest value this range samples (``high`` itself when it is on the grid)."""
        return self.low + (self.high - self.low) // self.step * self.step


def suggest_choice(trial: optuna.Trial, name: str, choices: Sequence[T]) -> T:
    """Sample one of ``choices`` (strings, numbers or booleans, as Optuna stores them)."""
    return trial.suggest_categorical(name, list(choices))  # type: ignore[arg-type,return-value]


def without_default(data: dict[str, object], field: str, is_default: bool) -> dict[str, object]:
    """``data`` without ``field`` when it holds its default: for a field added after studies were
    stored, whose dumps (recipes, config fingerprints) must stay as they were."""
    return {k: v for k, v in data.items() if k != field} if is_default else data


class CountRange(IntRange):
    """A count that cannot be negative, such as training steps."""

    low: int = Field(ge=0)
    high: int = Field(ge=0)
