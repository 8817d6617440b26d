"""Reliability benchmark: faults injected into real ``edgetune run`` processes, bad inputs tried.

Prints a markdown section for ``benchmarks/RESULTS.md``:

1. signals (kill -9, Ctrl-C, SIGTERM) sent while a trial is in a given stage, then the same
   command again: trials lost, duplicates, how the interrupted trial was recorded;
2. exceptions injected into stages (the faults of ``tests/test_failures.py``);
3. three workers on one study on a throwaway PostgreSQL server, with the study lock and with
   it disabled (to show what it prevents);
4. every bad input of ``tests/test_bad_input.py`` and the line it got.

Runs on the tiny BERT of the tests (seconds per trial), so it measures behaviour, not speed.

    python benchmarks/reliability.py [--repeats N] [--sections signals faults scale-out inputs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import optuna
from click.testing import CliRunner
from optuna.trial import TrialState

from edgetune.search.baselines import DYNAMIC_INT8
from edgetune.search.cli import cli

from conftest import build_tiny_model, make_texts, write_csv
from helpers import (
    edgetune_command,
    start,
    tiny_config,
    trials_of,
    wait_for,
    write_config,
)
from postgres import ThrowawayServer

RECOVERING = {**DYNAMIC_INT8, "pruning.method": "unstructured", "pruning.ratio": 0.5,
              "recovery.steps": 300, "recovery.learning_rate": 1e-3,
              "recovery.distillation": False, "graph.fusion": False}
SIGNAL_CASES = [(signal.SIGKILL, "prune_recover"), (signal.SIGKILL, "export"),
                (signal.SIGKILL, "measure"), (signal.SIGINT, "prune_recover"),
                (signal.SIGINT, "measure"), (signal.SIGTERM, "measure")]
SECTIONS = {
    "signals": ("Signals during a trial, then the same command again (budget 3, retries 1)",
                ["signal", "stage hit", "exit code", "interrupted trial", "retried",
                 "finished before", "lost", "complete/budget", "duplicates"]),
    "faults": ("Exceptions injected into stages", ["fault", "trial", "stage stored",
                                                    "error stored"]),
    "scale-out": ("Three workers, one study on PostgreSQL (budget 8)",
                  ["study lock", "run", "workers exit 0", "budget", "complete", "overshoot",
                   "reference trials", "baseline trials", "artifacts loaded",
                   "trials per worker"]),
    "inputs": ("Bad inputs through `edgetune run`",
               ["input", "exit code", "time", "files written", "the one line printed"]),
}
NO_LOCK = ("import edgetune.search.lock as lock\n"
           "lock.StudyLock.acquire = lock.StudyLock.release = lambda self: None\n")


def signal_case(work: Path, model: Path, data: Path, sig: signal.Signals, stage: str) -> list:
    """Send ``sig`` while trial 1 is in ``stage``, run again, and count what survived."""
    folder = Path(tempfile.mkdtemp(dir=work))
    budget = 3
    config = write_config(folder, tiny_config(
        model, data, study="crash",
        space={"pruning": {"methods": ["none", "unstructured"]},
               "recovery": {"steps": {"low": 10, "high": 300, "step": 10},
                            "learning_rate": {"low": 1e-3, "high": 3e-3, "log": True},
                            "distillation": [False]},
               "quantization": {"schemes": ["none", "dynamic"]}, "graph": {"fusion": [False]}},
        measure={"warmup": 2, "rounds": 2, "runs": 3000, "inputs": 2},
        search={"trials": budget, "retries": 1, "enqueue": [RECOVERING]}))
    storage = f"sqlite:///{folder / 'run' / 'study.db'}"
    command = edgetune_command("run", config, "--run-dir", folder / "run", "--json")
    env = {**os.environ, "EDGETUNE_CACHE_DIR": str(folder / "cache")}  # every stage really runs
    first = start(command, folder, "first", env=env)

    def in_stage() -> bool:
        return any(t.number == 2 and t.state == TrialState.RUNNING
                   and t.user_attrs.get("stage") == stage for t in trials_of(storage, "crash"))

    wait_for(in_stage, f"trial 2 in {stage}", timeout=600, process=first)
    first.send_signal(sig)
    code = first.wait(timeout=120)
    finished = {t.number: t.values for t in trials_of(storage, "crash")
                if t.state == TrialState.COMPLETE}
    subprocess.run(command, capture_output=True, timeout=900, check=True, env=env)
    trials = {t.number: t for t in trials_of(storage, "crash")}
    lost = sum(1 for n, values in finished.items()
               if trials[n].state != TrialState.COMPLETE or trials[n].values != values)
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    references = sum(t.user_attrs.get("role") == "reference" for t in trials.values())
    failure = trials[2].user_attrs.get("failure", {})
    retried = any(2 in t.system_attrs.get("retry_history", []) for t in trials.values())
    return [sig.name, stage, code, f"{trials[2].state.name}: {failure.get('type')} in "
            f"{failure.get('stage')}", "yes" if retried else "no", len(finished), lost,
            f"{len(complete)}/{budget}", max(0, len(complete) - budget) + references - 1]


def stage_faults(work: Path, model: Path, data: Path) -> list[list]:
    """The faults of tests/test_failures.py, injected the same way, read back the same way."""
    import test_failures as faults

    study, _ = faults.run_faulty_study(Path(tempfile.mkdtemp(dir=work)), model, data)
    rows = []
    for i, fault in enumerate(faults.FAULTS):
        trial = study.trials[faults.FIRST + i]
        failure = trial.user_attrs.get("failure", {})
        rows.append([fault, trial.state.name, failure.get("stage"),
                     f"{failure.get('type')}: {failure.get('error', '')[:70]}"])
    after = study.trials[-1]
    rows.append(["(next trial)", after.state.name, "", "the study went on"])
    return rows


def scale_out(work: Path, model: Path, data: Path, url: str, locked: bool, run: int) -> list:
    import onnxruntime as ort
    from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

    budget, workers = 8, 3
    folder = Path(tempfile.mkdtemp(dir=work))
    name = f"scale-{'locked' if locked else 'unlocked'}-{run}"
    config = write_config(folder, tiny_config(
        model, data, study=name,
        space={"pruning": {"methods": ["none", "unstructured"]},
               "recovery": {"steps": {"low": 10, "high": 10}},
               "quantization": {"schemes": ["none", "dynamic"]}},
        search={"trials": budget}))
    env = dict(os.environ)
    if not locked:
        (folder / "sitecustomize.py").write_text(NO_LOCK)
        env["PYTHONPATH"] = str(folder)
    command = edgetune_command("run", config, "--storage", url, "--run-dir", folder / "shared")
    processes = [start(command, folder, f"worker-{i}", env=env) for i in range(workers)]
    codes = [p.wait(timeout=1800) for p in processes]
    for i, code in enumerate(codes):
        if code != 0:  # say why on stderr; the table counts it
            print(f"{name} worker {i} exited {code}:", (folder / f"worker-{i}.err").read_text()
                  [-2000:], file=sys.stderr)
    trials = trials_of(url, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    roles = Counter(t.user_attrs.get("role") for t in trials)
    store = FileSystemArtifactStore(str(folder / "shared" / "artifacts"))
    storage = optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg://"))
    loadable = 0
    for trial in complete:
        for meta in get_all_artifact_meta(trial, storage=storage):
            path = folder / f"{trial.number}.onnx"
            download_artifact(artifact_store=store, artifact_id=meta.artifact_id,
                              file_path=str(path))
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            loadable += 1
    shares = sorted(Counter(t.user_attrs.get("worker", {}).get("pid") for t in trials).values())
    return ["on" if locked else "off (patched out)", run, codes.count(0), budget, len(complete),
            len(trials) - budget, roles["reference"], roles["baseline"], loadable,
            "+".join(map(str, shares))]


def bad_inputs(work: Path, model: Path, data: Path) -> list[list]:
    import test_bad_input as cases

    rows = []
    for case, (setup, _, _) in cases.CASES.items():
        setup = {"not a checkpoint": cases.model_copy(model,
                                                      lambda m: (m / "config.json").unlink()),
                 "architecture structured pruning cannot handle": cases.gpt2_checkpoint(model),
                 "pickled code instead of weights": cases.model_copy(model, cases.pickled_code),
                 }.get(case, setup)
        folder = Path(tempfile.mkdtemp(dir=work))
        (folder / "inputs").mkdir()
        (folder / "cwd").mkdir()
        config = tiny_config(model, data)
        setup(folder / "inputs", config)
        rows.append([case, *_refusal(["run", str(write_config(folder / "inputs", config))],
                                     folder / "cwd")])
    folder = Path(tempfile.mkdtemp(dir=work))
    (folder / "bad.yaml").write_text("study: x\ntask: [unclosed\n")
    (folder / "cwd").mkdir()
    rows.append(["malformed YAML", *_refusal(["run", str(folder / "bad.yaml")], folder / "cwd")])
    config = write_config(folder, tiny_config(model, data))
    started = time.monotonic()
    result = subprocess.run(edgetune_command("run", config, "--storage",
                                             "postgresql://nobody@127.0.0.1:1/x"),
                            capture_output=True, text=True, cwd=folder / "cwd", check=False)
    rows.append(["unreachable database (own process)", result.returncode,
                 f"{time.monotonic() - started:.1f} s", len(list((folder / "cwd").iterdir())),
                 result.stderr.strip()])
    return rows


def _refusal(args: list[str], cwd: Path) -> list:
    previous = os.getcwd()
    os.chdir(cwd)
    os.environ["EDGETUNE_CACHE_DIR"] = str(cwd / "cache")
    try:
        started = time.monotonic()
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        took = time.monotonic() - started
    finally:
        os.chdir(previous)
    return [result.exit_code, f"{took:.1f} s", len(list(cwd.iterdir())), result.stderr.strip()]


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row)
              + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="scale-out runs per setting")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    options = parser.parse_args()
    repeats = options.repeats
    work = Path(tempfile.mkdtemp(prefix="edgetune-reliability-"))
    os.environ["EDGETUNE_CACHE_DIR"] = str(work / "cache")
    model = build_tiny_model(work / "model")
    data = write_csv(work / "texts.csv", make_texts(100))
    server = ThrowawayServer.start()
    try:
        runs = {
            "signals": lambda: [signal_case(work, model, data, sig, stage)
                                for sig, stage in SIGNAL_CASES],
            "faults": lambda: stage_faults(work, model, data),
            "scale-out": lambda: [scale_out(work, model, data, server.url, locked, run)
                                  for locked in (True, False) for run in range(1, repeats + 1)],
            "inputs": lambda: bad_inputs(work, model, data),
        }
        for name in options.sections:
            title, header = SECTIONS[name]
            print(f"\n**{title}**\n\n{table(header, runs[name]())}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
