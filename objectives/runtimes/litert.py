"""LiteRT (formerly TensorFlow Lite) on the CPU: runs the ``.tflite`` files ``objectives.litert``
converts. It imports numpy and ``ai_edge_litert`` only, so that models run without torch.

Delegate: ai-edge-litert 2.3's ``Interpreter`` applies XNNPACK by default: its default op
resolver (``OpResolverType.AUTO``, the same as ``BUILTIN``) adds the XNNPACK delegate when
tensors are allocated, with the interpreter's ``num_threads``; only
``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (or ``BUILTIN_REF``) leaves it out. ``open`` asks for
``BUILTIN`` by name so the choice is explicit, passes ``num_threads=target.threads``, and
allocates tensors once, which is when XNNPACK takes over the graph (one ``DELEGATE`` node
replaces the ops it runs; ``tests/test_litert.py`` checks it is there). XNNPACK's thread pool
takes the interpreter's thread count (``threads=n`` starts n - 1 worker threads). Without it the
default model's FP32 runs ~4x slower here (issue 21).

Inputs by name: litert-torch writes one signature (``serving_default``) whose inputs are named
after the traced module's keyword arguments, which ``objectives.litert`` names ``input_ids``,
``attention_mask`` and ``token_type_ids``; the signature maps each name to its tensor. A model
without a signature is fed by its input tensors' own names. Inputs are int32 (litert-torch
narrows int64 by default); ``bind`` casts the tokenizer's int64 arrays to the model's type.

Shapes are static: litert-torch 0.10 fails to convert these classifiers with a dynamic batch or
sequence axis (with the 2-D mask, its int64-to-int32 rewrite cannot bound an ``arange`` whose
end is symbolic; with the additive mask, lowering the mask's ``unsqueeze`` gives a negative
dimension), so a model takes exactly ``batch_size`` rows of ``sequence_length`` tokens. ``bind``
fits any batch to that: rows are padded with zeros up to the model's batch (more rows are run in
several calls), and the sequence is padded with zeros (masked out) or cut to the model's length.
Cutting drops real tokens only where a text is longer than the model's sequence; the logits of
padded rows are dropped, so ``run`` returns one row per given row.

Library chatter: the interpreter writes "INFO: Created TensorFlow Lite XNNPACK delegate" to the
process's stderr (fd 2, from C++); ``native_stderr_quiet`` drops its ``INFO:`` lines and writes
back anything else, all of it when loading fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ai_edge_litert import __version__ as LITERT_VERSION
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgetune.objectives.native_output import native_stderr_quiet
from edgetune.objectives.runtimes.base import Batch, InputSpec, Runtime, Session
from edgetune.objectives.target import TargetConfig


class LiteRtSession(Session):
    """A ``.tflite`` model with its tensors allocated, fed by input name."""

    def __init__(self, interpreter: Interpreter) -> None:
        self.interpreter = interpreter
        signatures = interpreter.get_signature_list()
        if signatures:
            runner = interpreter.get_signature_runner(next(iter(signatures)))
            inputs = runner.get_input_details()
            outputs = list(runner.get_output_details().values())
        else:
            inputs = {detail["name"]: detail for detail in interpreter.get_input_details()}
            outputs = interpreter.get_output_details()
        # Inputs in the order of the model's own input tensors.
        self._inputs = sorted(inputs.items(), key=lambda item: item[1]["index"])
        self._output = int(outputs[0]["index"])
        ids = next((d for name, d in self._inputs if name == "input_ids"), self._inputs[0][1])
        self.batch_size, self.sequence_length = (int(n) for n in ids["shape"][:2])

    @property
    def inputs(self) -> list[InputSpec]:
        return [InputSpec(name, _shape(detail["shape_signature"]), detail["dtype"],
                          np.dtype(detail["dtype"]).name)
                for name, detail in self._inputs]

    def bind(self, batch: Batch) -> tuple[int, list[list[tuple[int, np.ndarray]]]]:
        """The rows given, and the model's inputs for each call that runs them: ``(tensor index,
        array)`` pairs fitted to the model's batch and sequence length and cast to its types."""
        rows = len(next(iter(batch.values())))
        calls = []
        for start in range(0, max(rows, 1), self.batch_size):
            calls.append([
                (int(detail["index"]),
                 self._fit(np.asarray(batch[name])[start : start + self.batch_size],
                           detail["dtype"]))
                for name, detail in self._inputs])
        return rows, calls

    def run(self, bound: object) -> np.ndarray:
        rows, calls = bound  # type: ignore[misc]
        logits = []
        for call in calls:
            for index, array in call:
                self.interpreter.set_tensor(index, array)
            self.interpreter.invoke()
            logits.append(self.interpreter.get_tensor(self._output))
        return np.concatenate(logits)[:rows]

    def _fit(self, array: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
        """``array`` cut or zero-padded to the model's sequence length, zero rows added up to
        its batch."""
        array = array[:, : self.sequence_length]
        fitted = np.zeros((self.batch_size, self.sequence_length), dtype=dtype)
        fitted[: array.shape[0], : array.shape[1]] = array
        return fitted


class LiteRt(Runtime):
    def open(self, model: Path, target: TargetConfig) -> LiteRtSession:
        with native_stderr_quiet():
            interpreter = Interpreter(model_path=str(model), num_threads=target.threads,
                                      experimental_op_resolver_type=OpResolverType.BUILTIN)
            interpreter.allocate_tensors()
        return LiteRtSession(interpreter)

    def version(self) -> str:
        return LITERT_VERSION

    def deploy_files(self, model: Path) -> list[Path]:
        return []  # the .tflite file is all the LiteRT interpreter needs

    def files_section(self, model: Path, deploy_files: list[Path]) -> str:
        session = self.open(model, TargetConfig(threads=1))
        names = ", ".join(f"`{spec.name}`" for spec in session.inputs)
        return (f"- `{model.name}`: the model for LiteRT (the LiteRT interpreter on Android, iOS, "
                "Linux and\n  microcontrollers; XNNPACK on CPUs). Its inputs, by its signature's "
                f"names: {names}, int32,\n  {session.batch_size} row(s) of "
                f"{session.sequence_length} tokens; its output, the logits, has one column per "
                "label, in\n  the order of `labels.json`.")

    def usage(self, model: Path, texts: str) -> str:
        session = self.open(model, TargetConfig(threads=1))
        return f"""With only ai-edge-litert and transformers (the model takes \
{session.batch_size} row(s) of {session.sequence_length} tokens):

```python
import json

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(".")
labels = json.load(open("labels.json"))
runner = Interpreter(model_path="{model.name}").get_signature_runner()
texts = {texts}
rows = texts + [""] * ({session.batch_size} - len(texts))  # the model's batch, filled up
batch = tokenizer(rows, truncation=True, padding="max_length",
                  max_length={session.sequence_length}, return_tensors="np")
inputs = {{name: batch[name].astype(np.int32) for name in runner.get_input_details()}}
logits = next(iter(runner(**inputs).values()))[: len(texts)]
print([labels[i] for i in logits.argmax(axis=1)])
```"""


def _shape(signature: np.ndarray) -> tuple[int | None, ...]:
    """A tensor's shape signature, None for each axis left open (-1)."""
    return tuple(None if int(n) < 0 else int(n) for n in signature)
