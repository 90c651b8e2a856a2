//! Quantization parameters. They live inside a value's type ([`crate::ValueType`]) so that no pass
//! can separate a quantized tensor from its scale and zero point.

use std::fmt;

/// `real = scale * (q - zero_point)`, per tensor (one entry) or per axis (one entry per index
/// along `axis`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantParams {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    /// `None` for per-tensor; `Some(axis)` for per-channel.
    pub axis: Option<usize>,
}

impl QuantParams {
    pub fn per_tensor(scale: f32, zero_point: i32) -> Self {
        QuantParams {
            scale: vec![scale],
            zero_point: vec![zero_point],
            axis: None,
        }
    }
    pub fn per_axis(axis: usize, scale: Vec<f32>, zero_point: Vec<i32>) -> Self {
        QuantParams {
            scale,
            zero_point,
            axis: Some(axis),
        }
    }
    pub fn is_per_tensor(&self) -> bool {
        self.axis.is_none()
    }
}

impl fmt::Display for QuantParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.axis {
            None => write!(f, "q(scale={:e},zp={})", self.scale[0], self.zero_point[0]),
            Some(a) => {
                write!(f, "q(axis={a},scale=[")?;
                for (i, s) in self.scale.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{s:e}")?;
                }
                f.write_str("],zp=[")?;
                for (i, z) in self.zero_point.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{z}")?;
                }
                f.write_str("])")
            }
        }
    }
}
