//! Tensors: a dtype, a static shape and 64-byte aligned bytes, viewed through bytemuck.
//! No per-element boxing; typed access is a zero-copy cast of the byte buffer.

use crate::dtype::DType;
use bytemuck::{Pod, Zeroable};
use std::fmt;

/// 64 bytes, 64-byte aligned: the allocation unit of tensor storage (cache line / zmm aligned).
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Owned, 64-byte aligned byte storage.
#[derive(Clone)]
pub struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    pub fn zeroed(len: usize) -> Self {
        AlignedBytes {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut b = Self::zeroed(bytes.len());
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice::<Line, u8>(&self.lines)[..self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<Line, u8>(&mut self.lines)[..self.len]
    }
}

/// Element types that can be viewed in a tensor.
pub trait Element: Pod {
    const DTYPE: DType;
}
macro_rules! element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
        }
    };
}
element!(f32, F32);
element!(f64, F64);
element!(half::f16, F16);
element!(half::bf16, BF16);
element!(i8, I8);
element!(u8, U8);
element!(i16, I16);
element!(u16, U16);
element!(i32, I32);
element!(u32, U32);
element!(i64, I64);
element!(u64, U64);

/// A dense, row-major tensor with a static shape. Booleans are stored as one byte (0 or 1)
/// and viewed as `u8`.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: AlignedBytes,
}

/// Error for a typed view that does not match the tensor's dtype.
#[derive(Debug, thiserror::Error)]
#[error("tensor holds {found}, not {expected}")]
pub struct DTypeMismatch {
    pub expected: DType,
    pub found: DType,
}

impl Tensor {
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor {
            dtype,
            shape: shape.to_vec(),
            data: AlignedBytes::zeroed(n * dtype.size()),
        }
    }

    /// Build from raw little-endian bytes. Returns `None` if the length does not match.
    pub fn from_raw(dtype: DType, shape: &[usize], bytes: &[u8]) -> Option<Tensor> {
        let n: usize = shape.iter().product();
        if bytes.len() != n * dtype.size() {
            return None;
        }
        Some(Tensor {
            dtype,
            shape: shape.to_vec(),
            data: AlignedBytes::from_bytes(bytes),
        })
    }

    /// Build from a typed vector. Panics only if `data.len()` does not match `shape` (a
    /// programming error inside octet, never user input).
    pub fn from_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Tensor {
        Self::from_slice(shape, &data)
    }

    pub fn from_slice<T: Element>(shape: &[usize], data: &[T]) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            data.len(),
            "Tensor::from_slice: shape {shape:?} vs {} elements",
            data.len()
        );
        Tensor {
            dtype: T::DTYPE,
            shape: shape.to_vec(),
            data: AlignedBytes::from_bytes(bytemuck::cast_slice(data)),
        }
    }

    pub fn from_bools(shape: &[usize], data: &[bool]) -> Tensor {
        let bytes: Vec<u8> = data.iter().map(|&b| b as u8).collect();
        let mut t = Self::from_slice(shape, &bytes);
        t.dtype = DType::Bool;
        t
    }

    pub fn scalar<T: Element>(v: T) -> Tensor {
        Self::from_slice(&[], &[v])
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.data.as_mut_slice()
    }

    /// Same data, new shape (element count must match).
    pub fn reshaped(mut self, shape: &[usize]) -> Option<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            return None;
        }
        self.shape = shape.to_vec();
        Some(self)
    }

    /// The first `n` entries along axis 0 (a batch's first samples), copied; `None` for a
    /// scalar or when the tensor has fewer than `n`.
    pub fn first_rows(&self, n: usize) -> Option<Tensor> {
        let rows = *self.shape.first()?;
        if n > rows {
            return None;
        }
        let per: usize = self.shape[1..].iter().product::<usize>() * self.dtype.size();
        let mut shape = self.shape.clone();
        shape[0] = n;
        Tensor::from_raw(self.dtype, &shape, &self.bytes()[..n * per])
    }

    /// Typed view. Bool tensors are viewed as `u8`.
    pub fn view<T: Element>(&self) -> Result<&[T], DTypeMismatch> {
        if T::DTYPE != self.dtype && !(T::DTYPE == DType::U8 && self.dtype == DType::Bool) {
            return Err(DTypeMismatch {
                expected: T::DTYPE,
                found: self.dtype,
            });
        }
        Ok(bytemuck::cast_slice(self.data.as_slice()))
    }

    pub fn view_mut<T: Element>(&mut self) -> Result<&mut [T], DTypeMismatch> {
        if T::DTYPE != self.dtype && !(T::DTYPE == DType::U8 && self.dtype == DType::Bool) {
            return Err(DTypeMismatch {
                expected: T::DTYPE,
                found: self.dtype,
            });
        }
        Ok(bytemuck::cast_slice_mut(self.data.as_mut_slice()))
    }

    /// Values as f64, whatever the dtype (for shape arithmetic, printing and comparisons).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let b = self.data.as_slice();
        match self.dtype {
            DType::F32 => bytemuck::cast_slice::<u8, f32>(b)
                .iter()
                .map(|&v| v as f64)
                .collect(),
            DType::F64 => bytemuck::cast_slice::<u8, f64>(b).to_vec(),
            DType::F16 => bytemuck::cast_slice::<u8, half::f16>(b)
                .iter()
                .map(|v| v.to_f64())
                .collect(),
            DType::BF16 => bytemuck::cast_slice::<u8, half::bf16>(b)
                .iter()
                .map(|v| v.to_f64())
                .collect(),
            DType::I8 => bytemuck::cast_slice::<u8, i8>(b)
                .iter()
                .map(|&v| v as f64)
                .collect(),
            DType::U8 | DType::Bool => b.iter().map(|&v| v as f64).collect(),
            DType::I16 => bytemuck::cast_slice::<u8, i16>(b)
                .iter()
                .map(|&v| v as f64)
                .collect(),
            DType::U16 => bytemuck::cast_slice::<u8, u16>(b)
                .iter()
                .map(|&v| v as f64)
                .collect(),
            DType::I32 => bytemuck::cast_slice::<u8, i32>(b)
                .iter()
                .map(|&v| v as f64)
                .collect(),
            DType::U32 => bytemuck::cast_slice::<u8, u32>(b)
                .iter()
                .map(|&v| v as f64)
                .collect(),
            DType::I64 => bytemuck::cast_slice::<u8, i64>(b)
                .iter()
                .map(|&v| v as f64)
                .collect(),
            DType::U64 => bytemuck::cast_slice::<u8, u64>(b)
                .iter()
                .map(|&v| v as f64)
                .collect(),
        }
    }

    /// Integer values as i64 (for shape tensors, indices, axes). Floats are truncated.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        let b = self.data.as_slice();
        match self.dtype {
            DType::I64 => bytemuck::cast_slice::<u8, i64>(b).to_vec(),
            DType::I32 => bytemuck::cast_slice::<u8, i32>(b)
                .iter()
                .map(|&v| v as i64)
                .collect(),
            DType::U64 => bytemuck::cast_slice::<u8, u64>(b)
                .iter()
                .map(|&v| v as i64)
                .collect(),
            _ => self.to_f64_vec().into_iter().map(|v| v as i64).collect(),
        }
    }

    /// Build a tensor of `dtype` from f64 values (rounding toward zero for integers,
    /// saturating like a cast from f64).
    pub fn from_f64(dtype: DType, shape: &[usize], v: &[f64]) -> Tensor {
        match dtype {
            DType::F32 => Self::from_vec(shape, v.iter().map(|&x| x as f32).collect()),
            DType::F64 => Self::from_vec(shape, v.to_vec()),
            DType::F16 => {
                Self::from_vec(shape, v.iter().map(|&x| half::f16::from_f64(x)).collect())
            }
            DType::BF16 => {
                Self::from_vec(shape, v.iter().map(|&x| half::bf16::from_f64(x)).collect())
            }
            DType::I8 => Self::from_vec(shape, v.iter().map(|&x| x as i8).collect()),
            DType::U8 => Self::from_vec(shape, v.iter().map(|&x| x as u8).collect()),
            DType::I16 => Self::from_vec(shape, v.iter().map(|&x| x as i16).collect()),
            DType::U16 => Self::from_vec(shape, v.iter().map(|&x| x as u16).collect()),
            DType::I32 => Self::from_vec(shape, v.iter().map(|&x| x as i32).collect()),
            DType::U32 => Self::from_vec(shape, v.iter().map(|&x| x as u32).collect()),
            DType::I64 => Self::from_vec(shape, v.iter().map(|&x| x as i64).collect()),
            DType::U64 => Self::from_vec(shape, v.iter().map(|&x| x as u64).collect()),
            DType::Bool => {
                Self::from_bools(shape, &v.iter().map(|&x| x != 0.0).collect::<Vec<_>>())
            }
        }
    }
}

