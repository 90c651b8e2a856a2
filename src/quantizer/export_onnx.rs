//! IR -> ONNX protobuf, minimal but exact for the ops quantized models contain (default domain,
//! opset 18; 20 when Gelu appears). Consts become initializers; graph inputs and outputs get
//! their types; an op octet cannot express in ONNX is an error naming the node and op.
//! The file is written atomically.

use crate::frontend::onnx::proto::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::frontend::onnx::tensor::tensor_to_proto;
use octet_ir::{ActOp, AutoPad, BinaryOp, ConvGeom, Dim, Graph, Op, Outlet, PadMode, ValueType};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot export node '{node}' ({op}) to ONNX: {msg}")]
    Op {
        node: String,
        op: &'static str,
        msg: String,
    },
    #[error("cannot export: {0}")]
    Graph(String),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn attr(name: &str, t: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(t as i32),
        ..Default::default()
    }
}
fn ai(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}
fn af(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}
fn ais(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        ints: v.iter().map(|&x| x as i64).collect(),
        ..attr(name, AttributeType::Ints)
    }
}
fn ais64(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}
fn astr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}

fn geom_attrs(g: &ConvGeom, dilations: bool) -> Vec<AttributeProto> {
    let mut v = vec![];
    if !g.kernel_shape.is_empty() {
        v.push(ais("kernel_shape", &g.kernel_shape));
    }
    if !g.strides.is_empty() {
        v.push(ais("strides", &g.strides));
    }
    match g.auto_pad {
        AutoPad::NotSet => {
            if !g.pads.is_empty() {
                v.push(ais("pads", &g.pads));
            }
        }
        AutoPad::SameUpper => v.push(astr("auto_pad", "SAME_UPPER")),
        AutoPad::SameLower => v.push(astr("auto_pad", "SAME_LOWER")),
        AutoPad::Valid => v.push(astr("auto_pad", "VALID")),
    }
    if dilations && !g.dilations.is_empty() {
        v.push(ais("dilations", &g.dilations));
    }
    v
}

