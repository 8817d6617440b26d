"""The milliseconds of a study started while the machine was busy (issue 24, item 3).

A study of the default task whose first ``--loaded`` trials are measured beside a CPU-heavy
process (``measurement.HEAVY_LOAD``: NumPy matrix products on every core), the rest on a quiet
machine, without confirmation, so that the milliseconds shown come from the trials alone. Its
space holds cheap recipes (no pruning), since only the reference's measurements matter here. The
fine-tuned base is built first, by a one-trial study of its own, so that the load falls on
measurements. Then ``edgetune bench`` times the exported FP32 reference on the quiet machine.

Printed: the FP32 reference's latency as the study stored it at its start (its first
measurement: what every millisecond was scaled by before), as ``status`` shows it now (the
anchor, ``search/record.py``), and the quiet re-measurement, each relative to the last.

    python benchmarks/anchor.py --work /tmp/anchor [--loaded 3] [--trials 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from measurement import HEAVY_LOAD

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"pruning": {"methods": ["none"]},
         "quantization": {"schemes": ["none", "dynamic", "static"]},
         "graph": {"fusion": [True, False]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--loaded", type=int, default=3, help="trials measured under load")
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    warm = write_config(args.work, "anchor-warm", 1)
    edgetune("run", str(warm), "--run-dir", str(args.work / "warm"), "--no-report")
    config = write_config(args.work, "anchor", args.trials)
    run_dir = args.work / "run"
    load = subprocess.Popen([sys.executable, "-c", HEAVY_LOAD],
                            env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())})
    try:
        time.sleep(2)
        busy = os.getloadavg()[0]
        edgetune("run", str(config), "--run-dir", str(run_dir), "--trials", str(args.loaded),
                 "--no-report")
    finally:
        load.kill()
    time.sleep(5)
    quiet = os.getloadavg()[0]
    edgetune("run", str(config), "--run-dir", str(run_dir), "--no-report")
    status = json.loads(edgetune("status", "--run-dir", str(run_dir), "--json"))
    study = optuna.load_study(study_name="anchor", storage=f"sqlite:///{run_dir}/study.db")
    at_start = float(study.user_attrs["reference_latency_ms"])
    (anchor,) = status["reference_latency"].values()
    edgetune("export", "--run-dir", str(run_dir), "--trial", "0", "--out",
             str(args.work / "fp32"), "--force")
    bench = json.loads(edgetune("bench", str(args.work / "fp32" / "model.onnx"), "--threads",
                                "2", "--json"))
    remeasured = bench["models"]["model"]["median_ms"]
    print(f"load average {busy:.1f} during the first {args.loaded} trials, {quiet:.1f} after; "
          f"{args.trials} trials, {anchor['measurements']} reference measurements\n")
    print("| FP32 reference latency | ms | × quiet re-measurement |")
    print("|---|---:|---:|")
    for name, ms in (("stored at study start (first measurement)", at_start),
                     ("shown by status (10% quantile of the trials')", anchor["ms"]),
                     ("quiet re-measurement (`edgetune bench`)", remeasured)):
        print(f"| {name} | {ms:.2f} | {ms / remeasured:.2f} |")


def write_config(folder: Path, study: str, trials: int) -> Path:
    config = yaml.safe_load((ROOT / "examples" / "bbc-news.yaml").read_text())
    config.update(study=study, space=SPACE)
    config["search"] = {**config["search"], "trials": trials}
    config["confirm"] = {"after_run": False}
    path = folder / f"{study}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def edgetune(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "edgetune", *args], capture_output=True,
                            text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"edgetune {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


if __name__ == "__main__":
    main()
