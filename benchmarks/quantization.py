"""Quantization, graph-fusion and QAT variants on the default task, measured side by side.

Every variant is built with edgetune's own build step (``objectives.candidate.build``) from the
cached fine-tuned base, scored on the validation and test splits, and all models' latencies are
measured together in one interleaved run with the FP32 reference (``objectives.latency.measure``,
the code every trial uses), so the ratios compare directly. Besides the recipes the search can
sample, three rows check design choices: a static INT8 of the fully fused graph (attention
fused), NNCF on the ONNX model fused afterwards, and the same number of plain fine-tuning steps
as QAT (so QAT's own contribution shows); and one row shows the QAT model's baked FP32 weights
before ONNX Runtime's INT8, to check that ONNX Runtime reproduces QAT's accuracy.
Prints a Markdown section for ``benchmarks/RESULTS.md``.

Tens of minutes of CPU on the real task: run it under the heavy lock,

    flock /tmp/edgetune-heavy.lock python benchmarks/quantization.py
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnx
from side_by_side import REFERENCE, conditions, score_and_time

from edgetune.objectives.build import Candidate, Workbench
from edgetune.objectives.cache import Cache, default_cache_dir
from edgetune.objectives.candidate import build
from edgetune.objectives.checkpoint import load_classifier, save_classifier
from edgetune.objectives.finetune import fine_tuned_base
from edgetune.objectives.graph import fuse
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.qat import trained_with_qat
from edgetune.objectives.quantization import quantize_nncf, quantize_static_int8
from edgetune.objectives.task import load_task
from edgetune.objectives.training import TrainSettings, train
from edgetune.search.config import load_config
from edgetune.spaces.graph import GraphRecipe
from edgetune.spaces.qat import QatRecipe
from edgetune.spaces.quantization import (
    DynamicQuantization,
    NncfQuantization,
    StaticQuantization,
)
from edgetune.spaces.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
MEASURE = MeasureConfig(warmup=10, rounds=8, runs=30, inputs=8)
QAT = QatRecipe(steps=30, learning_rate=2e-5, export="dynamic")
# Integer and fused kernels worth naming in the table.
SHOWN_OPS = ("MatMulInteger", "QAttention", "QLinearMatMul", "QGemm", "QuantizeLinear",
             "Attention", "SkipLayerNormalization")

Builder = Callable[[Workbench, Path], None]


def fused(quantization=None) -> Recipe:  # type: ignore[no-untyped-def]
    return Recipe(graph=GraphRecipe(fusion=True),
                  **({"quantization": quantization} if quantization else {}))


def plain(quantization) -> Recipe:  # type: ignore[no-untyped-def]
    return Recipe(quantization=quantization)


def variants() -> dict[str, Recipe | Builder]:
    dyn_pc = DynamicQuantization(per_channel=True)
    return {
        REFERENCE: Recipe(),
        "fp32 fused": fused(),
        "dynamic": plain(DynamicQuantization()),
        "dynamic per-channel": plain(dyn_pc),
        "dynamic reduce_range": plain(DynamicQuantization(reduce_range=True)),
        "dynamic uint8 weights": plain(DynamicQuantization(weight_type="uint8")),
        "dynamic, embeddings fp32": plain(DynamicQuantization(op_types="matmul")),
        "fused dynamic": fused(DynamicQuantization()),
        "fused dynamic per-channel": fused(dyn_pc),
        "fused dynamic, classifier fp32": fused(DynamicQuantization(keep_fp32="classifier")),
        "fused dynamic, ffn_output fp32": fused(DynamicQuantization(keep_fp32="ffn_output")),
        "fused dynamic, attention fp32": fused(DynamicQuantization(keep_fp32="attention")),
        "fused dynamic, first layer fp32": fused(DynamicQuantization(keep_fp32="first_layer")),
        "fused dynamic, last layer fp32": fused(DynamicQuantization(keep_fp32="last_layer")),
        "static qdq": plain(StaticQuantization()),
        "static qdq, int8 activations": plain(StaticQuantization(activation_type="int8")),
        "static qdq per-channel": plain(StaticQuantization(per_channel=True)),
        "static qdq entropy": plain(StaticQuantization(calibration="entropy")),
        "static qdq percentile": plain(StaticQuantization(calibration="percentile")),
        "static qdq, gemms only": plain(StaticQuantization(op_types="matmul")),
        "static qdq, all ops": plain(StaticQuantization(op_types="all")),
        "static qdq, ffn_output fp32": plain(StaticQuantization(keep_fp32="ffn_output")),
        "static qoperator": plain(StaticQuantization(format="qoperator")),
        "static qoperator, all ops": plain(StaticQuantization(format="qoperator", op_types="all")),
        "fused static qdq": fused(StaticQuantization()),
        "fused static qoperator": fused(StaticQuantization(format="qoperator")),
        "check: static qdq of fused attention": static_of_fused_attention,
        "nncf": plain(NncfQuantization()),
        "nncf smoothquant 0.95": plain(NncfQuantization(smooth_quant_alpha=0.95)),
        "nncf mixed": plain(NncfQuantization(preset="mixed")),
        "nncf, no transformer type": plain(NncfQuantization(transformer=False)),
        "nncf, ffn_output fp32": plain(NncfQuantization(keep_fp32="ffn_output")),
        "check: nncf, then fused": nncf_then_fused,
        f"qat{QAT.steps} dynamic": plain(QAT),
        f"qat{QAT.steps} dynamic fused": fused(QAT),
        f"check: qat{QAT.steps} baked fp32 weights, no int8": qat_baked_fp32,
        f"check: {QAT.steps} plain fine-tuning steps, fused dynamic per-channel":
            plain_finetuning_fused_dynamic,
        f"qat{QAT.steps} qdq": plain(QAT.model_copy(update={"export": "qdq"})),
    }


def static_of_fused_attention(bench: Workbench, target: Path) -> None:
    """What the build avoids: fusing attention before static INT8 (it stays FP32)."""
    fused_graph = target.with_name("fused.onnx")
    fuse(bench.reference(), fused_graph, bench.model_type, attention=True)
    quantize_static_int8(fused_graph, target, StaticQuantization(),
                         bench.task.encoded("calibration"))


def nncf_then_fused(bench: Workbench, target: Path) -> None:
    """The order NNCF would need for fusion: NNCF on the plain graph, then the fusions."""
    quantized = target.with_name("nncf.onnx")
    quantize_nncf(bench.reference(), quantized, NncfQuantization(),
                  bench.task.encoded("calibration"))
    fuse(quantized, target, bench.model_type)


def qat_baked_fp32(bench: Workbench, target: Path) -> None:
    """The QAT model as trained (weights on the INT8 grid), exported in FP32: torch's view."""
    checkpoint = trained_with_qat(bench.base, QAT, bench)
    target.write_bytes((bench.export(checkpoint) / "model.onnx").read_bytes())


