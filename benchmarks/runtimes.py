"""The runtimes side by side on the default task (issue 21): FP32 and the best INT8 of ONNX
Runtime, LiteRT and ExecuTorch, unpruned and pruned, timed in one interleaved run.

Every model is built with edgetune's own build step (``objectives.candidate.build``) from the
cached fine-tuned base, each recipe naming its runtime (``Recipe.runtime``), scored on the
validation and test splits in its own runtime, and all latencies are measured together beside
the FP32 ONNX Runtime model (``benchmarks/side_by_side.py``), so the ratios compare directly.
"Best INT8" is each runtime's fastest scheme at FP32's accuracy on this task: ONNX Runtime's
graph fusions + per-channel dynamic INT8, LiteRT's dynamic-range INT8, ExecuTorch's PT2E dynamic
INT8. "Pruned" is the layer-halving baseline every study starts from (every other encoder layer
dropped, recovered with distillation), or the pruning of a study's trial (``--pruning-from``).
Prints a Markdown section for ``benchmarks/RESULTS.md``.

    python benchmarks/runtimes.py [--pruning-from RUN_DIR:TRIAL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import optuna
from side_by_side import REFERENCE, conditions, score_and_time

from edgetune.objectives.architectures import encoder_layers
from edgetune.objectives.build import Candidate, Workbench
from edgetune.objectives.cache import Cache, default_cache_dir
from edgetune.objectives.candidate import build, model_file
from edgetune.objectives.finetune import fine_tuned_base
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.runtimes import RUNTIMES, runtime
from edgetune.objectives.task import load_task
from edgetune.search.baselines import half_the_layers
from edgetune.search.config import load_config
from edgetune.spaces.executorch import ExecuTorchDynamic
from edgetune.spaces.graph import GraphRecipe
from edgetune.spaces.litert import LiteRtDynamic
from edgetune.spaces.quantization import DynamicQuantization
from edgetune.spaces.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
MEASURE = MeasureConfig(warmup=10, rounds=20, runs=10, inputs=8)
BEST_INT8 = {
    "onnxruntime": {"quantization": DynamicQuantization(per_channel=True),
                    "graph": GraphRecipe(fusion=True)},
    "litert": {"quantization": LiteRtDynamic()},
    "executorch": {"quantization": ExecuTorchDynamic()},
}


def pruning(config_path: Path, source: str | None, layers: int) -> dict[str, object]:
    """The pruning and recovery of the pruned rows: a study trial's, or layer halving's."""
    config = load_config(config_path)
    if source is None:
        params = half_the_layers(config.space, layers)
        trial = optuna.trial.FixedTrial(params)
        recipe = config.space.sample(trial)
    else:
        run_dir, number = source.rsplit(":", 1)
        study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir}/study.db")
        stored = next(t for t in study.trials if t.number == int(number))
        recipe = Recipe.model_validate(stored.user_attrs["recipe"])
    return {"pruning": recipe.pruning, "recovery": recipe.recovery}


def recipes(pruned: dict[str, object]) -> dict[str, Recipe]:
    rows = {}
    for name, info in RUNTIMES.items():
        own = None if name == "onnxruntime" else name
        for prune_name, prune in (("", {}), ("pruned ", pruned)):
            rows[f"{prune_name}{info.title} FP32"] = Recipe(runtime=own, **prune)
            rows[f"{prune_name}{info.title} INT8"] = Recipe(runtime=own, **prune,
                                                            **BEST_INT8[name])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "bbc-news.yaml")
    parser.add_argument("--pruning-from", metavar="RUN_DIR:TRIAL")
    args = parser.parse_args()
    config = load_config(args.config)
    task = load_task(config.task, args.config.parent)
    cache = Cache(Path(config.cache_dir) if config.cache_dir else default_cache_dir())
    base = fine_tuned_base(task, config.finetune, cache)
    workdir = Path(tempfile.mkdtemp(prefix="edgetune-runtimes-bench-"))
    bench = Workbench(task=task, base=base, cache=cache, target=config.target, measure=MEASURE,
                      batch_size=config.finetune.batch_size, seed=config.finetune.seed)
    layers = encoder_layers(json.loads((base / "config.json").read_text()))
    built: dict[str, Path] = {REFERENCE: bench.reference()}
    for i, (name, recipe) in enumerate(recipes(pruning(args.config, args.pruning_from,
                                                       layers)).items()):
        if recipe.is_reference:
            continue
        print(f"building {name}", file=sys.stderr, flush=True)
        candidate = Candidate(path=workdir / str(i) / model_file(recipe, bench))
        with contextlib.redirect_stdout(sys.stderr):
            build(recipe, bench, candidate)
        built[name] = candidate.path
    results = score_and_time(built, task, config.target, MEASURE)
    versions = ", ".join(f"{runtime(name).title} {runtime(name).version()}" for name in RUNTIMES)
    print(conditions(config.target, MEASURE, results, f"; {versions}"))
    print()
    print("| model | val acc | test acc | Δ test (pt) | × ORT FP32 | spread | MB | zipped MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, path in built.items():
        print(f"| {name} | {results.cells(name, path)} |")


if __name__ == "__main__":
    main()
