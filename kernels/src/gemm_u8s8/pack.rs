//! Weight prepacking for the int8 GEMM: the layout every int8 micro-kernel reads.
//! Owns `PackedB`; no SIMD code (the run-time u8 operands' AVX-512 packer is `pack_u8_x86`).
//!
//! Layout: N is split into panels of [`NR`] = 64 columns (the last one zero-padded); K is padded
//! with zeros to a multiple of 4 (`kp`). Panel `p` occupies `kp * 64` bytes, stored K-group-major:
//! for K-group `g` (k = 4g..4g+3) there are 64 dwords, dword `j` holding the 4 consecutive K
//! values of column `64p + j`. One 64-byte load is 16 columns x 4 K values: exactly the
//! `vpdpbusd` / `vpmaddubsw`+`vpmaddwd` operand against a broadcast dword of 4 activation bytes.

use crate::aligned::AlignedBytes;
use crate::error::{bad, KernelError};

/// Columns per packed weight panel (4 zmm of 16 int32 lanes).
pub const NR: usize = 64;

/// How the caller's weight matrix is laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// Row-major K x N (`b[k * n + j]`): ONNX MatMul's B.
    KxN,
    /// Row-major N x K (`b[j * k + kk]`): ONNX Gemm with transB, and OHWI convolution weights.
    NxK,
}

/// int8 weights prepacked once for [`crate::gemm_u8s8`], with their column sums.
///
/// The layout is the same for every ISA, so one `PackedB` serves any [`crate::Kernel`].
#[derive(Clone)]
pub struct PackedB {
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) kp: usize,
    pub(crate) data: AlignedBytes,
    pub(crate) col_sums: Vec<i32>,
    pub(crate) zero_point: i32,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("zero_point", &self.zero_point)
            .finish()
    }
}

impl PackedB {
    /// Packs a `k` x `n` int8 weight matrix given in `layout`, with weight zero point `zero_point`
    /// (per tensor, in [-128, 127]; 0 for the usual symmetric weights).
    ///
    /// Errors if `b.len() != k * n` or the zero point is out of range.
    pub fn new(
        k: usize,
        n: usize,
        b: &[i8],
        layout: WeightLayout,
        zero_point: i32,
    ) -> Result<PackedB, KernelError> {
        let kn = k
            .checked_mul(n)
            .ok_or_else(|| bad("PackedB: k * n overflows"))?;
        if b.len() != kn {
            return Err(bad(format!(
                "PackedB: weights have {} elements, expected k*n = {k}*{n} = {kn}",
                b.len()
            )));
        }
        if !(-128..=127).contains(&zero_point) {
            return Err(bad(format!(
                "PackedB: weight zero point {zero_point} outside [-128, 127]"
            )));
        }
        let mut p = PackedB {
            k,
            n,
            kp: 0,
            data: AlignedBytes::zeroed(0),
            col_sums: Vec::new(),
            zero_point,
        };
        p.pack(k, n, layout, zero_point, |i| b[i]);
        Ok(p)
    }

    /// (Re)packs from `get(i)` = element `i` of the source in `layout`, reusing this value's
    /// buffers (they only grow).
    fn pack(
        &mut self,
        k: usize,
        n: usize,
        layout: WeightLayout,
        zero_point: i32,
        get: impl Fn(usize) -> i8,
    ) {
        let kp = k.div_ceil(4) * 4;
        let panels = n.div_ceil(NR);
        self.data.reset_zeroed(panels * kp * NR);
        self.col_sums.clear();
        self.col_sums.resize(n, 0);
        let col_sums = &mut self.col_sums;
        let d = self.data.as_mut_slice();
        match layout {
            // Source rows are contiguous in N: walk them in order (cache friendly), scatter
            // each byte to its dword slot.
            WeightLayout::KxN => {
                for kk in 0..k {
                    for (col, sum) in col_sums.iter_mut().enumerate() {
                        let v = get(kk * n + col);
                        *sum += v as i32;
                        let (p, j) = (col / NR, col % NR);
                        d[p * kp * NR + (kk / 4) * NR * 4 + j * 4 + (kk % 4)] = v as u8;
                    }
                }
            }
            // Source columns are contiguous in K: each run of 4 is one destination dword.
            WeightLayout::NxK => {
                for (col, sum) in col_sums.iter_mut().enumerate() {
                    let (p, j) = (col / NR, col % NR);
                    let mut acc = 0i32;
                    for kk in 0..k {
                        let v = get(col * k + kk);
                        acc += v as i32;
                        d[p * kp * NR + (kk / 4) * NR * 4 + j * 4 + (kk % 4)] = v as u8;
                    }
                    *sum = acc;
                }
            }
        }
        self.k = k;
        self.n = n;
        self.kp = kp;
        self.zero_point = zero_point;
    }

