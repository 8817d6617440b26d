"""Start from what is known: trials every study runs first, so its front is never worse than them.

- dynamic INT8, without and with ONNX Runtime's transformer fusions: what a peer tool ships (in
  a study for LiteRT or ExecuTorch, that runtime's own dynamic INT8, which has no fusions);
- half the encoder layers, as DistilBERT keeps them (every other one), recovered with
  distillation from the fine-tuned model, then fusion + dynamic INT8: the structured-pruning
  recipe the literature starts from (Sanh et al., 2019; Sajjad et al., 2023), and on the default
  task a candidate at a quarter of FP32's latency within a point of its test accuracy
  (benchmarks/RESULTS.md, structured pruning). Its recovery takes the space's most steps and the
  settings nearest the middle of the others, so it is a point the sampler could have drawn.

Baselines are written as the space's own parameters, so the sampler learns from them like from
any trial. So is the FP32 reference where the space can express it: a trial without parameters
would empty the search space that NSGA-II and GP model (the parameters every complete trial
shares), leaving them to sample at random. A baseline the user's space cannot express (say,
dynamic INT8 when the space allows only static) is skipped; a user's own ``search.enqueue`` entry
that does not fit is an error.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from edgetune.search.record import BASELINE, ROLE
from edgetune.spaces.knob import DEFAULT_RUNTIME
from edgetune.spaces.space import SearchSpace

Params = dict[str, Any]

REFERENCE: Params = {"pruning.method": "none", "quantization.scheme": "none",
                     "graph.fusion": False}
# Plain dynamic INT8 as the space's parameters (a baseline lists every one its scheme samples).
DYNAMIC_INT8: Params = {
    "pruning.method": "none", "quantization.scheme": "dynamic",
    "quantization.dynamic.per_channel": False, "quantization.dynamic.reduce_range": False,
    "quantization.dynamic.weight_type": "int8", "quantization.dynamic.op_types": "matmul_gather",
    "quantization.dynamic.keep_fp32": "none",
}
HALF_THE_LAYERS = "half the layers, distilled + fusion + dynamic INT8"
BASELINES: dict[str, Params] = {
    "dynamic INT8": {**DYNAMIC_INT8, "graph.fusion": False},
    "fusion + dynamic INT8": {**DYNAMIC_INT8, "graph.fusion": True},
}
# In a study for another runtime, its own dynamic INT8 stands for ONNX Runtime's (it has no
# graph fusions): what the baselines quantize with.
DYNAMIC_SCHEMES = {"litert": "litert-dynamic", "executorch": "executorch-dynamic"}


def baselines(runtime: str = DEFAULT_RUNTIME) -> dict[str, Params]:
    """The built-in baselines of a study for ``runtime`` but layer halving, by name."""
    if runtime not in DYNAMIC_SCHEMES:
        return dict(BASELINES)
    return {"dynamic INT8": {"pruning.method": "none",
                             "quantization.scheme": DYNAMIC_SCHEMES[runtime]}}


def half_the_layers(space: SearchSpace, layers: int,
                    runtime: str = DEFAULT_RUNTIME) -> Params:
    """The layer-halving baseline for a model of ``layers`` encoder layers in a study for
    ``runtime``, as ``space``'s parameters (``misfit`` says whether the space can express it)."""
    recovery = space.recovery
    int8 = ({"quantization.scheme": DYNAMIC_SCHEMES[runtime]} if runtime in DYNAMIC_SCHEMES
            else {**{name: value for name, value in DYNAMIC_INT8.items()
                     if name != "pruning.method"}, "graph.fusion": True})
    return {
        "pruning.method": "structured", "pruning.heads_kept": 1.0, "pruning.ffn_kept": 1.0,
        "pruning.layers_dropped": layers // 2, "pruning.layer_selection": "even",
        **({"pruning.hidden_kept": 1.0} if space.pruning.structured.searches_width else {}),
        "recovery.steps": recovery.steps.highest,
        "recovery.learning_rate": recovery.learning_rate.middle(),
        "recovery.distillation": True,
        "recovery.temperature": recovery.temperature.nearest(2.0),
        "recovery.alpha": recovery.alpha.nearest(0.5),
        **int8,
    }


def misfit(space: SearchSpace, params: Params, runtime: str = DEFAULT_RUNTIME) -> str | None:
    """Why ``params`` is not one point of ``space`` in a study for ``runtime`` (a missing, unknown
    or out-of-range value)."""
    trial = optuna.trial.FixedTrial(params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # FixedTrial only warns about out-of-range values
            space.sample(trial, runtime)
    except (ValueError, UserWarning) as error:
        return str(error).split(". Please")[0]
    unused = sorted(set(params) - set(trial.params))
    if unused:
        return f"parameters this recipe does not use: {', '.join(unused)}"
    return None


def reference_params(space: SearchSpace, runtime: str = DEFAULT_RUNTIME) -> Params:
    """The FP32 reference as parameters of ``space`` in a study for ``runtime`` (its runtime
    named where the space searches several), or none if the space cannot express it."""
    params = REFERENCE | _as_sampled(space, runtime)
    return params if misfit(space, params, runtime) is None else {}


def _as_sampled(space: SearchSpace, runtime: str) -> Params:
    """The parameters a built-in recipe gains in ``space``: its runtime where the space searches
    several, and an untrimmed vocabulary where it searches trimming (a space that always trims
    has no room for the reference or the baselines, which are untrimmed)."""
    return ({"runtime": runtime} if space.searches_runtimes(runtime) else {}) | (
        {"vocabulary.trim": False} if space.vocabulary is not None else {})


def enqueue(study: optuna.Study, space: SearchSpace, extra: list[Params],
            layers: int | None = None, runtime: str = DEFAULT_RUNTIME) -> None:
    """Queue the built-in baselines that fit ``space`` in a study for ``runtime`` (layer halving
    only for a model of ``layers`` encoder layers), then the user's own recipes."""
    builtin = baselines(runtime)
    if layers is not None and layers >= 2:
        name = HALF_THE_LAYERS if runtime not in DYNAMIC_SCHEMES else (
            "half the layers, distilled + dynamic INT8")
        builtin[name] = half_the_layers(space, layers, runtime)
    for name, params in builtin.items():
        params = params | _as_sampled(space, runtime)
        if misfit(space, params, runtime) is None:
            study.enqueue_trial(params, user_attrs={ROLE: "baseline", BASELINE: name})
    for params in extra:
        study.enqueue_trial(params, user_attrs={ROLE: "enqueued"})
