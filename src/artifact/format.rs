//! The compiled-model format (`.octet`): one file holding everything needed to run a model,
//! checked on load.
//!
//! ```text
//! offset 0   magic "OCTETMDL"                     8 bytes
//!        8   format version (u32 LE)              4 bytes
//!       12   header length H (u64 LE)             8 bytes
//!       20   header: JSON (target ISA, I/O signatures, the lowered graph's nodes, types and
//!            quantization parameters, constant table)            H bytes
//!            zero padding to a multiple of 64
//!            constants (weights, already quantized), each 64-byte aligned
//!  len - 4   CRC-32 of every byte before it (u32 LE)
//! ```
//! Loading checks the length, magic, version, checksum, every constant's bounds, the graph (the
//! IR verifier) and that this CPU has the target's instruction set; each failure is a clear
//! error. Files are written atomically (temporary file, then rename).

use crate::io::atomic::write_atomic;
use octet_ir::{DType, Graph, NodeIndex, Op, Outlet, Shape, Tensor, ValueType};
use octet_kernels::Isa;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"OCTETMDL";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: cannot read: {msg}")]
    Io { path: String, msg: String },
    #[error("{0}: not an octet compiled model (bad magic)")]
    Magic(String),
    #[error("{path}: compiled-model format version {found}, this octet reads version {expected}; recompile the model with this octet")]
    Version {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("{path}: file is corrupt or truncated ({msg})")]
    Corrupt { path: String, msg: String },
    #[error("{path}: this CPU cannot run the compiled target: it needs {needs}, the best this CPU (or OCTET_ISA) allows is {have}; recompile with --target {have} or run on a CPU with {needs}")]
    Cpu {
        path: String,
        needs: String,
        have: String,
    },
    #[error("{0}")]
    Other(String),
}

/// Does `path` start with the compiled-model magic?
pub fn is_compiled(path: &Path) -> bool {
    let mut m = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut m))
        .is_ok()
        && &m == MAGIC
}

/// One input or output: name, dtype and shape (symbolic dims by name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IoSig {
    pub name: String,
    pub ty: ValueType,
}

impl std::fmt::Display for IoSig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.ty)
    }
}

#[derive(Serialize, Deserialize)]
struct NodeRec {
    name: String,
    /// None for a constant (its data is `konst`).
    op: Option<Op>,
    konst: Option<usize>,
    outputs: Vec<(String, Option<ValueType>)>,
    /// (slot, producer node index in this list, producer output)
    operands: Vec<(usize, usize, usize)>,
    /// Float node to run in bf16.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    bf16: bool,
}

#[derive(Serialize, Deserialize)]
struct ConstRec {
    dtype: DType,
    shape: Vec<usize>,
    offset: u64,
    len: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    octet_version: String,
    /// Minimum instruction set ("scalar", "avx2", "avx512", "avx512vnni").
    target: String,
    inputs: Vec<IoSig>,
    outputs: Vec<IoSig>,
    nodes: Vec<NodeRec>,
    graph_inputs: Vec<usize>,
    graph_outputs: Vec<(String, usize, usize)>,
    consts: Vec<ConstRec>,
}

/// A compiled model: the lowered graph and its target.
#[derive(Clone)]
pub struct CompiledModel {
    pub graph: Graph,
    pub target: Isa,
    pub inputs: Vec<IoSig>,
    pub outputs: Vec<IoSig>,
}

impl CompiledModel {
    pub fn new(graph: Graph, target: Isa) -> CompiledModel {
        let sig = |name: &str, ty: Option<&ValueType>| IoSig {
            name: name.to_string(),
            ty: ty
                .cloned()
                .unwrap_or(ValueType::new(DType::F32, Shape::default())),
        };
        let inputs = graph
            .inputs
            .iter()
            .map(|&n| {
                sig(
                    &graph.node(n).outputs[0].name,
                    graph.node(n).outputs[0].ty.as_ref(),
                )
            })
            .collect();
        let outputs = graph
            .outputs
            .iter()
            .map(|(name, o)| sig(name, graph.ty(*o)))
            .collect();
        CompiledModel {
            graph,
            target,
            inputs,
            outputs,
        }
    }

