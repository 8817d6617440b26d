"""How trials are chosen and judged: samplers, constraints, the front, and a size objective."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import TrialState

from edgetune.errors import InputError
from edgetune.search.baselines import DYNAMIC_INT8, REFERENCE, half_the_layers
from edgetune.search.cli import cli
from edgetune.search.config import StudyConfig, load_config
from edgetune.search.repeats import (
    MAX_REPEATS_IN_A_ROW,
    RECIPE,
    earlier_trial,
    is_repeat,
    prune_as_duplicate,
)
from edgetune.search.samplers import GPSampler, NSGAIISampler, sampler
from edgetune.search.study import Location, make_storage, open_study
from edgetune.spaces.space import SearchSpace

from helpers import tiny_config, write_config


def config_with(tiny_model: Path, tiny_csv: Path, **search: object) -> StudyConfig:
    return StudyConfig.model_validate(tiny_config(tiny_model, tiny_csv, search=search))


@pytest.mark.parametrize(("name", "kind"), [
    ("tpe", optuna.samplers.TPESampler), ("nsga2", optuna.samplers.NSGAIISampler),
    ("gp", optuna.samplers.GPSampler), ("random", optuna.samplers.RandomSampler),
])
def test_the_config_chooses_a_seeded_sampler(tiny_model: Path, tiny_csv: Path, name: str,
                                             kind: type) -> None:
    config = config_with(tiny_model, tiny_csv, sampler=name, seed=7)
    assert isinstance(sampler(config), kind)
    space = SearchSpace()
    recipes = []
    for _ in range(2):  # the same seed samples the same recipes
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler(config))
        recipes.append([space.sample(study.ask()) for _ in range(3)])
    assert recipes[0] == recipes[1]


def test_sampler_settings_fit_the_budget(tiny_model: Path, tiny_csv: Path) -> None:
    nsga2 = sampler(config_with(tiny_model, tiny_csv, sampler="nsga2"), 40)
    assert nsga2._population_size <= 10  # several generations, not one random population
    for name in ("tpe", "gp"):
        config = config_with(tiny_model, tiny_csv, sampler=name)
        # Random start-up trials (the enqueued reference and baselines among them): a quarter
        # of the budget, so that a short study is not mostly random.
        assert [sampler(config, budget)._n_startup_trials for budget in (12, 40, 200)] == \
            [5, 10, 10]
    # TPE models the best quarter of the trials as good: at 20 trials more than the front's
    # corners (Optuna's default, a tenth, would be 2).
    tpe = sampler(config_with(tiny_model, tiny_csv, sampler="tpe"))
    assert [tpe._gamma(n) for n in (10, 20, 40, 400)] == [3, 5, 10, 25]


@pytest.mark.filterwarnings("ignore:Heartbeat")  # asked and told by hand, not by optimize()
def test_the_reference_and_baselines_give_the_samplers_a_search_space(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    """Every queued trial is a point of the space, so the parameters all trials share (what
    NSGA-II and GP model) are not emptied by the FP32 reference."""
    config = config_with(tiny_model, tiny_csv,
                         enqueue=[{"pruning.method": "none", "quantization.scheme": "static",
                                   "quantization.static.format": "qdq",
                                   "quantization.static.calibration": "percentile",
                                   "quantization.static.activation_type": "uint8",
                                   "quantization.static.per_channel": False,
                                   "quantization.static.op_types": "matmul_gather",
                                   "quantization.static.keep_fp32": "none",
                                   "graph.fusion": False}])
    location = Location.resolve("tiny", tmp_path)
    study = open_study(config, location.study, make_storage(location.storage))
    roles = []
    for _ in range(4):
        trial = study.ask()
        recipe = config.space.sample(trial)
        roles.append((trial.user_attrs["role"], recipe.short()))
        study.tell(trial, [0.5, 1.0])
    assert roles == [("reference", "fp32 reference"), ("baseline", "dyn-int8"),
                     ("baseline", "fused · dyn-int8"), ("enqueued", "static-qdq-percentile")]
    assert {"pruning.method", "quantization.scheme", "graph.fusion"} <= set(
        IntersectionSearchSpace().calculate(study))



@pytest.mark.parametrize(("layers", "recipe"), [
    (6, "drop3L-even+rec20@1.7e-03+kd(T2,a0.5) · fused · dyn-int8"),
    (2, "drop1L-even+rec20@1.7e-03+kd(T2,a0.5) · fused · dyn-int8"),
])
@pytest.mark.filterwarnings("ignore:Heartbeat")
def test_a_model_with_layers_to_spare_starts_with_half_of_them_distilled(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path, layers: int, recipe: str) -> None:
    """After the dynamic INT8 baselines: every other encoder layer kept (as DistilBERT keeps
    them), recovered with distillation at the space's most steps and its middle settings."""
    config = StudyConfig.model_validate(tiny_config(tiny_model, tiny_csv, space={
        "pruning": {"structured": {"layers_dropped": {"low": 0, "high": 3}}}}))
    location = Location.resolve("tiny", tmp_path)
    study = open_study(config, location.study, make_storage(location.storage), layers=layers)
    queued = []
    for _ in range(4):
        trial = study.ask()
        queued.append((trial.user_attrs.get("baseline"), config.space.sample(trial).short()))
        study.tell(trial, [0.5, 1.0])
    assert queued[3] == ("half the layers, distilled + fusion + dynamic INT8", recipe)


