"""Export trials of a finished study and set the fresh re-measurement beside the trial's figures.

    flock /tmp/edgetune-heavy.lock python benchmarks/export.py --run-dir DIR --study NAME TRIAL...

Each trial goes through ``edgetune export --json`` into a temporary folder. Printed as a Markdown
table for ``benchmarks/RESULTS.md``: validation accuracy (trial, re-measured), test accuracy, the
latency ratio to the FP32 reference (trial; the range of the per-round ratios of the trial's
confirmation, or else of its search measurement; re-measured), whether the re-measured ratio
lies in that range, the milliseconds behind it with the machine's load average (a shared
machine), and the .onnx / .ort sizes.

    python benchmarks/export.py --under-load FOLDER [--repeats 2] [--seconds 900]

Issue 24, item 6: does an export re-measured under load match its confirmed ratio within 10%, or
say it could not? Builds (once, in FOLDER) a small study of the default task: all-MiniLM-L6-v2 on
BBC News fine-tuned for 40 steps, 4 trials (the FP32 reference and the three baselines: dynamic
INT8, fusion + dynamic INT8, half the layers recovered for 25 steps), timed on 32 tokens so that
candidates take about a millisecond on a quiet machine, as in the issue, and confirmed at the end
of its run with a margin wide enough to confirm all three. Then exports each confirmed trial quiet
(nothing of ours beside it) and under load (one Python process spinning per core, started before
and stopped after each export, and ending by itself after ``--seconds`` whatever happens to this
script), ``--repeats`` times, printing a row per export as it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY = "export-load"
SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir")
    parser.add_argument("--study")
    parser.add_argument("trials", nargs="*", type=int)
    parser.add_argument("--under-load", type=Path, metavar="FOLDER",
                        help="build a small study in FOLDER and export it quiet and under load")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=900,
                        help="the most a load process runs, whatever happens to this script")
    args = parser.parse_args()
    if args.under_load:
        under_load(args.under_load, args.repeats, args.seconds)
        return
    if not (args.run_dir and args.study and args.trials):
        parser.error("give --run-dir, --study and trials, or --under-load FOLDER")
    print("| trial | recipe | model | val. acc. trial | val. acc. here | test acc. here "
          "| ratio trial | round ratios (of) | ratio here | within | ms here (FP32 ms) "
          "| load | onnx MB | ort MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for trial in args.trials:
        print(_row(export(Path(args.run_dir), args.study, trial)))


def export(run_dir: Path, study: str, trial: int) -> dict:
    """``edgetune export --json`` of ``trial`` into a temporary folder: its metrics."""
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [sys.executable, "-m", "edgetune", "export", "--run-dir", str(run_dir),
             "--study", study, "--trial", str(trial), "--out", str(Path(folder) / "out"),
             "--json"],
            capture_output=True, text=True, check=False,
        )
    if result.returncode != 0:
        sys.exit(result.stderr)
    return json.loads(result.stdout)


def _row(metrics: dict) -> str:
    trial, here, checks = metrics["trial_figures"], metrics["remeasured"], metrics["checks"]
    low, high = checks["trial_ratio_range"]
    return (
        f"| {metrics['trial']} | {metrics['recipe']} | {metrics['model_source']} "
        f"| {trial['accuracy']:.4f} | {here['validation_accuracy']:.4f} "
        f"| {here['test_accuracy']:.4f} | {trial['measurement']['ratio']:.3f} "
        f"| {low:.3f}-{high:.3f} ({checks.get('trial_ratio_range_from', 'search')}) "
        f"| {here['ratio']:.3f} "
        f"| {'yes' if checks['ratio_within_trial_range'] else 'no'} "
        f"| {here['latency']['median_ms']:.2f} ({here['reference_latency']['median_ms']:.2f}) "
        f"| {os.getloadavg()[0]:.1f} | {here['size_mb']:.1f} | {here['ort_size_mb']:.1f} |"
    )


def under_load(folder: Path, repeats: int, seconds: int) -> None:
    run_dir = build_study(folder)
    trials = confirmed_trials(run_dir)
    print(f"study {STUDY} in {run_dir}: confirmed trials {trials}", flush=True)
    print("| case | trial | recipe | confirmed ratio (95% interval) | re-measured (95% interval) "
          "| rounds | within 10% | export says | load before-after | ms here (FP32 ms) "
          "| FP32 slowdown |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    counts = {"quiet": [0, 0], "load": [0, 0]}  # [within 10% or marked unreliable, exports]
    for _ in range(repeats):
        for case in ("quiet", "load"):
            for trial in trials:
                with spinning((os.cpu_count() or 1) if case == "load" else 0, seconds):
                    metrics = export(run_dir, STUDY, trial)
                row, honest = _load_row(case, metrics)
                counts[case][0] += honest
                counts[case][1] += 1
                print(row, flush=True)
    for case, (honest, total) in counts.items():
        print(f"\n{case}: {honest} of {total} exports within 10% of the confirmed ratio or "
              "marked unreliable", flush=True)


def build_study(folder: Path) -> Path:
    """The small study of the default task in ``folder/run``, run and confirmed once."""
    run_dir = folder / "run"
    if (run_dir / "study.db").is_file():
        return run_dir
    config = yaml.safe_load((ROOT / "examples" / "bbc-news.yaml").read_text())
    config["study"] = STUDY
    config["finetune"]["steps"] = 40
    config["target"]["sequence_length"] = 32
    config["confirm"] = {"margin": 100.0}  # every trial is a candidate: all are confirmed
    config["space"]["recovery"]["steps"] = {"low": 25, "high": 25, "step": 25}
    config["search"] |= {"trials": 4, "constraints": {}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "edgetune", "run", str(folder / "study.yaml"),
                    "--run-dir", str(run_dir), "--no-report"],
                   env={**os.environ, "EDGETUNE_CACHE_DIR": str(folder / "cache")}, check=True)
    print(f"built in {time.monotonic() - start:.0f} s", flush=True)
    return run_dir


def confirmed_trials(run_dir: Path) -> list[int]:
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{run_dir / 'study.db'}")
    confirmation = study.user_attrs["confirmation"]
    return [n for n in confirmation["trials"] if n != confirmation["reference_trial"]]


@contextmanager
def spinning(processes: int, seconds: int) -> Iterator[None]:
    """``processes`` Python processes spinning for the block (each ends after ``seconds``)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)])
                for _ in range(processes)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.wait()


