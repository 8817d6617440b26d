"""Structured pruning recipes on the default task, measured side by side with the FP32 reference.

Every recipe is built with edgetune's own build steps (prune, recover with distillation, export,
fuse, dynamic INT8), scored on the validation and test splits, and all models' latencies are
measured together in one interleaved run, so the ratios to the FP32 reference compare directly.
Prints a Markdown section for ``benchmarks/RESULTS.md``.

Minutes of CPU on the real task: run it under the heavy lock,

    flock /tmp/edgetune-heavy.lock python benchmarks/pruning.py

``--only NAME ...`` builds those recipes alone, beside the FP32 reference (width pruning:
``--only fused "hidden 3/4, fused" "hidden 1/2, fused" "fused + dyn-int8" "hidden 1/2"``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from side_by_side import REFERENCE, conditions, score_and_time

from edgetune.objectives.build import Candidate, Workbench
from edgetune.objectives.cache import Cache, default_cache_dir
from edgetune.objectives.candidate import build
from edgetune.objectives.checkpoint import load_classifier
from edgetune.objectives.finetune import fine_tuned_base
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.pruning import prune
from edgetune.objectives.task import load_task
from edgetune.search.config import load_config
from edgetune.spaces.graph import GraphRecipe
from edgetune.spaces.pruning import StructuredPruning
from edgetune.spaces.quantization import DynamicQuantization, NoQuantization
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.recovery import RecoveryRecipe

ROOT = Path(__file__).resolve().parents[1]
MEASURE = MeasureConfig(warmup=20, rounds=10, runs=50, inputs=8)


def recipes() -> dict[str, Recipe]:
    def compressed(pruning: StructuredPruning | None = None, steps: int = 50,
                   learning_rate: float = 1e-4, int8: bool = True) -> Recipe:
        recovery = RecoveryRecipe(steps=steps, learning_rate=learning_rate, distillation=steps > 0,
                                  temperature=2.0, alpha=0.5)
        return Recipe(**({"pruning": pruning, "recovery": recovery} if pruning else {}),
                      graph=GraphRecipe(fusion=True),
                      quantization=DynamicQuantization() if int8 else NoQuantization())

    def drop(count: int, selection: str, **within: object) -> StructuredPruning:
        return StructuredPruning(layers_dropped=count, layer_selection=selection, **within)

    half = {"heads_kept": 0.5, "ffn_kept": 0.5}
    return {
        REFERENCE: Recipe(),
        "fused + dyn-int8": compressed(),
        "keep 3 even, no recovery": compressed(drop(3, "even"), steps=0),
        "keep 3 importance, no recovery": compressed(drop(3, "importance"), steps=0),
        "keep 4 even": compressed(drop(2, "even")),
        "keep 4 importance": compressed(drop(2, "importance")),
        "keep 3 even": compressed(drop(3, "even")),
        "keep 3 importance": compressed(drop(3, "importance")),
        "keep 3 importance, lr 5e-5": compressed(drop(3, "importance"), learning_rate=5e-5),
        "keep 3 importance, lr 2e-4": compressed(drop(3, "importance"), learning_rate=2e-4),
        "heads+ffn half, layer": compressed(StructuredPruning(**half, scope="layer")),
        "heads+ffn half, global": compressed(StructuredPruning(**half, scope="global")),
        "keep 4 importance + ffn half": compressed(
            drop(2, "importance", ffn_kept=0.5, scope="layer")),
        "keep 5 importance + heads+ffn half, global": compressed(
            drop(1, "importance", **half, scope="global")),
        "keep 3 even, 100 steps": compressed(drop(3, "even"), steps=100),
        "keep 3 even + ffn 3/4": compressed(drop(3, "even", ffn_kept=0.75, scope="layer")),
        "keep 3 importance + ffn 3/4": compressed(
            drop(3, "importance", ffn_kept=0.75, scope="layer")),
        "keep 3 even + heads+ffn 3/4, global": compressed(
            drop(3, "even", heads_kept=0.75, ffn_kept=0.75, scope="global")),
        "keep 2 even, 100 steps": compressed(drop(4, "even"), steps=100),
        # Past the searched fronts' 0.115x (issue 25's 0.10x target): smaller still, recovered
        # longer than the search's 100 steps.
        "keep 2 even + heads 1/2 ffn 3/4, 100 steps at 3e-4": compressed(
            drop(4, "even", heads_kept=0.5, ffn_kept=0.75, scope="layer"), steps=100,
            learning_rate=3e-4),
        "keep 2 even + heads+ffn 1/2, 200 steps at 3e-4": compressed(
            drop(4, "even", **half, scope="layer"), steps=200, learning_rate=3e-4),
        "keep 2 even + heads 1/2, 200 steps at 3e-4": compressed(
            drop(4, "even", heads_kept=0.5, scope="layer"), steps=200, learning_rate=3e-4),
        "keep 2 even + heads+ffn 1/2, 400 steps at 3e-4": compressed(
            drop(4, "even", **half, scope="layer"), steps=400, learning_rate=3e-4),
        "fused": compressed(int8=False),
        "hidden 3/4, fused": compressed(StructuredPruning(hidden_kept=0.75), int8=False),
        "hidden 1/2, fused": compressed(StructuredPruning(hidden_kept=0.5), int8=False),
        "hidden 3/4": compressed(StructuredPruning(hidden_kept=0.75)),
        "hidden 1/2": compressed(StructuredPruning(hidden_kept=0.5)),
    }


def kept_layers(bench: Workbench, dropped: int, selection: str) -> list[int]:
    """Which of the base's layers a selection keeps (matched by their FFN weights)."""
    base = load_classifier(bench.base)
    pruned = prune(load_classifier(bench.base), StructuredPruning(
        layers_dropped=dropped, layer_selection=selection), bench.task)
    sources = [layer.output.dense.weight for layer in base.bert.encoder.layer]
    return [next(i for i, w in enumerate(sources) if torch.equal(layer.output.dense.weight, w))
            for layer in pruned.bert.encoder.layer]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "bbc-news.yaml")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(recipes()),
                        help="build these recipes alone, beside the FP32 reference")
    args = parser.parse_args()
    config = load_config(args.config)
    task = load_task(config.task, args.config.parent)
    cache = Cache(Path(config.cache_dir) if config.cache_dir else default_cache_dir())
    bench = Workbench(task=task, base=fine_tuned_base(task, config.finetune, cache), cache=cache,
                      target=config.target, measure=MEASURE,
                      batch_size=config.finetune.batch_size, seed=config.finetune.seed)
    workdir = Path(tempfile.mkdtemp(prefix="edgetune-pruning-bench-"))
    built: dict[str, Candidate] = {}
    chosen = {name: recipe for name, recipe in recipes().items()
              if args.only is None or name == REFERENCE or name in args.only}
    for i, (name, recipe) in enumerate(chosen.items()):
        print(f"building {name}: {recipe.short()}", file=sys.stderr, flush=True)
        built[name] = build(recipe, bench, Candidate(path=workdir / str(i) / "model.onnx"))
    results = score_and_time({name: c.path for name, c in built.items()}, task, config.target,
                             MEASURE)
    print(conditions(config.target, MEASURE, results))
    for selection in ("even", "importance"):
        print(f"Layers kept by {selection} selection: keep 4 {kept_layers(bench, 2, selection)}, "
              f"keep 3 {kept_layers(bench, 3, selection)}  ")
    print()
    print("| recipe | val acc | test acc | Δ test (pt) | latency ratio | spread | MB | zipped MB "
          "| fused ops | build s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, candidate in built.items():
        fused = candidate.notes.get("fused_ops", {})
        print(f"| {name} | {results.cells(name, candidate.path)} "
              f"| {fused.get('Attention', 0)} attn "  # type: ignore[union-attr]
              f"| {sum(candidate.stage_seconds.values()):.0f} |")

if __name__ == "__main__":
    main()
