"""Export trials of a finished study and set the fresh re-measurement beside the trial's figures.

    flock /tmp/edgetune-heavy.lock python benchmarks/export.py --run-dir DIR --study NAME TRIAL...

Each trial goes through ``edgetune export --json`` into a temporary folder. Printed as a Markdown
table for ``benchmarks/RESULTS.md``: validation accuracy (trial, re-measured), test accuracy, the
latency ratio to the FP32 reference (trial; the range of the per-round ratios of the trial's
confirmation, or else of its search measurement; re-measured), whether the re-measured ratio
lies in that range, the milliseconds behind it with the machine's load average (a shared
machine), and the .onnx / .ort sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("trials", nargs="+", type=int)
    args = parser.parse_args()
    print("| trial | recipe | model | val. acc. trial | val. acc. here | test acc. here "
          "| ratio trial | round ratios (of) | ratio here | within | ms here (FP32 ms) "
          "| load | onnx MB | ort MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for trial in args.trials:
            out = Path(folder) / f"trial-{trial}"
            result = subprocess.run(
                [sys.executable, "-m", "edgetune", "export", "--run-dir", args.run_dir,
                 "--study", args.study, "--trial", str(trial), "--out", str(out), "--json"],
                capture_output=True, text=True, check=False,
            )
            if result.returncode != 0:
                sys.exit(result.stderr)
            print(_row(json.loads(result.stdout)))


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


if __name__ == "__main__":
    main()