def _load_row(case: str, metrics: dict) -> tuple[str, bool]:
    """A row of the under-load table, and whether the export matched its confirmed ratio within
    10% or said it could not."""
    confirmed, here = metrics["trial_figures"]["confirmed"], metrics["remeasured"]
    verdict = here["reliability"]
    within = abs(here["ratio"] / confirmed["ratio"] - 1) <= 0.10
    says = "reliable" if verdict["reliable"] else f"unreliable: {verdict['reason']}"
    row = (
        f"| {case} | {metrics['trial']} | {metrics['recipe']} "
        f"| {confirmed['ratio']:.3f} ({_interval(confirmed)}) "
        f"| {here['ratio']:.3f} ({_interval(here)}) | {verdict['rounds']} "
        f"| {'yes' if within else 'no'} | {says} "
        f"| {verdict['load_before']:.1f}-{verdict['load_after']:.1f} on {verdict['cores']} "
        f"| {here['latency']['median_ms']:.2f} ({here['reference_latency']['median_ms']:.2f}) "
        f"| {verdict['reference_slowdown']:.2f} |"
    )
    return row, within or not verdict["reliable"]


def _interval(figures: dict) -> str:
    return "{:.3f}-{:.3f}".format(*figures["ratio_interval"])


if __name__ == "__main__":
    main()
