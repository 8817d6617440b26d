"""The search space samples only what it builds, and recipes survive a round trip as JSON."""

from __future__ import annotations

import optuna
import pytest

from edgetune.spaces import base
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.space import SearchSpace


def sample_many(space: SearchSpace, n: int = 200) -> list[tuple[optuna.Trial, Recipe]]:
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=1))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((trial, space.sample(trial)))
        study.tell(trial, [0.0, 0.0])
    return out


def test_recovery_is_sampled_only_for_pruned_models() -> None:
    for trial, recipe in sample_many(SearchSpace()):
        recovery_params = [p for p in trial.params if p.startswith("recovery.")]
        if recipe.pruning.method == "none":
            assert recovery_params == []
            assert recipe.recovery.steps == 0
        else:
            assert "recovery.steps" in recovery_params



def test_structured_pruning_that_removes_nothing_is_the_unpruned_model_without_recovery() -> None:
    trial = optuna.trial.FixedTrial({
        "pruning.method": "structured", "pruning.heads_kept": 1.0, "pruning.ffn_kept": 1.0,
        "pruning.layers_dropped": 0, "quantization.scheme": "none", "graph.fusion": False})
    assert SearchSpace().sample(trial) == Recipe()  # the FP32 reference, which a study has
    assert not [name for name in trial.params if name.startswith("recovery.")]

def test_distillation_settings_are_sampled_only_when_distilling() -> None:
    for trial, recipe in sample_many(SearchSpace()):
        has_temperature = "recovery.temperature" in trial.params
        assert has_temperature == (recipe.recovery.steps > 0 and recipe.recovery.distillation)


def test_graph_fusion_is_sampled_only_where_it_composes_with_the_quantization() -> None:
    seen = set()
    for trial, recipe in sample_many(SearchSpace()):
        quantization = recipe.quantization
        if quantization.scheme == "nncf" or getattr(quantization, "export", None) == "qdq":
            seen.add("without")
            assert "graph.fusion" not in trial.params
            assert recipe.graph.fusion is False
        else:
            seen.add("with")
            assert "graph.fusion" in trial.params
    assert seen == {"with", "without"}


def test_a_recipe_that_cannot_be_built_is_refused() -> None:
    with pytest.raises(ValueError, match="does not compose"):
        Recipe.model_validate({"quantization": {"scheme": "nncf"}, "graph": {"fusion": True}})


def test_each_quantization_scheme_samples_only_its_own_parameters() -> None:
    for trial, recipe in sample_many(SearchSpace()):
        scheme = recipe.quantization.scheme
        own = {p for p in trial.params if p.startswith(("quantization.", "qat."))}
        own.discard("quantization.scheme")
        prefix = "qat." if scheme == "qat" else f"quantization.{scheme}."
        assert all(p.startswith(prefix) for p in own), (scheme, own)
        assert bool(own) == (scheme != "none")


def test_smoothquant_is_sampled_only_with_nncfs_transformer_type() -> None:
    space = SearchSpace.model_validate({"quantization": {"schemes": ["nncf"],
                                                         "nncf": {"transformer": [True, False]}}})
    for trial, recipe in sample_many(space, 100):
        quantization = recipe.quantization
        if quantization.scheme != "nncf":
            continue
        assert ("quantization.nncf.smooth_quant" in trial.params) == quantization.transformer
        assert ("quantization.nncf.smooth_quant_alpha" in trial.params) == (
            quantization.smooth_quant_alpha is not None)
        if not quantization.transformer:
            assert quantization.smooth_quant_alpha is None


def test_each_method_samples_only_its_own_parameters() -> None:
    for trial, recipe in sample_many(SearchSpace()):
        pruning = {p for p in trial.params if p.startswith("pruning.")} - {"pruning.method"}
        expected = {
            "none": set(),
            "structured": {"pruning.heads_kept", "pruning.ffn_kept", "pruning.layers_dropped"},
            "unstructured": {"pruning.ratio"},
        }[trial.params["pruning.method"]]
        assert pruning - {"pruning.scope", "pruning.layer_selection"} == expected


