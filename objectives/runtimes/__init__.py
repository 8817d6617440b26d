"""The runtimes edgetune compiles for, times, scores and ships models in (the seam:
``runtimes.base``), each one line of ``RUNTIMES``.

A runtime's two sides are loaded by name (``importlib``) when first used, not imported here: the
run side (``session``) of LiteRT or ExecuTorch needs its extra installed, and the build side
(``compiler``) needs torch, which reading a study or running an exported model must not load.

Example:
    >>> from pathlib import Path
    >>> runtime_of(Path("model.onnx")).title
    'ONNX Runtime'
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from edgetune.errors import InputError
from edgetune.objectives.runtimes.base import Runtime, RuntimeInfo
from edgetune.objectives.target import TargetConfig
from edgetune.spaces.knob import DEFAULT_RUNTIME

_SIDES = "edgetune.objectives"
RUNTIMES: dict[str, RuntimeInfo] = {info.name: info for info in (
    RuntimeInfo("onnxruntime", "ONNX Runtime", "ORT", "an ONNX model", ".onnx",
                f"{_SIDES}.runtimes.onnxruntime:OnnxRuntime", f"{_SIDES}.export:compile_onnx",
                other_suffixes=(".ort",), colour="#1f77b4"),
    RuntimeInfo("litert", "LiteRT", "LiteRT", "a LiteRT model (.tflite)", ".tflite",
                f"{_SIDES}.runtimes.litert:LiteRt", f"{_SIDES}.litert:compile_tflite",
                extra="litert", packages=("ai_edge_litert", "litert_torch", "litert_quantizer"),
                colour="#ff7f0e"),
    RuntimeInfo("executorch", "ExecuTorch", "ET", "an ExecuTorch program (.pte)", ".pte",
                f"{_SIDES}.runtimes.executorch:ExecuTorch", f"{_SIDES}.executorch:compile_pte",
                extra="executorch", packages=("executorch",), colour="#2ca02c"),
)}
DEFAULT = DEFAULT_RUNTIME


class NotInstalled(Exception):
    """A runtime whose pip extra is missing."""

    def __init__(self, info: RuntimeInfo) -> None:
        super().__init__(f"{info.title} is not installed: pip install 'edgetune[{info.extra}]'")
        self.info = info


def missing(name: str) -> str | None:
    """Why runtime ``name`` cannot be used here (its extra is not installed), or None."""
    info = RUNTIMES[name]
    if all(importlib.util.find_spec(package) is not None for package in info.packages):
        return None
    return str(NotInstalled(info))


def check_installed(name: str, field: str) -> None:
    """Refuse runtime ``name``, the value of ``field``, unless it is known and installed here.

    Raises:
        InputError: naming ``field``, with the runtimes known or the extra to install.
    """
    if name not in RUNTIMES:
        raise InputError(field, f"unknown runtime {name!r} (expected one of: "
                                f"{', '.join(RUNTIMES)})")
    if (why := missing(name)) is not None:
        raise InputError(field, why)


@cache
def runtime(name: str) -> Runtime:
    """The runtime ``name``, loaded on first use.

    Raises:
        NotInstalled: its extra is not installed.
    """
    info = RUNTIMES[name]
    if missing(name) is not None:
        raise NotInstalled(info)
    session: type[Runtime] = _load(info.session)
    return session(info)


def compiler(name: str) -> Callable[[Any], None]:
    """Runtime ``name``'s compile step: ``Build`` with a torch checkpoint -> its model file."""
    if missing(name) is not None:
        raise NotInstalled(RUNTIMES[name])
    return _load(RUNTIMES[name].compiler)


def for_target(target: TargetConfig) -> Runtime:
    """The runtime ``target``'s models run in."""
    return runtime(target.runtime)


def runtime_of(model: Path) -> Runtime:
    """The runtime of a model file, by its suffix (``.onnx`` or ``.ort``, ``.tflite``, ``.pte``).

    Raises:
        ValueError: a suffix no runtime has.
    """
    for info in RUNTIMES.values():
        if info.runs(model):
            return runtime(info.name)
    raise ValueError(f"{model.name}: not a model file of any runtime (expected "
                     f"{', '.join(info.suffix for info in RUNTIMES.values())})")


def formats(name: str) -> list[str]:
    """The model formats runtime ``name`` writes, by suffix: ``onnx`` and ``ort`` for ONNX
    Runtime (``edgetune export --format``)."""
    info = RUNTIMES[name]
    return [suffix.lstrip(".") for suffix in (info.suffix, *info.other_suffixes)]


def _load(reference: str) -> Any:
    module, attribute = reference.split(":")
    return getattr(importlib.import_module(module), attribute)
