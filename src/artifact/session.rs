//! The embedding API: a [`Session`] holds a compiled model and runs it. It is `Send + Sync`
//! (share it across threads behind an `Arc`), runs with the thread count it was given, and builds
//! one engine per distinct input shape, on first use, reused afterwards (weights are prepacked
//! then; later runs with the same shapes only execute).
//!
//! ```no_run
//! use octet::artifact::{CompiledModel, Session};
//! use octet_ir::Tensor;
//! let session = Session::new(CompiledModel::load("digits.octet".as_ref())?).with_threads(1);
//! let x = Tensor::from_vec(&[1, 1, 16, 16], vec![0f32; 256]);
//! let out = session.run(&[("input".to_string(), x)])?;
//! let logits: &[f32] = out[0].1.view::<f32>()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::format::{ArtifactError, CompiledModel, IoSig};
use crate::engine::Engine;
use octet_ir::Tensor;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Run(String),
}

type Shapes = Vec<(String, Vec<usize>)>;

pub struct Session {
    model: CompiledModel,
    threads: Option<usize>,
    engines: Mutex<Vec<(Shapes, Arc<Engine>)>>,
}

impl Session {
    pub fn new(model: CompiledModel) -> Session {
        Session {
            model,
            threads: None,
            engines: Mutex::new(vec![]),
        }
    }

    /// Load a `.octet` file (checked: format, checksum, CPU support).
    pub fn load(path: &std::path::Path) -> Result<Session, SessionError> {
        Ok(Session::new(CompiledModel::load(path)?))
    }

    /// Run with `n` worker threads (default: all cores).
    pub fn with_threads(mut self, n: usize) -> Session {
        self.threads = Some(n.max(1));
        self
    }

    pub fn inputs(&self) -> &[IoSig] {
        &self.model.inputs
    }
    pub fn outputs(&self) -> &[IoSig] {
        &self.model.outputs
    }
    pub fn model(&self) -> &CompiledModel {
        &self.model
    }

    /// The engine for these input shapes (built once). Checks the inputs' names, dtypes and
    /// ranks against the model; looks the engine up without copying any tensor.
    pub fn engine_for(&self, inputs: &[(String, Tensor)]) -> Result<Arc<Engine>, SessionError> {
        let mut given: Vec<&Tensor> = Vec::with_capacity(self.model.inputs.len());
        for sig in &self.model.inputs {
            let t = inputs
                .iter()
                .find(|(n, _)| *n == sig.name)
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
                    SessionError::Input(format!(
                        "model input '{}' is missing (given: {})",
                        sig.name,
                        names.join(", ")
                    ))
                })?;
            if t.dtype() != sig.ty.dtype || t.rank() != sig.ty.shape.rank() {
                return Err(SessionError::Input(format!(
                    "input '{}' must be {}, got {} {:?}",
                    sig.name,
                    sig.ty,
                    t.dtype(),
                    t.shape()
                )));
            }
            given.push(t);
        }
        if let Some(extra) = inputs
            .iter()
            .find(|(n, _)| !self.model.inputs.iter().any(|s| s.name == *n))
        {
            return Err(SessionError::Input(format!(
                "'{}' is not an input of the model",
                extra.0
            )));
        }
        let mut cache = self
            .engines
            .lock()
            .map_err(|_| SessionError::Run("session lock poisoned".into()))?;
        let same = |s: &Shapes| {
            s.iter()
                .zip(&given)
                .all(|((_, d), t)| d.as_slice() == t.shape())
        };
        if let Some((_, e)) = cache.iter().find(|(s, _)| same(s)) {
            return Ok(e.clone());
        }
        let shapes: Shapes = self
            .model
            .inputs
            .iter()
            .zip(&given)
            .map(|(s, t)| (s.name.clone(), t.shape().to_vec()))
            .collect();
        let mut g = self.model.graph.clone();
        crate::prepare::prepare(&mut g, &shapes).map_err(|e| SessionError::Input(e.to_string()))?;
        let e = Arc::new(
            crate::prepare::engine(g, self.threads)
                .map_err(|e| SessionError::Run(e.to_string()))?,
        );
        cache.push((shapes, e.clone()));
        Ok(e)
    }

    /// Run on named inputs (batch first; arrays that are not inputs are an error here). After the
    /// first run with given shapes, no input is copied to find the engine.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, SessionError> {
        let e = self.engine_for(inputs)?;
        e.run(inputs).map_err(|e| SessionError::Run(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Session>();
    }
}
