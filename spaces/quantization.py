"""Quantization knob: how the model is brought to INT8 (or to 4-bit weights).

- ``dynamic``: ONNX Runtime quantizes weights ahead of time and activations at run time;
- ``static``: ONNX Runtime quantizes activations too, with ranges calibrated on the calibration
  split, as QuantizeLinear/DequantizeLinear pairs (``qdq``) or integer operators (``qoperator``):
  the full-INT8 graphs edge NPUs need;
- ``nncf``: NNCF post-training quantization of the ONNX model (Q/DQ), with its transformer
  settings and SmoothQuant;
- ``int4``: ONNX Runtime's 4-bit block-wise weight-only quantization (MatMulNBits, and
  GatherBlockQuantized for the embedding tables): the smallest file, activations in float (or
  quantized per block at run time, ``accuracy_level`` 4); searched only where a config lists it;
- ``qat``: quantization-aware training with NNCF (see ``edgetune.spaces.qat``).

Every INT8 post-training scheme can keep a group of layers in FP32 (mixed precision,
``keep_fp32``).
QAT is a scheme here rather than a separate switch because it decides how the model is
quantized: sampling it beside a post-training scheme would sample settings that are then ignored.
Build steps and knob declarations: ``edgetune.objectives.quantization`` and
``edgetune.objectives.qat``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import optuna
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from edgetune.spaces.base import FloatRange, Strict, suggest_choice, without_default
from edgetune.spaces.registry import SlotSpace, recipe_of

IntType = Literal["int8", "uint8"]
Calibration = Literal["minmax", "entropy", "percentile"]
StaticFormat = Literal["qdq", "qoperator"]
# Which operators are quantized: the GEMMs only, the GEMMs and the embedding lookups (the 47 MB
# word-embedding table of MiniLM), or everything ONNX Runtime can quantize (full INT8).
DynamicOps = Literal["matmul", "matmul_gather"]
StaticOps = Literal["matmul", "matmul_gather", "all"]
# Mixed precision: a group of nodes left in FP32 (see edgetune.objectives.quantization).
Fp32Group = Literal["none", "classifier", "attention", "ffn_output", "first_layer", "last_layer"]
NncfPreset = Literal["performance", "mixed"]
# MatMulNBits and GatherBlockQuantized take power-of-two blocks of at least 16 weights.
BlockSize = Literal[16, 32, 64, 128, 256]
# MatMulNBits' accuracy_level: 0 computes in FP32 with the weights dequantized; 4 quantizes the
# activations to INT8 per block at run time (ONNX Runtime's integer kernels on CPU).
AccuracyLevel = Literal[0, 4]


class NoQuantization(Strict):
    scheme: Literal["none"] = "none"

    def short(self) -> str:
        return "fp32"


def _fp32_suffix(group: Fp32Group) -> str:
    return "" if group == "none" else f"-fp32:{group}"


def _ops_suffix(op_types: str) -> str:
    return {"matmul": "-gemms", "matmul_gather": "", "all": "-all"}[op_types]


class DynamicQuantization(Strict):
    scheme: Literal["dynamic"] = "dynamic"
    per_channel: bool = False
    reduce_range: bool = Field(default=False, description="7-bit weights, for CPUs without VNNI")
    weight_type: IntType = "int8"
    op_types: DynamicOps = "matmul_gather"
    keep_fp32: Fp32Group = "none"

    def short(self) -> str:
        return ("dyn-int8" + ("-pc" if self.per_channel else "")
                + ("-rr" if self.reduce_range else "")
                + ("-u8w" if self.weight_type == "uint8" else "")
                + _ops_suffix(self.op_types) + _fp32_suffix(self.keep_fp32))


class StaticQuantization(Strict):
    scheme: Literal["static"] = "static"
    format: StaticFormat = "qdq"
    calibration: Calibration = "minmax"
    activation_type: IntType = "uint8"
    per_channel: bool = False
    op_types: StaticOps = "matmul_gather"
    keep_fp32: Fp32Group = "none"

    def short(self) -> str:
        return (f"static-{self.format}-{self.calibration}"
                + ("-s8a" if self.activation_type == "int8" else "")
                + ("-pc" if self.per_channel else "") + _ops_suffix(self.op_types)
                + _fp32_suffix(self.keep_fp32))


class NncfQuantization(Strict):
    scheme: Literal["nncf"] = "nncf"
    preset: NncfPreset = "performance"
    transformer: bool = Field(default=True, description="NNCF's transformer model type")
    smooth_quant_alpha: float | None = Field(
        default=None, gt=0, le=1, description="SmoothQuant strength; None: off (transformer only)"
    )
    keep_fp32: Fp32Group = "none"

    def short(self) -> str:
        sq = "" if self.smooth_quant_alpha is None else f"-sq{self.smooth_quant_alpha:.2f}"
        return (f"nncf-{self.preset}" + ("-transformer" if self.transformer else "") + sq
                + _fp32_suffix(self.keep_fp32))


class Int4Quantization(Strict):
    scheme: Literal["int4"] = "int4"
    block_size: BlockSize = 32
    symmetric: bool = False
    accuracy_level: AccuracyLevel = 4
    op_types: DynamicOps = "matmul_gather"

    def short(self) -> str:
        return (f"int4-b{self.block_size}" + ("-sym" if self.symmetric else "")
                + ("-fp32acc" if self.accuracy_level == 0 else "") + _ops_suffix(self.op_types))


QuantizationRecipe = recipe_of("quantization")  # the recipe of any registered scheme


def _choices(trial: optuna.Trial, scheme: str, space: Strict) -> dict[str, object]:
    """Sample each choice list of ``space`` as the parameter ``quantization.<scheme>.<field>``."""
    return {
        field: suggest_choice(trial, f"quantization.{scheme}.{field}", choices)
        for field in type(space).model_fields
        if isinstance(choices := getattr(space, field), list)
    }


class DynamicSpace(Strict):
    """Defaults from benchmarks/RESULTS.md: reduce_range, uint8 weights, FP32 embeddings and FP32
    layer groups were no more accurate and mostly slower on a VNNI CPU; they stay settable."""

    per_channel: list[bool] = Field(default=[False, True], min_length=1)
    reduce_range: list[bool] = Field(default=[False], min_length=1)
    weight_type: list[IntType] = Field(default=["int8"], min_length=1)
    op_types: list[DynamicOps] = Field(default=["matmul_gather"], min_length=1)
    keep_fp32: list[Fp32Group] = Field(default=["none"], min_length=1)

    def sample(self, trial: optuna.Trial) -> DynamicQuantization:
        return DynamicQuantization(**_choices(trial, "dynamic", self))


class StaticSpace(Strict):
    """Defaults from benchmarks/RESULTS.md: signed activations ran slower than FP32 on x86, and
    ONNX Runtime's entropy calibration (128 bins) chose MinMax's ranges."""

    format: list[StaticFormat] = Field(default=["qdq", "qoperator"], min_length=1)
    calibration: list[Calibration] = Field(default=["minmax", "percentile"], min_length=1)
    activation_type: list[IntType] = Field(default=["uint8"], min_length=1)
    per_channel: list[bool] = Field(default=[False, True], min_length=1)
    op_types: list[StaticOps] = Field(default=["matmul_gather", "all"], min_length=1)
    keep_fp32: list[Fp32Group] = Field(default=["none", "ffn_output"], min_length=1)

    def sample(self, trial: optuna.Trial) -> StaticQuantization:
        return StaticQuantization(**_choices(trial, "static", self))


class NncfSpace(Strict):
    """Defaults from benchmarks/RESULTS.md: without its transformer type NNCF was no faster and
    less accurate."""

    preset: list[NncfPreset] = Field(default=["performance", "mixed"], min_length=1)
    transformer: list[bool] = Field(default=[True], min_length=1)
    smooth_quant: list[bool] = Field(default=[False, True], min_length=1)
    smooth_quant_alpha: FloatRange = FloatRange(low=0.5, high=0.95, step=0.15)
    keep_fp32: list[Fp32Group] = Field(default=["none", "ffn_output"], min_length=1)

    def sample(self, trial: optuna.Trial) -> NncfQuantization:
        preset = suggest_choice(trial, "quantization.nncf.preset", self.preset)
        transformer = suggest_choice(trial, "quantization.nncf.transformer", self.transformer)
        alpha = None
        # NNCF applies SmoothQuant only with its transformer model type.
        if transformer and suggest_choice(trial, "quantization.nncf.smooth_quant",
                                          self.smooth_quant):
            alpha = self.smooth_quant_alpha.suggest(trial, "quantization.nncf.smooth_quant_alpha")
        return NncfQuantization(
            preset=preset, transformer=transformer, smooth_quant_alpha=alpha,
            keep_fp32=suggest_choice(trial, "quantization.nncf.keep_fp32", self.keep_fp32),
        )


class Int4Space(Strict):
    """Not a default scheme: a config lists ``int4`` to search it. Embedding tables are quantized
    by default: with FP32 embeddings the file stays over 50 MB on the default task."""

    block_size: list[BlockSize] = Field(default=[32, 128], min_length=1)
    symmetric: list[bool] = Field(default=[False, True], min_length=1)
    accuracy_level: list[AccuracyLevel] = Field(default=[4], min_length=1)
    op_types: list[DynamicOps] = Field(default=["matmul_gather"], min_length=1)

    def sample(self, trial: optuna.Trial) -> Int4Quantization:
        return Int4Quantization(**_choices(trial, "int4", self))


class QuantizationSpace(SlotSpace):
    """The ``space.quantization`` section: the schemes searched, and a section per scheme
    (``dynamic``, ``static``, ``nncf``, ``qat``, ``int4``)."""

    slot: ClassVar = "quantization"
    choice: ClassVar = "schemes"
    schemes: list[str] = Field(default=["none", "dynamic", "static", "nncf", "qat"],
                               min_length=1)

    @model_serializer(mode="wrap")
    def _int4_unstored_unless_chosen(self, handler: SerializerFunctionWrapHandler,
                                     ) -> dict[str, object]:
        """int4 came after studies were stored: its section, at its defaults and not chosen, is
        left out of the dump, so that those configs keep their fingerprints."""
        section = self.section("int4")
        return without_default(handler(self), "int4",
                               "int4" not in self.schemes and section == type(section)())
