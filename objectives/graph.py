"""Graph build step: ONNX Runtime's transformer optimizer (Attention, EmbedLayerNormalization,
SkipLayerNormalization and BiasGelu fusions).

``num_heads=0, hidden_size=0`` lets the optimizer read both from each attention's Reshape, which
keeps the fusion right for structurally pruned models whose head count differs from the config.
Search space: ``edgetune.spaces.graph``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from onnxruntime.transformers import optimizer

FUSION_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert",
                      "distilbert": "bert", "electra": "bert"}


def fuse(source: Path, target: Path, model_type: str) -> dict[str, int]:
    """Write the fused graph of ``source`` to ``target``; return the count of each fused op."""
    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    optimized = optimizer.optimize_model(
        str(source),
        model_type=FUSION_MODEL_TYPES.get(model_type, "bert"),
        num_heads=0,
        hidden_size=0,
        opt_level=0,  # graph fusions only; the session applies its own optimisations at load
    )
    optimized.save_model_to_file(str(target))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
