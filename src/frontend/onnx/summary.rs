//! A summary of an ONNX file read straight from the protobuf, without building the IR: what
//! `octet inspect` shows even for a model that uses operators octet does not support.

use super::proto::{self, ModelProto};
use super::ImportError;
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;

pub struct RawSummary {
    pub producer: String,
    pub opsets: Vec<(String, i64)>,
    /// (domain:op_type, count), sorted by count descending then name.
    pub op_histogram: Vec<(String, usize)>,
    pub node_count: usize,
    pub parameters: u64,
    pub initializers: usize,
}

pub fn raw_summary(path: &Path) -> Result<RawSummary, ImportError> {
    let file = super::source::ModelFile::open(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let m = ModelProto::decode(file.bytes()).map_err(|e| ImportError::Decode {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let g = m.graph.unwrap_or_default();
    let mut hist: BTreeMap<String, usize> = BTreeMap::new();
    for n in &g.node {
        let d = n.domain.clone().unwrap_or_default();
        let key = if d.is_empty() || d == "ai.onnx" {
            n.op_type.clone().unwrap_or_default()
        } else {
            format!("{d}:{}", n.op_type.clone().unwrap_or_default())
        };
        *hist.entry(key).or_default() += 1;
    }
    let mut op_histogram: Vec<(String, usize)> = hist.into_iter().collect();
    op_histogram.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let parameters = g
        .initializer
        .iter()
        .map(|t: &proto::TensorProto| t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>())
        .sum();
    Ok(RawSummary {
        producer: format!(
            "{} {}",
            m.producer_name.unwrap_or_default(),
            m.producer_version.unwrap_or_default()
        )
        .trim()
        .to_string(),
        opsets: m
            .opset_import
            .iter()
            .map(|o| (o.domain.clone().unwrap_or_default(), o.version.unwrap_or(0)))
            .collect(),
        op_histogram,
        node_count: g.node.len(),
        parameters,
        initializers: g.initializer.len(),
    })
}
