"""Channel pruning (issue 23): what keeping a fraction of every stage's channels does to a CNN's
multiply-accumulates, weights and ONNX Runtime latency.

Latency depends on shapes, not on weight values: each model is built from transformers' default
config of its family (ResNet-50, MobileNetV2 1.0, ConvNeXt-T, EfficientNet-B0: nothing
downloads), pruned with edgetune's own ``prune_stages`` (the same fraction in every stage),
exported at 224x224 and timed with edgetune's latency protocol, every variant of a family
interleaved with its unpruned model. Accuracy needs a task and recovery: not measured here.
Prints a Markdown section for ``benchmarks/RESULTS.md``.

A few minutes of CPU: run it under the heavy lock,

    flock /tmp/edgetune-heavy.lock python benchmarks/channels.py
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch_pruning as tp
from transformers import (
    AutoModelForImageClassification,
    ConvNextConfig,
    EfficientNetConfig,
    MobileNetV2Config,
    PretrainedConfig,
    ResNetConfig,
)

from edgetune.objectives.channels import prune_stages
from edgetune.objectives.export import export_onnx
from edgetune.objectives.latency import MeasureConfig, measure, ratio
from edgetune.objectives.machine import machine_key, machine_record
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.traceable import PIXELS
from edgetune.spaces.channels import STAGES, ChannelPruning

SIDE = 224
FAMILIES: dict[str, PretrainedConfig] = {
    "ResNet-50": ResNetConfig(),
    "MobileNetV2 1.0": MobileNetV2Config(),
    "ConvNeXt-T": ConvNextConfig(),
    # transformers' default is B7's; B0 scales neither width nor depth
    "EfficientNet-B0": EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0,
                                          hidden_dim=1280, image_size=SIDE),
}
KEPT = (0.75, 0.5)
MEASURE = MeasureConfig(warmup=5, rounds=10, runs=10, inputs=4, isolate=False)
TARGET = TargetConfig(threads=1, batch_size=1, image_size=SIDE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    names = parser.parse_args().only
    example = torch.zeros(1, 3, SIDE, SIDE)
    inputs = [{PIXELS: np.random.default_rng(i).standard_normal((1, 3, SIDE, SIDE),
                                                                dtype=np.float32)}
              for i in range(MEASURE.inputs)]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            print(f"{name}: pruning and exporting", file=sys.stderr, flush=True)
            models, counts = {}, {}
            for kept in (1.0, *KEPT):
                torch.manual_seed(0)
                model = AutoModelForImageClassification.from_config(FAMILIES[name]).eval()
                if kept < 1:
                    prune_stages(model, ChannelPruning(kept=(kept,) * STAGES), SIDE)
                counts[kept] = tp.utils.count_ops_and_params(model, example)
                models[str(kept)] = export_onnx(model, [PIXELS],
                                                Path(scratch) / f"{name}-{kept}.onnx",
                                                image_size=SIDE)
            print(f"{name}: measuring", file=sys.stderr, flush=True)
            latency = measure(models, inputs, TARGET, MEASURE)
            macs, weights = counts[1.0]
            for kept in (1.0, *KEPT):
                relative = ratio(latency[str(kept)], latency["1.0"])
                rows.append(f"| {name} | {kept:.2f} | {counts[kept][0] / 1e9:.2f} "
                            f"({counts[kept][0] / macs:.2f}x) | {counts[kept][1] / 1e6:.1f} "
                            f"({counts[kept][1] / weights:.2f}x) "
                            f"| {latency[str(kept)].median_ms:.1f} | {relative.value:.2f} |")
    print(f"Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}  \n"
          f"Machine: {machine_key(machine_record(TARGET))}  \n"
          f"Target: batch 1, {SIDE}x{SIDE} px, {TARGET.threads} thread; latency: "
          f"{MEASURE.rounds} rounds x {MEASURE.runs} runs, each family's variants interleaved\n")
    print("| model | kept per stage | GMACs | M weights | ms | latency ratio |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
