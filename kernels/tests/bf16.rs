//! bf16 kernels: the emulation against the real AVX512-BF16 instructions (when the CPU has them).
mod common;

use common::Rng;
use octet_kernels::*;

// ---------------------------------------------------------------------------------------------
// The instruction itself.

#[cfg(target_arch = "x86_64")]
mod hw {
    use std::arch::x86_64::*;

    /// 16 lanes of `vdpbf16ps acc, a, b` (a = src1, b = src2) on the real instruction.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16ps(acc: &[f32; 16], a: &[u32; 16], b: &[u32; 16]) -> [f32; 16] {
        let r = _mm512_dpbf16_ps(
            _mm512_loadu_ps(acc.as_ptr()),
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(a.as_ptr() as *const _)),
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b.as_ptr() as *const _)),
        );
        std::mem::transmute(r)
    }

    /// `vcvtne2ps2bf16` of 32 floats (lo = first 16, hi = next 16 -> 32 bf16 in memory order).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn cvtne2ps(x: &[f32; 32]) -> [u16; 32] {
        let lo = _mm512_loadu_ps(x.as_ptr());
        let hi = _mm512_loadu_ps(x.as_ptr().add(16));
        std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo))
    }

    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
}

/// An adversarial bf16: any bit pattern (NaN, inf, denormal), specials, tiny / huge / moderate
/// exponents.
fn adv_bf16(r: &mut Rng) -> u16 {
    let v = r.next();
    let e = (v >> 30) as u16;
    match v % 8 {
        0 => (v >> 8) as u16,
        1 => [
            0u16, 0x8000, 0x7f80, 0xff80, 0x0001, 0x807f, 0x0080, 0x8080, 0x7f7f, 0xff7f, 0x7fc0,
            0x7f81,
        ][(v >> 8) as usize % 12],
        2 => ((v >> 8) as u16 & 0x807f) | ((1 + e % 8) << 7),
        3 => ((v >> 8) as u16 & 0x807f) | ((0xfe - e % 8) << 7),
        _ => ((v >> 8) as u16 & 0x807f) | ((87 + e % 80) << 7),
    }
}

fn adv_f32(r: &mut Rng) -> f32 {
    let v = r.next();
    let hi = (v >> 16) as u32;
    let e = (v >> 50) as u32;
    f32::from_bits(match v % 6 {
        0 => hi,
        1 => [
            0u32,
            0x8000_0000,
            0x0080_0000,
            0x8080_0000,
            1,
            0x007f_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x7f7f_ffff,
        ][(v >> 8) as usize % 9],
        2 => (hi & 0x807f_ffff) | ((1 + e % 6) << 23),
        _ => (hi & 0x807f_ffff) | ((87 + e % 80) << 23),
    })
}

#[test]
fn vdpbf16ps_instruction_matches_emulation() {
    #[cfg(target_arch = "x86_64")]
    if hw::available() {
        let mut r = Rng(0x5eed_bf16);
        let (mut lanes, mut nans, mut flushed) = (0u64, 0u64, 0u64);
        for _ in 0..200_000 {
            let (mut acc, mut a, mut b) = ([0f32; 16], [0u32; 16], [0u32; 16]);
            for i in 0..16 {
                acc[i] = adv_f32(&mut r);
                let (alo, ahi, blo, bhi) = (
                    adv_bf16(&mut r),
                    adv_bf16(&mut r),
                    adv_bf16(&mut r),
                    adv_bf16(&mut r),
                );
                a[i] = ((ahi as u32) << 16) | alo as u32;
                b[i] = ((bhi as u32) << 16) | blo as u32;
                // A quarter of the lanes: an accumulator that nearly cancels the products.
                if r.next().is_multiple_of(4) {
                    let p =
                        bf16_to_f32(ahi) * bf16_to_f32(bhi) + bf16_to_f32(alo) * bf16_to_f32(blo);
                    if p.is_finite() {
                        acc[i] = -p * (1.0 + ((r.next() % 5) as f32 - 2.0) * 2f32.powi(-20));
                    }
                }
            }
            // SAFETY: features checked by hw::available.
            let got = unsafe { hw::dpbf16ps(&acc, &a, &b) };
            for i in 0..16 {
                let want = dpbf16ps_emulated(acc[i], a[i], b[i]);
                assert_eq!(
                    got[i].to_bits(),
                    want.to_bits(),
                    "acc {:08x} src1 {:08x} src2 {:08x}",
                    acc[i].to_bits(),
                    a[i],
                    b[i]
                );
                lanes += 1;
                nans += got[i].is_nan() as u64;
                flushed += (got[i] == 0.0) as u64;
            }
        }
        // Conversion: random bit patterns, and every pattern around ties and the normal bound.
        let mut xs: Vec<f32> = (0..1_000_000)
            .map(|_| f32::from_bits(r.next() as u32))
            .collect();
        for hi in (0..=0xffffu32).step_by(7) {
            for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
                xs.push(f32::from_bits((hi << 16) | lo));
            }
        }
        xs.resize(xs.len().div_ceil(32) * 32, 0.0);
        for c in xs.chunks_exact(32) {
            // SAFETY: features checked by hw::available.
            let got = unsafe { hw::cvtne2ps(c.try_into().unwrap()) };
            for (g, x) in got.iter().zip(c) {
                assert_eq!(*g, f32_to_bf16(*x), "vcvtne2ps2bf16({:08x})", x.to_bits());
            }
        }
        eprintln!(
            "[bf16 instruction] vdpbf16ps == emulation on {lanes} lanes ({nans} NaN, {flushed} \
             zero results); vcvtne2ps2bf16 == f32_to_bf16 on {} values",
            xs.len()
        );
        return;
    }
    eprintln!("[bf16 instruction] CPU has no AVX512-BF16: instruction comparison skipped");
}