def test_structured_settings_are_sampled_only_when_they_change_the_model() -> None:
    seen = set()
    for trial, recipe in sample_many(SearchSpace.model_validate(
            {"pruning": {"methods": ["structured"]}})):
        pruning = recipe.pruning
        if pruning.method == "none":  # all heads and neurons kept, no layer dropped
            assert (trial.params["pruning.heads_kept"], trial.params["pruning.ffn_kept"],
                    trial.params["pruning.layers_dropped"]) == (1.0, 1.0, 0)
            seen.add("nothing pruned")
            continue
        prunes_within = pruning.heads_kept < 1 or pruning.ffn_kept < 1
        assert ("pruning.scope" in trial.params) == prunes_within == (pruning.scope is not None)
        drops = pruning.layers_dropped > 0
        assert ("pruning.layer_selection" in trial.params) == drops
        assert drops == (pruning.layer_selection is not None)
        seen |= {pruning.scope, pruning.layer_selection}
    assert seen >= {"layer", "global", "even", "importance", None, "nothing pruned"}


@pytest.mark.parametrize("recipe", [
    {"method": "structured", "heads_kept": 0.5},  # no scope
    {"method": "structured", "scope": "global"},  # nothing within layers pruned
    {"method": "structured", "layers_dropped": 2},  # no layer_selection
    {"method": "structured", "layer_selection": "even"},  # no layer dropped
])
def test_structured_recipes_with_settings_that_do_nothing_or_are_missing_are_refused(
        recipe: dict) -> None:
    with pytest.raises(ValueError):
        Recipe.model_validate({"pruning": recipe})


def test_a_restricted_space_samples_only_the_listed_choices() -> None:
    space = SearchSpace.model_validate(
        {"pruning": {"methods": ["structured"],
                     "structured": {"layers_dropped": {"low": 2, "high": 3}, "scope": ["global"],
                                    "layer_selection": ["even"]}},
         "quantization": {"schemes": ["dynamic"]}}
    )
    for _, recipe in sample_many(space, 50):
        assert recipe.pruning.method == "structured"
        assert recipe.pruning.layers_dropped in (2, 3)
        assert recipe.pruning.layer_selection == "even"
        assert recipe.pruning.scope in ("global", None)
        assert recipe.quantization.scheme == "dynamic"


def test_recipes_round_trip_through_json() -> None:
    for _, recipe in sample_many(SearchSpace(), 50):
        assert Recipe.model_validate_json(recipe.model_dump_json()) == recipe


def test_the_default_recipe_is_the_fp32_reference() -> None:
    assert Recipe().is_reference
    assert Recipe().short() == "fp32 reference"


@pytest.mark.parametrize("bad", [
    {"pruning": {"methods": []}},
    {"pruning": {"unstructured": {"ratio": {"low": 0.5, "high": 1.0}}}},
    {"pruning": {"structured": {"heads_kept": {"low": 0.0, "high": 0.5}}}},
    {"recovery": {"steps": {"low": -5, "high": 10}}},
    {"quantization": {"schemes": ["int3"]}},
    {"pruning": {"structured": {"layers_dropped": {"low": 4, "high": 2}}}},
    {"pruning": {"structured": {"layers_dropped": {"low": -1, "high": 2}}}},
    {"pruning": {"structured": {"scope": []}}},
    {"pruning": {"structured": {"layer_selection": ["random"]}}},
])
def test_invalid_spaces_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        SearchSpace.model_validate(bad)


@pytest.mark.parametrize(("native", "setting", "trained"), [
    (True, "auto", "bf16"), (False, "auto", "fp32"),
    (True, "fp32", "fp32"), (False, "bf16", "bf16"),
])
def test_recovery_and_qat_train_in_bf16_by_default_only_where_the_cpu_computes_in_it(
        monkeypatch: pytest.MonkeyPatch, native: bool, setting: str, trained: str) -> None:
    monkeypatch.setattr(base, "native_bf16", lambda: native)
    space = SearchSpace.model_validate({"recovery": {"precision": setting},
                                        "quantization": {"qat": {"precision": setting}}})
    recipes = [recipe for _, recipe in sample_many(space, 100)]
    recovered = {r.recovery.precision for r in recipes if r.recovery.steps}
    qat = {r.quantization.precision for r in recipes if r.quantization.scheme == "qat"}
    assert recovered == qat == {trained}
