"""Vocabulary trimming on the default task: file sizes, rows kept, accuracy and latency.

Builds FP32 and dynamic INT8 (the study's baseline scheme: MatMul and Gather weights INT8)
without and with trimming, at margins 0 and 2000, with edgetune's own build step from the cached
fine-tuned base. Each model is scored on validation and test with its own tokenizer and timed
interleaved with the FP32 reference, as a trial is (``objectives.candidate.measure_model``).
Prints a Markdown section for ``benchmarks/RESULTS.md``.

A few minutes of CPU on the real task: run it under the heavy lock,

    flock /tmp/edgetune-heavy.lock python benchmarks/vocabulary.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from side_by_side import REFERENCE

from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.build import Candidate
from edgetune.objectives.candidate import build, measure_model
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.machine import machine_key, machine_record
from edgetune.objectives.task import load_task
from edgetune.search.config import load_config
from edgetune.search.models import workbench
from edgetune.spaces.quantization import DynamicQuantization
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.vocabulary import VocabularyRecipe

ROOT = Path(__file__).resolve().parents[1]
MEASURE = MeasureConfig(warmup=5, rounds=20, max_rounds=40, runs=5, inputs=8)
MARGINS = (0, 2000)


def variants() -> dict[str, Recipe]:
    recipes = {REFERENCE: Recipe(), "dynamic int8": Recipe(quantization=DynamicQuantization())}
    for margin in MARGINS:
        trim = VocabularyRecipe(trim=True, margin=margin)
        recipes[f"fp32, trimmed +{margin}"] = Recipe(vocabulary=trim)
        recipes[f"dynamic int8, trimmed +{margin}"] = Recipe(quantization=DynamicQuantization(),
                                                             vocabulary=trim)
    return recipes


def main() -> None:
    config = load_config(ROOT / "examples" / "bbc-news.yaml")
    task = load_task(config.task, ROOT / "examples")
    bench = workbench(config, task)
    vocabulary_rows = len(task.tokenizer.get_vocab())  # type: ignore[attr-defined]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetune-vocabulary-") as scratch:
        for name, recipe in variants().items():
            print(f"building {name}", file=sys.stderr, flush=True)
            candidate = build(recipe, bench, Candidate(path=Path(scratch) / name / "model.onnx"))
            reads = candidate.task or task
            measured = measure_model(candidate.path, bench.reference(), task, config.target,
                                     MEASURE, "validation", candidate.task)
            test = accuracy(candidate.path, reads.encoded("test"), task.labels("test"),
                            config.target)
            notes = candidate.notes
            kept = notes.get("vocabulary_rows", vocabulary_rows)
            rows.append(
                f"| {name} | {kept} | {measured.size_mb:.1f} | {measured.zipped_mb:.1f} "
                f"| {measured.accuracy:.4f} | {test:.4f} | {measured.ratio.value:.3f} "
                f"| {100 * float(notes.get('vocabulary_changed_words', 0)):.2f} "
                f"| {100 * float(notes.get('vocabulary_unknown_words', 0)):.3f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"Machine: {machine_key(machine_record(config.target))}  \n"
          f"Target: batch {config.target.batch_size}, sequence "
          f"{config.target.sequence_length}, {config.target.threads} threads; latency: each "
          f"model interleaved with the FP32 reference, {MEASURE.rounds}-{MEASURE.max_rounds} "
          f"rounds x {MEASURE.runs} runs\n")
    print("| model | embedding rows | MB | zipped MB | val acc | test acc | latency ratio "
          "| val words changed % | val words [UNK] % |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