@pytest.mark.parametrize("space", [
    {"pruning": {"methods": ["none", "unstructured"]}},  # no structured pruning
    {"pruning": {"structured": {"layers_dropped": {"low": 0, "high": 0}}}},  # no layer dropped
    {"recovery": {"distillation": [False]}},  # no distillation
])
def test_a_space_that_cannot_halve_the_layers_starts_without_it(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path, space: dict) -> None:
    config = StudyConfig.model_validate(tiny_config(tiny_model, tiny_csv, space=space))
    location = Location.resolve("tiny", tmp_path)
    study = open_study(config, location.study, make_storage(location.storage), layers=2)
    baselines = [t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)]
    assert baselines == [None, "dynamic INT8", "fusion + dynamic INT8"]

@pytest.mark.parametrize(("objectives", "expected"), [
    (["latency_ms", "accuracy"], "expected [accuracy, latency_ms]"),
    (["accuracy", "latency_ms", "size_mb", "size_mb"], "expected [accuracy, latency_ms]"),
    (["accuracy", "latency_ms", "flops"], "'size_mb'"),
])
def test_objectives_keep_accuracy_and_latency_first(tmp_path: Path, tiny_model: Path,
                                                    tiny_csv: Path, objectives: list,
                                                    expected: str) -> None:
    path = write_config(tmp_path, tiny_config(tiny_model, tiny_csv,
                                              search={"objectives": objectives}))
    with pytest.raises(InputError) as error:
        load_config(path)
    assert error.value.where.startswith("search.objectives") and expected in error.value.message


