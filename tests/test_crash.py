"""A crash costs the trial it hit, never the study: ``kill -9`` and Ctrl-C, then the same command.

One story, run with real processes and real signals on the tiny model: ``edgetune run`` is
killed with SIGKILL while it measures trial 1, run again and interrupted with Ctrl-C (SIGINT)
while it measures the retry, then run a third time to the end of its budget.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from edgetune.search.cli import cli

from helpers import edgetune_command, output, start, tiny_config, trials_of, wait_for, write_config

BUDGET = 3


def measuring(storage: str, number: int):  # type: ignore[no-untyped-def]
    """A condition: trial ``number`` is running and in its measure stage."""
    def condition() -> bool:
        return any(t.number == number and t.state == TrialState.RUNNING
                   and t.user_attrs.get("stage") == "measure" for t in trials_of(storage, "tiny"))
    return condition


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_csv: Path) -> dict:
    folder = tmp_path_factory.mktemp("crash")
    config = write_config(folder, tiny_config(
        tiny_model, tiny_csv,
        space={"pruning": {"methods": ["none"]}, "quantization": {"schemes": ["none", "dynamic"]},
               "graph": {"fusion": [False]}},
        # long enough measurements that the signals land inside one, every time
        measure={"warmup": 2, "rounds": 2, "max_rounds": 2, "runs": 3000, "inputs": 2},
        search={"trials": BUDGET, "retries": 2},
    ))
    storage = f"sqlite:///{folder / 'run' / 'study.db'}"
    command = edgetune_command("run", config, "--run-dir", folder / "run", "--json")
    logs = folder / "logs"

    killed = start(command, logs, "killed")
    wait_for(measuring(storage, 1), "trial 1 to measure", process=killed)
    killed.kill()
    killed.wait()
    after_kill = {t.number: t for t in trials_of(storage, "tiny")}

    interrupted = start(command, logs, "interrupted")
    wait_for(measuring(storage, 2), "trial 2 (the retry of 1) to measure", process=interrupted)
    interrupted.send_signal(signal.SIGINT)
    interrupted.wait(timeout=60)

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    study = optuna.load_study(study_name="tiny", storage=storage)
    return {"folder": folder, "storage": storage, "after_kill": after_kill, "study": study,
            "interrupted": interrupted, "interrupted_output": output(logs, "interrupted"),
            "resumed": resumed}


def test_kill_9_fails_the_running_trial_with_its_stage_and_retries_it(story: dict) -> None:
    assert story["after_kill"][1].state == TrialState.RUNNING  # what kill -9 leaves behind
    trials = story["study"].trials
    failure = trials[1].user_attrs["failure"]
    assert trials[1].state == TrialState.FAIL
    assert failure["type"] == "WorkerLost" and failure["stage"] == "measure"
    assert "killed" in failure["error"]
    retry = trials[2]
    assert retry.system_attrs["retry_history"] == [1]
    assert retry.params == trials[1].params
    assert retry.user_attrs.get("baseline") == trials[1].user_attrs["baseline"]


def test_ctrl_c_fails_the_trial_as_interrupted_prints_the_front_and_exits_130(story: dict) -> None:
    assert story["interrupted"].returncode == 130
    stdout, stderr = story["interrupted_output"]
    assert [row["trial"] for row in json.loads(stdout)["front"]] == [0]
    assert "stopped by SIGINT" in stderr and "Traceback" not in stderr
    trial = story["study"].trials[2]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["failure"] == {"stage": "measure", "error": "interrupted by SIGINT "
                                           "(Ctrl-C)", "type": "Interrupted", "traceback": ""}
    assert story["study"].trials[3].system_attrs["retry_history"] == [1, 2]


def test_the_same_command_resumes_to_the_budget_and_loses_no_finished_trial(story: dict) -> None:
    assert story["resumed"].returncode == 0, story["resumed"].stderr[-3000:]
    trials = story["study"].trials
    states = [t.state for t in trials]
    # the budget counts finished trials but retried failures and repeated recipes
    repeats = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) - len(repeats) \
        == BUDGET
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    before = story["after_kill"][0]
    assert trials[0].state == TrialState.COMPLETE and trials[0].values == before.values
    assert trials[0].user_attrs["measurement"] == before.user_attrs["measurement"]
    assert trials[3].state == TrialState.COMPLETE  # the twice-lost baseline ran in the end


def test_status_shows_each_failure_with_its_stage_and_retry(story: dict) -> None:
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(story["folder"] / "run"),
                                      "--study", "tiny", "--json"], catch_exceptions=False)
    failures = {row["trial"]: row for row in json.loads(result.stdout)["failures"]}
    assert failures[1]["stage"] == "measure" and failures[1]["type"] == "WorkerLost"
    assert failures[1]["retried_as"] == 2
    assert failures[2]["type"] == "Interrupted" and failures[2]["retried_as"] == 3
