"""What this CPU is and what it computes natively: read by the machine record and by the spaces
that choose a training precision.

torch is imported only when asked: reading a config or a study needs no torch.
"""

from __future__ import annotations

import functools
import platform


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
