"""Where a figure was measured: fronts never mix latencies from different machines unawares."""

from __future__ import annotations

import functools
import os
import platform

import edgetune
from edgetune.objectives.runtimes import RUNTIMES, for_target
from edgetune.objectives.target import TargetConfig

LEGACY_RUNTIME = "onnxruntime"  # records written before the runtime was named measured in it


@functools.cache
def cpu_model() -> str:
    try:
        import cpuinfo

        return str(cpuinfo.get_cpu_info().get("brand_raw") or platform.processor())
    except Exception:  # cpuinfo probes the CPU in ways some sandboxes refuse
        return platform.processor() or "unknown"


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), so that training
    under bfloat16 autocast is faster rather than emulated and slower."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def machine_record(target: TargetConfig) -> dict[str, object]:
    """CPU model, core count, threads, and the versions that shape a latency figure: the runtime
    is named (``runtime``) and its version stored under its name (``onnxruntime: 1.20.1``)."""
    runtime = for_target(target)
    return {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": target.threads,
        "runtime": runtime.name,
        runtime.name: runtime.version(),
        "edgetune": edgetune.__version__,
    }


def machine_key(record: dict[str, object]) -> str:
    """What must match for two latencies to share one front: CPU, cores, threads, runtime."""
    name = str(record.get("runtime", LEGACY_RUNTIME))
    label = RUNTIMES[name].label if name in RUNTIMES else name
    return (f"{record['cpu']} ×{record['cores']} · {record['threads']} threads · "
            f"{label} {record[name]}")
