"""ONNX-TensorRT's published operator support, as data: which operators and data types the
TensorRT ONNX parser takes, per release, and the restrictions it states on operator inputs.

Sources (the parser's own repository, github.com/onnx/onnx-tensorrt):

- TensorRT 8.6: ``docs/operators.md`` at the 8.6-GA release ("supports operators up to Opset 17";
  the importer, ``ModelImporter.cpp``, warns below opset 7).
- TensorRT 10.x: ``docs/operators.md`` at the 10.1-GA release ("inclusive range of opset 9 to
  opset 20"), the last published matrix before 10.3, the default target (JetPack 6), brought to 10.3
  with the parser's ``CHANGELOG.md`` (10.2: importer fixes only; 10.3: ``Slice`` takes tensor
  ``axes``). Later 10.x releases only widened support (10.4: tensor ``axes`` for ``Pad``; 10.7:
  dynamic ``axes`` for ``Squeeze``); those steps are recorded below with the release that made
  them, so any 10.x target is judged by what it accepts. Types the matrix added after 10.3 (FP4 in
  10.8) are not listed: checking against this table errs on the safe side for later releases.

The tables are transcribed from the matrix (operator name, then its "Supported Types"), with two
obvious typos of the 10.1 file corrected (``INF64`` for INT64, a doubled comma). Operators the
matrix marks "N" are left out. Where the 8.6 importer is laxer than its matrix (it builds
``ConstantOfShape`` of any type but UINT8, the matrix lists FP32), the matrix is kept: it is what
NVIDIA states as supported.

Torch-free, TensorRT-free and onnx-free (plain data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from packaging.version import Version

from restorekit.errors import ExportError
from restorekit.tensorrt.versions import parse_trt_version

# ONNX ``TensorProto`` data type names -> the names the matrix uses. TensorRT's FP8 is E4M3.
MATRIX_TYPE_NAMES = MappingProxyType(
    {
        "FLOAT": "FP32",
        "FLOAT16": "FP16",
        "BFLOAT16": "BF16",
        "DOUBLE": "DOUBLE",
        "INT32": "INT32",
        "INT64": "INT64",
        "INT8": "INT8",
        "UINT8": "UINT8",
        "BOOL": "BOOL",
        "FLOAT8E4M3FN": "FP8",
        "INT4": "INT4",
    }
)


@dataclass(frozen=True)
class ConstantInput:
    """An operator input the parser needs as a constant (an initializer or a ``Constant``).

    Attributes:
        index: the input's position in the ONNX node.
        name: the input's name in the ONNX specification.
        until: the first release that accepts a tensor there (``None``: none does yet).
    """

    index: int
    name: str
    until: Version | None = None


@dataclass(frozen=True)
class SupportMatrix:
    """What one TensorRT release's ONNX parser supports.

    Attributes:
        release: the release the tables describe (``"8.6"``, ``"10.3"``).
        source: where the tables come from.
        opset_min, opset_max: the default-domain opsets the release supports (inclusive).
        data_types: the ONNX data types TensorRT takes at all (matrix names).
        operators: supported operator -> the data types the matrix lists for it.
        quantized_types: what ``DequantizeLinear`` reads and ``QuantizeLinear`` writes.
        narrowed_types: types the parser casts down on import (DOUBLE -> FP32 in every release,
            INT64 -> INT32 in 8.6), judged as the type they become.
        io_only_types: types allowed only as network inputs/outputs (UINT8 in 10.x).
        constant_inputs: operator -> inputs that must be constants.
        zero_point_required: the INT8 Q/DQ importer reads a third input unconditionally (8.6).
        fp32_scales_only: the Q/DQ importer reads constant scales as float32 (8.6).
        blocked_scales: Q/DQ scales may be blocked (rank of the input, one blocked axis) (10.x).
        pool_dilations_must_be_one: pooling refuses ``dilations`` other than ones (10.x matrix).
        layer_norm_single_output: only ``Y`` of ``LayerNormalization`` is supported (10.x).
        einsum_ellipsis: ``...`` in Einsum equations is supported (10.x; the 8.6 matrix refuses
            ellipsis and diagonal terms).
        constant_sparse_or_strings_refused: ``Constant`` refuses ``sparse_value`` and
            ``value_string(s)`` (10.x matrix).
    """

    release: str
    source: str
    opset_min: int
    opset_max: int
    data_types: frozenset[str]
    operators: Mapping[str, frozenset[str]]
    quantized_types: frozenset[str]
    narrowed_types: Mapping[str, str]
    io_only_types: frozenset[str] = frozenset()
    constant_inputs: Mapping[str, tuple[ConstantInput, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    zero_point_required: bool = False
    fp32_scales_only: bool = False
    blocked_scales: bool = False
    pool_dilations_must_be_one: bool = False
    layer_norm_single_output: bool = False
    einsum_ellipsis: bool = False
    constant_sparse_or_strings_refused: bool = False


def _table(text: str) -> Mapping[str, frozenset[str]]:
    rows = (line.split() for line in text.strip().splitlines())
    return MappingProxyType({name: frozenset(types) for name, *types in rows})


# TensorRT 8.6-GA, docs/operators.md: operator, supported types.
_OPERATORS_8_6 = """
    Abs                       FP32 FP16 INT32
    Acos                      FP32 FP16
    Acosh                     FP32 FP16
    Add                       FP32 FP16 INT32
    And                       BOOL
    ArgMax                    FP32 FP16 INT32
    ArgMin                    FP32 FP16 INT32
    Asin                      FP32 FP16
    Asinh                     FP32 FP16
    Atan                      FP32 FP16
    Atanh                     FP32 FP16
    AveragePool               FP32 FP16 INT8 INT32
    BatchNormalization        FP32 FP16
    Cast                      FP32 FP16 INT32 INT8 UINT8 BOOL
    Ceil                      FP32 FP16
    Celu                      FP32 FP16
    Clip                      FP32 FP16 INT8
    Concat                    FP32 FP16 INT32 INT8 BOOL
    Constant                  FP32 FP16 INT32 INT8 BOOL
    ConstantOfShape           FP32
    Conv                      FP32 FP16 INT8
    ConvTranspose             FP32 FP16 INT8
    Cos                       FP32 FP16
    Cosh                      FP32 FP16
    CumSum                    FP32 FP16
    DepthToSpace              FP32 FP16 INT32
    DequantizeLinear          INT8
    Div                       FP32 FP16 INT32
    Dropout                   FP32 FP16
    Einsum                    FP32 FP16
    Elu                       FP32 FP16 INT8
    Equal                     FP32 FP16 INT32
    Erf                       FP32 FP16
    Exp                       FP32 FP16
    Expand                    FP32 FP16 INT32 BOOL
    EyeLike                   FP32 FP16 INT32 BOOL
    Flatten                   FP32 FP16 INT32 BOOL
    Floor                     FP32 FP16
    Gather                    FP32 FP16 INT8 INT32 BOOL
    GatherElements            FP32 FP16 INT8 INT32 BOOL
    GatherND                  FP32 FP16 INT8 INT32 BOOL
    Gemm                      FP32 FP16 INT8
    GlobalAveragePool         FP32 FP16 INT8
    GlobalLpPool              FP32 FP16 INT8
    GlobalMaxPool             FP32 FP16 INT8
    Greater                   FP32 FP16 INT32
    GreaterOrEqual            FP32 FP16 INT32
    GridSample                FP32 FP16
    GroupNormalization        FP32 FP16
    GRU                       FP32 FP16
    HardSwish                 FP32 FP16 INT8
    HardSigmoid               FP32 FP16 INT8
    Identity                  FP32 FP16 INT32 INT8 BOOL
    If                        FP32 FP16 INT32 BOOL
    ImageScaler               FP32 FP16
    InstanceNormalization     FP32 FP16
    IsInf                     FP32 FP16
    IsNaN                     FP32 FP16 INT32
    LayerNormalization        FP32 FP16
    LeakyRelu                 FP32 FP16 INT8
    Less                      FP32 FP16 INT32
    LessOrEqual               FP32 FP16 INT32
    Log                       FP32 FP16
    LogSoftmax                FP32 FP16
    Loop                      FP32 FP16 INT32 BOOL
    LRN                       FP32 FP16
    LSTM                      FP32 FP16
    LpNormalization           FP32 FP16
    LpPool                    FP32 FP16 INT8
    MatMul                    FP32 FP16
    Max                       FP32 FP16 INT32
    MaxPool                   FP32 FP16 INT8
    Mean                      FP32 FP16 INT32
    MeanVarianceNormalization FP32 FP16
    Min                       FP32 FP16 INT32
    Mod                       FP32 FP16 INT32
    Mul                       FP32 FP16 INT32
    Neg                       FP32 FP16 INT32
    NonMaxSuppression         FP32 FP16
    NonZero                   FP32 FP16
    Not                       BOOL
    OneHot                    FP32 FP16 INT32 BOOL
    Or                        BOOL
    Pad                       FP32 FP16 INT8 INT32
    ParametricSoftplus        FP32 FP16 INT8
    Pow                       FP32 FP16
    PRelu                     FP32 FP16 INT8
    QuantizeLinear            FP32 FP16
    RandomNormal              FP32 FP16
    RandomNormalLike          FP32 FP16
    RandomUniform             FP32 FP16
    RandomUniformLike         FP32 FP16
    Range                     FP32 FP16 INT32
    Reciprocal                FP32 FP16
    ReduceL1                  FP32 FP16
    ReduceL2                  FP32 FP16
    ReduceLogSum              FP32 FP16
    ReduceLogSumExp           FP32 FP16
    ReduceMax                 FP32 FP16
    ReduceMean                FP32 FP16
    ReduceMin                 FP32 FP16
    ReduceProd                FP32 FP16
    ReduceSum                 FP32 FP16
    ReduceSumSquare           FP32 FP16
    Relu                      FP32 FP16 INT8
    Reshape                   FP32 FP16 INT32 INT8 BOOL
    Resize                    FP32 FP16
    ReverseSequence           FP32 FP16 INT32 INT8 BOOL
    RNN                       FP32 FP16
    RoiAlign                  FP32 FP16
    Round                     FP32 FP16 INT8
    ScaledTanh                FP32 FP16 INT8
    Scan                      FP32 FP16
    Scatter                   FP32 FP16 INT8 INT32
    ScatterElements           FP32 FP16 INT8 INT32
    ScatterND                 FP32 FP16 INT8 INT32
    Selu                      FP32 FP16 INT8
    Shape                     FP32 FP16 INT32 INT8 BOOL
    Shrink                    FP32 FP16 INT32
    Sigmoid                   FP32 FP16 INT8
    Sign                      FP32 FP16 INT8 INT32
    Sin                       FP32 FP16
    Sinh                      FP32 FP16
    Size                      FP32 FP16 INT32 INT8 BOOL
    Slice                     FP32 FP16 INT32 INT8 BOOL
    Softmax                   FP32 FP16
    Softplus                  FP32 FP16 INT8
    Softsign                  FP32 FP16 INT8
    SpaceToDepth              FP32 FP16 INT32
    Split                     FP32 FP16 INT32 BOOL
    Sqrt                      FP32 FP16
    Squeeze                   FP32 FP16 INT32 INT8 BOOL
    Sub                       FP32 FP16 INT32
    Sum                       FP32 FP16 INT32
    Tan                       FP32 FP16
    Tanh                      FP32 FP16 INT8
    ThresholdedRelu           FP32 FP16 INT8
    Tile                      FP32 FP16 INT32 BOOL
    TopK                      FP32 FP16 INT32
    Transpose                 FP32 FP16 INT32 INT8 BOOL
    Trilu                     FP32 FP16 INT32 INT8 BOOL
    Unsqueeze                 FP32 FP16 INT32 INT8 BOOL
    Upsample                  FP32 FP16
    Where                     FP32 FP16 INT32 BOOL
    Xor                       BOOL
