"""``edgetune bench``: the trial's latency protocol for any model file a user wants to check.

A deployed model comes without its study, so its inputs are made from its own signature: token
ids drawn from its vocabulary (read from the embedding table the ids index), attention masks of
ones, every other integer input zeros, float inputs standard normal, symbolic dimensions set to
the target's batch size and sequence length. Transformer kernels do the same work for any ids at
a given shape, so these inputs time the model as real text of full length would; with a tokenizer
and a text file, real texts are used instead, exactly as a trial does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgetune.errors import InputError
from edgetune.objectives.latency import MeasureConfig, latency_inputs, measure, ratio
from edgetune.objectives.machine import machine_record
from edgetune.objectives.runtimes import NotInstalled, runtime_of
from edgetune.objectives.runtimes.base import InputSpec, Session
from edgetune.objectives.target import TargetConfig

Batch = dict[str, np.ndarray]
FALLBACK_VOCABULARY = 100  # ids below this exist in any real vocabulary


def open_model(path: Path, where: str, target: TargetConfig) -> Session:
    """``path`` opened in its runtime (by its suffix), or an ``InputError`` saying why it cannot
    be."""
    if not path.is_file():
        raise InputError(where, f"no such file: {path}")
    try:
        runtime = runtime_of(path)
    except (ValueError, NotInstalled) as error:
        raise InputError(where, str(error)) from error
    try:
        return runtime.open(path, target)
    except Exception as error:  # a runtime raises its own types for every kind of bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InputError(where, f"{path} is not {runtime.model_kind} {runtime.title} can load: "
                                f"{first_line[:200]}") from error


def synthetic_inputs(models: dict[Path, Session], target: TargetConfig, count: int,
                     seed: int = 0) -> list[Batch]:
    """``count`` batches holding every input any of ``models`` (opened by ``open_model``) takes."""
    rng = np.random.default_rng(seed)
    signature = {spec.name: spec for session in models.values() for spec in session.inputs}
    sizes = [size for size in map(_vocabulary, models) if size]
    vocabulary = min(sizes, default=FALLBACK_VOCABULARY)
    return [{name: _values(arg, target, vocabulary, rng) for name, arg in signature.items()}
            for _ in range(count)]


def text_inputs(tokenizer: Path, text_file: Path, target: TargetConfig,
                count: int) -> list[Batch]:
    """``count`` batches of real texts (one per line of ``text_file``) tokenized as in a trial."""
    from transformers import AutoTokenizer

    if not tokenizer.is_dir():
        raise InputError("--tokenizer", f"no such folder: {tokenizer}")
    try:
        texts = [line for line in text_file.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise InputError("--text-file", f"cannot read {text_file}: {error}") from error
    if not texts:
        raise InputError("--text-file", f"{text_file} holds no text (one text per line)")
    try:
        encode = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as error:
        raise InputError("--tokenizer", f"{tokenizer} holds no tokenizer: {error}") from error
    encoded = encode(texts, truncation=True, padding="max_length",
                     max_length=target.sequence_length, return_tensors="np")
    return latency_inputs({name: np.asarray(value, dtype=np.int64)
                           for name, value in encoded.items()}, target, count)


def _values(arg: InputSpec, target: TargetConfig, vocabulary: int,
            rng: np.random.Generator) -> np.ndarray:
    shape = [dim if isinstance(dim, int) and dim > 0
             else (target.batch_size if axis == 0 else target.sequence_length)
             for axis, dim in enumerate(arg.shape)]
    dtype = arg.dtype
    if dtype is None:
        raise InputError("MODEL", f"input {arg.name!r} has type {arg.type_name}, which bench "
                                  "cannot make up: give --tokenizer and --text-file")
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if "mask" in arg.name or dtype == np.bool_:
        return np.ones(shape, dtype=dtype)
    if arg.name == "input_ids":
        return rng.integers(0, vocabulary, size=shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)


def _vocabulary(model: Path) -> int | None:
    """Rows of the embedding table that ``input_ids`` index (a Gather or a fused embedding) of an
    ONNX model; None for another format (its inputs then take ids below the fallback)."""
    if model.suffix != ".onnx":
        return None
    graph = onnx.load(str(model), load_external_data=False).graph
    tables = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:
        if "input_ids" in node.input:
            for name in node.input:
                if len(tables.get(name, [])) == 2:
                    return int(tables[name][0])
    return None


def bench(model: Path, baseline: Path | None, inputs: list[Batch], target: TargetConfig,
          config: MeasureConfig, input_kind: str) -> dict[str, Any]:
    """Measure ``model`` (beside ``baseline``, interleaved) and describe the result as JSON data."""
    models = {"model": model, **({"baseline": baseline} if baseline else {})}
    latencies = measure(models, inputs, target, config, reference="baseline" if baseline else None)
    relative = ratio(latencies["model"], latencies["baseline"]) if baseline else None
    return {
        "models": {name: {"path": str(path), **latencies[name].as_dict()}
                   for name, path in models.items()},
        "ratio": {"value": relative.value, "spread": relative.spread,
                  "interval": list(relative.interval)} if relative else None,
        "inputs": input_kind,
        "input_shapes": {name: list(array.shape) for name, array in inputs[0].items()},
        "target": target.model_dump(),
        "measure": config.model_dump(),
        # Ratios are to the baseline: its runtime is the record's, the model's its candidate's.
        "machine": machine_record(
            target.model_copy(update={"runtime": runtime_of(baseline or model).name}),
            runtime_of(model).name),
    }
