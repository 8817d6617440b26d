"""Studies built in memory with the trial records ``edgetune run`` writes, for fast report tests.

``trial`` writes a complete trial's user attrs in the shared format (PREAMBLE "Shared data
formats"); ``sampled_study`` samples real recipes from the default search space and gives each
figures that follow from its knobs, so importances and hypervolume have something to find.
"""

from __future__ import annotations

import random
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.search.study import DIRECTIONS, OBJECTIVES
from edgetune.spaces.pruning import StructuredPruning, UnstructuredPruning
from edgetune.spaces.quantization import DynamicQuantization
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.space import SearchSpace

REFERENCE_MS = 10.0
DYNAMIC = Recipe(quantization=DynamicQuantization())
STRUCTURED = Recipe(pruning=StructuredPruning(heads_kept=0.5, ffn_kept=0.5, scope="layer",
                                               layers_dropped=3, layer_selection="even"),
                    quantization=DynamicQuantization())
UNSTRUCTURED = Recipe(pruning=UnstructuredPruning(ratio=0.5))


def latency_stats(median_ms: float, rounds: list[float] | None = None) -> dict[str, Any]:
    rounds = rounds or [median_ms] * 3
    return {"median_ms": median_ms, "p90_ms": max(rounds), "round_medians_ms": rounds,
            "spread": (max(rounds) - min(rounds)) / median_ms}


def trial(accuracy: float, latency_ms: float, recipe: Recipe = Recipe(), role: str = "",
          size_mb: float = 20.0, zipped_mb: float = 18.0,
          system_attrs: dict[str, Any] | None = None, **attrs: Any) -> FrozenTrial:
    """A complete trial as the objective records it (plus any extra user attrs)."""
    user_attrs = {
        "recipe": recipe.model_dump(mode="json"), "recipe_short": recipe.short(),
        "machine": {"host": "h", "cpu": "Test CPU", "cores": 2, "threads": 2,
                    "onnxruntime": "1.0", "edgetune": "0.1.0"},
        "measurement": {"accuracy": accuracy, "latency_ms": latency_ms,
                        "ratio": latency_ms / REFERENCE_MS, "latency": latency_stats(latency_ms),
                        "reference_latency": latency_stats(REFERENCE_MS),
                        "size_mb": size_mb, "zipped_mb": zipped_mb},
        **({"role": role} if role else {}), **attrs,
    }
    return optuna.trial.create_trial(values=[accuracy, latency_ms], user_attrs=user_attrs,
                                     system_attrs=system_attrs)


def failed(stage: str, error: str, recipe: Recipe = DYNAMIC) -> FrozenTrial:
    return optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
        "recipe": recipe.model_dump(mode="json"), "recipe_short": recipe.short(),
        "failure": {"stage": stage, "error": error, "type": "RuntimeError",
                    "traceback": f"Traceback ...\nRuntimeError: {error}"}})


def killed() -> FrozenTrial:
    """A trial whose process died: Optuna marked it failed, with nothing recorded by edgetune."""
    return optuna.trial.create_trial(state=TrialState.FAIL)


def retry_of(number: int, accuracy: float, latency_ms: float) -> FrozenTrial:
    """The trial Optuna's retry callback runs in place of trial ``number``."""
    return trial(accuracy, latency_ms, DYNAMIC,
                 system_attrs={"failed_trial": number, "retry_history": [number]})


def study_of(trials: list[FrozenTrial], config: dict[str, Any] | None = None,
             name: str = "synthetic") -> optuna.Study:
    study = optuna.create_study(directions=list(DIRECTIONS), study_name=name)
    study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr("config", config or {"study": name, "target": {"threads": 2}})
    study.set_user_attr("data", {"labels": ["a", "b"], "sizes": {"validation": 10}})
    study.add_trials(trials)
    return study


def sampled_study(trials: int, seed: int = 0) -> optuna.Study:
    """The FP32 reference, then ``trials`` recipes sampled from the default space.

    Quantization and layers dropped set the latency; they and pruning set the accuracy, so a
    correct importance analysis ranks them above knobs that do nothing (calibration, say).
    """
    rng = random.Random(seed)
    study = study_of([trial(0.97, REFERENCE_MS, role="reference")])
    study.sampler = optuna.samplers.RandomSampler(seed=seed)
    space = SearchSpace()
    for _ in range(trials):
        asked = study.ask()
        recipe = space.sample(asked)
        layers = 6 - getattr(recipe.pruning, "layers_dropped", 0)
        quantized = recipe.quantization.scheme != "none"
        latency = REFERENCE_MS * layers / 6 * (0.55 if quantized else 1.0) * rng.uniform(0.97, 1.03)
        accuracy = 0.97 - 0.03 * (6 - layers) - (0.01 if quantized else 0.0) - rng.uniform(0, 0.005)
        for key, value in trial(accuracy, latency, recipe).user_attrs.items():
            asked.set_user_attr(key, value)
        study.tell(asked, [accuracy, latency])
    return study
