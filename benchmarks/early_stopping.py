"""Would the trials early stopping stopped have met the accuracy floor?

Early stopping (``edgetune.search.early_stopping``) is meant to stop a trial only once it can no
longer reach the floor. This reads the studies ``benchmarks/search.py`` ran, takes every trial
that early stopping stopped, builds its recipe to the end without stopping (edgetune's own build
steps, in a scratch cache that shares only the fine-tuned base), scores it on the validation
split with ONNX Runtime, as the trial would have been, and prints a Markdown section for
``benchmarks/RESULTS.md``: each stopped trial's last check and forecast beside the accuracy it
would have ended with, and the training seconds stopping saved against the seconds all the
studies' checks cost.

    flock /tmp/edgetune-heavy.lock python benchmarks/early_stopping.py --work runs/bench-search
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.build import Candidate
from edgetune.objectives.cache import Cache, default_cache_dir
from edgetune.objectives.candidate import build
from edgetune.objectives.task import load_task
from edgetune.search.config import load_config
from edgetune.search.early_stopping import stopping_record
from edgetune.search.models import workbench
from edgetune.spaces.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "bbc-news.yaml")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-search",
                        help="the --work folder of benchmarks/search.py")
    args = parser.parse_args()
    studies = [optuna.load_study(study_name=f"bench-{db.parents[1].name}",
                                 storage=f"sqlite:///{db}")
               for db in sorted(args.work.glob("*-s*/run/study.db"))]
    config = load_config(args.config)
    task = load_task(config.task, args.config.parent)
    # NNCF and ONNX Runtime print progress on stdout, which carries the Markdown
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(sys.stderr):
        (Path(scratch) / "base").symlink_to(default_cache_dir() / "base",
                                            target_is_directory=True)
        # recoveries train afresh; the fine-tuned base is reused
        bench = dataclasses.replace(workbench(config, task), cache=Cache(Path(scratch)))
        rows, saved = [], 0.0
        for study in studies:
            name = study.study_name.removeprefix("bench-")
            for trial in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
                record = stopping_record(trial)
                if not record.get("reason"):
                    continue  # a repeat, pruned unbuilt
                candidate = Candidate(path=Path(scratch) / f"{name}-{trial.number}" / "model.onnx")
                began = time.perf_counter()
                build(Recipe.model_validate(trial.user_attrs["recipe"]), bench, candidate)
                full = time.perf_counter() - began
                final = accuracy(candidate.path, task.encoded("validation"),
                                 task.labels("validation"), bench.target)
                spent = sum(trial.user_attrs.get("stage_seconds", {}).values())
                saved += full - spent
                rows.append((name, trial, record, final, spent, full))
    checks = sum(stopping_record(t).get("seconds", 0.0)
                 for study in studies for t in study.get_trials(deepcopy=False))
    print(report(rows, saved, checks, len(studies)))


Row = tuple[str, FrozenTrial, dict, float, float, float]  # study, trial, record, final, s, s


def report(rows: list[Row], saved: float, checks: float, studies: int) -> str:
    floor = rows[0][2]["floor"] if rows else float("nan")
    lines = [f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"{studies} studies, {len(rows)} trials stopped early, floor {floor:.2%}", "",
             "| study | trial | recipe | last check: accuracy, forecast | validation built to "
             "the end | met the floor | seconds until stopped | seconds to build to the end |",
             "|---|---:|---|---|---:|---|---:|---:|"]
    for name, trial, record, final, spent, full in rows:
        last = record["checks"][-1]
        lines.append(f"| {name} | {trial.number} | {trial.user_attrs['recipe_short']} "
                     f"| {last['phase']} {last['step']}: {last['accuracy']:.2%}, "
                     f"{last['forecast']:.2%} | {final:.2%} | "
                     f"{'**yes**' if final >= floor else 'no'} | {spent:.0f} | {full:.0f} |")
    wrong = sum(row[3] >= floor for row in rows)
    lines += ["", f"Stopped trials that would have met the floor: {wrong} of {len(rows)}. "
              f"Stopping saved about {saved:.0f} s of building (each stopped trial built to the "
              f"end here, less what it had spent); the checks of all {studies} studies cost "
              f"{checks:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