    /// Packs a u8 matrix (e.g. the second activation operand of an attention MatMulInteger)
    /// with zero point `zero_point` in [0, 255], as s8 values `b - 128` with zero point
    /// `zero_point - 128`: `(b - 128) - (zp - 128) = b - zp`, so results are unchanged on the
    /// exact ISAs (the `Avx2`/`Avx512` saturation sees the shifted values).
    pub fn from_u8(
        k: usize,
        n: usize,
        b: &[u8],
        layout: WeightLayout,
        zero_point: i32,
    ) -> Result<PackedB, KernelError> {
        if !(0..=255).contains(&zero_point) {
            return Err(bad(format!(
                "PackedB::from_u8: zero point {zero_point} outside [0, 255]"
            )));
        }
        let mut p = PackedB::new(0, 0, &[], layout, 0)?;
        p.repack_from_u8(k, n, b, layout, zero_point)?;
        Ok(p)
    }

    /// [`PackedB::from_u8`] into this value, reusing its buffers: a caller that packs a run-time
    /// operand every run (attention's `K^T`, `V`) allocates nothing once they are large enough.
    pub fn repack_from_u8(
        &mut self,
        k: usize,
        n: usize,
        b: &[u8],
        layout: WeightLayout,
        zero_point: i32,
    ) -> Result<(), KernelError> {
        if !(0..=255).contains(&zero_point) {
            return Err(bad(format!(
                "PackedB::from_u8: zero point {zero_point} outside [0, 255]"
            )));
        }
        if k.checked_mul(n) != Some(b.len()) {
            return Err(bad(format!(
                "PackedB: weights have {} elements, expected k*n = {k}*{n}",
                b.len()
            )));
        }
        #[cfg(target_arch = "x86_64")]
        if layout == WeightLayout::KxN && super::pack_u8_x86::available() {
            let kp = k.div_ceil(4) * 4;
            self.data.reset_zeroed(n.div_ceil(NR) * kp * NR);
            self.col_sums.clear();
            self.col_sums.resize(n, 0);
            // SAFETY: `available()`; `b.len() == k * n` (checked above); the buffers sized as
            // the function requires.
            unsafe {
                super::pack_u8_x86::pack_kxn_u8(
                    k,
                    n,
                    b,
                    self.data.as_mut_slice(),
                    &mut self.col_sums,
                )
            };
            (self.k, self.n, self.kp, self.zero_point) = (k, n, kp, zero_point - 128);
            return Ok(());
        }
        self.pack(k, n, layout, zero_point - 128, |i| (b[i] ^ 0x80) as i8);
        Ok(())
    }

    /// Reduction length K.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Number of output columns N.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Weight zero point.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }
    /// Sum over K of each column's raw int8 weights (length N).
    pub fn col_sums(&self) -> &[i32] {
        &self.col_sums
    }
    /// Raw packed bytes of panel `p`.
    pub(crate) fn panel_ptr(&self, p: usize) -> *const i8 {
        self.data.as_slice()[p * self.kp * NR..].as_ptr() as *const i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `from_u8` (the AVX-512 packer where the CPU has it) gives the same bytes and column sums
    /// as the scalar packer on the shifted s8 values, for ragged K and N.
    #[test]
    fn u8_packing_matches_the_scalar_packer() {
        #[cfg(target_arch = "x86_64")]
        println!(
            "[pack u8] AVX-512 packer ran: {}",
            super::super::pack_u8_x86::available()
        );
        let mut seed = 0x9E37_79B9u32;
        for (k, n) in [
            (1, 1),
            (3, 5),
            (4, 64),
            (7, 63),
            (64, 128),
            (128, 64),
            (13, 100),
            (9, 200),
        ] {
            let b: Vec<u8> = (0..k * n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            for zp in [0, 77, 255] {
                let simd = PackedB::from_u8(k, n, &b, WeightLayout::KxN, zp).unwrap();
                let s8: Vec<i8> = b.iter().map(|&v| (v ^ 0x80) as i8).collect();
                let scalar = PackedB::new(k, n, &s8, WeightLayout::KxN, zp - 128).unwrap();
                assert_eq!(simd.data.as_slice(), scalar.data.as_slice(), "{k}x{n}");
                assert_eq!(simd.col_sums, scalar.col_sums, "{k}x{n}");
                assert_eq!(
                    (simd.k, simd.n, simd.kp, simd.zero_point),
                    (scalar.k, scalar.n, scalar.kp, scalar.zero_point)
                );
            }
        }
    }
}