"""

# TensorRT 10.1-GA, docs/operators.md (10.3 has the same table): operator, supported types.
_OPERATORS_10 = """
    Abs                       FP32 FP16 BF16 INT32 INT64
    Acos                      FP32 FP16 BF16
    Acosh                     FP32 FP16 BF16
    Add                       FP32 FP16 BF16 INT32 INT64
    And                       BOOL
    ArgMax                    FP32 FP16 BF16 INT32 INT64
    ArgMin                    FP32 FP16 BF16 INT32 INT64
    Asin                      FP32 FP16 BF16
    Asinh                     FP32 FP16 BF16
    Atan                      FP32 FP16 BF16
    Atanh                     FP32 FP16 BF16
    AveragePool               FP32 FP16 BF16
    BatchNormalization        FP32 FP16 BF16
    Cast                      FP32 FP16 BF16 INT32 INT64 UINT8 BOOL
    CastLike                  FP32 FP16 BF16 INT32 INT64 UINT8 BOOL
    Ceil                      FP32 FP16 BF16
    Celu                      FP32 FP16 BF16
    Clip                      FP32 FP16 BF16
    Concat                    FP32 FP16 BF16 INT32 INT64 BOOL
    Constant                  FP32 FP16 BF16 INT32 INT64 BOOL
    ConstantOfShape           FP32 FP16 BF16 INT32 INT64 BOOL
    Conv                      FP32 FP16 BF16
    ConvTranspose             FP32 FP16 BF16
    Cos                       FP32 FP16 BF16
    Cosh                      FP32 FP16 BF16
    CumSum                    FP32 FP16 BF16
    DeformConv                FP32 FP16
    DepthToSpace              FP32 FP16 BF16 INT32 INT64
    DequantizeLinear          INT8 FP8 INT4
    Div                       FP32 FP16 BF16 INT32 INT64
    Dropout                   FP32 FP16 BF16
    Einsum                    FP32 FP16 BF16
    Elu                       FP32 FP16 BF16
    Equal                     FP32 FP16 BF16 INT32 INT64
    Erf                       FP32 FP16 BF16
    Exp                       FP32 FP16 BF16
    Expand                    FP32 FP16 BF16 INT32 INT64 BOOL
    EyeLike                   FP32 FP16 BF16 INT32 INT64 BOOL
    Flatten                   FP32 FP16 BF16 INT32 INT64 BOOL
    Floor                     FP32 FP16 BF16
    Gather                    FP32 FP16 BF16 INT32 INT64 BOOL
    GatherElements            FP32 FP16 BF16 INT32 INT64 BOOL
    GatherND                  FP32 FP16 BF16 INT32 INT64 BOOL
    Gelu                      FP32 FP16 BF16 INT8 INT32 INT64
    Gemm                      FP32 FP16 BF16
    GlobalAveragePool         FP32 FP16 BF16
    GlobalLpPool              FP32 FP16 BF16
    GlobalMaxPool             FP32 FP16 BF16
    Greater                   FP32 FP16 BF16 INT32 INT64
    GreaterOrEqual            FP32 FP16 BF16 INT32 INT64
    GridSample                FP32 FP16
    GroupNormalization        FP32 FP16 BF16
    GRU                       FP32 FP16 BF16
    HardSigmoid               FP32 FP16 BF16
    HardSwish                 FP32 FP16 BF16
    Hardmax                   FP32 FP16 BF16
    Identity                  FP32 FP16 BF16 INT32 INT64 BOOL
    If                        FP32 FP16 BF16 INT32 INT64 BOOL
    ImageScaler               FP32 FP16 BF16
    InstanceNormalization     FP32 FP16 BF16
    IsInf                     FP32 FP16 BF16
    IsNaN                     FP32 FP16 BF16 INT32 INT64
    LayerNormalization        FP32 FP16 BF16
    LeakyRelu                 FP32 FP16 BF16
    Less                      FP32 FP16 BF16 INT32 INT64
    LessOrEqual               FP32 FP16 BF16 INT32 INT64
    Log                       FP32 FP16 BF16
    LogSoftmax                FP32 FP16 BF16
    Loop                      FP32 FP16 BF16 INT32 INT64 BOOL
    LRN                       FP32 FP16 BF16
    LSTM                      FP32 FP16 BF16
    LpNormalization           FP32 FP16 BF16
    LpPool                    FP32 FP16 BF16
    MatMul                    FP32 FP16 BF16
    Max                       FP32 FP16 BF16 INT32 INT64
    MaxPool                   FP32 FP16 BF16
    Mean                      FP32 FP16 BF16 FP8 INT32 INT64
    MeanVarianceNormalization FP32 FP16 BF16
    Min                       FP32 FP16 BF16 INT32 INT64
    Mish                      FP32 FP16
    Mod                       FP32 FP16 BF16 INT32 INT64
    Mul                       FP32 FP16 BF16 INT32 INT64
    Neg                       FP32 FP16 BF16 INT32 INT64
    NonMaxSuppression         FP32 FP16
    NonZero                   FP32 FP16
    Not                       BOOL
    OneHot                    FP32 FP16 BF16 INT32 INT64 BOOL
    Or                        BOOL
    Pad                       FP32 FP16 BF16 INT32 INT64
    ParametricSoftplus        FP32 FP16 BF16
    Pow                       FP32 FP16 BF16
    PRelu                     FP32 FP16 BF16
    QuantizeLinear            FP32 FP16 BF16
    RandomNormal              FP32 FP16 BF16
    RandomNormalLike          FP32 FP16 BF16
    RandomUniform             FP32 FP16 BF16
    RandomUniformLike         FP32 FP16 BF16
    Range                     FP32 FP16 BF16 INT32 INT64
    Reciprocal                FP32 FP16 BF16
    ReduceL1                  FP32 FP16 BF16 INT32 INT64
    ReduceL2                  FP32 FP16 BF16 INT32 INT64
    ReduceLogSum              FP32 FP16 BF16 INT32 INT64
    ReduceLogSumExp           FP32 FP16 BF16 INT32 INT64
    ReduceMax                 FP32 FP16 BF16 INT32 INT64
    ReduceMean                FP32 FP16 BF16 INT32 INT64
    ReduceMin                 FP32 FP16 BF16 INT32 INT64
    ReduceProd                FP32 FP16 BF16 INT32 INT64
    ReduceSum                 FP32 FP16 BF16 INT32 INT64
    ReduceSumSquare           FP32 FP16 BF16 INT32 INT64
    Relu                      FP32 FP16 BF16 INT32 INT64
    Reshape                   FP32 FP16 BF16 INT32 INT64 BOOL
    Resize                    FP32 FP16 BF16
    ReverseSequence           FP32 FP16 BF16 INT32 INT64 BOOL
    RNN                       FP32 FP16 BF16
    RoiAlign                  FP32 FP16
    Round                     FP32 FP16 BF16
    ScaledTanh                FP32 FP16 BF16
    Scan                      FP32 FP16 BF16
    Scatter                   FP32 FP16 BF16 INT32 INT64
    ScatterElements           FP32 FP16 BF16 INT32 INT64
    ScatterND                 FP32 FP16 BF16 INT32 INT64
    Selu                      FP32 FP16 BF16
    Shape                     FP32 FP16 BF16 INT32 INT64 BOOL
    Shrink                    FP32 FP16 BF16 INT32 INT64
    Sigmoid                   FP32 FP16 BF16
    Sign                      FP32 FP16 BF16 INT32 INT64
    Sin                       FP32 FP16 BF16
    Sinh                      FP32 FP16 BF16
    Size                      FP32 FP16 BF16 INT32 INT64 BOOL
    Slice                     FP32 FP16 BF16 INT32 INT64 BOOL
    Softmax                   FP32 FP16 BF16
    Softplus                  FP32 FP16 BF16
    Softsign                  FP32 FP16 BF16
    SpaceToDepth              FP32 FP16 BF16 INT32 INT64
    Split                     FP32 FP16 BF16 INT32 INT64 BOOL
    Sqrt                      FP32 FP16 BF16
    Squeeze                   FP32 FP16 BF16 INT32 INT64 BOOL
    Sub                       FP32 FP16 BF16 INT32 INT64
    Sum                       FP32 FP16 BF16 INT32 INT64
    Tan                       FP32 FP16 BF16
    Tanh                      FP32 FP16 BF16
    ThresholdedRelu           FP32 FP16 BF16
    Tile                      FP32 FP16 BF16 INT32 INT64 BOOL
    TopK                      FP32 FP16 BF16 INT32 INT64
    Transpose                 FP32 FP16 BF16 INT32 INT64 BOOL
    Trilu                     FP32 FP16 BF16 INT32 INT64 BOOL
    Unsqueeze                 FP32 FP16 BF16 INT32 INT64 BOOL
    Upsample                  FP32 FP16 BF16
    Where                     FP32 FP16 BF16 INT32 INT64 BOOL
    Xor                       BOOL
