//! ONNX node -> octet op, per op type and opset. Attributes that later opsets turned into inputs
//! (Reshape shape, Squeeze axes, Slice starts, Clip min/max, Pad pads, Split sizes, Reduce axes,
//! TopK k, Upsample scales) become constant operands, so the IR has one form per op.

use super::attrs::Attrs;
use super::proto::NodeProto;
use super::tensor::tensor_from_proto;
use octet_ir::*;

/// An operand of the converted node: a tensor name from the model, or a constant made here.
pub enum Arg {
    Name(String),
    Const(Tensor),
}

pub struct Converted {
    pub op: Op,
    pub args: Vec<Option<Arg>>,
}

pub enum ConvertError {
    /// The op (or this use of it) is not supported: the reason.
    Unsupported(String),
    /// The node is malformed.
    Invalid(String),
}

type R<T> = Result<T, ConvertError>;

fn inv<T>(r: Result<T, String>) -> R<T> {
    r.map_err(ConvertError::Invalid)
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_slice(&[v.len()], v)
}

fn geom(a: &Attrs, kernel_required: bool) -> R<ConvGeom> {
    let kernel_shape = inv(a.usizes("kernel_shape"))?;
    if kernel_required && kernel_shape.is_empty() {
        return Err(ConvertError::Invalid(
            "missing required attribute 'kernel_shape'".into(),
        ));
    }
    let auto_pad = match a.string("auto_pad", "NOTSET").as_str() {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        s => return Err(ConvertError::Invalid(format!("unknown auto_pad '{s}'"))),
    };
    let g = ConvGeom {
        kernel_shape,
        strides: inv(a.usizes("strides"))?,
        pads: inv(a.usizes("pads"))?,
        dilations: inv(a.usizes("dilations"))?,
        auto_pad,
    };
    if g.strides.contains(&0) || g.dilations.contains(&0) {
        return Err(ConvertError::Invalid(
            "strides and dilations must be positive".into(),
        ));
    }
    Ok(g)
}

fn pool(a: &Attrs, avg: bool) -> R<PoolAttrs> {
    let mut geom = geom(a, true)?;
    let n = geom.kernel_shape.len();
    if geom.strides.is_empty() {
        geom.strides = vec![1; n];
    }
    if geom.dilations.is_empty() {
        geom.dilations = vec![1; n];
    }
    if geom.pads.is_empty() {
        geom.pads = vec![0; 2 * n];
    }
    Ok(PoolAttrs {
        geom,
        ceil_mode: a.int("ceil_mode", 0) != 0,
        count_include_pad: avg && a.int("count_include_pad", 0) != 0,
    })
}

fn conv_attrs(a: &Attrs) -> R<ConvAttrs> {
    let group = a.int("group", 1);
    if group < 1 {
        return Err(ConvertError::Invalid(format!(
            "group must be >= 1, got {group}"
        )));
    }
    Ok(ConvAttrs {
        geom: geom(a, false)?,
        group: group as usize,
    })
}

