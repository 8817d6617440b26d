"""Measuring apart from training: a fresh process pinned to chosen cores.

With ``measure.isolate`` a latency measurement runs in a new process (spawned, not forked: a fork
would inherit torch's and ONNX Runtime's thread pools mid-state) whose CPU affinity is the
measurement cores, while the process that trains keeps to the other cores. Measurements of
several workers on one machine take turns on those cores through a file lock, so a measurement
never shares its cores with training or with another measurement.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from edgetune.errors import InputError
from edgetune.objectives.cache import locked

T = TypeVar("T")


def available_cores() -> set[int]:
    """The CPUs this process may run on."""
    return os.sched_getaffinity(0)


def measurement_cores(cores: Iterable[int] | None, threads: int) -> set[int]:
    """The cores to measure on (all available when ``cores`` is None), checked against the target.

    Raises:
        InputError: a core this process may not use, or fewer cores than the target's threads
            (they would share cores, which the target device does not).
    """
    available = available_cores()
    chosen = set(cores) if cores is not None else available
    unknown = sorted(chosen - available)
    if unknown:
        raise InputError("measure.cores", f"cores {unknown} are not available to this process "
                         f"(available: {sorted(available)})")
    if len(chosen) < threads:
        raise InputError("measure.cores", f"{len(chosen)} core(s) cannot run target.threads="
                         f"{threads} threads side by side: pin at least {threads} cores")
    return chosen


@contextmanager
def training_apart(cores: set[int]) -> Iterator[None]:
    """Keep this (training) process off the measurement ``cores`` for the block, when other cores
    are left; on a machine with no others, training and measurement simply take turns."""
    import torch

    before, threads = available_cores(), torch.get_num_threads()
    rest = before - cores
    if rest:
        os.sched_setaffinity(0, rest)
        torch.set_num_threads(min(threads, len(rest)))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
        torch.set_num_threads(threads)


def run_pinned(function: Callable[..., T], cores: set[int], *args: object) -> T:
    """``function(*args)`` in a fresh process pinned to ``cores``, one measurement at a time.

    ``function`` and its arguments must be picklable (a module-level function, paths, arrays).
    """
    context = multiprocessing.get_context("spawn")
    with _turn(cores), ProcessPoolExecutor(max_workers=1, mp_context=context,
                                           initializer=os.sched_setaffinity,
                                           initargs=(0, cores)) as pool:
        return pool.submit(function, *args).result()


@contextmanager
def _turn(cores: set[int]) -> Iterator[None]:
    name = "-".join(map(str, sorted(cores)))
    with locked(Path(tempfile.gettempdir()) / f"edgetune-measure-cpu{name}.lock"):
        yield
