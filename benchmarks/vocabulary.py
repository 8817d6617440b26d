"""The size levers of issue 25 on the default task: file sizes, rows kept, accuracy and latency.

Builds FP32, dynamic INT8 (the study's baseline scheme: MatMul and Gather weights INT8) and
4-bit weights (``int4``: block sizes, symmetric, FP32 compute, without the embedding Gathers,
after the graph fusions it takes) without and with vocabulary trimming, at margins 0 and 2000,
and beside 3 of 6 layers dropped (evenly, 100 distilled recovery steps at 2e-4: the recovery
cached by earlier studies on this machine), with edgetune's own build step from the cached
fine-tuned base. Each model is scored on validation and test with its own tokenizer and timed
interleaved with the FP32 reference, as a trial is (``objectives.candidate.measure_model``);
each row is printed to stderr as it is measured. Prints a Markdown section for
``benchmarks/RESULTS.md``.

Minutes of CPU on the real task: run it under the heavy lock,

    flock /tmp/edgetune-heavy.lock python benchmarks/vocabulary.py

``--only NAME ...`` builds those models alone, beside the FP32 reference.
"""

from __future__ import annotations

import argparse
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
from edgetune.spaces.graph import GraphRecipe
from edgetune.spaces.pruning import StructuredPruning
from edgetune.spaces.quantization import DynamicQuantization, Int4Quantization
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.recovery import RecoveryRecipe
from edgetune.spaces.vocabulary import VocabularyRecipe

ROOT = Path(__file__).resolve().parents[1]
MEASURE = MeasureConfig(warmup=5, rounds=20, max_rounds=40, runs=5, inputs=8)
MARGINS = (0, 2000)
TRIMMED = VocabularyRecipe(trim=True, margin=0)
# 3 of 6 layers dropped evenly, recovered as studies on this machine did (so cached): within
# 0.5 pt of FP32 test accuracy with dynamic INT8 (RESULTS.md, structured pruning).
KEEP_3 = {"pruning": StructuredPruning(layers_dropped=3, layer_selection="even"),
          "recovery": RecoveryRecipe(steps=100, learning_rate=2e-4, distillation=True,
                                     temperature=2.0, alpha=0.5, batch_size=16,
                                     precision="bf16")}
# 4 of 6 dropped (by importance), as cached from an earlier study: the smallest encoder tried.
KEEP_2 = {"pruning": StructuredPruning(layers_dropped=4, layer_selection="importance"),
          "recovery": RecoveryRecipe(steps=100, learning_rate=1e-4, distillation=True,
                                     temperature=4.0, alpha=0.6000000000000001, batch_size=16,
                                     precision="bf16")}
# 4 of 6 dropped evenly with half the heads and FFN neurons, recovered 200 steps as
# benchmarks/pruning.py does (so cached from its run): FP32's test accuracy there with dynamic
# INT8 (RESULTS.md, "Past the searched front").
KEEP_2_HALVED = {
    "pruning": StructuredPruning(layers_dropped=4, layer_selection="even", heads_kept=0.5,
                                 ffn_kept=0.5, scope="layer"),
    "recovery": RecoveryRecipe(steps=200, learning_rate=3e-4, distillation=True,
                               temperature=2.0, alpha=0.5)}
INT4 = {"int4 b32": Int4Quantization(block_size=32),
        "int4 b128": Int4Quantization(block_size=128)}


def variants() -> dict[str, Recipe]:
    recipes = {REFERENCE: Recipe(), "dynamic int8": Recipe(quantization=DynamicQuantization())}
    for margin in MARGINS:
        trim = VocabularyRecipe(trim=True, margin=margin)
        recipes[f"fp32, trimmed +{margin}"] = Recipe(vocabulary=trim)
        recipes[f"dynamic int8, trimmed +{margin}"] = Recipe(quantization=DynamicQuantization(),
                                                             vocabulary=trim)
    recipes |= {name: Recipe(quantization=int4) for name, int4 in INT4.items()}
    recipes |= {
        "int4 b32 sym": Recipe(quantization=Int4Quantization(block_size=32, symmetric=True)),
        "int4 b32, fp32 compute": Recipe(quantization=Int4Quantization(block_size=32,
                                                                       accuracy_level=0)),
        "int4 b32, without the Gathers": Recipe(quantization=Int4Quantization(
            block_size=32, op_types="matmul")),
        "int4 b32, fused": Recipe(quantization=INT4["int4 b32"], graph=GraphRecipe(fusion=True)),
    }
    recipes |= {f"{name}, trimmed +0": Recipe(quantization=int4, vocabulary=TRIMMED)
                for name, int4 in INT4.items()}
    recipes["keep 3, dynamic int8"] = Recipe(quantization=DynamicQuantization(), **KEEP_3)
    recipes["keep 3, dynamic int8, trimmed +0"] = Recipe(quantization=DynamicQuantization(),
                                                         vocabulary=TRIMMED, **KEEP_3)
    recipes |= {f"keep 3, {name}, trimmed +0": Recipe(quantization=int4, vocabulary=TRIMMED,
                                                      **KEEP_3)
                for name, int4 in INT4.items()}
    recipes["keep 3, int4 b128 sym, trimmed +0, fused"] = Recipe(
        quantization=Int4Quantization(block_size=128, symmetric=True), vocabulary=TRIMMED,
        graph=GraphRecipe(fusion=True), **KEEP_3)
    recipes["keep 2, dynamic int8"] = Recipe(quantization=DynamicQuantization(), **KEEP_2)
    recipes["keep 2, int4 b128 sym, trimmed +0"] = Recipe(
        quantization=Int4Quantization(block_size=128, symmetric=True), vocabulary=TRIMMED,
        **KEEP_2)
    recipes["keep 2 halved, 200 steps, int4 b128 sym, trimmed +0"] = Recipe(
        quantization=Int4Quantization(block_size=128, symmetric=True), vocabulary=TRIMMED,
        **KEEP_2_HALVED)
    return recipes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(variants()),
                        help="build these models alone, beside the FP32 reference")
    args = parser.parse_args()
    chosen = {name: recipe for name, recipe in variants().items()
              if args.only is None or name == REFERENCE or name in args.only}
    config = load_config(ROOT / "examples" / "bbc-news.yaml")
    task = load_task(config.task, ROOT / "examples")
    bench = workbench(config, task)
    vocabulary_rows = len(task.tokenizer.get_vocab())  # type: ignore[attr-defined]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetune-vocabulary-") as scratch:
        for name, recipe in chosen.items():
            print(f"building {name}: {recipe.short()}", file=sys.stderr, flush=True)
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
