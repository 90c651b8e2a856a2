//! # octet-kernels
//!
//! int8 and fp32 CPU kernels for octet, with run-time ISA dispatch (AVX512-VNNI, AVX-512, AVX2,
//! scalar). Depends on nothing else in octet. Built without `target-cpu=native`: every SIMD path is
//! a `#[target_feature]` function reached only through a [`Kernel`] handle, whose constructor
//! checks the CPU and the `OCTET_ISA` cap. See `DESIGN.md` (layouts, rounding, saturation,
//! threading) and `PERFORMANCE.md` (measured figures) beside this crate's `Cargo.toml`.
//!
//! ## Public entry points
//! - ISA: [`Isa`] (`detected`, `active`, `supported`, `parse`), [`Kernel`] (`new`, `best`, `scalar`),
//!   [`KernelError`].
//! - int8 GEMM: [`PackedB::new`] (prepack weights once, [`WeightLayout`]), [`PackedB::from_u8`]
//!   (u8 second operand, e.g. attention),
//!   [`gemm_u8s8`] (u8 x s8 -> fused [`Epilogue`] -> [`OutputSlice`] u8/s8/i32/f32),
//!   [`shift_s8_to_u8`] (s8 activations via +128), [`gemm_u8s8_is_exact`].
//! - int8 convolution (NHWC, OHWI weights): [`ConvGeometry`], [`PackedConv::new`],
//!   [`conv2d_u8s8`] (1x1 as GEMM, kxk via an indirection buffer on VNNI or im2col, groups,
//!   dilation, dedicated depthwise kernel), [`TensorU8`]; [`conv2d_u8s8_add`] with a fused
//!   residual QLinearAdd.
//! - QLinearAdd (+ byte table): [`QAdd`], [`qadd_u8`].
//! - Max pooling, NHWC u8 / i8 / f32: [`PoolGeometry`], [`maxpool_nhwc_u8`], [`maxpool_nhwc_f32`],
//!   [`maxpool_nhwc_reference`].
//! - fp32: [`PackedBF32::new`], [`gemm_f32`] (bias + ReLU fused), [`PackedConvF32::new`],
//!   [`conv2d_f32`] (NHWC; 1x1 in place, other layers through an indirection buffer, no im2col),
//!   [`transpose_f32`] (NCHW <-> NHWC).
//! - bf16 (AVX512-BF16 `vdpbf16ps`, bit-exact emulation elsewhere; [`Kernel::has_bf16_dot`]):
//!   [`PackedBBf16::new`], [`gemm_bf16`] (f32 in/out, bf16 products, f32 sums, bias + ReLU fused),
//!   [`PackedConvBf16::new`], [`conv2d_bf16`] (NHWC, im2col + GEMM); the instruction semantics
//!   as scalar functions: [`f32_to_bf16`], [`bf16_to_f32`], [`dpbf16_step`], [`dpbf16ps_emulated`].
//! - fp32 element-wise: [`add`], [`mul`], [`relu_inplace`], [`exp_inplace`], [`erf_inplace`],
//!   [`gelu_inplace`], [`softmax_rows`], [`layer_norm_rows`].
//! - Element-wise int8: [`quantize_u8`], [`quantize_i8`], [`dequantize_u8`], [`dequantize_i8`],
//!   [`requantize_u8`], [`requantize_i8`], [`min_max`], [`dynamic_qparams_u8`],
//!   [`dynamic_quantize_u8`] (ONNX DynamicQuantizeLinear), [`QParams`].
//! - Oracles: [`reference`](mod@reference) (triple-loop GEMM, saturating emulation, requantization
//!   rule, bf16 GEMM and direct conv on the `vdpbf16ps` emulation).
//!
//! Every public function validates its arguments and returns `Result<_, KernelError>`; none
//! panics on bad input. Multi-threaded kernels run on the caller's current rayon pool and give
//! bit-identical results for any thread count.
//!
//! ## Example: a quantized linear layer (u8 activations, s8 weights, u8 output)
//!
//! ```
//! use octet_kernels::*;
//! # fn main() -> Result<(), KernelError> {
//! let kernel = Kernel::best()?; // the CPU's best ISA, capped by OCTET_ISA
//! let (m, k, n) = (2, 3, 4);
//! let w: Vec<i8> = vec![1, -2, 3, 4, 5, -6, 7, 8, -9, 10, 11, 12]; // K x N
//! let packed = PackedB::new(k, n, &w, WeightLayout::KxN, 0)?; // once, at load time
//! let a: Vec<u8> = vec![130, 128, 127, 0, 255, 128]; // M x K, zero point 128
//! let bias = vec![0i32; n];
//! let mult = 0.05f32; // s_a * s_w / s_out
//! let ep = Epilogue::requant(Scale::PerTensor(mult), 10).with_bias(&bias);
//! let mut out = vec![0u8; m * n];
//! gemm_u8s8(
//!     &kernel,
//!     MatrixU8 { data: &a, rows: m, ld: k, zero_point: 128 },
//!     &packed,
//!     &ep,
//!     OutputSlice::U8(&mut out),
//!     n,
//! )?;
//! // Same as the oracle: exact int32 sums, then round_half_even(v * 0.05) + 10, saturated.
//! let acc = reference::gemm_u8s8_i32(m, n, k, &a, 128, &w, 0);
//! let want = reference::requantize_i32(&acc, n, Some(&bias), &[mult], 10, 0, 255);
//! assert_eq!(out.iter().map(|&q| q as i32).collect::<Vec<_>>(), want);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod aligned;
mod bf16;
mod conv;
mod conv_bf16;
mod conv_f32;
mod depthwise;
mod elementwise;
mod error;
mod gemm_bf16;
mod gemm_f32;
mod gemm_u8s8;
mod interleave;
mod isa;
mod pool;
mod qadd;
mod quantize;
pub mod reference;
mod scratch;
mod simd;
mod transpose_f32;
mod winograd_f32;

pub use bf16::{bf16_to_f32, dpbf16_step, dpbf16ps_emulated, f32_to_bf16};
pub use conv::{
    conv2d_u8s8, conv2d_u8s8_add, conv2d_u8s8_prepadded, ConvGeometry, PackedConv, TensorU8,
};
pub use conv_bf16::{conv2d_bf16, PackedConvBf16};
pub use conv_f32::{conv2d_f32, conv2d_f32_add, PackedConvF32};
pub use elementwise::{
    add, erf_inplace, exp_inplace, gelu_inplace, layer_norm_rows, mul, relu_inplace, softmax_rows,
    softmax_rows_nan_to,
};
pub use error::KernelError;
pub use gemm_bf16::{gemm_bf16, PackedBBf16};
pub use gemm_f32::{gemm_f32, PackedBF32};
pub use gemm_u8s8::{
    gemm_u8s8, gemm_u8s8_is_exact, shift_s8_to_u8, Epilogue, MatrixU8, OutputSlice, PackedB, Scale,
    WeightLayout, NR,
};
pub use interleave::interleave3_u8;
pub use isa::{Isa, Kernel};
pub use pool::{maxpool_nhwc_f32, maxpool_nhwc_reference, maxpool_nhwc_u8, PoolGeometry};
pub use qadd::{qadd_u8, QAdd};
pub use quantize::{
    dequantize_i8, dequantize_u8, dynamic_qparams_u8, dynamic_quantize_u8, min_max, quantize_i8,
    quantize_u8, requantize_i8, requantize_u8, QParams,
};
pub use transpose_f32::transpose_f32;
