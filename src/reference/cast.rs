//! Element conversions: reading any tensor as exact integers (i128) or as f64, writing them back
//! to any dtype, and the Cast / CastLike ops built on those (float -> int truncates toward zero
//! and saturates, int -> int wraps like numpy's astype, anything -> bool is "!= 0").

use super::R;
use half::{bf16, f16};
use octet_ir::{DType, Tensor};

/// All values of an integer or bool tensor, exactly, as i128. Floats are truncated toward zero.
pub fn ints(t: &Tensor) -> Vec<i128> {
    let b = t.bytes();
    match t.dtype() {
        DType::I8 => bytemuck::cast_slice::<u8, i8>(b)
            .iter()
            .map(|&v| v as i128)
            .collect(),
        DType::U8 | DType::Bool => b.iter().map(|&v| v as i128).collect(),
        DType::I16 => bytemuck::cast_slice::<u8, i16>(b)
            .iter()
            .map(|&v| v as i128)
            .collect(),
        DType::U16 => bytemuck::cast_slice::<u8, u16>(b)
            .iter()
            .map(|&v| v as i128)
            .collect(),
        DType::I32 => bytemuck::cast_slice::<u8, i32>(b)
            .iter()
            .map(|&v| v as i128)
            .collect(),
        DType::U32 => bytemuck::cast_slice::<u8, u32>(b)
            .iter()
            .map(|&v| v as i128)
            .collect(),
        DType::I64 => bytemuck::cast_slice::<u8, i64>(b)
            .iter()
            .map(|&v| v as i128)
            .collect(),
        DType::U64 => bytemuck::cast_slice::<u8, u64>(b)
            .iter()
            .map(|&v| v as i128)
            .collect(),
        _ => t
            .to_f64_vec()
            .into_iter()
            .map(|v| if v.is_nan() { 0 } else { v.trunc() as i128 })
            .collect(),
    }
}

/// Build a tensor of `dtype` from exact integers: integer dtypes wrap (two's complement), floats
/// round to nearest, bool is `!= 0`.
pub fn from_ints(dtype: DType, shape: &[usize], v: &[i128]) -> Tensor {
    match dtype {
        DType::I8 => Tensor::from_vec(shape, v.iter().map(|&x| x as i8).collect()),
        DType::U8 => Tensor::from_vec(shape, v.iter().map(|&x| x as u8).collect()),
        DType::I16 => Tensor::from_vec(shape, v.iter().map(|&x| x as i16).collect()),
        DType::U16 => Tensor::from_vec(shape, v.iter().map(|&x| x as u16).collect()),
        DType::I32 => Tensor::from_vec(shape, v.iter().map(|&x| x as i32).collect()),
        DType::U32 => Tensor::from_vec(shape, v.iter().map(|&x| x as u32).collect()),
        DType::I64 => Tensor::from_vec(shape, v.iter().map(|&x| x as i64).collect()),
        DType::U64 => Tensor::from_vec(shape, v.iter().map(|&x| x as u64).collect()),
        DType::Bool => Tensor::from_bools(shape, &v.iter().map(|&x| x != 0).collect::<Vec<_>>()),
        DType::F32 => Tensor::from_vec(shape, v.iter().map(|&x| x as f32).collect()),
        DType::F64 => Tensor::from_vec(shape, v.iter().map(|&x| x as f64).collect()),
        DType::F16 => Tensor::from_vec(shape, v.iter().map(|&x| f16::from_f64(x as f64)).collect()),
        DType::BF16 => {
            Tensor::from_vec(shape, v.iter().map(|&x| bf16::from_f64(x as f64)).collect())
        }
    }
}

/// Build a tensor of `dtype` from f64 values: floats round to nearest, integers truncate toward
/// zero and saturate (NaN -> 0), bool is `!= 0` (NaN -> true).
pub fn from_floats(dtype: DType, shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_f64(dtype, shape, v)
}

/// Round half to even (banker's rounding), the rounding of ONNX Round and QuantizeLinear.
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Require a float dtype.
pub fn need_float(t: &Tensor, op: &str) -> R<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(format!("{op} needs a float tensor, got {}", t.dtype()))
    }
}

/// Cast `t` to `to` per ONNX Cast.
pub fn cast_tensor(t: &Tensor, to: DType) -> R<Tensor> {
    let from = t.dtype();
    if from == to {
        return Ok(t.clone());
    }
    let shape = t.shape();
    if from.is_float() {
        if to.is_float() {
            // f32 -> f16/bf16 rounds once (f32 -> f64 is exact).
            return Ok(from_floats(to, shape, &t.to_f64_vec()));
        }
        if to == DType::Bool {
            let v: Vec<bool> = t.to_f64_vec().iter().map(|&x| x != 0.0).collect();
            return Ok(Tensor::from_bools(shape, &v));
        }
        // Float -> int: truncate toward zero, saturating (NaN -> 0).
        return Ok(from_floats(to, shape, &t.to_f64_vec()));
    }
    // Integer or bool source: exact through i128.
    let v = ints(t);
    if to == DType::F32 {
        // Round directly to f32 (no double rounding through f64 for large i64).
        return Ok(Tensor::from_vec(
            shape,
            v.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
        ));
    }
    Ok(from_ints(to, shape, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_between_dtypes() {
        let t = Tensor::from_vec(&[4], vec![-1.7f32, 2.9, 300.0, f32::NAN]);
        let c = cast_tensor(&t, DType::I32).unwrap();
        assert_eq!(c.view::<i32>().unwrap(), &[-1, 2, 300, 0]);
        let c = cast_tensor(&t, DType::Bool).unwrap();
        assert_eq!(c.view::<u8>().unwrap(), &[1, 1, 1, 1]);
        let c = cast_tensor(&t, DType::F16).unwrap();
        assert_eq!(c.view::<f16>().unwrap()[1], f16::from_f32(2.9));
        let big = Tensor::from_vec(&[2], vec![i64::MAX, -3]);
        let c = cast_tensor(&big, DType::U64).unwrap();
        assert_eq!(c.view::<u64>().unwrap(), &[i64::MAX as u64, (-3i64) as u64]);
        let c = cast_tensor(&Tensor::from_vec(&[1], vec![300i32]), DType::U8).unwrap();
        assert_eq!(c.view::<u8>().unwrap(), &[44]);
        let b = Tensor::from_bools(&[2], &[true, false]);
        let c = cast_tensor(&b, DType::F32).unwrap();
        assert_eq!(c.view::<f32>().unwrap(), &[1.0, 0.0]);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(-3.5), -4.0);
    }
}
