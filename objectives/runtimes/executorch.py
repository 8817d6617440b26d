"""ExecuTorch with its XNNPACK backend as an edgetune runtime: runs the ``.pte`` programs that
``objectives.executorch.compile_executorch`` writes.

Input names. A program's method takes positional inputs and ExecuTorch keeps no names for them,
so the compiler stores them in the program itself, as a constant method (``INPUTS_METHOD``, a
JSON string: the names in the order ``forward`` takes them, and which axes are dynamic).
Constant methods are the place ExecuTorch offers for such facts (its LLM exports keep their
settings there): the ``.pte`` stays the only file to ship and cache, and a C++ deployment reads
the same string with ``Module::execute``. A program without that method was not compiled by
edgetune and is refused.

Shapes. ``forward`` has dynamic batch and sequence axes up to the sizes it was compiled for (an
axis compiled for size 1 is static), so ``bind`` runs a batch at its own number of rows and its
own length, only cutting a longer sequence to the compiled length (as latency inputs are cut).
A batch of more rows than compiled for is refused.

Threads. XNNPACK runs on one process-wide pthreadpool (``extension/threadpool``), sized by
default to the machine's cores; nothing reads an environment variable. The Python bindings
expose ``_unsafe_reset_threadpool(n)``, which replaces the pool. It is "unsafe" because each
XNNPACK runtime keeps the pool it was created with (``xnn_create_runtime_v4`` is handed
``get_pthreadpool()`` when a method is loaded), so replacing it after a method is loaded leaves
that runtime on a destroyed pool. Hence the limits: the pool is sized before the first method is
loaded, every program open in one process shares it, and a later ``open`` asking for another
thread count raises instead of resizing it. pthreadpool's workers spin briefly after each run,
then sleep; unlike ONNX Runtime's there is no switch for that.

Imports: ExecuTorch's bindings import torch (they load libtorch), and ``execute`` takes torch
tensors, not numpy arrays. Both are imported when a program is opened, not with this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.objectives.runtimes.base import Batch, InputSpec, Runtime, Session
from edgetune.objectives.target import TargetConfig

INPUTS_METHOD = "edgetune_inputs"  # the constant method holding the inputs' names and axes
AXES = ("batch", "sequence")
LONG = 4  # ExecuTorch's ScalarType::Long (runtime/core/portable_type/scalar_type.h)
SCALAR_TYPES: dict[int, tuple[type[np.generic], str]] = {
    LONG: (np.int64, "Long"), 3: (np.int32, "Int"), 6: (np.float32, "Float"),
    11: (np.bool_, "Bool"),
}
# What the C++ runtime prints while it sizes its thread pool: the first call reads cpuinfo.
CHATTER = re.compile(r"\[(cpuinfo_utils|threadpool)\.cpp:\d+\] ")

_loaded_threads: int | None = None  # the pool's size once a method has been loaded on it


class ExecuTorchSession(Session):
    def __init__(self, method: Any, names: list[str], dynamic: list[bool]) -> None:
        import torch

        self.method = method
        self._names = names
        meta = method.metadata
        self._shapes = [tuple(meta.input_tensor_meta(i).sizes()) for i in range(len(names))]
        self._types = [meta.input_tensor_meta(i).dtype() for i in range(len(names))]
        self._dynamic = dynamic  # per axis: batch, sequence
        self._from_numpy = torch.from_numpy

    @property
    def inputs(self) -> list[InputSpec]:
        """Dynamic axes are named ``batch`` and ``sequence``, as in edgetune's ONNX exports."""
        return [InputSpec(name, tuple(axis if dynamic else size for axis, dynamic, size
                                      in zip(AXES, self._dynamic, shape, strict=True)),
                          *SCALAR_TYPES.get(kind, (None, f"ScalarType {kind}")))
                for name, shape, kind in zip(self._names, self._shapes, self._types, strict=True)]

    def bind(self, batch: Batch) -> list[tuple[tuple[Any, ...], int]]:
        """The inputs as torch tensors, cut to the program's sequence length, in chunks of at
        most the program's batch, each with its rows."""
        rows = len(batch[self._names[0]])
        most_rows = self._shapes[0][0]
        return [self._tensors(batch, start, min(start + most_rows, rows))
                for start in range(0, rows, most_rows)]

    def _tensors(self, batch: Batch, start: int, stop: int) -> tuple[tuple[Any, ...], int]:
        tensors = []
        for name, (_, longest), kind in zip(self._names, self._shapes, self._types, strict=True):
            value = np.asarray(batch[name])[start:stop, :longest]
            numpy_type = SCALAR_TYPES.get(kind, (np.int64,))[0]
            tensors.append(self._from_numpy(np.ascontiguousarray(value, dtype=numpy_type)))
        return tuple(tensors), stop - start

    def run(self, bound: object) -> np.ndarray:
        chunks: list[tuple[tuple[Any, ...], int]] = bound  # type: ignore[assignment]
        return np.concatenate([self.method.execute(tensors)[0].numpy()[:rows]
                               for tensors, rows in chunks])


