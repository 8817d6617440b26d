"""Recoveries compared at equal steps (``search.rungs``): a recovery that falls behind an earlier
candidate that is no larger stops there, and says behind which.

The ordering of recipes and the rule are checked directly; the end-to-end test trains two
recoveries of the same pruned tiny model, a sound one and a ruinous one, in a real study.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from edgetune.search.cli import cli
from edgetune.search.config import load_config
from edgetune.search.early_stopping import noise_margin
from edgetune.search.rungs import Rungs, no_larger_than, peers_of
from edgetune.spaces.channels import ChannelPruning
from edgetune.spaces.graph import GraphRecipe
from edgetune.spaces.pruning import StructuredPruning, UnstructuredPruning
from edgetune.spaces.quantization import DynamicQuantization
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.recovery import RecoveryRecipe

from helpers import tiny_config, write_config


def structured(layers: int = 0, heads: float = 1.0, ffn: float = 1.0, **rest: object) -> Recipe:
    pruning = StructuredPruning(
        layers_dropped=layers, layer_selection="even" if layers else None,
        heads_kept=heads, ffn_kept=ffn, scope="layer" if heads < 1 or ffn < 1 else None)
    return Recipe(pruning=pruning, recovery=RecoveryRecipe(steps=50), **rest)


def test_a_recipe_pruned_further_on_every_axis_is_no_larger() -> None:
    larger = structured(layers=2, heads=0.75, ffn=0.75)
    assert no_larger_than(structured(layers=3, heads=0.75, ffn=0.5), larger)
    assert no_larger_than(larger, larger)
    assert not no_larger_than(structured(layers=3, heads=1.0, ffn=0.5), larger)  # more heads
    assert not no_larger_than(larger, structured(layers=3, heads=0.75, ffn=0.5))


def test_how_a_recipe_recovers_or_ranks_what_it_prunes_does_not_matter() -> None:
    recovered_otherwise = structured(layers=2).model_copy(update={"recovery": RecoveryRecipe(
        steps=100, learning_rate=3e-4, distillation=True)})
    assert no_larger_than(recovered_otherwise, structured(layers=2))
    importance = structured(layers=2).model_copy(update={"pruning": StructuredPruning(
        layers_dropped=2, layer_selection="importance")})
    assert no_larger_than(importance, structured(layers=2))


def test_recipes_that_differ_after_pruning_are_not_compared() -> None:
    quantized = structured(layers=3, quantization=DynamicQuantization())
    assert not no_larger_than(quantized, structured(layers=2))
    fused = structured(layers=3, quantization=DynamicQuantization(), graph=GraphRecipe(fusion=True))
    assert not no_larger_than(fused, structured(layers=2, quantization=DynamicQuantization()))
    assert not no_larger_than(Recipe(pruning=UnstructuredPruning(ratio=0.9),
                                     recovery=RecoveryRecipe(steps=50)), structured())


def test_unstructured_and_channel_recipes_order_by_what_they_keep() -> None:
    def sparse(ratio: float) -> Recipe:
        return Recipe(pruning=UnstructuredPruning(ratio=ratio), recovery=RecoveryRecipe(steps=9))

    def channels(*kept: float) -> Recipe:
        return Recipe(pruning=ChannelPruning(kept=kept), recovery=RecoveryRecipe(steps=9))

    assert no_larger_than(sparse(0.7), sparse(0.5)) and not no_larger_than(sparse(0.5), sparse(0.7))
    assert no_larger_than(channels(0.5, 0.5, 0.75, 1.0), channels(0.5, 0.75, 0.75, 1.0))
    assert not no_larger_than(channels(0.5, 0.5, 1.0, 1.0), channels(0.5, 0.75, 0.75, 1.0))


def trial_with(recipe: Recipe, scores: dict[int, float]) -> FrozenTrial:
    """A finished trial of ``recipe`` whose recovery scored ``scores`` at its rungs."""
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE, values=[0.9, 1.0], params={"x": 0.0},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs={"recipe": recipe.model_dump(mode="json"),
                    "rungs": {"scores": {str(s): v for s, v in scores.items()}}})


def test_peers_are_the_scored_trials_no_larger() -> None:
    smaller, larger, other = structured(layers=3), structured(layers=1), structured(heads=0.5)
    trials = [trial_with(smaller, {25: 0.9}), trial_with(larger, {25: 0.95}),
              trial_with(other, {25: 0.95}), trial_with(smaller, {})]
    assert peers_of(structured(layers=2), trials) == [trials[0]]


def recover(rungs: Rungs, steps: int, scores: dict[int, float]) -> list[int]:
    """Drive ``rungs`` through a recovery of ``steps`` (a call after every step) scoring
    ``scores[step]``; return the steps it scored at."""
    rungs.evaluate = lambda model: scores[rungs._last_step]
    for step in range(1, steps + 1):
        rungs(step, None)  # type: ignore[arg-type]
    return sorted(rungs.scores)


def rungs_against(peers: list[FrozenTrial], kept: list[dict] | None = None) -> Rungs:
    return Rungs([25, 50], 100, lambda: peers, lambda model: 0.0, samples=300,
                 keep=(kept if kept is not None else []).append)


def test_a_recovery_behind_a_smaller_one_at_equal_steps_stops_there() -> None:
    peer = trial_with(structured(layers=3), {25: 0.95, 50: 0.96})
    kept: list[dict] = []
    rungs = rungs_against([peer], kept)
    with pytest.raises(optuna.TrialPruned, match="recovery step 25"):
        recover(rungs, 100, {25: 0.90})
    assert kept[-1]["scores"] == {"25": 0.90}
    assert "behind trial" in kept[-1]["reason"] and "95.00%" in kept[-1]["reason"]


def test_a_recovery_within_the_noise_of_its_peers_trains_on_and_keeps_its_scores() -> None:
    peer = trial_with(structured(layers=3), {25: 0.95, 50: 0.96})
    close = 0.95 - noise_margin(0.95, 300) / 2
    kept: list[dict] = []
    assert recover(rungs_against([peer], kept), 100, {25: close, 50: 0.97}) == [25, 50]
    assert kept[-1] == {"scores": {"25": close, "50": 0.97}, "seconds": kept[-1]["seconds"],
                        "reason": None}


def test_the_first_recovery_of_its_kind_is_scored_never_stopped() -> None:
    assert recover(rungs_against([]), 100, {25: 0.1, 50: 0.1}) == [25, 50]


def test_rungs_past_the_recovery_and_later_training_phases_are_not_scored() -> None:
    rungs = Rungs([25, 50], 40, lambda: [], lambda model: 0.0, samples=300, keep=lambda r: None)
    rungs.evaluate = lambda model: 0.5
    for step in [*range(1, 41), *range(1, 31)]:  # recovery, then 30 steps of QAT
        rungs(step, None)  # type: ignore[arg-type]
    assert sorted(rungs.scores) == [25]


UNSTRUCTURED = {"pruning.method": "unstructured", "pruning.ratio": 0.5, "recovery.steps": 10,
                "recovery.distillation": False, "quantization.scheme": "none",
                "graph.fusion": False}
SOUND, RUINOUS = 1e-4, 0.05  # recovery learning rates: one keeps the model, one wrecks it


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_csv: Path
             ) -> optuna.Study:
    folder = tmp_path_factory.mktemp("rungs")
    config = write_config(folder, tiny_config(
        tiny_model, tiny_csv,
        space={"pruning": {"methods": ["unstructured"]},
               "recovery": {"steps": {"low": 10, "high": 10}, "distillation": [False],
                            "learning_rate": {"low": SOUND, "high": RUINOUS, "log": True}},
               "quantization": {"schemes": ["none"]}, "graph": {"fusion": [False]}},
        search={"trials": 3, "rungs": [5, 10], "enqueue": [
            {**UNSTRUCTURED, "recovery.learning_rate": SOUND},
            {**UNSTRUCTURED, "recovery.learning_rate": RUINOUS}]}))
    result = CliRunner().invoke(cli, ["run", str(config), "--run-dir", str(folder / "run")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'run/study.db'}")


def test_a_recovery_behind_a_peer_at_a_rung_is_pruned_with_its_reason(compared: optuna.Study
                                                                       ) -> None:
    reference, sound, ruinous = compared.trials
    assert sound.state == TrialState.COMPLETE and "rungs" not in reference.user_attrs
    assert sound.user_attrs["rungs"]["reason"] is None
    assert set(sound.user_attrs["rungs"]["scores"]) == {"5", "10"}
    assert ruinous.state == TrialState.PRUNED
    assert ruinous.user_attrs["pruned"]["stage"] == "recovery"
    assert "recovery step 5" in ruinous.user_attrs["pruned"]["reason"]
    assert f"behind trial {sound.number}" in ruinous.user_attrs["pruned"]["reason"]
    assert ruinous.user_attrs["rungs"]["scores"]["5"] < sound.user_attrs["rungs"]["scores"]["5"]
    assert "measure" not in ruinous.user_attrs["stage_seconds"]  # stopped before it was built


def test_rungs_are_off_unless_set_and_change_the_study_when_set(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    plain = load_config(write_config(tmp_path, tiny_config(tiny_model, tiny_csv)))
    assert plain.search.rungs == []
    (tmp_path / "rungs").mkdir()
    ruled = load_config(write_config(tmp_path / "rungs", tiny_config(
        tiny_model, tiny_csv, search={"rungs": [25, 50]})))
    assert ruled.fingerprint() != plain.fingerprint()