/// Convert one node. `domain` is "" for the default ONNX domain.
pub fn convert(node: &NodeProto, domain: &str, opset: i64) -> R<Converted> {
    let a = Attrs::new(node);
    let op_type = node.op_type.as_deref().unwrap_or("");
    let mut args: Vec<Option<Arg>> = node
        .input
        .iter()
        .map(|n| {
            if n.is_empty() {
                None
            } else {
                Some(Arg::Name(n.clone()))
            }
        })
        .collect();
    let nout = node.output.len();
    let unsup = |why: &str| Err(ConvertError::Unsupported(why.to_string()));

    // Attribute-to-operand conversion helper.
    let set_arg = |args: &mut Vec<Option<Arg>>, slot: usize, t: Tensor| {
        if args.len() <= slot {
            args.resize_with(slot + 1, || None);
        }
        args[slot] = Some(Arg::Const(t));
    };

    if domain == "com.microsoft" {
        let op = match op_type {
            "QLinearGlobalAveragePool" => Op::QLinearGlobalAveragePool {
                channels_last: a.int("channels_last", 0) != 0,
            },
            "QGemm" => Op::QGemm {
                alpha: a.float("alpha", 1.0),
                trans_a: a.int("transA", 0) != 0,
                trans_b: a.int("transB", 0) != 0,
            },
            "QLinearAdd" => Op::QLinearBinary(BinaryOp::Add),
            "QLinearMul" => Op::QLinearBinary(BinaryOp::Mul),
            "Gelu" => Op::Act(ActOp::Gelu { tanh: false }),
            _ => return unsup("not a supported com.microsoft contrib op"),
        };
        return Ok(Converted { op, args });
    }
    if !domain.is_empty() && domain != "ai.onnx" {
        return unsup(&format!("operator domain '{domain}' is not supported"));
    }

    let unary = |u| Op::Unary(u);
    let binary = |b| Op::Binary(b);
    let op = match op_type {
        "Abs" => unary(UnaryOp::Abs),
        "Neg" => unary(UnaryOp::Neg),
        "Sqrt" => unary(UnaryOp::Sqrt),
        "Exp" => unary(UnaryOp::Exp),
        "Log" => unary(UnaryOp::Log),
        "Reciprocal" => unary(UnaryOp::Reciprocal),
        "Relu" => unary(UnaryOp::Relu),
        "Sigmoid" => unary(UnaryOp::Sigmoid),
        "Tanh" => unary(UnaryOp::Tanh),
        "Erf" => unary(UnaryOp::Erf),
        "Floor" => unary(UnaryOp::Floor),
        "Ceil" => unary(UnaryOp::Ceil),
        "Round" => unary(UnaryOp::Round),
        "Sign" => unary(UnaryOp::Sign),
        "Not" => unary(UnaryOp::Not),
        "Softplus" => unary(UnaryOp::Softplus),
        "Softsign" => unary(UnaryOp::Softsign),
        "HardSwish" => unary(UnaryOp::HardSwish),
        "Sin" => unary(UnaryOp::Sin),
        "Cos" => unary(UnaryOp::Cos),
        "IsNaN" => unary(UnaryOp::IsNaN),
        "Identity" => unary(UnaryOp::Identity),
        "Dropout" => {
            if nout > 1 && !node.output[1].is_empty() {
                return unsup("Dropout with a mask output (training) is not supported");
            }
            args.truncate(1);
            unary(UnaryOp::Identity)
        }
        "LeakyRelu" => Op::Act(ActOp::LeakyRelu {
            alpha: a.float("alpha", 0.01),
        }),
        "Elu" => Op::Act(ActOp::Elu {
            alpha: a.float("alpha", 1.0),
        }),
        "Selu" => Op::Act(ActOp::Selu {
            alpha: a.float("alpha", 1.673_263_2),
            gamma: a.float("gamma", 1.050_701),
        }),
        "Celu" => Op::Act(ActOp::Celu {
            alpha: a.float("alpha", 1.0),
        }),
        "HardSigmoid" => Op::Act(ActOp::HardSigmoid {
            alpha: a.float("alpha", 0.2),
            beta: a.float("beta", 0.5),
        }),
        "ThresholdedRelu" => Op::Act(ActOp::ThresholdedRelu {
            alpha: a.float("alpha", 1.0),
        }),
        "Gelu" => Op::Act(ActOp::Gelu {
            tanh: a.string("approximate", "none") == "tanh",
        }),
        "Clip" => {
            if opset < 11 {
                args.truncate(1);
                set_arg(&mut args, 1, Tensor::scalar(a.float("min", f32::MIN)));
                set_arg(&mut args, 2, Tensor::scalar(a.float("max", f32::MAX)));
            }
            Op::Clip
        }
        "Add" => binary(BinaryOp::Add),
        "Sub" => binary(BinaryOp::Sub),
        "Mul" => binary(BinaryOp::Mul),
        "Div" => binary(BinaryOp::Div),
        "Pow" => binary(BinaryOp::Pow),
        "Mod" => binary(BinaryOp::Mod {
            fmod: a.int("fmod", 0) != 0,
        }),
        "PRelu" => binary(BinaryOp::PRelu),
        "Equal" => binary(BinaryOp::Equal),
        "Less" => binary(BinaryOp::Less),
        "Greater" => binary(BinaryOp::Greater),
        "LessOrEqual" => binary(BinaryOp::LessOrEqual),
        "GreaterOrEqual" => binary(BinaryOp::GreaterOrEqual),
        "And" => binary(BinaryOp::And),
        "Or" => binary(BinaryOp::Or),
        "Xor" => binary(BinaryOp::Xor),
        "Min" => Op::Variadic(VariadicOp::Min),
        "Max" => Op::Variadic(VariadicOp::Max),
        "Sum" => Op::Variadic(VariadicOp::Sum),
        "Mean" => Op::Variadic(VariadicOp::Mean),
        "Where" => Op::Where,
        "Cast" => {
            let to = a.int_req("to").map_err(ConvertError::Invalid)?;
            Op::Cast {
                to: DType::from_onnx_code(to as i32)
                    .ok_or_else(|| ConvertError::Unsupported(format!("Cast to data type {to}")))?,
            }
        }
        "CastLike" => Op::CastLike,
        "Conv" => Op::Conv(conv_attrs(&a)?),
        "ConvInteger" => Op::ConvInteger(conv_attrs(&a)?),
        "QLinearConv" => Op::QLinearConv(conv_attrs(&a)?),
        "ConvTranspose" => {
            let c = conv_attrs(&a)?;
            Op::ConvTranspose(ConvTransposeAttrs {
                geom: c.geom,
                group: c.group,
                output_padding: inv(a.usizes("output_padding"))?,
                output_shape: inv(a.usizes("output_shape"))?,
            })
        }
        "Gemm" => Op::Gemm {
            alpha: a.float("alpha", 1.0),
            beta: a.float("beta", 1.0),
            trans_a: a.int("transA", 0) != 0,
            trans_b: a.int("transB", 0) != 0,
        },
        "MatMul" => Op::MatMul,
        "MatMulInteger" => Op::MatMulInteger,
        "QLinearMatMul" => Op::QLinearMatMul,
        "Einsum" => Op::Einsum {
            equation: a.string("equation", ""),
        },
        "Softmax" | "LogSoftmax" | "Hardmax" => {
            let legacy = opset < 13;
            let axis = a.int("axis", if legacy { 1 } else { -1 });
            match op_type {
                "Softmax" => Op::Softmax { axis, legacy },
                "LogSoftmax" => Op::LogSoftmax { axis, legacy },
                _ => Op::Hardmax { axis, legacy },
            }
        }
        "LayerNormalization" => {
            if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                return unsup("LayerNormalization with Mean/InvStdDev outputs is not supported");
            }
            let stash = a.int("stash_type", 1);
            if stash != 1 {
                return unsup(
                    "LayerNormalization with stash_type other than float is not supported",
                );
            }
            Op::LayerNorm {
                axis: a.int("axis", -1),
                epsilon: a.float("epsilon", 1e-5),
            }
        }
        "BatchNormalization" => {
            if a.int("training_mode", 0) != 0 || node.output.iter().skip(1).any(|o| !o.is_empty()) {
                return unsup("BatchNormalization in training mode is not supported");
            }
            Op::BatchNorm {
                epsilon: a.float("epsilon", 1e-5),
            }
        }
        "InstanceNormalization" => Op::InstanceNorm {
            epsilon: a.float("epsilon", 1e-5),
        },
        "LRN" => Op::Lrn {
            alpha: a.float("alpha", 1e-4),
            beta: a.float("beta", 0.75),
            bias: a.float("bias", 1.0),
            size: a.int_req("size").map_err(ConvertError::Invalid)? as usize,
        },
        "MaxPool" => {
            if nout > 1 && !node.output[1].is_empty() {
                return unsup("MaxPool with an Indices output is not supported");
            }
            if a.int("storage_order", 0) != 0 {
                return unsup("MaxPool storage_order=1 is not supported");
            }
            Op::MaxPool(pool(&a, false)?)
        }
        "AveragePool" => Op::AveragePool(pool(&a, true)?),
        "LpPool" => Op::LpPool {
            attrs: pool(&a, false)?,
            p: a.int("p", 2) as f32,
        },
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "GlobalMaxPool" => Op::GlobalMaxPool,
        "Flatten" => Op::Flatten {
            axis: a.int("axis", 1),
        },
        "Reshape" => {
            if opset < 5 {
                set_arg(&mut args, 1, i64s(&a.ints("shape")));
            }
            Op::Reshape {
                allowzero: a.int("allowzero", 0) != 0,
            }
        }
        "Transpose" => Op::Transpose {
            perm: inv(a.usizes("perm"))?,
        },
        "Squeeze" | "Unsqueeze" => {
            if opset < 13 {
                if let Some(ax) = a.ints_opt("axes") {
                    set_arg(&mut args, 1, i64s(&ax));
                }
            }
            if op_type == "Squeeze" {
                Op::Squeeze
            } else {
                Op::Unsqueeze
            }
        }
        "Concat" => Op::Concat {
            axis: a.int_req("axis").map_err(ConvertError::Invalid)?,
        },
        "Split" => {
            if opset < 13 {
                if let Some(s) = a.ints_opt("split").filter(|s| !s.is_empty()) {
                    set_arg(&mut args, 1, i64s(&s));
                }
            }
            Op::Split {
                axis: a.int("axis", 0),
                num_outputs: nout,
            }
        }
        "Slice" => {
            if opset < 10 {
                args.truncate(1);
                set_arg(&mut args, 1, i64s(&a.ints("starts")));
                set_arg(&mut args, 2, i64s(&a.ints("ends")));
                if let Some(ax) = a.ints_opt("axes") {
                    set_arg(&mut args, 3, i64s(&ax));
                }
            }
            Op::Slice
        }
        "Gather" => Op::Gather {
            axis: a.int("axis", 0),
        },
        "GatherElements" => Op::GatherElements {
            axis: a.int("axis", 0),
        },
        "Shape" => Op::Shape {
            start: a.int("start", 0),
            end: a.int_opt("end"),
        },
        "Size" => Op::Size,
        "Expand" => Op::Expand,
        "Tile" => Op::Tile,
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd"
        | "ReduceSumSquare" | "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" => {
            let rop = match op_type {
                "ReduceMean" => ReduceOp::Mean,
                "ReduceSum" => ReduceOp::Sum,
                "ReduceMax" => ReduceOp::Max,
                "ReduceMin" => ReduceOp::Min,
                "ReduceProd" => ReduceOp::Prod,
                "ReduceSumSquare" => ReduceOp::SumSquare,
                "ReduceL1" => ReduceOp::L1,
                "ReduceL2" => ReduceOp::L2,
                "ReduceLogSum" => ReduceOp::LogSum,
                _ => ReduceOp::LogSumExp,
            };
            let axes_are_input = if rop == ReduceOp::Sum {
                opset >= 13
            } else {
                opset >= 18
            };
            if !axes_are_input {
                args.truncate(1);
                if let Some(ax) = a.ints_opt("axes").filter(|v| !v.is_empty()) {
                    set_arg(&mut args, 1, i64s(&ax));
                }
            }
            Op::Reduce {
                op: rop,
                keepdims: a.int("keepdims", 1) != 0,
                noop_with_empty_axes: a.int("noop_with_empty_axes", 0) != 0,
            }
        }
        "ArgMax" | "ArgMin" => {
            let (axis, keepdims, select_last_index) = (
                a.int("axis", 0),
                a.int("keepdims", 1) != 0,
                a.int("select_last_index", 0) != 0,
            );
            if op_type == "ArgMax" {
                Op::ArgMax {
                    axis,
                    keepdims,
                    select_last_index,
                }
            } else {
                Op::ArgMin {
                    axis,
                    keepdims,
                    select_last_index,
                }
            }
        }
        "ConstantOfShape" => {
            let value = match a.tensor("value") {
                Some(t) => inv(tensor_from_proto(t, None))?,
                None => Tensor::from_slice(&[1], &[0f32]),
            };
            if value.len() != 1 {
                return Err(ConvertError::Invalid(
                    "ConstantOfShape value must have one element".into(),
                ));
            }
            Op::ConstantOfShape { value }
        }
        "Range" => Op::Range,
        "Pad" => {
            let mode = match a.string("mode", "constant").as_str() {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                "wrap" => PadMode::Wrap,
                m => return Err(ConvertError::Invalid(format!("unknown pad mode '{m}'"))),
            };
            if opset < 11 {
                args.truncate(1);
                set_arg(&mut args, 1, i64s(&a.ints("pads")));
                set_arg(&mut args, 2, Tensor::scalar(a.float("value", 0.0)));
            }
            Op::Pad { mode }
        }
        "Resize" | "Upsample" => {
            if a.int("antialias", 0) != 0 {
                return unsup("Resize with antialias=1 is not supported");
            }
            let mode = match a.string("mode", "nearest").as_str() {
                "nearest" => ResizeMode::Nearest,
                "linear" | "bilinear" | "trilinear" => ResizeMode::Linear,
                "cubic" => ResizeMode::Cubic,
                m => return Err(ConvertError::Invalid(format!("unknown resize mode '{m}'"))),
            };
            let old = op_type == "Upsample" || opset < 11;
            let coord = if old {
                CoordTransform::Asymmetric
            } else {
                match a
                    .string("coordinate_transformation_mode", "half_pixel")
                    .as_str()
                {
                    "half_pixel" => CoordTransform::HalfPixel,
                    "half_pixel_symmetric" => CoordTransform::HalfPixelSymmetric,
                    "pytorch_half_pixel" => CoordTransform::PytorchHalfPixel,
                    "align_corners" => CoordTransform::AlignCorners,
                    "asymmetric" => CoordTransform::Asymmetric,
                    "tf_crop_and_resize" => CoordTransform::TfCropAndResize,
                    m => {
                        return Err(ConvertError::Invalid(format!(
                            "unknown coordinate_transformation_mode '{m}'"
                        )))
                    }
                }
            };
            let nearest = if old {
                NearestMode::Floor
            } else {
                match a.string("nearest_mode", "round_prefer_floor").as_str() {
                    "round_prefer_floor" => NearestMode::RoundPreferFloor,
                    "round_prefer_ceil" => NearestMode::RoundPreferCeil,
                    "floor" => NearestMode::Floor,
                    "ceil" => NearestMode::Ceil,
                    m => return Err(ConvertError::Invalid(format!("unknown nearest_mode '{m}'"))),
                }
            };
            if old {
                // (X, scales) -> (X, roi=_, scales)
                let scales = if op_type == "Upsample" && opset < 9 {
                    Some(Arg::Const(Tensor::from_slice(
                        &[a.floats_opt("scales").unwrap_or_default().len()],
                        &a.floats_opt("scales").unwrap_or_default(),
                    )))
                } else {
                    args.get_mut(1).and_then(|s| s.take())
                };
                args = vec![args.into_iter().next().flatten(), None, scales];
            }
            Op::Resize(ResizeAttrs {
                mode,
                coord,
                nearest,
                cubic_coeff_a: a.float("cubic_coeff_a", -0.75),
                exclude_outside: a.int("exclude_outside", 0) != 0,
                extrapolation_value: a.float("extrapolation_value", 0.0),
                axes: a.ints("axes"),
                keep_aspect_ratio_policy: a.string("keep_aspect_ratio_policy", "stretch"),
            })
        }
        "DepthToSpace" => Op::DepthToSpace {
            blocksize: a.int_req("blocksize").map_err(ConvertError::Invalid)? as usize,
            crd: a.string("mode", "DCR") == "CRD",
        },
        "SpaceToDepth" => Op::SpaceToDepth {
            blocksize: a.int_req("blocksize").map_err(ConvertError::Invalid)? as usize,
            crd: a.string("mode", "DCR") == "CRD",
        },
        "TopK" => {
            if opset < 10 {
                set_arg(
                    &mut args,
                    1,
                    i64s(&[a.int_req("k").map_err(ConvertError::Invalid)?]),
                );
            }
            Op::TopK {
                axis: a.int("axis", -1),
                largest: a.int("largest", 1) != 0,
                sorted: a.int("sorted", 1) != 0,
            }
        }
        "CumSum" => Op::CumSum {
            exclusive: a.int("exclusive", 0) != 0,
            reverse: a.int("reverse", 0) != 0,
        },
        "Trilu" => Op::Trilu {
            upper: a.int("upper", 1) != 0,
        },
        "QuantizeLinear" => {
            if a.int("block_size", 0) != 0 {
                return unsup("blocked quantization (block_size) is not supported");
            }
            let out_dtype = match a.int("output_dtype", 0) {
                0 => None,
                c => Some(DType::from_onnx_code(c as i32).ok_or_else(|| {
                    ConvertError::Unsupported(format!("QuantizeLinear to data type {c}"))
                })?),
            };
            Op::QuantizeLinear {
                axis: a.int("axis", 1),
                saturate: a.int("saturate", 1) != 0,
                out_dtype,
            }
        }
        "DequantizeLinear" => {
            if a.int("block_size", 0) != 0 {
                return unsup("blocked quantization (block_size) is not supported");
            }
            Op::DequantizeLinear {
                axis: a.int("axis", 1),
            }
        }
        "DynamicQuantizeLinear" => Op::DynamicQuantizeLinear,
        _ => return unsup("not a supported ONNX operator"),
    };
    Ok(Converted { op, args })
}