    /// Serialize to bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ArtifactError> {
        let g = &self.graph;
        let order = g
            .topo_order()
            .map_err(|n| ArtifactError::Other(format!("graph has a cycle through '{n}'")))?;
        let index: HashMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut blob: Vec<u8> = vec![];
        let mut consts = vec![];
        let mut nodes = vec![];
        for &n in &order {
            let node = g.node(n);
            let (op, konst) = match &node.op {
                Op::Const(t) => {
                    while blob.len() % 64 != 0 {
                        blob.push(0);
                    }
                    consts.push(ConstRec {
                        dtype: t.dtype(),
                        shape: t.shape().to_vec(),
                        offset: blob.len() as u64,
                        len: t.bytes().len() as u64,
                    });
                    blob.extend_from_slice(t.bytes());
                    (None, Some(consts.len() - 1))
                }
                op => (Some(op.clone()), None),
            };
            let operands = g
                .operands(n)
                .into_iter()
                .enumerate()
                .filter_map(|(slot, o)| o.map(|o| (slot, index[&o.node], o.output)))
                .collect();
            nodes.push(NodeRec {
                name: node.name.clone(),
                op,
                konst,
                outputs: node
                    .outputs
                    .iter()
                    .map(|v| (v.name.clone(), v.ty.clone()))
                    .collect(),
                operands,
                bf16: node.bf16,
            });
        }
        let header = Header {
            octet_version: env!("CARGO_PKG_VERSION").to_string(),
            target: self.target.name().to_string(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            nodes,
            graph_inputs: g.inputs.iter().map(|n| index[n]).collect(),
            graph_outputs: g
                .outputs
                .iter()
                .map(|(name, o)| (name.clone(), index[&o.node], o.output))
                .collect(),
            consts,
        };
        let json = serde_json::to_vec(&header).map_err(|e| ArtifactError::Other(e.to_string()))?;
        let mut out = Vec::with_capacity(64 + json.len() + blob.len() + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        while out.len() % 64 != 0 {
            out.push(0);
        }
        out.extend_from_slice(&blob);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Write atomically.
    pub fn save(&self, path: &Path) -> Result<(), ArtifactError> {
        let bytes = self.to_bytes()?;
        write_atomic(path, |f| std::io::Write::write_all(f, &bytes)).map_err(|e| {
            ArtifactError::Io {
                path: path.display().to_string(),
                msg: e.to_string(),
            }
        })
    }

    /// Read and check a `.octet` file.
    pub fn load(path: &Path) -> Result<CompiledModel, ArtifactError> {
        let bytes = std::fs::read(path).map_err(|e| ArtifactError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parse and check bytes (`what` names the source in errors).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<CompiledModel, ArtifactError> {
        let corrupt = |msg: &str| ArtifactError::Corrupt {
            path: what.to_string(),
            msg: msg.to_string(),
        };
        if bytes.len() < 24 {
            return Err(if bytes.len() >= 8 && &bytes[..8] != MAGIC {
                ArtifactError::Magic(what.into())
            } else {
                corrupt("shorter than the fixed header")
            });
        }
        if &bytes[..8] != MAGIC {
            return Err(ArtifactError::Magic(what.into()));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(ArtifactError::Version {
                path: what.into(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err(corrupt("checksum mismatch"));
        }
        let hlen = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
        let hend = 20usize
            .checked_add(hlen)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| corrupt("header length past the end"))?;
        let header: Header = serde_json::from_slice(&bytes[20..hend])
            .map_err(|e| corrupt(&format!("header: {e}")))?;
        let blob_start = hend.div_ceil(64) * 64;
        let blob = body
            .get(blob_start..)
            .ok_or_else(|| corrupt("no constant section"))?;
        let target = Isa::parse(&header.target).map_err(|e| corrupt(&e.to_string()))?;
        // Rebuild the graph.
        let mut g = Graph::new();
        let mut ids: Vec<NodeIndex> = Vec::with_capacity(header.nodes.len());
        for rec in &header.nodes {
            let op = match (&rec.op, rec.konst) {
                (Some(op), None) => op.clone(),
                (None, Some(k)) => {
                    let c = header
                        .consts
                        .get(k)
                        .ok_or_else(|| corrupt("constant index out of range"))?;
                    let (o, l) = (c.offset as usize, c.len as usize);
                    let data = o
                        .checked_add(l)
                        .and_then(|e| blob.get(o..e))
                        .ok_or_else(|| corrupt("constant data out of bounds"))?;
                    Op::Const(
                        Tensor::from_raw(c.dtype, &c.shape, data)
                            .ok_or_else(|| corrupt("constant size does not match its shape"))?,
                    )
                }
                _ => return Err(corrupt("node is neither an op nor a constant")),
            };
            let n = g.add_node(
                &rec.name,
                op,
                rec.outputs.iter().map(|(n, _)| n.clone()).collect(),
            );
            g.node_mut(n).bf16 = rec.bf16;
            for (k, (_, ty)) in rec.outputs.iter().enumerate() {
                g.node_mut(n)
                    .outputs
                    .get_mut(k)
                    .ok_or_else(|| corrupt("output count"))?
                    .ty = ty.clone();
            }
            ids.push(n);
        }
        for (i, rec) in header.nodes.iter().enumerate() {
            for &(slot, src, out) in &rec.operands {
                let s = *ids
                    .get(src)
                    .ok_or_else(|| corrupt("operand refers to a missing node"))?;
                g.connect(Outlet::new(s, out), ids[i], slot);
            }
        }
        for &i in &header.graph_inputs {
            g.inputs.push(
                *ids.get(i)
                    .ok_or_else(|| corrupt("input refers to a missing node"))?,
            );
        }
        for (name, n, o) in &header.graph_outputs {
            g.outputs.push((
                name.clone(),
                Outlet::new(
                    *ids.get(*n)
                        .ok_or_else(|| corrupt("output refers to a missing node"))?,
                    *o,
                ),
            ));
        }
        g.verify_with(false)
            .map_err(|e| corrupt(&format!("graph: {e}")))?;
        let m = CompiledModel {
            graph: g,
            target,
            inputs: header.inputs,
            outputs: header.outputs,
        };
        m.check_cpu(what)?;
        Ok(m)
    }

    /// Can this CPU (capped by OCTET_ISA) run the target?
    pub fn check_cpu(&self, what: &str) -> Result<(), ArtifactError> {
        let have = Isa::active().map_err(|e| ArtifactError::Other(e.to_string()))?;
        if have < self.target {
            return Err(ArtifactError::Cpu {
                path: what.into(),
                needs: self.target.name().into(),
                have: have.name().into(),
            });
        }
        Ok(())
    }
}
