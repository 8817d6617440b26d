"""What the knob benchmarks share: score the candidates they built on validation and test, time
them all interleaved with the FP32 reference in one run, and state the conditions of that run.

Imported by the benchmark scripts of this folder (run as ``python benchmarks/<name>.py``).
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.latency import Latency, MeasureConfig, latency_inputs, measure, ratio
from edgetune.objectives.machine import machine_key, machine_record
from edgetune.objectives.measurement import zipped_size
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.task import Task

REFERENCE = "fp32 reference"  # the name every benchmark gives its FP32 ONNX row


def write(work: Path, row: dict[str, Any]) -> None:
    """Append ``row``, dated, to ``work``/results.jsonl and print it: a benchmark's figures
    kept as they come, so a run stopped midway keeps what it measured."""
    row = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **row}
    with (work / "results.jsonl").open("a") as out:
        out.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


@dataclass
class SideBySide:
    """Accuracy per split and latency of every model, measured in one interleaved run."""

    scores: dict[str, dict[str, float]]
    latency: dict[str, Latency]

    @property
    def reference_ms(self) -> float:
        return self.latency[REFERENCE].median_ms

    def cells(self, name: str, model: Path) -> str:
        """Columns val acc | test acc | Δ test (pt) | latency ratio | spread | MB | zipped MB.

        The ratio is the trials' own: paired by round with the reference, median over rounds;
        its spread is (max - min) / median of the per-round ratios."""
        score = self.scores[name]
        relative = ratio(self.latency[name], self.latency[REFERENCE])
        return (f"{score['validation']:.4f} | {score['test']:.4f} "
                f"| {100 * (score['test'] - self.scores[REFERENCE]['test']):+.1f} "
                f"| {relative.value:.3f} | {relative.spread:.2f} "
                f"| {model.stat().st_size / 1e6:.1f} "
                f"| {zipped_size(model) / 1e6:.1f}")


def score_and_time(models: dict[str, Path], task: Task, target: TargetConfig,
                   settings: MeasureConfig) -> SideBySide:
    """Score ``models`` (one named ``REFERENCE``) and time them interleaved with each other."""
    scores = {
        name: {split: accuracy(path, task.encoded(split), task.labels(split), target)
               for split in ("validation", "test")}
        for name, path in models.items()
    }
    print("measuring latency, all models interleaved", file=sys.stderr, flush=True)
    inputs = latency_inputs(task.encoded("validation"), target, settings.inputs)
    return SideBySide(scores, measure(models, inputs, target, settings))


def conditions(target: TargetConfig, settings: MeasureConfig, results: SideBySide,
               extra: str = "") -> str:
    """The date, machine and measurement lines that head a benchmark's Markdown section."""
    return (
        f"Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}  \n"
        f"Machine: {machine_key(machine_record(target))}  \n"
        f"Target: batch {target.batch_size}, sequence {target.sequence_length}; "
        f"latency: {settings.rounds} rounds x {settings.runs} runs, all models interleaved; "
        f"FP32 reference {results.reference_ms:.2f} ms{extra}  "
    )
