"""The QAT knob and its build steps: NNCF quantization-aware training of the torch model, out to
ONNX Runtime.

``nncf.quantize`` inserts fake-quantizers, the model trains with them (the same loop as
fine-tuning), and then one of two exports (``QatRecipe.export``):

- ``dynamic``: the model trains against exactly the grid ONNX Runtime's per-channel dynamic INT8
  will put its weights on, and nothing else. Only the quantizers of Linear weights are kept (ONNX
  Runtime measures activations per batch at run time and quantizes embeddings its own way); each
  takes its range from its weight on every call (symmetric, per output channel, max |w| / 127 per
  level: ONNX Runtime's rule) instead of learning it; SmoothQuant is off (its activation scaling
  lives in NNCF hooks a plain model cannot hold). Each weight is then replaced by its
  fake-quantized value, so ONNX Runtime quantizes it back to the same integers: the plain
  checkpoint this writes is exported, fused and quantized like any other.
- ``qdq``: NNCF's own weight and activation quantizers, ranges calibrated on the calibration
  split and learned; ``nncf.strip`` turns them into torch FakeQuantize modules that export as
  QuantizeLinear/DequantizeLinear pairs: weights and activations INT8.

Search space: ``edgetune.spaces.qat``. The knob (``QAT``) is registered as an ``edgetune.knobs``
entry point: the ``qat`` quantization scheme, which trains in the ``qat`` stage and, with the
``dynamic`` export, quantizes in the ``quantize`` stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import PreTrainedModel

from edgetune.objectives.architectures import SHAPES_FILE
from edgetune.objectives.build import Build, Workbench
from edgetune.objectives.checkpoint import save_classifier
from edgetune.objectives.export import export_onnx
from edgetune.objectives.quantization import post_training, quantize_dynamic_int8
from edgetune.objectives.task import Task
from edgetune.objectives.training import StepCallback, TrainSettings, train
from edgetune.spaces.knob import ONNX_RUNTIME_ONLY, Phases, QuantizationScheme
from edgetune.spaces.qat import QatRecipe, QatSpace
from edgetune.spaces.quantization import DynamicQuantization
from edgetune.spaces.recipe import Recipe

# How ONNX Runtime re-quantizes the baked weights of the ``dynamic`` export: per channel and
# symmetric signed INT8, as NNCF's weight quantizers are.
BAKED_WEIGHTS_QUANTIZATION = DynamicQuantization(per_channel=True, weight_type="int8")
QDQ_FILE = "model.onnx"


def trained(build: Build) -> None:
    """The ``qat`` stage: the current checkpoint trained with NNCF's quantizers; the ``qdq``
    export is the candidate's final file."""
    recipe: QatRecipe = build.recipe.quantization  # type: ignore[assignment]
    result = trained_with_qat(build.checkpoint, recipe, build.bench, build.callback,
                              build.callback_every)
    if recipe.export == "qdq":
        shutil.copyfile(result / QDQ_FILE, build.candidate.path)
        build.model, build.done = build.candidate.path, True
    else:
        build.checkpoint = result


def trained_with_qat(checkpoint: Path, recipe: QatRecipe, bench: Workbench,
                     callback: StepCallback | None = None, callback_every: int = 0) -> Path:
    """The cached QAT result of ``checkpoint``: a checkpoint folder, or a folder with Q/DQ ONNX."""
    key = {
        "stage": "qat",
        "checkpoint": checkpoint.name,
        "qat": recipe.model_dump(),
        "batch_size": bench.batch_size,
        "seed": bench.seed,
    }

    def build_qat(folder: Path) -> None:
        quantization_aware_training(bench.load(checkpoint), bench.task, recipe,
                                    bench.batch_size, bench.seed, folder, callback,
                                    callback_every)
        if recipe.export == "dynamic" and (checkpoint / SHAPES_FILE).exists():
            shutil.copyfile(checkpoint / SHAPES_FILE, folder / SHAPES_FILE)

    return bench.cache.get_or_build("qat", key, build_qat)


def qat_phases(recipe: Recipe, bench: Workbench) -> Phases:
    return [("qat", recipe.quantization.steps)]  # type: ignore[attr-defined]