"""

# Reductions whose ``axes`` moved from an attribute to input 1 (ReduceSum at opset 13, the others
# at 18): both importers take only constant axes ("Axis input must be an initializer!").
_REDUCE_AXES = {
    op: (ConstantInput(1, "axes"),)
    for op in (
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
    )
}  # fmt: skip

MATRIX_8_6 = SupportMatrix(
    release="8.6",
    source="onnx/onnx-tensorrt release 8.6-GA, docs/operators.md and builtin_op_importers.cpp",
    opset_min=7,
    opset_max=17,
    # "DOUBLE, FLOAT32, FLOAT16, INT8, and BOOL", "limited support for INT32, INT64"; UINT8 for Cast.
    data_types=frozenset({"DOUBLE", "FP32", "FP16", "INT8", "BOOL", "INT32", "INT64", "UINT8"}),
    operators=_table(_OPERATORS_8_6),
    quantized_types=frozenset({"INT8"}),
    narrowed_types=MappingProxyType({"DOUBLE": "FP32", "INT64": "INT32"}),
    constant_inputs=MappingProxyType(
        {
            "Slice": (ConstantInput(3, "axes"),),
            "Squeeze": (ConstantInput(1, "axes"),),
            "Unsqueeze": (ConstantInput(1, "axes"),),
            "CumSum": (ConstantInput(1, "axis"),),
            **_REDUCE_AXES,
        }
    ),
    zero_point_required=True,
    fp32_scales_only=True,
)

MATRIX_10 = SupportMatrix(
    release="10.3",
    source="onnx/onnx-tensorrt release 10.1-GA docs/operators.md and onnxOpImporters.cpp, "
    "CHANGELOG.md to 10.7",
    opset_min=9,
    opset_max=20,
    # "DOUBLE, FLOAT32, FLOAT16, BFLOAT16, INT32, INT64, FP8, INT8, INT4, UINT8, and BOOL"
    data_types=frozenset(
        {"DOUBLE", "FP32", "FP16", "BF16", "INT32", "INT64", "FP8", "INT8", "INT4", "UINT8", "BOOL"}
    ),
    operators=_table(_OPERATORS_10),
    quantized_types=frozenset({"INT8", "FP8", "INT4"}),
    narrowed_types=MappingProxyType({"DOUBLE": "FP32"}),
    io_only_types=frozenset({"UINT8"}),
    constant_inputs=MappingProxyType(
        {
            "Slice": (ConstantInput(3, "axes", until=Version("10.3")),),
            "Pad": (ConstantInput(3, "axes", until=Version("10.4")),),
            "Squeeze": (ConstantInput(1, "axes", until=Version("10.7")),),
            "Unsqueeze": (ConstantInput(1, "axes"),),
            "CumSum": (ConstantInput(1, "axis"),),
            **_REDUCE_AXES,
        }
    ),
    blocked_scales=True,
    pool_dilations_must_be_one=True,
    layer_norm_single_output=True,
    einsum_ellipsis=True,
    constant_sparse_or_strings_refused=True,
)


def matrix_for(trt_version: str) -> SupportMatrix:
    """The support tables that apply to a TensorRT release.

    Raises:
        EngineBuildError: the version text is not a version.
        ExportError: no published matrix is encoded for that release (only 8.6 and 10.x are).
    """
    version = parse_trt_version(trt_version)
    if version.release[:2] == (8, 6):
        return MATRIX_8_6
    if version.major == 10:
        return MATRIX_10
    raise ExportError(
        f"no ONNX-TensorRT support matrix is encoded for TensorRT {trt_version}; check against "
        "8.6 or 10.x (e.g. trt_version='10.3', what JetPack 6 ships)"
    )
