//! The type of a value: element type, shape, and (for quantized values) the quantization
//! parameters. Quantization is part of the type so that it travels with the value through
//! every rewrite.

use crate::dtype::DType;
use crate::quant::QuantParams;
use crate::shape::Shape;
use std::fmt;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValueType {
    pub dtype: DType,
    pub shape: Shape,
    /// Present when the stored integers stand for real numbers `scale * (q - zero_point)`.
    pub quant: Option<QuantParams>,
}

impl ValueType {
    pub fn new(dtype: DType, shape: Shape) -> Self {
        ValueType {
            dtype,
            shape,
            quant: None,
        }
    }
    pub fn fixed(dtype: DType, dims: &[usize]) -> Self {
        ValueType::new(dtype, Shape::fixed(dims))
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)?;
        if let Some(q) = &self.quant {
            write!(f, " {q}")?;
        }
        Ok(())
    }
}