def plain_finetuning_fused_dynamic(bench: Workbench, target: Path) -> None:
    """The QAT budget spent on plain fine-tuning, then the same fused per-channel dynamic INT8."""
    settings = TrainSettings(steps=QAT.steps, batch_size=bench.batch_size,
                             learning_rate=QAT.learning_rate, seed=bench.seed)

    def finetune(folder: Path) -> None:
        model = load_classifier(bench.base)
        train(model, bench.task, settings)
        save_classifier(model, folder)

    key = {"stage": "benchmark-finetune", "base": bench.base.name,
           "settings": settings.model_dump()}
    tuned = dataclasses.replace(bench, base=bench.cache.get_or_build("finetuned", key, finetune))
    build(fused(DynamicQuantization(per_channel=True)), tuned, Candidate(path=target))


def quantized_ops(model: Path) -> str:
    counts = collections.Counter(n.op_type for n in onnx.load(str(model)).graph.node)
    return ", ".join(f"{op} {counts[op]}" for op in SHOWN_OPS if counts[op])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "bbc-news.yaml")
    parser.add_argument("--only", help="build only the variants whose name contains this")
    parser.add_argument("--cache", type=Path,
                        help="reuse this cache of exports and QAT (an earlier run's workdir/cache);"
                             " build times then count only what it lacks")
    args = parser.parse_args()
    config = load_config(args.config)
    task = load_task(config.task, args.config.parent)
    base = fine_tuned_base(task, config.finetune,
                           Cache(Path(config.cache_dir) if config.cache_dir else
                                 default_cache_dir()))
    workdir = Path(tempfile.mkdtemp(prefix="edgetune-quantization-bench-"))
    # A fresh cache for exports and QAT unless told, so that every build time is really paid here.
    bench = Workbench(task=task, base=base, cache=Cache(args.cache or workdir / "cache"),
                      target=config.target, measure=MEASURE, batch_size=config.finetune.batch_size,
                      seed=config.finetune.seed)
    bench.reference()  # the FP32 export every variant starts from: not part of their build time
    chosen = {name: v for name, v in variants().items()
              if name == REFERENCE or not args.only or args.only in name}
    built: dict[str, Candidate] = {}
    for i, (name, variant) in enumerate(chosen.items()):
        print(f"building {name}", file=sys.stderr, flush=True)
        candidate = Candidate(path=workdir / str(i) / "model.onnx")
        # ONNX Runtime's calibrators print progress on stdout, which carries the results
        with contextlib.redirect_stdout(sys.stderr):
            if isinstance(variant, Recipe):
                build(variant, bench, candidate)
            else:
                candidate.path.parent.mkdir(parents=True)
                start = time.perf_counter()
                variant(bench, candidate.path)
                candidate.stage_seconds["build"] = time.perf_counter() - start
        built[name] = candidate
    results = score_and_time({name: c.path for name, c in built.items()}, task, config.target,
                             MEASURE)
    print(conditions(config.target, MEASURE, results,
                     f"; QAT and plain fine-tuning: {QAT.steps} steps, lr {QAT.learning_rate:g}, "
                     f"batch {config.finetune.batch_size}"))
    print()
    print("| variant | recipe | val acc | test acc | Δ test (pt) | latency ratio | spread | MB "
          "| zipped MB | build s | ops in the file |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, candidate in built.items():
        variant = chosen[name]
        recipe = variant.short() if isinstance(variant, Recipe) else "(see check)"
        build_seconds = sum(s for stage, s in candidate.stage_seconds.items() if stage != "measure")
        print(f"| {name} | {recipe} | {results.cells(name, candidate.path)} | {build_seconds:.0f} "
              f"| {quantized_ops(candidate.path)} |")

if __name__ == "__main__":
    main()
