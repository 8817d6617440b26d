"""The README of an exported folder: what the model is, how it measured, and how to run it.

Its Python snippets run as written from inside the folder (a test extracts and runs them).
"""

from __future__ import annotations

from typing import Any

from edgetune import __version__
from edgetune.search.config import StudyConfig

EXAMPLE_TEXTS = '["Shares rose sharply after the company reported record profits."]'


def readme(metrics: dict[str, Any], labels: list[str], config: StudyConfig,
           operators_file: str) -> str:
    trial = metrics["trial_figures"]
    here = metrics["remeasured"]
    target = config.target
    confirmed = trial.get("confirmed") or {}
    search_ms = confirmed.get("latency_ms", trial["latency_ms"])
    search_ratio = confirmed.get("ratio", trial["measurement"].get("ratio", float("nan")))
    search_row = f"search (trial {metrics['trial']}{', confirmed' if confirmed else ''})"
    return f"""# {metrics['study']}, trial {metrics['trial']}: {metrics['recipe']}

Exported by edgetune {__version__} on {here['date'][:10]} from study `{metrics['study']}`,
trial {metrics['trial']}. A text classifier with {len(labels)} labels: {', '.join(labels)}.

| | validation accuracy | test accuracy | latency | × FP32 |
|---|---|---|---|---|
| {search_row} | {trial['accuracy']:.2%} | | {search_ms:.2f} ms | {search_ratio:.2f} |
| re-measured at export | {here['validation_accuracy']:.2%} | {here['test_accuracy']:.2%} \
| {here['latency']['median_ms']:.2f} ms | {here['ratio']:.2f} |

Latency: ONNX Runtime CPU, batch {target.batch_size}, {target.sequence_length} tokens,
{target.threads} thread(s), on {here['machine']['cpu']}; "× FP32" is the ratio to the FP32 model
measured beside it. `metrics.json` holds every figure; `recipe.json` how the model was built.

## Files

- `model.onnx`: the model. Inputs are the tokenizer's outputs as int64; the output `logits` has
  one column per label, in the order of `labels.json`.
- `model.ort`: the same model in ONNX Runtime's ORT format, for the mobile packages
  (onnxruntime-android, onnxruntime-objc) and minimal builds.
- `{operators_file}`: the operators it needs, for a reduced ONNX Runtime build:
  `./build.sh --minimal_build --include_ops_by_config {operators_file}`.
- Tokenizer files: `AutoTokenizer.from_pretrained(folder)`; texts are cut at
  {config.task.max_length} tokens.

## Run it (from this folder)

With edgetune installed:

```python
import edgetune

predict = edgetune.load(".")
print(predict({EXAMPLE_TEXTS}))
```

With only ONNX Runtime and transformers:

```python
import json

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(".")
labels = json.load(open("labels.json"))
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
batch = tokenizer({EXAMPLE_TEXTS}, truncation=True, padding=True, return_tensors="np")
inputs = {{i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}}
logits = session.run(None, inputs)[0]
print([labels[i] for i in logits.argmax(axis=1)])
```
"""