/// Serialized as dtype, shape and raw little-endian bytes (used for small attribute tensors;
/// model weights travel in binary sections of the compiled format, not through serde).
#[derive(serde::Serialize, serde::Deserialize)]
struct TensorRepr {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl serde::Serialize for Tensor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TensorRepr {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data: self.bytes().to_vec(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Tensor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tensor, D::Error> {
        let r = TensorRepr::deserialize(d)?;
        Tensor::from_raw(r.dtype, &r.shape, &r.data)
            .ok_or_else(|| serde::de::Error::custom("tensor data length does not match its shape"))
    }
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.bytes() == other.bytes()
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} {:?}", self.dtype, self.shape)?;
        let v = self.to_f64_vec();
        if v.len() <= 8 {
            write!(f, " {v:?}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_64_byte_aligned_and_views_are_typed() {
        let t = Tensor::from_vec(&[2, 3], vec![1.0f32, 2., 3., 4., 5., 6.]);
        assert_eq!(t.bytes().as_ptr() as usize % 64, 0);
        assert_eq!(t.view::<f32>().unwrap()[4], 5.0);
        assert!(t.view::<i32>().is_err());
        assert_eq!(t.clone().reshaped(&[3, 2]).unwrap().shape(), &[3, 2]);
        assert!(t.reshaped(&[4]).is_none());
    }

    #[test]
    fn bool_tensors_view_as_u8() {
        let t = Tensor::from_bools(&[3], &[true, false, true]);
        assert_eq!(t.dtype(), DType::Bool);
        assert_eq!(t.view::<u8>().unwrap(), &[1, 0, 1]);
    }
}