class ExecuTorch(Runtime):
    def open(self, model: Path, target: TargetConfig) -> ExecuTorchSession:
        """``model``'s ``forward`` loaded on a thread pool of ``target.threads``.

        Raises:
            RuntimeError: ExecuTorch cannot load the file; or another program already runs in
                this process on a pool of another size (see the module's docstring).
            ValueError: the program holds no input names (it was not compiled by edgetune).
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "This API is experimental", at import
            from executorch.runtime import Runtime as Loader

        program = Loader.get().load_program(model)
        if INPUTS_METHOD not in program.method_names:
            raise ValueError(f"{model} holds no {INPUTS_METHOD} method: edgetune cannot tell "
                             "its inputs' names (compile it with edgetune)")
        described = json.loads(program.load_method(INPUTS_METHOD).execute([])[0])
        _size_pool(target.threads)
        method = program.load_method("forward")
        global _loaded_threads
        _loaded_threads = target.threads
        return ExecuTorchSession(method, described["names"], described["dynamic"])

    def version(self) -> str:
        """The package's own version string, build tag included (``1.5.1+cpu``)."""
        from executorch.version import __version__

        return __version__

    def deploy_files(self, model: Path) -> list[Path]:
        return []  # the input names travel inside the program

    def files_section(self, model: Path, deploy_files: list[Path]) -> str:
        return (f"- `{model.name}`: the model, an ExecuTorch program lowered to XNNPACK (the "
                "ExecuTorch runtime on\n  Android, iOS and embedded Linux). Its `forward` takes "
                "the tokenizer's outputs as int64\n  tensors, in the order its "
                f"`{INPUTS_METHOD}` method names them; its output, the logits, has one\n"
                "  column per label, in the order of `labels.json`.")

    def usage(self, model: Path, texts: str) -> str:
        return f"""With only executorch and transformers:

```python
import json

import torch
from executorch.runtime import Runtime
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(".")
labels = json.load(open("labels.json"))
program = Runtime.get().load_program("{model.name}")
names = json.loads(program.load_method("{INPUTS_METHOD}").execute([])[0])["names"]
forward = program.load_method("forward")
batch = tokenizer({texts}, truncation=True, return_tensors="pt")
logits = forward.execute([batch[name].to(torch.int64) for name in names])[0]
print([labels[i] for i in logits.argmax(dim=1).tolist()])
```"""


def describe_inputs(names: list[str], dynamic: list[bool]) -> str:
    """What ``INPUTS_METHOD`` returns: the compiler stores it, ``open`` reads it."""
    return json.dumps({"names": names, "dynamic": dynamic})


def _size_pool(threads: int) -> None:
    from executorch.extension.pybindings import portable_lib

    if _loaded_threads is not None and _loaded_threads != threads:
        raise RuntimeError(
            f"ExecuTorch already runs a program on {_loaded_threads} threads in this process; "
            f"its thread pool cannot be resized to {threads} while that program is loaded")
    with _without_chatter():
        portable_lib._unsafe_reset_threadpool(threads)
    size = portable_lib._threadpool_get_thread_count()
    if size != threads:
        raise RuntimeError(f"ExecuTorch's thread pool has {size} threads, not {threads}")


@contextlib.contextmanager
def _without_chatter() -> Iterator[None]:
    """The C++ runtime's notes on cpuinfo and its pool dropped from stderr; any other line it
    writes (an error) passes through."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not CHATTER.match(line):
                    sys.stderr.write(line)
