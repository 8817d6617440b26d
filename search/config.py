"""The study config (``study.yaml``): loading, validation and the hash that fixes a study.

Every section is a strict pydantic model declared beside the code it configures (the task in
``objectives.task``, a knob's ranges in ``spaces/<knob>.py``); this module composes them. A wrong
config raises ``InputError`` naming the field path and what was expected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgetune.errors import InputError
from edgetune.objectives.finetune import FinetuneConfig
from edgetune.objectives.latency import MeasureConfig, RoundLimits
from edgetune.objectives.metrics import ACCURACY
from edgetune.objectives.runtimes import RUNTIMES, check_installed
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.task import TaskConfig, checkpoint_classifier
from edgetune.objectives.vision import image_space, with_image_defaults
from edgetune.search.artifacts import ArtifactsConfig
from edgetune.search.baselines import misfit
from edgetune.search.constraints import Constraints
from edgetune.search.study import OBJECTIVES
from edgetune.spaces.base import Strict
from edgetune.spaces.knob import DEFAULT_RUNTIME
from edgetune.spaces.quantization import QuantizationSpace
from edgetune.spaces.registry import is_builtin, knob, knobs
from edgetune.spaces.space import SearchSpace

Sampler = Literal["tpe", "nsga2", "gp", "random"]
ObjectiveName = Literal["accuracy", "latency_ms", "size_mb"]
STUDY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class SearchConfig(Strict):
    """The ``search:`` section: how trials are chosen and how many."""

    trials: int = Field(default=12, ge=1, description="finished trials the study aims for")
    timeout: float | None = Field(default=None, gt=0, description="seconds for this run")
    sampler: Sampler = "tpe"
    seed: int = 0
    enqueue: list[dict[str, Any]] = Field(
        default=[], description="recipes to try first, as space parameters (pruning.method: ...)"
    )
    retries: int = Field(
        default=1, ge=0, description="times a trial lost to a crash or an interrupt is run again"
    )
    objectives: list[ObjectiveName] = Field(
        default=list(OBJECTIVES),
        description="accuracy (the task.metric's value) and latency_ms, optionally size_mb "
                    "(ONNX file size) as a third",
    )
    constraints: Constraints = Constraints()
    # Off by default: on the default task the rule stopped recoveries that would have met the
    # floor (edgetune.search.early_stopping).
    early_stopping: bool = Field(
        default=False, description="stop training whose forecast falls below the accuracy floor"
    )
    # Off by default: on the default task it stopped 2-4 of ~30 recoveries a study, and its
    # checks cost more than that saved (benchmarks/RESULTS.md, search, 2026-12-07).
    rungs: list[PositiveInt] = Field(
        default=[], description="recovery steps at which a recovery is compared with those of "
                                "smaller candidates, and stopped behind them"
    )

    @field_validator("objectives")
    @classmethod
    def _accuracy_and_latency_first(cls, names: list[str]) -> list[str]:
        # Readers of a study (front, report, export) take values[0] and values[1] as accuracy
        # and latency: a third objective may only follow them.
        if tuple(names[:2]) != OBJECTIVES or len(set(names)) != len(names):
            raise ValueError("expected [accuracy, latency_ms] or [accuracy, latency_ms, size_mb]")
        return names


class ConfirmConfig(RoundLimits):
    """The ``confirm:`` section: re-measuring the front after a study (``edgetune.search.confirm``),
    together in one process, in rounds of ``measure.runs`` runs per model (round limits as a
    trial's by default)."""

    after_run: bool = Field(default=True, description="confirm at the end of `edgetune run`")
    margin: float = Field(
        default=0.10, ge=0,
        description="also confirm trials that would be on the front were they this much faster",
    )


class StudyConfig(Strict):
    study: str = Field(pattern=STUDY_NAME_PATTERN, description="the Optuna study name")
    task: TaskConfig
    finetune: FinetuneConfig = FinetuneConfig()
    target: TargetConfig = TargetConfig()
    measure: MeasureConfig = MeasureConfig()
    confirm: ConfirmConfig = ConfirmConfig()
    space: SearchSpace = Field(default_factory=SearchSpace)
    search: SearchConfig = SearchConfig()
    storage: str | None = Field(default=None, description="an Optuna storage URL")
    artifacts: ArtifactsConfig = ArtifactsConfig()
    cache_dir: str | None = None

    @property
    def objective_names(self) -> list[str]:
        """The study's objectives as Optuna names them: ``search.objectives`` with ``accuracy``
        named after ``task.metric`` (``macro_f1``, ``recall_<label>``)."""
        return [self.task.metric_name if name == "accuracy" else name
                for name in self.search.objectives]

    @property
    def runtimes(self) -> list[str]:
        """The runtimes the study compiles for: the target's, then any other the space searches."""
        return list(dict.fromkeys([self.target.runtime, *(self.space.runtime or [])]))

    @model_validator(mode="before")
    @classmethod
    def _knobs_of_an_image_task(cls, data: Any, info: ValidationInfo) -> Any:
        """A config whose task is image classification (``task.kind``, else the checkpoint's
        only kind, which ``load_config`` passes as ``checkpoint``) searches, unless it lists
        them, the knobs image classifiers of its architecture take (``objectives.vision``)."""
        if not isinstance(data, dict):
            return data
        kind, model_type = (info.context or {}).get("checkpoint") or (None, None)
        if (_raw(data, "task", "kind") or kind) != "image":
            return data
        space = data.get("space") or {}
        return ({**data, "space": with_image_defaults(space, image_space(model_type))}
                if isinstance(space, dict) else data)

    @model_validator(mode="before")
    @classmethod
    def _schemes_of_the_runtimes(cls, data: Any) -> Any:
        """Unless the config lists them, the schemes searched are the default ones that run on
        the study's runtimes, plus edgetune's own schemes for its other runtimes."""
        if not isinstance(data, dict):
            return data
        runtimes = [_raw(data, "target", "runtime") or DEFAULT_RUNTIME,
                    *(_raw(data, "space", "runtime") or [])]
        space = data.get("space") or {}
        quantization = space.get("quantization") if isinstance(space, dict) else None
        if isinstance(quantization, dict) and "schemes" in quantization and (
                quantization["schemes"] is None):  # unset by ``run --runtime``
            quantization = {k: v for k, v in quantization.items() if k != "schemes"}
            data = {**data, "space": {**space, "quantization": quantization}}
        if runtimes == [DEFAULT_RUNTIME] or not isinstance(quantization or {}, dict) or (
                "schemes" in (quantization or {})):
            return data
        defaults = QuantizationSpace.model_fields["schemes"].default
        runnable = {name: scheme for name, scheme in knobs("quantization").items()
                    if any(scheme.runs_on(r) for r in runtimes)}
        schemes = [name for name in defaults if name in runnable] + [
            name for name, scheme in runnable.items()
            if is_builtin("quantization", name) and not scheme.runs_on(DEFAULT_RUNTIME)]
        return {**data, "space": {**space, "quantization": {**(quantization or {}),
                                                             "schemes": schemes}}}

    @model_validator(mode="after")
    def _runtimes_installed_and_schemes_runnable(self) -> StudyConfig:
        named = [("target.runtime", self.target.runtime),
                 *((f"space.runtime.{i}", name) for i, name in enumerate(self.space.runtime or []))]
        for where, name in named:
            check_installed(name, where)
        quantization = self.space.quantization
        for i, name in enumerate(quantization.schemes):
            scheme = knob("quantization", name)
            if not any(scheme.runs_on(runtime) for runtime in self.runtimes):
                runs_on = ", ".join(RUNTIMES[r].title for r in sorted(scheme.runtimes or ()))
                raise InputError(f"space.quantization.schemes.{i}",
                                 f"{name!r} runs on {runs_on} only, not on "
                                 f"{_titles(self.runtimes)}; schemes for "
                                 f"{_titles(self.runtimes)}: {', '.join(self._schemes_for())}")
        for runtime in self.runtimes:
            if not quantization.runnable(runtime):
                raise InputError("space.quantization.schemes",
                                 f"none of them runs on {RUNTIMES[runtime].title}: add one of "
                                 f"{', '.join(self._schemes_for())}")
        return self

    def _schemes_for(self) -> list[str]:
        defaults = QuantizationSpace.model_fields["schemes"].default
        runnable = [name for name, scheme in knobs("quantization").items()
                    if any(scheme.runs_on(runtime) for runtime in self.runtimes)]
        return sorted(runnable, key=lambda name: (name not in defaults,
                                                  defaults.index(name) if name in defaults else 0))

    @model_validator(mode="after")
    def _device_models_kept(self) -> StudyConfig:
        if self.target.device is not None and self.artifacts.keep == "none":
            raise InputError("artifacts.keep", f"expected front or all with target.device "
                                               f"({self.target.device!r}): its agent fetches each "
                                               "candidate from the artifact store")
        return self

    @model_validator(mode="after")
    def _trimming_measured_here(self) -> StudyConfig:
        vocabulary = self.space.vocabulary
        if self.target.device is not None and vocabulary is not None and True in vocabulary.trim:
            raise InputError("space.vocabulary", f"not with target.device "
                                                 f"({self.target.device!r}) yet: its agent scores "
                                                 "every candidate on the study's published token "
                                                 "ids, and a trimmed model reads its own "
                                                 "tokenizer's")
        return self

    @model_validator(mode="after")
    def _enqueued_recipes_fit_the_space(self) -> StudyConfig:
        for i, params in enumerate(self.search.enqueue):
            problem = misfit(self.space, params, self.target.runtime)
            if problem:
                # InputError, not ValueError: pydantic would report it at the config's root
                raise InputError(f"search.enqueue.{i}", f"not a recipe of this space: {problem}")
        return self

    def fingerprint(self) -> str:
        """A hash of what fixes a study's results.

        Budgets, locations, which models are kept, the confirmation and where on a machine
        measurements run may change on resume (workers on different machines pin different cores).
        """
        fixed = self.model_dump(mode="json", exclude={"storage": True, "cache_dir": True,
                                                      "artifacts": True,
                                                      "search": {"trials", "timeout", "retries"},
                                                      "measure": {"isolate", "cores"},
                                                      "confirm": True})
        # Unset runtimes (ONNX Runtime alone) and no vocabulary section keep the fingerprints of
        # the earlier studies.
        if fixed["target"]["runtime"] == DEFAULT_RUNTIME:
            del fixed["target"]["runtime"]
        for unset in ("device", "image_size"):  # image_size: a text study's never set
            if fixed["target"][unset] is None:
                del fixed["target"][unset]
        for section, unset in ((fixed["task"], "kind"), (fixed["task"]["data"], "image_column")):
            if section[unset] is None:
                del section[unset]
        for unset in ("runtime", "vocabulary"):
            if fixed["space"][unset] is None:
                del fixed["space"][unset]
        if fixed["task"]["metric"] == ACCURACY:
            del fixed["task"]["metric"]
        if not fixed["search"]["rungs"]:
            del fixed["search"]["rungs"]
        return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]


