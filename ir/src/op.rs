//! Operators: one enum, typed attributes. Operand conventions follow the latest ONNX form of each
//! operator (attributes that later opsets turned into inputs, such as Reshape's shape or Squeeze's
//! axes, are inputs here; the importer turns old-opset attributes into constant inputs).
//! This file owns op identity and attributes; semantics (shape rules) live in `infer.rs`.

use crate::dtype::DType;
use crate::tensor::Tensor;

/// How a convolution or pool pads when `auto_pad` is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Geometry shared by convolutions and pools. Vectors have one entry per spatial axis;
/// `pads` is `[begin_0, begin_1, .., end_0, end_1, ..]` as in ONNX.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvGeom {
    /// Empty means "from the weight shape" (conv) — pools always set it.
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub auto_pad: AutoPad,
}

impl ConvGeom {
    /// Strides, or 1 per spatial axis when the model left them out.
    pub fn strides_or_ones(&self, n: usize) -> Vec<usize> {
        if self.strides.is_empty() {
            vec![1; n]
        } else {
            self.strides.clone()
        }
    }
    /// Dilations, or 1 per spatial axis when the model left them out.
    pub fn dilations_or_ones(&self, n: usize) -> Vec<usize> {
        if self.dilations.is_empty() {
            vec![1; n]
        } else {
            self.dilations.clone()
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvAttrs {
    pub geom: ConvGeom,
    pub group: usize,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvTransposeAttrs {
    pub geom: ConvGeom,
    pub group: usize,
    pub output_padding: Vec<usize>,
    pub output_shape: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolAttrs {
    pub geom: ConvGeom,
    pub ceil_mode: bool,
    /// AveragePool only.
    pub count_include_pad: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum UnaryOp {
    Abs,
    Neg,
    Sqrt,
    Exp,
    Log,
    Reciprocal,
    Relu,
    Sigmoid,
    Tanh,
    Erf,
    Floor,
    Ceil,
    Round,
    Sign,
    Not,
    Softplus,
    Softsign,
    HardSwish,
    Sin,
    Cos,
    IsNaN,
    Identity,
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ActOp {
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Celu {
        alpha: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    ThresholdedRelu {
        alpha: f32,
    },
    /// `approximate`: false = erf form, true = tanh form.
    Gelu {
        tanh: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// `fmod` false: integer modulo with the divisor's sign; true: C fmod.
    Mod {
        fmod: bool,
    },
    PRelu,
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    /// Comparison and logic ops produce bool.
    pub fn is_predicate(self) -> bool {
        use BinaryOp::*;
        matches!(
            self,
            Equal | Less | Greater | LessOrEqual | GreaterOrEqual | And | Or | Xor
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum VariadicOp {
    Min,
    Max,
    Sum,
    Mean,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReduceOp {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    SumSquare,
    L1,
    L2,
    LogSum,
    LogSumExp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CoordTransform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord: CoordTransform,
    pub nearest: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    /// Axes the scales/sizes refer to (empty = all).
    pub axes: Vec<i64>,
    pub keep_aspect_ratio_policy: String,
}

/// An operator with its typed attributes. Inputs are edges of the graph, by slot.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// A graph input. No operands.
    Input,
    /// A constant (initializer or folded value). No operands.
    Const(Tensor),

    // --- elementwise
    Unary(UnaryOp),
    Act(ActOp),
    /// Operands: X, min (optional), max (optional).
    Clip,
    Binary(BinaryOp),
    /// One or more operands.
    Variadic(VariadicOp),
    /// Operands: condition, X, Y.
    Where,
    Cast {
        to: DType,
    },
    /// Operands: X, target (whose dtype is taken).
    CastLike,

    // --- linear algebra
    /// Operands: X, W, B (optional).
    Conv(ConvAttrs),
    /// Operands: X, W, B (optional).
    ConvTranspose(ConvTransposeAttrs),
    /// Operands: A, B, C (optional).
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    Einsum {
        equation: String,
    },

    // --- normalisation and softmax
    /// `legacy`: opset < 13 semantics (coerce to 2-D at `axis`).
    Softmax {
        axis: i64,
        legacy: bool,
    },
    LogSoftmax {
        axis: i64,
        legacy: bool,
    },
    Hardmax {
        axis: i64,
        legacy: bool,
    },
    /// Operands: X, scale, B (optional).
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    /// Operands: X, scale, B, mean, var.
    BatchNorm {
        epsilon: f32,
    },
    /// Operands: X, scale, B.
    InstanceNorm {
        epsilon: f32,
    },
    Lrn {
        alpha: f32,
        beta: f32,
        bias: f32,
        size: usize,
    },

    // --- pooling
    MaxPool(PoolAttrs),
    AveragePool(PoolAttrs),
    LpPool {
        attrs: PoolAttrs,
        p: f32,
    },
    GlobalAveragePool,
    GlobalMaxPool,

    // --- shape and data movement
    Flatten {
        axis: i64,
    },
    /// Operands: data, shape.
    Reshape {
        allowzero: bool,
    },
    /// `perm` empty means reverse.
    Transpose {
        perm: Vec<usize>,
    },
    /// Operands: data, axes (optional).
    Squeeze,
    /// Operands: data, axes.
    Unsqueeze,
    Concat {
        axis: i64,
    },
    /// Operands: X, split sizes (optional). `num_outputs` outputs.
    Split {
        axis: i64,
        num_outputs: usize,
    },
    /// Operands: data, starts, ends, axes (opt), steps (opt).
    Slice,
    Gather {
        axis: i64,
    },
    GatherElements {
        axis: i64,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Size,
    /// Operands: input, shape.
    Expand,
    /// Operands: input, repeats.
    Tile,
    /// Operands: data, axes (optional).
    Reduce {
        op: ReduceOp,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    ArgMax {
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    ArgMin {
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    /// Operand: shape. `value` is a one-element tensor giving dtype and fill value.
    ConstantOfShape {
        value: Tensor,
    },
    /// Operands: start, limit, delta.
    Range,
    /// Operands: data, pads, constant_value (optional), axes (optional).
    Pad {
        mode: PadMode,
    },
    /// Operands: X, roi (optional), scales (optional), sizes (optional).
    Resize(ResizeAttrs),
    DepthToSpace {
        blocksize: usize,
        crd: bool,
    },
    SpaceToDepth {
        blocksize: usize,
        crd: bool,
    },
    /// Operands: X, k. Outputs: values, indices.
    TopK {
        axis: i64,
        largest: bool,
        sorted: bool,
    },
    CumSum {
        exclusive: bool,
        reverse: bool,
    },
    /// Operands: input. `k` diagonal offset given as an optional second input.
    Trilu {
        upper: bool,
    },

    // --- quantization
    /// Operands: x, y_scale, y_zero_point (optional; its dtype is the output dtype).
    QuantizeLinear {
        axis: i64,
        saturate: bool,
        out_dtype: Option<DType>,
    },
    /// Operands: x, x_scale, x_zero_point (optional).
    DequantizeLinear {
        axis: i64,
    },
    /// Outputs y (u8), y_scale, y_zero_point.
    DynamicQuantizeLinear,
    /// Operands: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B (optional).
    QLinearConv(ConvAttrs),
    /// Operands: a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp.
    QLinearMatMul,
    /// Operands: A, B, a_zero_point (opt), b_zero_point (opt). Output i32.
    MatMulInteger,
    /// Operands: x, w, x_zero_point (opt), w_zero_point (opt). Output i32.
    ConvInteger(ConvAttrs),
    /// com.microsoft. Operands: X, x_scale, x_zp, y_scale, y_zp.
    QLinearGlobalAveragePool {
        channels_last: bool,
    },
    /// com.microsoft QGemm. Operands: A, a_scale, a_zp, B, b_scale, b_zp, C (opt),
    /// y_scale (opt), y_zp (opt). Without y_scale the output is f32.
    QGemm {
        alpha: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// com.microsoft. Operands: A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp.
    QLinearBinary(BinaryOp),
}

impl Op {
    /// Stable name, the ONNX op type where there is one.
    pub fn name(&self) -> &'static str {
        use Op::*;
        match self {
            Input => "Input",
            Const(_) => "Const",
            Unary(u) => match u {
                UnaryOp::Abs => "Abs",
                UnaryOp::Neg => "Neg",
                UnaryOp::Sqrt => "Sqrt",
                UnaryOp::Exp => "Exp",
                UnaryOp::Log => "Log",
                UnaryOp::Reciprocal => "Reciprocal",
                UnaryOp::Relu => "Relu",
                UnaryOp::Sigmoid => "Sigmoid",
                UnaryOp::Tanh => "Tanh",
                UnaryOp::Erf => "Erf",
                UnaryOp::Floor => "Floor",
                UnaryOp::Ceil => "Ceil",
                UnaryOp::Round => "Round",
                UnaryOp::Sign => "Sign",
                UnaryOp::Not => "Not",
                UnaryOp::Softplus => "Softplus",
                UnaryOp::Softsign => "Softsign",
                UnaryOp::HardSwish => "HardSwish",
                UnaryOp::Sin => "Sin",
                UnaryOp::Cos => "Cos",
                UnaryOp::IsNaN => "IsNaN",
                UnaryOp::Identity => "Identity",
            },
            Act(a) => match a {
                ActOp::LeakyRelu { .. } => "LeakyRelu",
                ActOp::Elu { .. } => "Elu",
                ActOp::Selu { .. } => "Selu",
                ActOp::Celu { .. } => "Celu",
                ActOp::HardSigmoid { .. } => "HardSigmoid",
                ActOp::ThresholdedRelu { .. } => "ThresholdedRelu",
                ActOp::Gelu { .. } => "Gelu",
            },
            Clip => "Clip",
            Binary(b) => binary_name(*b),
            Variadic(v) => match v {
                VariadicOp::Min => "Min",
                VariadicOp::Max => "Max",
                VariadicOp::Sum => "Sum",
                VariadicOp::Mean => "Mean",
            },
            Where => "Where",
            Cast { .. } => "Cast",
            CastLike => "CastLike",
            Conv(_) => "Conv",
            ConvTranspose(_) => "ConvTranspose",
            Gemm { .. } => "Gemm",
            MatMul => "MatMul",
            Einsum { .. } => "Einsum",
            Softmax { .. } => "Softmax",
            LogSoftmax { .. } => "LogSoftmax",
            Hardmax { .. } => "Hardmax",
            LayerNorm { .. } => "LayerNormalization",
            BatchNorm { .. } => "BatchNormalization",
            InstanceNorm { .. } => "InstanceNormalization",
            Lrn { .. } => "LRN",
            MaxPool(_) => "MaxPool",
            AveragePool(_) => "AveragePool",
            LpPool { .. } => "LpPool",
            GlobalAveragePool => "GlobalAveragePool",
            GlobalMaxPool => "GlobalMaxPool",
            Flatten { .. } => "Flatten",
            Reshape { .. } => "Reshape",
            Transpose { .. } => "Transpose",
            Squeeze => "Squeeze",
            Unsqueeze => "Unsqueeze",
            Concat { .. } => "Concat",
            Split { .. } => "Split",
            Slice => "Slice",
            Gather { .. } => "Gather",
            GatherElements { .. } => "GatherElements",
            Shape { .. } => "Shape",
            Size => "Size",
            Expand => "Expand",
            Tile => "Tile",
            Reduce { op, .. } => match op {
                ReduceOp::Mean => "ReduceMean",
                ReduceOp::Sum => "ReduceSum",
                ReduceOp::Max => "ReduceMax",
                ReduceOp::Min => "ReduceMin",
                ReduceOp::Prod => "ReduceProd",
                ReduceOp::SumSquare => "ReduceSumSquare",
                ReduceOp::L1 => "ReduceL1",
                ReduceOp::L2 => "ReduceL2",
                ReduceOp::LogSum => "ReduceLogSum",
                ReduceOp::LogSumExp => "ReduceLogSumExp",
            },
            ArgMax { .. } => "ArgMax",
            ArgMin { .. } => "ArgMin",
            ConstantOfShape { .. } => "ConstantOfShape",
            Range => "Range",
            Pad { .. } => "Pad",
            Resize(_) => "Resize",
            DepthToSpace { .. } => "DepthToSpace",
            SpaceToDepth { .. } => "SpaceToDepth",
            TopK { .. } => "TopK",
            CumSum { .. } => "CumSum",
            Trilu { .. } => "Trilu",
            QuantizeLinear { .. } => "QuantizeLinear",
            DequantizeLinear { .. } => "DequantizeLinear",
            DynamicQuantizeLinear => "DynamicQuantizeLinear",
            QLinearConv(_) => "QLinearConv",
            QLinearMatMul => "QLinearMatMul",
            MatMulInteger => "MatMulInteger",
            ConvInteger(_) => "ConvInteger",
            QLinearGlobalAveragePool { .. } => "QLinearGlobalAveragePool",
            QGemm { .. } => "QGemm",
            QLinearBinary(b) => match b {
                BinaryOp::Add => "QLinearAdd",
                BinaryOp::Mul => "QLinearMul",
                _ => "QLinearBinary",
            },
        }
    }

    /// (required operand count, maximum operand count). `usize::MAX` for variadic.
    pub fn arity(&self) -> (usize, usize) {
        use Op::*;
        match self {
            Input | Const(_) => (0, 0),
            Unary(_) | Act(_) | Cast { .. } => (1, 1),
            Clip => (1, 3),
            Binary(_) | CastLike => (2, 2),
            Variadic(_) => (1, usize::MAX),
            Where => (3, 3),
            Conv(_) | ConvTranspose(_) | Gemm { .. } => (2, 3),
            MatMul => (2, 2),
            Einsum { .. } => (1, usize::MAX),
            Softmax { .. } | LogSoftmax { .. } | Hardmax { .. } | Lrn { .. } => (1, 1),
            LayerNorm { .. } => (2, 3),
            BatchNorm { .. } => (5, 5),
            InstanceNorm { .. } => (3, 3),
            MaxPool(_) | AveragePool(_) | LpPool { .. } | GlobalAveragePool | GlobalMaxPool => {
                (1, 1)
            }
            Flatten { .. } | Transpose { .. } | Shape { .. } | Size => (1, 1),
            Reshape { .. } | Unsqueeze | Expand | Tile => (2, 2),
            Squeeze => (1, 2),
            Concat { .. } => (1, usize::MAX),
            Split { .. } => (1, 2),
            Slice => (3, 5),
            Gather { .. } | GatherElements { .. } => (2, 2),
            Reduce { .. } => (1, 2),
            ArgMax { .. } | ArgMin { .. } => (1, 1),
            ConstantOfShape { .. } => (1, 1),
            Range => (3, 3),
            Pad { .. } => (2, 4),
            Resize(_) => (1, 4),
            DepthToSpace { .. } | SpaceToDepth { .. } => (1, 1),
            TopK { .. } => (2, 2),
            CumSum { .. } => (2, 2),
            Trilu { .. } => (1, 2),
            QuantizeLinear { .. } | DequantizeLinear { .. } => (2, 3),
            DynamicQuantizeLinear => (1, 1),
            QLinearConv(_) => (8, 9),
            QLinearMatMul => (8, 8),
            MatMulInteger | ConvInteger(_) => (2, 4),
            QLinearGlobalAveragePool { .. } => (5, 5),
            QGemm { .. } => (6, 9),
            QLinearBinary(_) => (8, 8),
        }
    }

    /// Number of outputs this op produces.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::Split { num_outputs, .. } => *num_outputs,
            Op::DynamicQuantizeLinear => 3,
            Op::TopK { .. } => 2,
            _ => 1,
        }
    }

    /// Ops whose operands are all read as data but never computed on at run time in a way that
    /// depends on values beyond their shapes (used by folding: Shape/Size need only the type).
    pub fn reads_only_shape(&self) -> bool {
        matches!(self, Op::Shape { .. } | Op::Size)
    }

    /// Conv / Gemm / MatMul / ConvTranspose: the float compute ops quantization targets.
    pub fn is_quantizable_compute(&self) -> bool {
        matches!(
            self,
            Op::Conv(_) | Op::Gemm { .. } | Op::MatMul | Op::ConvTranspose(_)
        )
    }

    /// An op that only appears in a quantized model: it quantizes values or computes on
    /// integers (QDQ, dynamic quantization and QOperator forms).
    pub fn is_quantized_form(&self) -> bool {
        matches!(
            self,
            Op::QuantizeLinear { .. }
                | Op::DynamicQuantizeLinear
                | Op::QLinearConv(_)
                | Op::ConvInteger(_)
                | Op::QLinearMatMul
                | Op::MatMulInteger
                | Op::QGemm { .. }
                | Op::QLinearBinary(_)
                | Op::QLinearGlobalAveragePool { .. }
        )
    }

    /// Attribute summary for the text form, in a stable order.
    pub fn attr_text(&self) -> String {
        use Op::*;
        fn geom(g: &ConvGeom) -> String {
            format!(
                "kernel={:?} strides={:?} pads={:?} dilations={:?} auto_pad={:?}",
                g.kernel_shape, g.strides, g.pads, g.dilations, g.auto_pad
            )
        }
        match self {
            Input | Unary(_) | Clip | Binary(_) | Variadic(_) | Where | CastLike | MatMul => {
                String::new()
            }
            Const(t) => format!("{}{:?}", t.dtype(), t.shape()),
            Act(a) => format!("{a:?}"),
            Cast { to } => format!("to={to}"),
            Conv(a) | QLinearConv(a) | ConvInteger(a) => {
                format!("{} group={}", geom(&a.geom), a.group)
            }
            ConvTranspose(a) => format!(
                "{} group={} output_padding={:?} output_shape={:?}",
                geom(&a.geom),
                a.group,
                a.output_padding,
                a.output_shape
            ),
            Gemm { alpha, beta, trans_a, trans_b } => {
                format!("alpha={alpha} beta={beta} trans_a={trans_a} trans_b={trans_b}")
            }
            Einsum { equation } => format!("equation={equation:?}"),
            Softmax { axis, legacy } | LogSoftmax { axis, legacy } | Hardmax { axis, legacy } => {
                format!("axis={axis} legacy={legacy}")
            }
            LayerNorm { axis, epsilon } => format!("axis={axis} epsilon={epsilon}"),
            BatchNorm { epsilon } | InstanceNorm { epsilon } => format!("epsilon={epsilon}"),
            Lrn { alpha, beta, bias, size } => {
                format!("alpha={alpha} beta={beta} bias={bias} size={size}")
            }
            MaxPool(p) | AveragePool(p) => format!(
                "{} ceil_mode={} count_include_pad={}",
                geom(&p.geom),
                p.ceil_mode,
                p.count_include_pad
            ),
            LpPool { attrs, p } => format!("{} p={p}", geom(&attrs.geom)),
            GlobalAveragePool | GlobalMaxPool | Squeeze | Unsqueeze | Slice | Size | Expand
            | Tile | Range | DynamicQuantizeLinear | QLinearMatMul | MatMulInteger => String::new(),
            Flatten { axis } | Concat { axis } | Gather { axis } | GatherElements { axis } => {
                format!("axis={axis}")
            }
            Reshape { allowzero } => format!("allowzero={allowzero}"),
            Transpose { perm } => format!("perm={perm:?}"),
            Split { axis, num_outputs } => format!("axis={axis} outputs={num_outputs}"),
            Shape { start, end } => format!("start={start} end={end:?}"),
            Reduce { keepdims, noop_with_empty_axes, .. } => {
                format!("keepdims={keepdims} noop_with_empty_axes={noop_with_empty_axes}")
            }
            ArgMax { axis, keepdims, select_last_index }
            | ArgMin { axis, keepdims, select_last_index } => {
                format!("axis={axis} keepdims={keepdims} select_last_index={select_last_index}")
            }
            ConstantOfShape { value } => format!("value={value:?}"),
            Pad { mode } => format!("mode={mode:?}"),
            Resize(r) => format!(
                "mode={:?} coord={:?} nearest={:?} cubic_a={} exclude_outside={} extrapolation={} axes={:?}",
                r.mode, r.coord, r.nearest, r.cubic_coeff_a, r.exclude_outside, r.extrapolation_value, r.axes
            ),
            DepthToSpace { blocksize, crd } => format!("blocksize={blocksize} crd={crd}"),
            SpaceToDepth { blocksize, crd } => format!("blocksize={blocksize} crd={crd}"),
            TopK { axis, largest, sorted } => {
                format!("axis={axis} largest={largest} sorted={sorted}")
            }
            CumSum { exclusive, reverse } => format!("exclusive={exclusive} reverse={reverse}"),
            Trilu { upper } => format!("upper={upper}"),
            QuantizeLinear { axis, saturate, out_dtype } => {
                format!("axis={axis} saturate={saturate} out={out_dtype:?}")
            }
            DequantizeLinear { axis } => format!("axis={axis}"),
            QLinearGlobalAveragePool { channels_last } => format!("channels_last={channels_last}"),
            QGemm { alpha, trans_a, trans_b } => {
                format!("alpha={alpha} trans_a={trans_a} trans_b={trans_b}")
            }
            QLinearBinary(b) => format!("{b:?}"),
        }
    }
}

fn binary_name(b: BinaryOp) -> &'static str {
    use BinaryOp::*;
    match b {
        Add => "Add",
        Sub => "Sub",
        Mul => "Mul",
        Div => "Div",
        Pow => "Pow",
        Mod { .. } => "Mod",
        PRelu => "PRelu",
        Equal => "Equal",
        Less => "Less",
        Greater => "Greater",
        LessOrEqual => "LessOrEqual",
        GreaterOrEqual => "GreaterOrEqual",
        And => "And",
        Or => "Or",
        Xor => "Xor",
    }
}
