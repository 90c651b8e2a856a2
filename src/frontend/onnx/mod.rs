//! ONNX import: bytes -> `ModelProto` (prost) -> octet IR graph with inferred types.
//!
//! Supports the default domain at opsets 7..=MAX_OPSET (older opsets load too when the ops they
//! use did not change), the com.microsoft quantized contrib ops that onnxruntime's quantizer
//! writes, and initializers stored as external data. Every unsupported operator in the model is
//! reported at once, each with the names of the nodes that use it.

pub mod attrs;
pub mod error;
pub mod ops;
pub mod proto;
pub mod source;
pub mod summary;
pub mod tensor;

pub use error::{ImportError, UnsupportedOp};

use octet_ir::{DType, Dim, Graph, Outlet, Shape, Tensor, ValueType};
use ops::{Arg, ConvertError};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Highest default-domain opset octet knows.
pub const MAX_OPSET: i64 = 28;

/// An imported model.
pub struct Model {
    pub graph: Graph,
    /// Default-domain opset.
    pub opset: i64,
    pub producer: String,
    pub path: PathBuf,
}

/// Read and import an ONNX file. The file is mapped and its weights read straight into the
/// graph's tensors (see [`source`]): loading holds each weight once.
pub fn load(path: impl AsRef<Path>) -> Result<Model, ImportError> {
    let path = path.as_ref();
    let file = source::ModelFile::open(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let model = decode(file.bytes(), path)?;
    import_model(model, path, path.parent(), Some(&file))
}

fn decode(bytes: impl prost::bytes::Buf, path: &Path) -> Result<proto::ModelProto, ImportError> {
    proto::ModelProto::decode(bytes).map_err(|e| ImportError::Decode {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Import from bytes. `path` is used in messages; `base_dir` resolves external data.
pub fn import_bytes(
    bytes: &[u8],
    path: &Path,
    base_dir: Option<&Path>,
) -> Result<Model, ImportError> {
    import_model(decode(bytes, path)?, path, base_dir, None)
}

/// Import a decoded model, consuming it: each initializer's bytes are freed as soon as its
/// tensor is built. `file`, when given, is the mapped file the model was decoded from.
fn import_model(
    mut model: proto::ModelProto,
    path: &Path,
    base_dir: Option<&Path>,
    file: Option<&source::ModelFile>,
) -> Result<Model, ImportError> {
    let p = || path.to_path_buf();
    let mut graph_proto = model.graph.take().ok_or_else(|| ImportError::Model {
        path: p(),
        msg: "the file holds no graph (not an ONNX model?)".into(),
    })?;
    let mut opsets: HashMap<String, i64> = HashMap::new();
    for o in &model.opset_import {
        let d = o.domain.clone().unwrap_or_default();
        let d = if d == "ai.onnx" { String::new() } else { d };
        opsets.insert(d, o.version.unwrap_or(1));
    }
    let opset = *opsets.get("").unwrap_or(&1);
    if opset > MAX_OPSET {
        return Err(ImportError::Model {
            path: p(),
            msg: format!(
                "default-domain opset {opset} is newer than octet supports (1..={MAX_OPSET})"
            ),
        });
    }
    if opset < 1 {
        return Err(ImportError::Model {
            path: p(),
            msg: format!("invalid opset {opset}"),
        });
    }
    let mut b = Builder {
        g: Graph::new(),
        names: HashMap::new(),
        path: path.to_path_buf(),
    };

    // Initializers become constants (each proto tensor dropped right after conversion).
    for t in std::mem::take(&mut graph_proto.initializer) {
        let name = t.name.clone().unwrap_or_default();
        let tensor = tensor::tensor_from_proto_in(&t, base_dir, file).map_err(|msg| {
            ImportError::Tensor {
                path: p(),
                tensor: name.clone(),
                msg,
            }
        })?;
        let n = b.g.add_const(&name, tensor);
        b.names.insert(name, Outlet::new(n, 0));
    }
    if !graph_proto.sparse_initializer.is_empty() {
        return Err(ImportError::Model {
            path: p(),
            msg: "sparse initializers are not supported".into(),
        });
    }
    // Graph inputs that are not initializers.
    for vi in &graph_proto.input {
        let name = vi.name.clone().unwrap_or_default();
        if b.names.contains_key(&name) {
            continue;
        }
        let ty = value_type(vi).map_err(|msg| ImportError::Tensor {
            path: p(),
            tensor: name.clone(),
            msg,
        })?;
        let n = b.g.add_input(&name, ty);
        b.names.insert(name, Outlet::new(n, 0));
    }

    // Convert all nodes, collecting every unsupported op before failing.
    let mut unsupported: Vec<UnsupportedOp> = vec![];
    let mut pending: Vec<(octet_ir::NodeIndex, Vec<Option<Arg>>, String)> = vec![];
    for (i, node) in graph_proto.node.iter().enumerate() {
        let op_type = node.op_type.clone().unwrap_or_default();
        let name = node
            .name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{op_type}_{i}"));
        let domain = node.domain.clone().unwrap_or_default();
        let domain = if domain == "ai.onnx" {
            String::new()
        } else {
            domain
        };
        let dom_opset = match opsets.get(&domain) {
            Some(&v) => v,
            None if domain == "com.microsoft" => 1,
            None => {
                push_unsupported(
                    &mut unsupported,
                    &domain,
                    &op_type,
                    0,
                    &name,
                    format!("domain '{domain}' is not imported by the model"),
                );
                continue;
            }
        };
        if op_type == "Constant" && domain.is_empty() {
            let t = constant_value(node).map_err(|msg| ImportError::Node {
                path: p(),
                node: name.clone(),
                op: op_type.clone(),
                msg,
            })?;
            let out = node.output.first().cloned().unwrap_or_default();
            let n = b.g.add_const(&out, t);
            b.g.node_mut(n).name = name;
            b.names.insert(out, Outlet::new(n, 0));
            continue;
        }
        match ops::convert(node, &domain, dom_opset) {
            Err(ConvertError::Unsupported(reason)) => {
                push_unsupported(
                    &mut unsupported,
                    &domain,
                    &op_type,
                    dom_opset,
                    &name,
                    reason,
                );
            }
            Err(ConvertError::Invalid(msg)) => {
                return Err(ImportError::Node {
                    path: p(),
                    node: name,
                    op: op_type,
                    msg,
                });
            }
            Ok(c) => {
                let nout = c.op.num_outputs();
                if node.output.len() > nout && node.output[nout..].iter().any(|o| !o.is_empty()) {
                    return Err(ImportError::Node {
                        path: p(),
                        node: name,
                        op: op_type,
                        msg: format!(
                            "declares {} outputs; octet supports {nout}",
                            node.output.len()
                        ),
                    });
                }
                let mut outs: Vec<String> = node.output.iter().take(nout).cloned().collect();
                while outs.len() < nout {
                    outs.push(format!("{name}:unused{}", outs.len()));
                }
                let n = b.g.add_node(&name, c.op, outs.clone());
                for (k, o) in outs.into_iter().enumerate() {
                    if !o.is_empty() {
                        if b.names.insert(o.clone(), Outlet::new(n, k)).is_some() {
                            return Err(ImportError::Tensor {
                                path: p(),
                                tensor: o,
                                msg: "is produced more than once".into(),
                            });
                        }
                    }
                }
                pending.push((n, c.args, op_type));
            }
        }
    }
    if !unsupported.is_empty() {
        let list = unsupported
            .iter()
            .map(|u| {
                let dom = if u.domain.is_empty() {
                    String::new()
                } else {
                    format!("{}:", u.domain)
                };
                format!(
                    "{dom}{} (opset {}; {}) at nodes [{}]",
                    u.op_type,
                    u.opset,
                    u.reason,
                    u.nodes.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ImportError::Unsupported {
            path: p(),
            list,
            ops: unsupported,
        });
    }

    // Wire operands (second pass: files need not list nodes in topological order).
    for (n, args, op_type) in pending {
        for (slot, arg) in args.into_iter().enumerate() {
            let src = match arg {
                None => continue,
                Some(Arg::Name(s)) => match b.names.get(&s) {
                    Some(&o) => o,
                    None => {
                        return Err(ImportError::Node {
                            path: p(),
                            node: b.g.node(n).name.clone(),
                            op: op_type,
                            msg: format!("reads tensor '{s}', which no node, graph input or initializer provides (missing initializer?)"),
                        })
                    }
                },
                Some(Arg::Const(t)) => {
                    let cname = format!("{}:{}", b.g.node(n).name, slot);
                    Outlet::new(b.g.add_const(&cname, t), 0)
                }
            };
            b.g.connect(src, n, slot);
        }
    }
    for vi in &graph_proto.output {
        let name = vi.name.clone().unwrap_or_default();
        let o = *b.names.get(&name).ok_or_else(|| ImportError::Tensor {
            path: p(),
            tensor: name.clone(),
            msg: "graph output is not produced by any node".into(),
        })?;
        b.g.outputs.push((name, o));
    }
    if b.g.outputs.is_empty() {
        return Err(ImportError::Model {
            path: p(),
            msg: "the graph has no outputs".into(),
        });
    }
    b.g.infer_types()
        .map_err(|source| ImportError::Ir { path: p(), source })?;
    Ok(Model {
        graph: b.g,
        opset,
        producer: model.producer_name.clone().unwrap_or_default(),
        path: path.to_path_buf(),
    })
}

struct Builder {
    g: Graph,
    names: HashMap<String, Outlet>,
    #[allow(dead_code)]
    path: PathBuf,
}

fn push_unsupported(
    list: &mut Vec<UnsupportedOp>,
    domain: &str,
    op_type: &str,
    opset: i64,
    node: &str,
    reason: String,
) {
    if let Some(u) = list
        .iter_mut()
        .find(|u| u.domain == domain && u.op_type == op_type)
    {
        u.nodes.push(node.to_string());
    } else {
        list.push(UnsupportedOp {
            domain: domain.to_string(),
            op_type: op_type.to_string(),
            opset,
            nodes: vec![node.to_string()],
            reason,
        });
    }
}

fn value_type(vi: &proto::ValueInfoProto) -> Result<ValueType, String> {
    use proto::tensor_shape_proto::dimension::Value as DV;
    use proto::type_proto::Value as TV;
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TV::TensorType(t)) => t,
        Some(_) => return Err("only tensor-typed graph inputs are supported".into()),
        None => return Err("graph input has no type".into()),
    };
    let code = tt.elem_type.unwrap_or(0);
    let dtype = DType::from_onnx_code(code)
        .ok_or_else(|| format!("unsupported element type code {code}"))?;
    let shape = match &tt.shape {
        None => return Err("graph input has no shape (unknown rank is not supported)".into()),
        Some(s) => Shape(
            s.dim
                .iter()
                .enumerate()
                .map(|(i, d)| match &d.value {
                    Some(DV::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
                    Some(DV::DimParam(s)) if !s.is_empty() => Dim::Sym(s.clone()),
                    _ => Dim::Sym(format!("{}_d{i}", vi.name.clone().unwrap_or_default())),
                })
                .collect(),
        ),
    };
    Ok(ValueType::new(dtype, shape))
}

fn constant_value(node: &proto::NodeProto) -> Result<Tensor, String> {
    let a = attrs::Attrs::new(node);
    if let Some(t) = a.tensor("value") {
        return tensor::tensor_from_proto(t, None);
    }
    for at in &node.attribute {
        match at.name.as_deref() {
            Some("value_float") => return Ok(Tensor::scalar(at.f.unwrap_or(0.0))),
            Some("value_floats") => return Ok(Tensor::from_slice(&[at.floats.len()], &at.floats)),
            Some("value_int") => return Ok(Tensor::scalar(at.i.unwrap_or(0))),
            Some("value_ints") => return Ok(Tensor::from_slice(&[at.ints.len()], &at.ints)),
            Some("sparse_value") => return Err("sparse constants are not supported".into()),
            Some("value_string") | Some("value_strings") => {
                return Err("string constants are not supported".into())
            }
            _ => {}
        }
    }
    Err("Constant without a value".into())
}

#[cfg(test)]
mod tests;
