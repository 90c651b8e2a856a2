//! The run-time buffer pool: tensors freed after their last use (liveness is precomputed in the
//! plan) go back to the pool and are handed out again for outputs of the same dtype and element
//! count. The pool persists across runs, so after the first (warm-up) run a run allocates no
//! tensor memory except the graph outputs it returns.

use octet_ir::{DType, Tensor};
use std::collections::HashMap;

#[derive(Default)]
pub struct Pool {
    free: HashMap<(DType, usize), Vec<Tensor>>,
}

impl Pool {
    /// A tensor of `dtype` and `shape`; its contents are unspecified (every op writes all of it).
    pub fn tensor(&mut self, dtype: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        if let Some(t) = self.free.get_mut(&(dtype, n)).and_then(|v| v.pop()) {
            if let Some(t) = t.reshaped(shape) {
                return t;
            }
        }
        Tensor::zeros(dtype, shape)
    }

    /// A copy of `x` in a pooled buffer.
    pub fn copy_of(&mut self, x: &Tensor) -> Tensor {
        let mut t = self.tensor(x.dtype(), x.shape());
        t.bytes_mut().copy_from_slice(x.bytes());
        t
    }

    /// Return a tensor for reuse.
    pub fn give(&mut self, t: Tensor) {
        self.free.entry((t.dtype(), t.len())).or_default().push(t);
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.free.values().flatten().map(|t| t.bytes().len()).sum()
    }
}
