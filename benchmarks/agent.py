"""Measuring on a device agent vs in the builder's process (issue 22), on the default task.

Three things, written to ``--work``/results.jsonl as they finish:

1. the agent's install: a fresh virtual environment with ``requirements-agent.txt`` and
   edgetune without its dependencies (no torch), its size on disk and install time;
2. a 20-trial default study measured in-process vs on a local agent, wall time side by side.
   Both builders are pinned to core 0 and measure with 1 thread, so they build with the same
   resources; the agent, in the torch-free environment, is pinned to core 1. The difference is
   the overlap: the builder builds candidate k+1 while the agent measures k;
3. a second device on the agent study's trials: an agent with 2 threads and no pinning records
   its own figures; the two devices' fronts side by side, and where they rank recipes
   differently.

    python benchmarks/agent.py --work /tmp/agent-bench [--trials 20] [--skip-in-process]

``--skip-in-process`` runs the agent's parts only, beside an in-process study measured before.

Each study gets its own cache folder, so neither reuses the other's recovered models; each
fine-tunes its base, which is left out of the trials' wall time (first trial start to last
trial end).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from scipy.stats import spearmanr
from side_by_side import write

from edgetune.search.front import front
from edgetune.search.record import records
from edgetune.search.study import make_storage

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "bbc-news.yaml"
DEVICE, SECOND = "agent-1-thread", "agent-2-threads"


def install_agent(work: Path) -> Path:
    venv = work / "agent-venv"
    shutil.rmtree(venv, ignore_errors=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "-r", str(REPO / "requirements-agent.txt")], check=True)
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True)
    seconds = time.monotonic() - start
    size = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True, check=True)
    torch_free = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.util as u; "
         "print(all(u.find_spec(m) is None for m in ('torch', 'transformers', 'nncf')))"],
        capture_output=True, text=True, check=True).stdout.strip()
    write(work, {"part": "install", "seconds": round(seconds, 1),
                 "size_mb": int(size.stdout.split()[0]), "torch_free": torch_free == "True",
                 "command": "pip install -r requirements-agent.txt && pip install --no-deps ."})
    return venv


def config(work: Path, name: str, device: str | None) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["study"] = name
    data["cache_dir"] = str(work / f"cache-{name}")
    data["target"]["threads"] = 1
    if device is not None:
        data["target"]["device"] = device
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def edgetune(venv: Path | None, *args: str) -> list[str]:
    program = (venv / "bin" / "edgetune") if venv else Path(sys.executable).with_name("edgetune")
    return [str(program), *args]


def trials_seconds(study: optuna.Study) -> float:
    trials = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    return (max(t.datetime_complete for t in trials)
            - min(t.datetime_start for t in trials)).total_seconds()


def run_study(work: Path, name: str, trials: int, agent_venv: Path | None) -> optuna.Study:
    run_dir = work / name
    cfg = config(work, name, DEVICE if agent_venv else None)
    storage = f"sqlite:///{run_dir / 'study.db'}"
    logs = work / f"{name}.log"
    start = time.monotonic()
    with logs.open("w") as log:
        builder = subprocess.Popen(["taskset", "-c", "0", *edgetune(None, "run", str(cfg),
                                    "--trials", str(trials), "--run-dir", str(run_dir),
                                    "--no-report")], stdout=log, stderr=log)
        agent = None
        if agent_venv is not None:
            agent = subprocess.Popen(edgetune(agent_venv, "agent", "--study", name, "--device",
                                              DEVICE, "--cores", "1", "--threads", "1"),
                                     stdout=log, stderr=log,
                                     env={**os.environ, "EDGETUNE_STORAGE": storage})
        builder.wait()
        if agent is not None:
            agent.terminate()
            agent.wait()
    wall = time.monotonic() - start
    study = optuna.load_study(study_name=name, storage=make_storage(storage))
    complete = [r for r in records(study) if r.state == optuna.trial.TrialState.COMPLETE]
    fp32 = next((r for r in complete if r.is_reference), None)
    within = [r for r in complete if fp32 is not None and r.accuracy >= fp32.accuracy - 0.01]
    best = min(within, key=lambda r: r.ratio, default=None)
    write(work, {"part": "study", "study": name, "measured": "agent" if agent_venv else
                 "in-process", "builder_exit": builder.returncode, "wall_seconds": round(wall),
                 "trials_seconds": round(trials_seconds(study)), "complete": len(complete),
                 "fastest_within_1pt": [best.number, best.recipe_short, round(best.ratio, 3),
                                        round(best.accuracy, 4)] if best else None,
                 "command": " ".join(builder.args)})
    return study


def second_device(work: Path, study: optuna.Study, venv: Path) -> None:
    name = study.study_name
    storage = f"sqlite:///{work / name / 'study.db'}"
    start = time.monotonic()
    subprocess.run(edgetune(venv, "agent", "--study", name, "--device", SECOND, "--threads", "2",
                            "--idle-exit", "20"),
                   env={**os.environ, "EDGETUNE_STORAGE": storage}, check=True)
    seconds = time.monotonic() - start
    study = optuna.load_study(study_name=name, storage=make_storage(storage))
    one = {r.number: r.ratio for r in records(study, device=DEVICE) if r.measured}
    two = {r.number: r.ratio for r in records(study, device=SECOND) if r.measured}
    shared = sorted(one.keys() & two.keys())
    rho = spearmanr([one[n] for n in shared], [two[n] for n in shared]).statistic
    fronts = {device: [(row.trial, row.recipe, round(row.accuracy, 4), round(row.ratio, 3))
                       for row in front(study, device)] for device in (DEVICE, SECOND)}
    write(work, {"part": "two devices", "seconds": round(seconds), "trials": len(shared),
                 "spearman_of_ratios": round(float(rho), 3),
                 "ratios": {str(n): [round(one[n], 3), round(two[n], 3)] for n in shared},
                 "fronts": fronts})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    venv = install_agent(args.work)
    if not args.skip_in_process:
        run_study(args.work, "in-process", args.trials, None)
    agent_study = run_study(args.work, "on-agent", args.trials, venv)
    second_device(args.work, agent_study, venv)


if __name__ == "__main__":
    main()