@pytest.fixture(scope="module")
def constrained_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
                    tiny_csv: Path) -> tuple[optuna.Study, dict, dict]:
    """Three objectives, and a size budget the FP32 model misses while its INT8 versions meet it."""
    folder = tmp_path_factory.mktemp("constrained")
    run_dir = folder / "run"
    config = tiny_config(tiny_model, tiny_csv,
                         space={"pruning": {"methods": ["none"]},
                                "quantization": {"schemes": ["none", "dynamic"]}},
                         search={"trials": 5, "objectives": ["accuracy", "latency_ms", "size_mb"],
                                 "enqueue": [{**DYNAMIC_INT8,
                                              "quantization.dynamic.per_channel": True,
                                              "graph.fusion": True}]})
    # The budget sits between the FP32 file and the dynamic INT8 one (measured in a first study).
    probe = write_config(folder, config, name="probe.yaml")
    runner = CliRunner()
    assert runner.invoke(cli, ["run", str(probe), "--trials", "2", "--run-dir",
                               str(folder / "probe")], catch_exceptions=False).exit_code == 0
    probed = optuna.load_study(study_name="tiny",
                               storage=f"sqlite:///{folder / 'probe' / 'study.db'}")
    sizes = [t.values[2] for t in probed.get_trials(states=(TrialState.COMPLETE,))]
    config["search"]["constraints"] = {"max_accuracy_drop": 0.5, "max_size_mb": sum(sizes) / 2}
    path = write_config(folder, config)
    result = runner.invoke(cli, ["run", str(path), "--run-dir", str(run_dir), "--json"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    status = runner.invoke(cli, ["status", "--run-dir", str(run_dir), "--study", "tiny", "--json"],
                           catch_exceptions=False)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    return study, json.loads(result.stdout), json.loads(status.stdout)


def test_every_trial_carries_its_constraints(constrained_run: tuple[optuna.Study, dict, dict]
                                             ) -> None:
    study, _, _ = constrained_run
    budget = study.user_attrs["config"]["search"]["constraints"]["max_size_mb"]
    floor = study.user_attrs["reference_accuracy"] - 0.5
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len([t for t in finished if "duplicate_of" not in t.user_attrs]) == 5  # the budget
    for trial in finished:  # a repeated recipe carries the constraints of the trial it repeats
        measured = study.trials[trial.user_attrs.get("duplicate_of", trial.number)]
        accuracy, _, size_mb = measured.values
        assert list(trial.constraints) == ["accuracy_drop", "size_mb"]
        assert trial.constraints["accuracy_drop"] == pytest.approx(floor - accuracy)
        assert trial.constraints["size_mb"] == pytest.approx((size_mb - budget) / budget)
    assert study.trials[0].constraints["size_mb"] > 0  # the FP32 reference is over the budget


def test_the_front_holds_only_feasible_trials(constrained_run: tuple[optuna.Study, dict, dict]
                                              ) -> None:
    study, output, status = constrained_run
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    feasible = [t for t in complete if all(v <= 0 for v in t.constraints.values())]
    on_front = {row["trial"] for row in output["front"]}
    assert on_front and on_front <= {t.number for t in feasible}
    assert 0 not in on_front
    assert status["infeasible"] == len(complete) - len(feasible) >= 1
    assert {row["trial"] for row in status["front"]} == on_front


def test_the_front_is_never_worse_than_the_baselines(
        constrained_run: tuple[optuna.Study, dict, dict]) -> None:
    """Every feasible reference, baseline or enqueued recipe is on the front or beaten by it."""
    study, _, _ = constrained_run
    front = study.best_trials
    known = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
             if t.user_attrs.get("role") in ("reference", "baseline", "enqueued")
             and all(v <= 0 for v in t.constraints.values())]
    assert {t.user_attrs["role"] for t in known} == {"baseline", "enqueued"}
    for trial in known:
        assert any(_at_least_as_good(best.values, trial.values) for best in front), trial.number


def test_size_is_a_third_objective_end_to_end(constrained_run: tuple[optuna.Study, dict, dict]
                                              ) -> None:
    study, output, status = constrained_run
    assert study.metric_names == ["accuracy", "latency_ms", "size_mb"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert trial.values[2] == trial.user_attrs["measurement"]["size_mb"]
    for row in output["front"]:
        assert row["size_mb"] == study.trials[row["trial"]].values[2]
    assert status["objectives"] == ["accuracy", "latency_ms", "size_mb"]


def _at_least_as_good(better: list[float], other: list[float]) -> bool:
    accuracy, *costs = better
    other_accuracy, *other_costs = other
    return accuracy >= other_accuracy and all(c <= o for c, o in zip(costs, other_costs))


@pytest.mark.parametrize("name", ["tpe", "nsga2", "gp", "random"])
def test_samplers_keep_proposing_after_pruned_failed_and_infeasible_trials(
        tiny_model: Path, tiny_csv: Path, name: str) -> None:
    """Past their start-up trials, every sampler reads the constraints of complete trials and the
    lone accuracy constraint of early-stopped ones without error."""
    config = config_with(tiny_model, tiny_csv, sampler=name, seed=1)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler(config))
    study.enqueue_trial({"pruning.method": "none"})  # as edgetune enqueues its FP32 reference
    for number in range(14):
        trial = study.ask()
        recipe = config.space.sample(trial)
        if number % 5 == 3:
            trial.set_constraint("accuracy_drop", 0.2)
            study.tell(trial, state=TrialState.PRUNED)
        elif number % 5 == 4:
            study.tell(trial, state=TrialState.FAIL)
        else:
            accuracy = 0.9 - 0.1 * recipe.pruning.method.startswith("s")
            trial.set_constraint("accuracy_drop", 0.85 - accuracy)
            trial.set_constraint("latency_ms", (number % 3 - 1) / 10)
            study.tell(trial, [accuracy, 10.0 - number % 4])
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 9
    assert len(study.best_trials) >= 1
    assert all(all(v <= 0 for v in t.constraints.values()) for t in study.best_trials)


def test_parameters_that_build_an_earlier_trials_model_make_a_repeat() -> None:
    space = SearchSpace()
    study = optuna.create_study(directions=["maximize", "minimize"])
    unpruned = {"pruning.method": "none", "quantization.scheme": "none", "graph.fusion": False}
    nothing_pruned = {**unpruned, "pruning.method": "structured", "pruning.heads_kept": 1.0,
                      "pruning.ffn_kept": 1.0, "pruning.layers_dropped": 0}
    for params in (unpruned, nothing_pruned):
        study.enqueue_trial(params)
    first = study.ask()
    first.set_user_attr("recipe", space.sample(first).model_dump(mode="json"))
    study.tell(first, [0.9, 10.0])
    second = study.ask()
    second.set_user_attr("recipe", space.sample(second).model_dump(mode="json"))
    assert second.params != first.params
    original = earlier_trial(second)
    assert original is not None and original.number == first.number

def test_a_recipe_sampled_again_is_neither_built_nor_counted_and_endless_repeats_stop(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    """A space of two recipes (the FP32 reference and the dynamic INT8 baseline) and a budget of
    5: every later trial repeats one of them and is pruned at once, pointing to the trial with
    its figures; repeats do not count toward the budget, so the run stops when it has seen
    nothing but repeats for ``MAX_REPEATS_IN_A_ROW`` trials, and says why."""
    config = tiny_config(tiny_model, tiny_csv,
                         space={"pruning": {"methods": ["none"]},
                                "quantization": {"schemes": ["none", "dynamic"],
                                                 "dynamic": {"per_channel": [False]}},
                                "graph": {"fusion": [False]}},
                         search={"trials": 5, "sampler": "random",
                                 "constraints": {"max_accuracy_drop": 0.5}})
    result = CliRunner().invoke(cli, ["run", str(write_config(tmp_path, config)), "--run-dir",
                                      str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"the last {MAX_REPEATS_IN_A_ROW} trials all repeated recipes" in result.output
    study = optuna.load_study(study_name="tiny",
                              storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 2 + MAX_REPEATS_IN_A_ROW
    status = CliRunner().invoke(cli, ["status", "--run-dir", str(tmp_path / "run"), "--study",
                                      "tiny", "--json"], catch_exceptions=False)
    assert json.loads(status.stdout)["trials"] == {"complete": 2, "repeated": MAX_REPEATS_IN_A_ROW}
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2
    for trial in trials[2:]:
        original = trials[trial.user_attrs["duplicate_of"]]
        assert trial.state == TrialState.PRUNED
        assert trial.params == original.params and original.number < 2
        assert trial.constraints == original.constraints
        assert "measurement" not in trial.user_attrs and "stage_seconds" not in trial.user_attrs
        assert trial.user_attrs["pruned"]["reason"].startswith(f"same recipe as trial "
                                                               f"{original.number}")
    assert {t.number for t in study.best_trials} <= {0, 1}


def _toy_trial(trial: optuna.Trial) -> tuple[float, float]:
    """Two knobs every trial has, one conditional knob; a repeated recipe is pruned, as in
    ``edgetune run``."""
    size = trial.suggest_categorical("size", ["large", "medium", "small"])
    quantize = trial.suggest_categorical("quantize", [False, True])
    rank = trial.suggest_int("rank", 0, 9) if size == "small" else None
    trial.set_user_attr(RECIPE, json.dumps([size, quantize, rank]))
    original = earlier_trial(trial)
    if original is not None:
        prune_as_duplicate(trial, original)
    accuracy = {"large": 0.9, "medium": 0.8, "small": 0.5}[size] - 0.05 * quantize
    latency = {"large": 10, "medium": 5, "small": 1}[size] / (1 + quantize) + 0.1 * (rank or 0)
    return accuracy, latency


def test_gp_samples_the_trial_after_a_repeat_at_random() -> None:
    gp = GPSampler(seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=gp)
    for params in ({"size": "large", "quantize": False}, {"size": "large", "quantize": False},
                   {"size": "medium", "quantize": True}):
        study.enqueue_trial(params)
    study.optimize(_toy_trial, n_trials=2)
    assert is_repeat(study.trials[1])
    assert gp.infer_relative_search_space(study, study.trials[1]) == {}
    study.optimize(_toy_trial, n_trials=1)  # a new recipe: the GP proposes again
    assert set(gp.infer_relative_search_space(study, study.trials[2])) == {"size", "quantize"}


@pytest.mark.filterwarnings("ignore::UserWarning")  # the conditional knob is sampled at random
def test_gp_goes_on_finding_new_recipes_where_optunas_gp_repeats_one() -> None:
    """A repeat is pruned, so Optuna's GP, fitted on complete trials only, proposes the same
    point again; edgetune's GP samples the next trial at random and so measures more recipes in
    the same budget."""
    measured = {}
    for kind in (optuna.samplers.GPSampler, GPSampler):
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=kind(seed=0, n_startup_trials=4))
        study.optimize(_toy_trial, n_trials=20)
        measured[kind] = sum(not is_repeat(t) for t in study.trials)
    assert measured[GPSampler] > measured[optuna.samplers.GPSampler]


@pytest.mark.parametrize(("kind", "inherited"), [(optuna.samplers.NSGAIISampler, False),
                                                 (NSGAIISampler, True)])
def test_nsga2_breeds_from_the_enqueued_trials_and_passes_on_how_they_prune(
        kind: type, inherited: bool) -> None:
    """An enqueued first generation, the FP32 reference (no pruning knobs) and nine recipes that
    drop 3 of 6 layers: edgetune's NSGA-II breeds the next generation from them, and its children
    inherit the number of layers dropped. Optuna's leaves enqueued trials out of its generations
    and crosses over only the knobs every trial has, so its children draw it at random."""
    space = SearchSpace()
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=kind(population_size=10, seed=0))
    study.enqueue_trial(REFERENCE)
    for _ in range(9):
        study.enqueue_trial(half_the_layers(space, layers=6))
    dropping_three = 0
    for number in range(30):
        trial = study.ask()
        pruning = space.sample(trial).pruning
        dropping_three += number >= 10 and getattr(pruning, "layers_dropped", 0) == 3
        study.tell(trial, [0.9, 1.0])
    # of 20 children: edgetune's keep 3 layers dropped unless pruning.method or it mutates
    assert (dropping_three >= 14) if inherited else (dropping_three <= 5)


def test_nsga2_mutates_more_while_its_children_repeat_measured_recipes() -> None:
    """A population that has converged breeds copies of measured recipes, which are pruned
    unbuilt; each repeat in a row makes the next child mutate one parameter more, on average,
    so a study gets out of the rut instead of stopping on repeats."""
    from edgetune.search.samplers import UnionCrossover

    distributions = {name: optuna.distributions.IntDistribution(0, 9) for name in "abcd"}
    parents = [optuna.trial.create_trial(params=dict.fromkeys("abcd", 3), values=[0.9, 1.0],
                                         distributions=distributions) for _ in range(2)]
    study = optuna.create_study(directions=["maximize", "minimize"])
    inherited = []
    for repeats in (0, 2, 4):
        for _ in range(repeats - len(study.trials)):
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.PRUNED, params=dict.fromkeys("abcd", 3),
                distributions=distributions, user_attrs={"duplicate_of": 0}))
        crossover = UnionCrossover(seed=0)
        inherited.append(sum(len(crossover(study, distributions, parents)) for _ in range(200)))
    no_repeat, two_repeats, four_repeats = inherited
    assert no_repeat > 0.65 * 800  # 1 in 4 parameters mutates
    assert two_repeats < 0.35 * 800  # 3 in 4
    assert four_repeats == 0  # all of them: the child is drawn at random
