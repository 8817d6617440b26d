"""The README of an exported folder: what the model is, how it measured, and how to run it.

Its Python snippets run as written from inside the folder (a test extracts and runs them). A
latency re-measured at export that the protocol could not vouch for is marked beside the figure,
with why and which figure to trust instead (``unreliable_note``, which the CLI prints too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune import __version__
from edgetune.objectives.runtimes import runtime_of
from edgetune.search.config import StudyConfig
from edgetune.search.record import Figures

EXAMPLE_TEXTS = '["Shares rose sharply after the company reported record profits."]'
EXAMPLE_IMAGES = '["photo.jpg"]'


@dataclass(frozen=True)
class ImageInputs:
    """How an image classifier's inputs are made: ``objectives.images.pixel_values``' recipe."""

    size: int  # the side of the square the model takes
    mode: str  # the PIL colour mode images are converted to
    processor_resizes: bool  # the image processor makes ``size`` itself, else edgetune resizes


def image_usage(model: Path, images: ImageInputs) -> str:
    """The README's code running an image classifier with ONNX Runtime, transformers and PIL,
    preparing images as ``objectives.images.pixel_values`` does."""
    resize, options = "", ""
    if not images.processor_resizes:
        resize = (f"images = [image.resize(({images.size}, {images.size}), "
                  "Image.Resampling.BICUBIC) for image in images]\n")
        options = ", do_resize=False, do_center_crop=False"
    return f"""With only ONNX Runtime, transformers and Pillow:

```python
import json

import numpy as np
import onnxruntime as ort
from PIL import Image
from transformers import AutoImageProcessor

processor = AutoImageProcessor.from_pretrained(".")
labels = json.load(open("labels.json"))
session = ort.InferenceSession("{model.name}", providers=["CPUExecutionProvider"])
images = [Image.open(path).convert("{images.mode}") for path in {EXAMPLE_IMAGES}]
{resize}pixels = processor(images=images, return_tensors="np"{options})["pixel_values"]
logits = session.run(None, {{"pixel_values": pixels.astype(np.float32)}})[0]
print([labels[i] for i in logits.argmax(axis=1)])
```"""


def readme(metrics: dict[str, Any], labels: list[str], config: StudyConfig, model: Path,
           deploy_files: list[Path], images: ImageInputs | None = None) -> str:
    """The README of an export folder; ``images`` for an image classifier's."""
    runtime = runtime_of(model)
    trial = metrics["trial_figures"]
    here = metrics["remeasured"]
    name = metrics["metric"]
    target = config.target
    search_ms, search_ratio, confirmed = trial_latency(metrics)
    search_row = f"search (trial {metrics['trial']}{', confirmed' if confirmed else ''})"
    note = unreliable_note(metrics)
    here_row = "re-measured at export" + (" (**unreliable**, see below)" if note else "")
    note_block = f"\n**{note}**\n" if note else ""
    if images is None:
        kind, input_shape, example = "A text classifier", f"{target.sequence_length} tokens", (
            EXAMPLE_TEXTS)
        preprocessing = ("- Tokenizer files: `AutoTokenizer.from_pretrained(folder)`; texts are "
                         f"cut at\n  {config.task.max_length} tokens.")
        usage = runtime.usage(model, EXAMPLE_TEXTS)
    else:
        side = images.size
        kind, input_shape, example = ("An image classifier", f"{side}x{side} images",
                                      EXAMPLE_IMAGES)
        preprocessing = ("- Image processor: `AutoImageProcessor.from_pretrained(folder)`; the "
                         f"model takes\n  {side}x{side} images (paths or PIL images for "
                         "`edgetune.load`).")
        usage = image_usage(model, images)
    return f"""# {metrics['study']}, trial {metrics['trial']}: {metrics['recipe']}

Exported by edgetune {__version__} on {here['date'][:10]} from study `{metrics['study']}`,
trial {metrics['trial']}. {kind} with {len(labels)} labels: {', '.join(labels)}.

| | validation {name} | test {name} | latency | × FP32 |
|---|---|---|---|---|
| {search_row} | {trial[name]:.2%} | | {search_ms:.2f} ms | {search_ratio:.2f} |
| {here_row} | {here[f'validation_{name}']:.2%} | {here[f'test_{name}']:.2%} \
| {here['latency']['median_ms']:.2f} ms | {here['ratio']:.2f} |
{note_block}
Latency: {runtime.title} CPU, batch {target.batch_size}, {input_shape},
{target.threads} thread(s), on {here['machine']['cpu']}; "× FP32" is the ratio to the FP32 model
measured beside it. `metrics.json` holds every figure; `recipe.json` how the model was built.

## Files

{runtime.files_section(model, deploy_files)}
{preprocessing}

## Run it (from this folder)

With edgetune installed:

```python
import edgetune

predict = edgetune.load(".")
print(predict({example}))
```

{usage}
"""


def trial_latency(metrics: dict[str, Any]) -> tuple[float, float, bool]:
    """The trial's latency in ms, its ratio to FP32, and whether a confirmation measured them."""
    trial = metrics["trial_figures"]
    return trial["shown_latency_ms"], trial["shown_ratio"], bool(trial.get("confirmed"))


def unreliable_note(metrics: dict[str, Any]) -> str | None:
    """Why the latency re-measured at export is unreliable and what to trust instead (the trial's
    figure, unless it is no more precise); None when the protocol reached its precision."""
    verdict = metrics["remeasured"]["reliability"]
    if verdict["reliable"]:
        return None
    ms, ratio, confirmed = trial_latency(metrics)
    trial = metrics["trial_figures"]
    figures = Figures.model_validate(trial.get("confirmed") or trial["measurement"])
    kind = "confirmed figure" if confirmed else "figure"
    again = "measure again on a quiet machine (export again, or `edgetune bench`)"
    interval = figures.ratio_interval
    if interval is not None and figures.half_width > verdict["precision"]:
        advice = (f"The trial's {kind} ({ratio:.2f}× FP32, 95% interval {interval[0]:.2f}–"
                  f"{interval[1]:.2f}) is not precise either: {again}.")
    else:
        advice = f"Trust the trial's {kind} ({ms:.2f} ms, {ratio:.2f}× FP32), or {again}."
    return f"The latency re-measured at export is unreliable: {verdict['reason']}. {advice}"