def _raw(data: dict[str, Any], section: str, field: str) -> Any:
    """``data[section][field]`` of a config not validated yet (a mapping or a model)."""
    value = data.get(section)
    return value.get(field) if isinstance(value, dict) else getattr(value, field, None)


def _titles(runtimes: list[str]) -> str:
    return " or ".join(RUNTIMES[name].title for name in runtimes)


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate ``path``; ``overrides`` maps dotted field paths to values (CLI flags)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(str(path), f"cannot read the config: {error.strerror}") from error
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(where, f"not valid YAML: {getattr(error, 'problem', error)}") from error
    if not isinstance(raw, dict):
        raise InputError(str(path), "expected a mapping of sections (study, task, space, ...)")
    for dotted, value in (overrides or {}).items():
        _set(raw, dotted.split("."), value)
    model = _raw(raw, "task", "model")
    trusted = _raw(raw, "task", "trust_remote_code") is True
    checkpoint = (checkpoint_classifier(model, path.parent, trusted) if isinstance(model, str)
                  else None)
    try:
        return StudyConfig.model_validate(raw, context={"checkpoint": checkpoint})
    except ValidationError as error:
        raise InputError(*_describe(error, raw)) from error


def _set(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def _describe(error: ValidationError, raw: dict[str, Any]) -> tuple[str, str]:
    """The first problem's field path in ``raw`` (what the user wrote), and its message with the
    value given."""
    problems = error.errors()
    first = problems[0]
    where = _written_path(first["loc"], raw) or "config"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key (check its spelling and section)"
    elif first["type"] != "missing":
        message += f" (got {json.dumps(first.get('input'), default=str)[:80]})"
    if len(problems) > 1:
        message += f"; and {len(problems) - 1} more problem(s)"
    return where, message


def _written_path(location: tuple[int | str, ...], raw: Any) -> str:
    """An error location as a dotted path of what the user wrote: without the union member
    names pydantic inserts, though a key the user wrote stays, however it looks (``[``)."""
    parts, node = [], raw
    for part in location:
        written = ((isinstance(node, dict) and part in node) or
                   (isinstance(node, list) and isinstance(part, int) and part < len(node)))
        if not written and _is_union_tag(part):
            continue
        parts.append(str(part))
        node = node[part] if written else None  # type: ignore[index]
    return ".".join(parts)


def _is_union_tag(part: object) -> bool:
    """pydantic inserts the chosen union member's name into error locations."""
    return isinstance(part, str) and (part.startswith("function-") or "[" in part)
