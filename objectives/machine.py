"""Where a figure was measured: fronts never mix latencies from different machines unawares."""

from __future__ import annotations

import os
import platform

import edgetune
from edgetune.cpu import cpu_model
from edgetune.objectives.runtimes import RUNTIMES, for_target, runtime
from edgetune.objectives.target import TargetConfig

LEGACY_RUNTIME = "onnxruntime"  # records written before the runtime was named measured in it


def machine_record(target: TargetConfig, candidate_runtime: str | None = None,
                   device: str | None = None) -> dict[str, object]:
    """CPU model, core count, threads, and the versions that shape a latency figure: the runtime
    of the FP32 reference is named (``runtime``) and its version stored under its name
    (``onnxruntime: 1.20.1``); a candidate compiled for another runtime (``space.runtime``) names
    that one too (``candidate_runtime``), with its version. A measurement agent names its
    ``device``."""
    runtimes = [for_target(target)]
    if candidate_runtime not in (None, target.runtime):
        runtimes.append(runtime(candidate_runtime))
    return {
        **({"device": device} if device is not None else {}),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": target.threads,
        "runtime": target.runtime,
        **({"candidate_runtime": candidate_runtime} if len(runtimes) > 1 else {}),
        **{each.name: each.version() for each in runtimes},
        "edgetune": edgetune.__version__,
    }


def machine_key(record: dict[str, object]) -> str:
    """What must match for two latencies to share one front: the device an agent names, CPU,
    cores, threads, and the runtime of the FP32 reference they are ratios to."""
    name = str(record.get("runtime", LEGACY_RUNTIME))
    label = RUNTIMES[name].label if name in RUNTIMES else name
    device = f"{record['device']}: " if record.get("device") else ""
    return (f"{device}{record['cpu']} ×{record['cores']} · {record['threads']} threads · "
            f"{label} {record[name]}")
