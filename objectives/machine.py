"""Where a figure was measured: fronts never mix latencies from different machines unawares."""

from __future__ import annotations

import functools
import os
import platform

import onnxruntime

import edgetune


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


def machine_record(threads: int) -> dict[str, object]:
    """CPU model, core count, threads, and the versions that shape a latency figure."""
    return {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "onnxruntime": onnxruntime.__version__,
        "edgetune": edgetune.__version__,
    }


def machine_key(record: dict[str, object]) -> str:
    """What must match for two latencies to share one front: CPU, cores, threads, runtime."""
    return (f"{record['cpu']} ×{record['cores']} · {record['threads']} threads · "
            f"ORT {record['onnxruntime']}")