/// ONNX op type and attributes of an op.
fn op_proto(op: &Op) -> Result<(&'static str, Vec<AttributeProto>), String> {
    use Op::*;
    let name = op.name();
    let attrs = match op {
        Input | Const(_) => return Err("not a node".into()),
        Unary(_)
        | Clip
        | Variadic(_)
        | Where
        | CastLike
        | MatMul
        | GlobalAveragePool
        | GlobalMaxPool
        | Squeeze
        | Unsqueeze
        | Slice
        | Size
        | Expand
        | Tile
        | Range
        | DynamicQuantizeLinear
        | QLinearMatMul
        | MatMulInteger => vec![],
        Binary(BinaryOp::Mod { fmod }) => vec![ai("fmod", *fmod as i64)],
        Binary(_) => vec![],
        Act(a) => match *a {
            ActOp::LeakyRelu { alpha } | ActOp::Elu { alpha } | ActOp::Celu { alpha } => {
                vec![af("alpha", alpha)]
            }
            ActOp::ThresholdedRelu { alpha } => vec![af("alpha", alpha)],
            ActOp::Selu { alpha, gamma } => vec![af("alpha", alpha), af("gamma", gamma)],
            ActOp::HardSigmoid { alpha, beta } => vec![af("alpha", alpha), af("beta", beta)],
            ActOp::Gelu { tanh } => vec![astr("approximate", if tanh { "tanh" } else { "none" })],
        },
        Cast { to } => vec![ai("to", to.onnx_code() as i64)],
        Conv(a) | ConvInteger(a) | QLinearConv(a) => {
            let mut v = geom_attrs(&a.geom, true);
            v.push(ai("group", a.group as i64));
            v
        }
        Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => vec![
            af("alpha", *alpha),
            af("beta", *beta),
            ai("transA", *trans_a as i64),
            ai("transB", *trans_b as i64),
        ],
        Einsum { equation } => vec![astr("equation", equation)],
        Softmax { axis, legacy } | LogSoftmax { axis, legacy } | Hardmax { axis, legacy } => {
            if *legacy {
                return Err("opset < 13 (legacy) semantics cannot be written at opset 18".into());
            }
            vec![ai("axis", *axis)]
        }
        LayerNorm { axis, epsilon } => vec![ai("axis", *axis), af("epsilon", *epsilon)],
        BatchNorm { epsilon } | InstanceNorm { epsilon } => vec![af("epsilon", *epsilon)],
        Lrn {
            alpha,
            beta,
            bias,
            size,
        } => vec![
            af("alpha", *alpha),
            af("beta", *beta),
            af("bias", *bias),
            ai("size", *size as i64),
        ],
        MaxPool(p) => {
            let mut v = geom_attrs(&p.geom, true);
            v.push(ai("ceil_mode", p.ceil_mode as i64));
            v
        }
        AveragePool(p) => {
            if p.geom.dilations.iter().any(|&d| d != 1) {
                return Err("dilated AveragePool needs opset 19".into());
            }
            let mut v = geom_attrs(&p.geom, false);
            v.push(ai("ceil_mode", p.ceil_mode as i64));
            v.push(ai("count_include_pad", p.count_include_pad as i64));
            v
        }
        Flatten { axis } | Concat { axis } | Gather { axis } | GatherElements { axis } => {
            vec![ai("axis", *axis)]
        }
        Reshape { allowzero } => vec![ai("allowzero", *allowzero as i64)],
        Transpose { perm } => {
            if perm.is_empty() {
                vec![]
            } else {
                vec![ais("perm", perm)]
            }
        }
        Split { axis, .. } => vec![ai("axis", *axis)],
        Shape { start, end } => {
            let mut v = vec![ai("start", *start)];
            if let Some(e) = end {
                v.push(ai("end", *e));
            }
            v
        }
        Reduce {
            keepdims,
            noop_with_empty_axes,
            ..
        } => vec![
            ai("keepdims", *keepdims as i64),
            ai("noop_with_empty_axes", *noop_with_empty_axes as i64),
        ],
        ArgMax {
            axis,
            keepdims,
            select_last_index,
        }
        | ArgMin {
            axis,
            keepdims,
            select_last_index,
        } => vec![
            ai("axis", *axis),
            ai("keepdims", *keepdims as i64),
            ai("select_last_index", *select_last_index as i64),
        ],
        ConstantOfShape { value } => vec![AttributeProto {
            t: Some(tensor_to_proto("value", value)),
            ..attr("value", AttributeType::Tensor)
        }],
        Pad { mode } => vec![astr(
            "mode",
            match mode {
                PadMode::Constant => "constant",
                PadMode::Reflect => "reflect",
                PadMode::Edge => "edge",
                PadMode::Wrap => return Err("Pad mode wrap needs opset 19".into()),
            },
        )],
        DepthToSpace { blocksize, crd } => vec![
            ai("blocksize", *blocksize as i64),
            astr("mode", if *crd { "CRD" } else { "DCR" }),
        ],
        SpaceToDepth { blocksize, .. } => vec![ai("blocksize", *blocksize as i64)],
        TopK {
            axis,
            largest,
            sorted,
        } => vec![
            ai("axis", *axis),
            ai("largest", *largest as i64),
            ai("sorted", *sorted as i64),
        ],
        CumSum { exclusive, reverse } => vec![
            ai("exclusive", *exclusive as i64),
            ai("reverse", *reverse as i64),
        ],
        Trilu { upper } => vec![ai("upper", *upper as i64)],
        QuantizeLinear { axis, .. } | DequantizeLinear { axis } => vec![ai("axis", *axis)],
        // onnxruntime's com.microsoft contrib ops (QOperator format).
        QLinearGlobalAveragePool { channels_last } => {
            vec![ai("channels_last", *channels_last as i64)]
        }
        QGemm {
            alpha,
            trans_a,
            trans_b,
        } => vec![
            af("alpha", *alpha),
            ai("transA", *trans_a as i64),
            ai("transB", *trans_b as i64),
        ],
        QLinearBinary(BinaryOp::Add) | QLinearBinary(BinaryOp::Mul) => vec![],
        ConvTranspose(_) | LpPool { .. } | Resize(_) | QLinearBinary(_) => {
            return Err("not supported by the ONNX exporter".into())
        }
    };
    let _ = ais64;
    Ok((name, attrs))
}

fn type_proto(ty: &ValueType) -> TypeProto {
    let dims = ty
        .shape
        .0
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Sym(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(ty.dtype.onnx_code()),
            shape: Some(TensorShapeProto { dim: dims }),
        })),
        ..Default::default()
    }
}

