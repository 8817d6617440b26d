"""The vision demo's front (issue 23): a convolutional and a vision-transformer model on the
generated surface-defect photographs, and the knobs side by side against FP32.

Written to ``--work``/results.jsonl as each part finishes:

1. for each model (``--models``): a ``--trials``-trial study of ``examples/surface-defects.yaml``
   with the knobs its architecture takes (the ResNet: the demo's channel pruning and INT8; the
   ViT: structured pruning, fusion and INT8), its wall time (the base's fine-tuning
   apart), and its front with each trial's validation and test macro F1 (``edgetune status
   --json`` after the run's confirmation);
2. for each study: the FP32 reference, the fastest trial of each pruning method and scheme, all
   exported with ``edgetune export`` and timed in one interleaved run (the trials' protocol),
   each scored on validation and test.

    python benchmarks/vision.py --work /tmp/vision-bench [--trials 20] [--models resnet,vit]
        [--side-by-side-only]

The ViT is the demo's other architecture, made as the demo's ResNet is: from its config, with
seeded random weights (``vit_model``), trained by the study's fine-tuning.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from side_by_side import REFERENCE, write

from edgetune.objectives.accuracy import scored
from edgetune.objectives.latency import MeasureConfig, latency_inputs, measure, ratio
from edgetune.objectives.machine import machine_key, machine_record
from edgetune.objectives.task import load_task
from edgetune.search.config import load_config
from edgetune.search.record import TrialRecord, records
from edgetune.search.study import make_storage

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "surface-defects.yaml"


def demo_generator() -> Any:
    spec = importlib.util.spec_from_file_location("surface_defects",
                                                  REPO / "examples" / "surface_defects.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vit_model(folder: Path, side: int, labels: list[str]) -> None:
    """A small ViT (4 blocks of width 192, 16-pixel patches) with seeded random weights."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=side, patch_size=16, hidden_size=192, num_hidden_layers=4,
                       num_attention_heads=3, intermediate_size=768, num_labels=len(labels),
                       id2label=dict(enumerate(labels)),
                       label2id={label: i for i, label in enumerate(labels)})
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": side, "width": side}, image_mean=[0.5] * 3,
                      image_std=[0.25] * 3).save_pretrained(folder)


def prepare(work: Path) -> dict[str, Path]:
    """The demo's photographs and ResNet, and the ViT: generated once into ``work``."""
    generator = demo_generator()
    demo = work / "surface-defects"
    if not (demo / "model").is_dir():
        generator.write_data(demo / "data")
        generator.write_model(demo / "model")
    if not (work / "vit").is_dir():
        vit_model(work / "vit", generator.SIDE, list(generator.COUNTS))
    return {"resnet": demo / "model", "vit": work / "vit"}


def study_config(work: Path, name: str, model: Path) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["study"] = f"surface-defects-{name}"
    data["task"]["model"] = str(model)
    data["task"]["data"]["path"] = str(work / "surface-defects" / "data")
    data["cache_dir"] = str(work / f"cache-{name}")
    if name == "vit":  # the demo's space with a transformer's pruning and fusions
        data["space"]["pruning"] = {"methods": ["none", "structured"],
                                    "structured": {"layers_dropped": {"low": 0, "high": 2}}}
        data["space"]["graph"] = {"fusion": [True, False]}
        # At the ResNet's 2e-3, and at 5e-4, 800 steps taught the ViT nothing (macro F1 0.21:
        # every part "ok"); 2,000 at 3e-4 teach it something (RESULTS.md).
        data["finetune"]["learning_rate"] = 3e-4
        data["finetune"]["steps"] = 2000
        data["space"]["recovery"]["learning_rate"] = {"low": 1e-4, "high": 5e-4, "step": 1e-4}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def edgetune(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("edgetune")), *args]


def run_study(work: Path, name: str, model: Path, trials: int) -> None:
    run_dir = work / name
    config = study_config(work, name, model)
    command = edgetune("run", str(config), "--trials", str(trials), "--run-dir", str(run_dir),
                       "--no-report")
    start = time.monotonic()
    with (work / f"{name}.log").open("w") as log:
        exit_code = subprocess.run(command, stdout=log, stderr=log).returncode
    wall = time.monotonic() - start
    status = json.loads(subprocess.run(edgetune("status", "--run-dir", str(run_dir), "--json"),
                                       capture_output=True, text=True, check=True).stdout)
    study = optuna.load_study(study_name=f"surface-defects-{name}",
                              storage=make_storage(f"sqlite:///{run_dir / 'study.db'}"))
    done = [t for t in study.trials if t.datetime_complete is not None]
    trials_seconds = (max(t.datetime_complete for t in done)
                      - min(t.datetime_start for t in done)).total_seconds()
    row = {"part": "study", "model": name, "exit": exit_code, "wall_seconds": round(wall),
           "trials_seconds": round(trials_seconds), "status": status,
           "command": " ".join(command)}
    write(work, row)


def fastest_of_each_kind(study: optuna.Study) -> dict[str, int]:
    """The reference, and the fastest complete trial of each pruning method and scheme."""
    chosen: dict[str, TrialRecord] = {}
    for trial in records(study):
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        kind = ("reference" if trial.is_reference else
                f"{trial.recipe['pruning']['method']} + {trial.recipe['quantization']['scheme']}")
        if kind not in chosen or trial.ratio < chosen[kind].ratio:
            chosen[kind] = trial
    return {kind: trial.number for kind, trial in chosen.items()}


def side_by_side(work: Path, name: str) -> None:
    run_dir = work / name
    study = optuna.load_study(study_name=f"surface-defects-{name}",
                              storage=make_storage(f"sqlite:///{run_dir / 'study.db'}"))
    config = load_config(work / f"{name}.yaml")
    task = load_task(config.task, work, config.target.image_size)
    models = {}
    for kind, number in fastest_of_each_kind(study).items():
        out = work / f"{name}-export" / str(number)
        subprocess.run(edgetune("export", "--run-dir", str(run_dir), "--trial", str(number),
                                "--out", str(out), "--force"), check=True, capture_output=True)
        models[REFERENCE if kind == "reference" else f"{kind} (trial {number})"] = (
            out / "model.onnx")
    settings = MeasureConfig(rounds=40, max_rounds=40)
    inputs = latency_inputs(task.encoded("validation"), config.target, settings.inputs)
    latency = measure(models, inputs, config.target, settings)
    rows = {}
    for label, model in models.items():
        scores = {split: scored(model, task.encoded(split), task.labels(split), config.target,
                                config.task.metric, task.label_names).value
                  for split in ("validation", "test")}
        relative = ratio(latency[label], latency[REFERENCE])
        rows[label] = {**{k: round(v, 4) for k, v in scores.items()},
                       "ratio": round(relative.value, 3), "spread": round(relative.spread, 2),
                       "ms": round(latency[label].median_ms, 3),
                       "mb": round(model.stat().st_size / 1e6, 2)}
    write(work, {"part": "side by side", "model": name, "rounds": settings.rounds,
                 "machine": machine_key(machine_record(config.target)),
                 "threads": config.target.threads, "rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--models", default="resnet,vit")
    parser.add_argument("--side-by-side-only", action="store_true",
                        help="time the studies run before again (on a quieter machine)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    models = prepare(args.work)
    for name in args.models.split(","):
        if not args.side_by_side_only:
            run_study(args.work, name, models[name], args.trials)
        side_by_side(args.work, name)


if __name__ == "__main__":
    main()
