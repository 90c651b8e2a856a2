//! Typed access to a node's attributes, with defaults and clear errors.

use super::proto::{AttributeProto, NodeProto, TensorProto};

pub struct Attrs<'a> {
    node: &'a NodeProto,
}

type R<T> = Result<T, String>;

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto) -> Self {
        Attrs { node }
    }
    fn find(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }
    pub fn has(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
    pub fn int_opt(&self, name: &str) -> Option<i64> {
        self.find(name).and_then(|a| a.i)
    }
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.int_opt(name).unwrap_or(default)
    }
    pub fn int_req(&self, name: &str) -> R<i64> {
        self.int_opt(name)
            .ok_or_else(|| format!("missing required attribute '{name}'"))
    }
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.find(name).and_then(|a| a.f).unwrap_or(default)
    }
    pub fn ints_opt(&self, name: &str) -> Option<Vec<i64>> {
        self.find(name).map(|a| a.ints.clone())
    }
    pub fn ints(&self, name: &str) -> Vec<i64> {
        self.ints_opt(name).unwrap_or_default()
    }
    pub fn usizes(&self, name: &str) -> R<Vec<usize>> {
        self.ints(name)
            .into_iter()
            .map(|v| {
                usize::try_from(v).map_err(|_| format!("attribute '{name}' has negative value {v}"))
            })
            .collect()
    }
    pub fn floats_opt(&self, name: &str) -> Option<Vec<f32>> {
        self.find(name).map(|a| a.floats.clone())
    }
    pub fn string(&self, name: &str, default: &str) -> String {
        self.find(name)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_else(|| default.to_string())
    }
    pub fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.find(name).and_then(|a| a.t.as_ref())
    }
}
