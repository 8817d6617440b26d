"""``edgetune export --format coreml``: one trial's model as a Core ML package to ship to Apple
devices (``objectives.coreml``).

The trial's torch stages (pruning, recovery, QAT) are run again from its recipe, as a rebuild
does, and the checkpoint they end with is converted; INT8 weights where the recipe quantizes
(``coreml_supports`` says which recipes Core ML can express). Core ML predicts on macOS and iOS
only, so the package is checked here as a spec (inputs, output, weight types) and never run:
``metrics.json`` and the README say so, and give the trial's own figures, measured in the
study's runtime, not Core ML's. The folder is written beside ``out`` and renamed into place
once complete, as every export is.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from edgetune import __version__
from edgetune.errors import InputError
from edgetune.objectives.build import Candidate, StageError
from edgetune.objectives.candidate import torch_checkpoint
from edgetune.objectives.coreml import (
    check_coreml,
    coreml_int8_weights,
    coreml_supports,
    export_coreml,
)
from edgetune.objectives.predictor import LABELS_FILE
from edgetune.search.export import (
    METRICS_FILE,
    RECIPE_FILE,
    exportable,
    write_json,
    written_in_place,
)
from edgetune.search.models import Models, Source, workbench
from edgetune.spaces.recipe import Recipe

PACKAGE = "model.mlpackage"


def export_package(source: Source, number: int, out: Path, force: bool) -> dict[str, Any]:
    """Write trial ``number``'s Core ML folder to ``out``; return its metrics.

    Raises:
        InputError: no such complete trial; its recipe is one Core ML cannot express; ``out``
            exists (see ``export``); the task is not found here to rebuild it.
    """
    if importlib.util.find_spec("coremltools") is None:
        raise InputError("--format", "the Core ML export needs coremltools: "
                                     "pip install 'edgetune[coreml]'")
    trial = exportable(source.study, number)
    recipe = Recipe.model_validate(trial.recipe)
    why = coreml_supports(recipe.quantization)
    if why is not None:
        raise InputError("--format", f"trial {number} ({trial.recipe_short}) cannot be "
                                     f"expressed in Core ML: {why}")
    return written_in_place(out, force, lambda folder, scratch: _write_folder(
        source, trial.number, recipe, folder, scratch))


def _write_folder(source: Source, number: int, recipe: Recipe, folder: Path,
                  scratch: Path) -> dict[str, Any]:
    models = Models(source, scratch)
    trial = exportable(source.study, number)
    task = models.load_task(trial, fetched=False)
    if task.kind == "image":
        raise InputError("--format", "Core ML export of image classifiers is not supported yet: "
                                     "export the ONNX model")
    bench = workbench(source.config, task)
    try:
        checkpoint = torch_checkpoint(recipe, bench, Candidate(path=scratch / "torch" / "x"))
    except StageError as error:
        raise InputError("--trial", f"rebuilding trial {number}'s model failed in "
                                    f"{error}") from error
    if checkpoint is None:
        raise InputError("--format", f"trial {number}'s QAT ends in a Q/DQ ONNX graph, not "
                                     "in torch weights Core ML can convert")
    target, int8 = source.config.target, coreml_int8_weights(recipe.quantization)
    export_coreml(bench.load(checkpoint), bench.input_names, folder / PACKAGE,
                  target.batch_size, target.sequence_length, int8)
    checks = check_coreml(folder / PACKAGE, bench.input_names, target.batch_size,
                          target.sequence_length, len(task.label_names), int8)
    reads = models.model_task(trial)  # with the trimmed tokenizer, if the trial trims
    reads.tokenizer.model_max_length = target.sequence_length  # type: ignore[attr-defined]
    reads.tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    write_json(folder / LABELS_FILE, task.label_names)
    write_json(folder / RECIPE_FILE, trial.recipe)
    name = source.config.task.metric_name
    metrics = {
        "study": source.study.study_name, "trial": number, "recipe": trial.recipe_short,
        "format": "coreml", "model_source": "rebuilt", "metric": name,
        "trial_figures": {name: trial.accuracy, "shown_latency_ms": trial.latency_ms,
                          "shown_ratio": trial.ratio, "machine": trial.search_machine,
                          "confirmed": trial.confirmed.as_dict() if trial.confirmed else None},
        "coreml": checks,
    }
    write_json(folder / METRICS_FILE, metrics)
    (folder / "README.md").write_text(_readme(metrics, task.label_names, checks))
    return metrics


def _readme(metrics: dict[str, Any], labels: list[str], checks: dict[str, Any]) -> str:
    trial = metrics["trial_figures"]
    inputs = ", ".join(f"`{name}`" for name in checks["inputs"])
    weights = ("INT8 weight matrices (per channel)" if checks["int8_weights"]
               else "FP32 weights")
    return f"""# {metrics['study']}, trial {metrics['trial']}: {metrics['recipe']} (Core ML)

Exported by edgetune {__version__} from study `{metrics['study']}`, trial {metrics['trial']}.
A text classifier with {len(labels)} labels: {', '.join(labels)}.

`{PACKAGE}` is a Core ML ML program ({checks['minimum_deployment_target']} and later) with
{weights}. **It was not run here**: Core ML predicts on macOS and iOS only. It was checked as a
spec: its inputs {inputs} ({next(iter(checks['inputs'].values()))}), its output
`logits` (one column per label, in the order of `labels.json`) and its weight types.

The trial's own figures, measured in the study's runtime (not in Core ML): validation
{metrics['metric']} {trial[metrics['metric']]:.2%}, {trial['shown_latency_ms']:.2f} ms \
({trial['shown_ratio']:.2f}× FP32).
Time it on the device before trusting a latency.

## Files

- `{PACKAGE}`: the model. In Swift: `try MLModel(contentsOf: url)`; in Python on a Mac:
  `coremltools.models.MLModel("{PACKAGE}").predict({{...}})`.
- Tokenizer files: `AutoTokenizer.from_pretrained(folder)`; pad and cut texts to the package's
  sequence length.
- `labels.json`, `recipe.json`, `metrics.json` (what was checked, and the trial's figures).
"""