def quantization_aware_training(
    model: PreTrainedModel,
    task: Task,
    recipe: QatRecipe,
    batch_size: int,
    seed: int,
    folder: Path,
    callback: StepCallback | None = None,
    callback_every: int = 0,
) -> None:
    """Train ``model`` with NNCF's quantizers for ``recipe.steps`` steps of ``recipe.batch_size``
    rows (``batch_size`` when the recipe names none) and write to ``folder`` a checkpoint with
    INT8-grid weights (``dynamic``) or ``model.onnx`` with Q/DQ (``qdq``)."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    calibration = task.encoded("calibration")
    names = list(calibration)
    samples = [
        {name: torch.from_numpy(calibration[name][row : row + 1]) for name in names}
        for row in range(len(task.labels("calibration")))
    ]
    if recipe.export == "dynamic":
        # Nothing calibrated is kept: activation quantizers go, weight ranges follow the weights.
        quantized = nncf.quantize(
            model, nncf.Dataset(samples[:1]), model_type=nncf.ModelType.TRANSFORMER,
            subset_size=1,
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1),
                disable_bias_correction=True,
            ),
        )
        weights = _runtime_weight_quantizers(quantized, samples[0])
    else:
        quantized = nncf.quantize(model, nncf.Dataset(samples),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples))
    settings = TrainSettings(
        steps=recipe.steps, batch_size=recipe.batch_size or batch_size,
        learning_rate=recipe.learning_rate,
        dropout=recipe.dropout, precision=recipe.precision, seed=seed,
    )
    train(quantized, task, settings, callback=callback, callback_every=callback_every)
    if recipe.export == "qdq":
        export_onnx(nncf.strip(quantized, example_input=samples[0]), names, folder / QDQ_FILE)
        return
    model.load_state_dict(_baked_state(quantized, weights))
    save_classifier(model, folder)


def _runtime_weight_quantizers(quantized: torch.nn.Module,
                               example: dict[str, torch.Tensor]) -> dict[str, str]:
    """Keep only the quantizers of Linear weights, each ranging over its weight as ONNX Runtime
    will; return them as in ``_weight_quantizers``."""
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    weights = {hook: parameter
               for hook, parameter in _weight_quantizers(quantized, example).items()
               if isinstance(quantized.get_submodule(parameter.rpartition(".")[0]),
                             torch.nn.Linear)}
    storage = get_hook_storage(quantized)
    for name, hook in list(storage.named_hooks()):
        if not isinstance(hook, BaseQuantizer):
            continue
        if name not in weights:
            storage.delete_hook(name)
            continue
        hook.disable_gradients()
        hook.register_forward_pre_hook(_range_of_weight)
    return weights


def _range_of_weight(quantizer: torch.nn.Module, args: tuple) -> None:
    """Set a symmetric per-channel quantizer's range to its weight's max |w| per channel."""
    weight = args[0].detach()
    scale = quantizer.scale
    reduced = [dim for dim, size in enumerate(scale.shape) if size == 1]
    quantizer.scale = torch.nn.Parameter(weight.abs().amax(dim=reduced, keepdim=True),
                                         requires_grad=False)


def _weight_quantizers(quantized: torch.nn.Module,
                       example: dict[str, torch.Tensor]) -> dict[str, str]:
    """Hook name of each weight quantizer -> name of the parameter it quantizes.

    Found by running ``example`` and seeing which quantizers receive a parameter of the model:
    activation quantizers receive computed tensors.
    """
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    parameters = {id(p): name for name, p in quantized.named_parameters()}
    found: dict[str, str] = {}

    def recorder(hook_name: str):  # type: ignore[no-untyped-def]
        def record(_module: torch.nn.Module, args: tuple, _output: object) -> None:
            if id(args[0]) in parameters:
                found[hook_name] = parameters[id(args[0])]
        return record

    handles = [hook.register_forward_hook(recorder(name))
               for name, hook in get_hook_storage(quantized).named_hooks()
               if isinstance(hook, BaseQuantizer)]
    with torch.no_grad():
        quantized.eval()(**example)
    for handle in handles:
        handle.remove()
    return found


def _baked_state(quantized: torch.nn.Module, weights: dict[str, str]) -> dict[str, torch.Tensor]:
    """The plain model's state with each quantized weight replaced by its fake-quantized value."""
    from nncf.torch.function_hook.wrapper import ATR_HOOK_STORAGE, get_hook_storage

    hooks = dict(get_hook_storage(quantized).named_hooks())
    state = {name: value for name, value in quantized.state_dict().items()
             if not name.startswith(ATR_HOOK_STORAGE)}
    with torch.no_grad():
        for hook_name, parameter in weights.items():
            state[parameter] = hooks[hook_name].eval()(state[parameter])
    return state


QAT = QuantizationScheme(
    name="qat", recipe=QatRecipe, space=QatSpace,
    steps={"qat": trained, "quantize": post_training(
        lambda source, target, recipe, _: quantize_dynamic_int8(source, target,
                                                                BAKED_WEIGHTS_QUANTIZATION))},
    training=qat_phases,
    # the qdq export writes its own Q/DQ graph from torch: there is no FP32 graph to fuse
    fusion=lambda recipe: "none" if recipe.export == "qdq" else "full",
    colour="#2ca02c", symbol="diamond",
    runtimes=ONNX_RUNTIME_ONLY,
)