/// Build the ONNX model for `g`.
pub fn export_model(g: &Graph) -> Result<ModelProto, ExportError> {
    let order = g
        .topo_order()
        .map_err(|n| ExportError::Graph(format!("cycle through node '{n}'")))?;
    // Unique tensor names per outlet; graph outputs take their public names where possible.
    let mut names: HashMap<Outlet, String> = HashMap::new();
    let mut used: HashSet<String> = HashSet::new();
    let mut identities: Vec<(Outlet, String)> = vec![];
    let mut claimed: HashSet<Outlet> = HashSet::new();
    for (pubname, o) in &g.outputs {
        let plain = !matches!(g.node(o.node).op, Op::Input | Op::Const(_));
        if plain && claimed.insert(*o) && used.insert(pubname.clone()) {
            names.insert(*o, pubname.clone());
        } else {
            identities.push((*o, pubname.clone()));
            used.insert(pubname.clone());
        }
    }
    for &n in &order {
        for (i, v) in g.node(n).outputs.iter().enumerate() {
            let o = Outlet::new(n, i);
            if names.contains_key(&o) {
                continue;
            }
            let mut name = v.name.clone();
            let mut k = 1;
            while used.contains(&name) || name.is_empty() {
                name = format!("{}_{k}", v.name);
                k += 1;
            }
            used.insert(name.clone());
            names.insert(o, name);
        }
    }
    let mut max_opset = 18;
    let mut uses_ms = false;
    let mut graph = GraphProto {
        name: Some("octet".into()),
        ..Default::default()
    };
    for &n in &order {
        let node = g.node(n);
        match &node.op {
            Op::Input => {
                let o = Outlet::new(n, 0);
                let ty = g.ty(o).ok_or_else(|| {
                    ExportError::Graph(format!("graph input '{}' is untyped", node.name))
                })?;
                graph.input.push(ValueInfoProto {
                    name: Some(names[&o].clone()),
                    r#type: Some(type_proto(ty)),
                    ..Default::default()
                });
            }
            Op::Const(t) => {
                let o = Outlet::new(n, 0);
                if g.consumers(o).is_empty() && !g.is_graph_output(o) {
                    continue;
                }
                graph.initializer.push(tensor_to_proto(&names[&o], t));
            }
            op => {
                let (op_type, attribute) = op_proto(op).map_err(|msg| ExportError::Op {
                    node: node.name.clone(),
                    op: op.name(),
                    msg,
                })?;
                if matches!(op, Op::Act(ActOp::Gelu { .. })) {
                    max_opset = max_opset.max(20);
                }
                if let Op::QuantizeLinear {
                    out_dtype: Some(_), ..
                } = op
                {
                    if g.operand(n, 2).is_none() {
                        return Err(ExportError::Op {
                            node: node.name.clone(),
                            op: op.name(),
                            msg: "output dtype without a zero point needs opset 21".into(),
                        });
                    }
                }
                let mut input: Vec<String> = g
                    .operands(n)
                    .into_iter()
                    .map(|o| o.map(|o| names[&o].clone()).unwrap_or_default())
                    .collect();
                while input.last().is_some_and(|s| s.is_empty()) {
                    input.pop();
                }
                let output = (0..node.outputs.len())
                    .map(|i| names[&Outlet::new(n, i)].clone())
                    .collect();
                let ms = matches!(
                    op,
                    Op::QGemm { .. } | Op::QLinearGlobalAveragePool { .. } | Op::QLinearBinary(_)
                );
                uses_ms |= ms;
                graph.node.push(NodeProto {
                    input,
                    output,
                    name: Some(node.name.clone()),
                    op_type: Some(op_type.into()),
                    domain: ms.then(|| "com.microsoft".to_string()),
                    attribute,
                    ..Default::default()
                });
            }
        }
    }
    for (o, pubname) in &identities {
        graph.node.push(NodeProto {
            input: vec![names[o].clone()],
            output: vec![pubname.clone()],
            name: Some(format!("{pubname}_Identity")),
            op_type: Some("Identity".into()),
            ..Default::default()
        });
    }
    for (pubname, o) in &g.outputs {
        let ty = g
            .ty(*o)
            .ok_or_else(|| ExportError::Graph(format!("graph output '{pubname}' is untyped")))?;
        let mut ty = ty.clone();
        ty.quant = None;
        graph.output.push(ValueInfoProto {
            name: Some(pubname.clone()),
            r#type: Some(type_proto(&ty)),
            ..Default::default()
        });
    }
    Ok(ModelProto {
        ir_version: Some(if max_opset >= 20 { 9 } else { 8 }),
        opset_import: {
            let mut v = vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(max_opset),
            }];
            if uses_ms {
                v.push(OperatorSetIdProto {
                    domain: Some("com.microsoft".into()),
                    version: Some(1),
                });
            }
            v
        },
        producer_name: Some("octet".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    })
}

/// Encode `g` as ONNX bytes.
pub fn to_bytes(g: &Graph) -> Result<Vec<u8>, ExportError> {
    if g.g.node_weights().any(|n| n.bf16) {
        // bf16 nodes as standard ONNX: Cast pair on the input, bf16-exact weights.
        let mut g = g.clone();
        crate::passes::bf16_casts::to_casts(&mut g);
        return Ok(export_model(&g)?.encode_to_vec());
    }
    Ok(export_model(g)?.encode_to_vec())
}

/// Write `g` as an ONNX file, atomically.
pub fn write_onnx(g: &Graph, path: &Path) -> Result<(), ExportError> {
    let bytes = to_bytes(g)?;
    crate::io::atomic::write_atomic(path, |f| std::io::Write::write_all(f, &bytes)).map_err(
        |source| ExportError::Io {
            path: path.display().to_string(),
            source,
        },
    )
}
