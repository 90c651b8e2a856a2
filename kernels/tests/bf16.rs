//! bf16 kernels: the emulation against the real AVX512-BF16 instructions (when the CPU has
//! them), every ISA path bit-exact against `reference::gemm_bf16` / `reference::conv2d_bf16`
//! (proptest), accuracy against an f64 GEMM, thread-count independence, argument errors.
mod common;

use common::Rng;
use common::*;
use octet_kernels::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Which bf16 implementation each supported ISA runs, for the "paths ran" lines.
fn bf16_paths() -> String {
    kernels()
        .iter()
        .map(|k| {
            let how = if k.has_bf16_dot() {
                "vdpbf16ps"
            } else if k.isa() >= Isa::Avx2 {
                "emulated-avx2"
            } else {
                "emulated-scalar"
            };
            format!("{}={how}", k.isa())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn finish(paths: PathsRan, name: &str) {
    paths.finish();
    eprintln!("[{name}] bf16 dot per isa: {}", bf16_paths());
}

/// Bit equality, except that any NaN equals any NaN (payloads are not specified for GEMM
/// outputs: the bias add and the operand order of the hardware instruction may pick either).
fn same(got: &[f32], want: &[f32]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits() && !(g.is_nan() && w.is_nan()))
}

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

// ---------------------------------------------------------------------------------------------
// GEMM.

const MS: [usize; 12] = [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 17, 25];
const NS: [usize; 15] = [1, 2, 3, 13, 16, 17, 31, 40, 47, 63, 64, 65, 127, 128, 129];
const KS: [usize; 16] = [1, 2, 3, 4, 5, 7, 8, 31, 63, 64, 65, 127, 128, 129, 256, 257];

/// mode 0: uniform [-1, 1); 1: wide exponents (2^-20..2^20) with signed zeros; 2: small
/// integers and halves (exact cancellations, zeros of both signs); 3: tiny (|x| ~ 2^-63, so
/// products ~ 2^-126 and sums cross the FTZ threshold); 4: mixture of 0-3.
fn gen_f32(rng: &mut Rng, len: usize, mode: u8) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let md = if mode == 4 { rng.below(4) as u8 } else { mode };
            let s = if rng.below(2) == 0 { 1.0 } else { -1.0 };
            match md {
                0 => rng.f32() * 2.0 - 1.0,
                1 => {
                    if rng.below(8) == 0 {
                        0.0 * s
                    } else {
                        s * (1.0 + rng.f32()) * 2f32.powi(rng.below(41) as i32 - 20)
                    }
                }
                2 => [0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0, 0.25][rng.below(8) as usize],
                _ => s * (1.0 + rng.f32()) * 2f32.powi(-64 + rng.below(3) as i32),
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    amode: u8,
    bmode: u8,
    seed: u64,
    pad_a: usize,
    pad_c: usize,
    nxk: bool,
    bias: bool,
    relu: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (prop::sample::select(&MS[..]), 1usize..40).prop_map(|(a, b)| if b < 30 { a } else { b }),
        (prop::sample::select(&NS[..]), 1usize..200).prop_map(|(a, b)| if b < 150 { a } else { b }),
        (prop::sample::select(&KS[..]), 1usize..300).prop_map(|(a, b)| if b < 220 { a } else { b }),
        0u8..5,
        0u8..5,
        any::<u64>(),
        prop_oneof![Just(0usize), 1usize..5],
        prop_oneof![Just(0usize), 1usize..5],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(m, n, k, amode, bmode, seed, pad_a, pad_c, nxk, bias, relu)| Case {
                m,
                n,
                k,
                amode,
                bmode,
                seed: seed | 1,
                pad_a,
                pad_c,
                nxk,
                bias,
                relu,
            },
        )
}

/// Runs `gemm_bf16` for `c` with strides, checks nothing outside the output rows was written,
/// returns the dense output.
fn run_gemm(
    kernel: &Kernel,
    c: &Case,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, TestCaseError> {
    let lda = c.k + c.pad_a;
    let mut ap = vec![f32::NAN; c.m * lda];
    for i in 0..c.m {
        ap[i * lda..i * lda + c.k].copy_from_slice(&a[i * c.k..(i + 1) * c.k]);
    }
    let packed = if c.nxk {
        let mut bt = vec![0f32; c.k * c.n];
        for kk in 0..c.k {
            for j in 0..c.n {
                bt[j * c.k + kk] = b[kk * c.n + j];
            }
        }
        PackedBBf16::new(c.k, c.n, &bt, WeightLayout::NxK).unwrap()
    } else {
        PackedBBf16::new(c.k, c.n, b, WeightLayout::KxN).unwrap()
    };
    prop_assert_eq!((packed.k(), packed.n()), (c.k, c.n));
    let ldc = c.n + c.pad_c;
    let mut out = vec![-99f32; c.m * ldc];
    gemm_bf16(kernel, c.m, &ap, lda, &packed, bias, c.relu, &mut out, ldc).unwrap();
    let mut dense = vec![0f32; c.m * c.n];
    for i in 0..c.m {
        dense[i * c.n..(i + 1) * c.n].copy_from_slice(&out[i * ldc..i * ldc + c.n]);
        for p in 0..c.pad_c {
            prop_assert_eq!(
                out[i * ldc + c.n + p],
                -99.0,
                "wrote outside the output row"
            );
        }
    }
    Ok(dense)
}

#[test]
fn gemm_bf16_bit_exact_every_isa() {
    let paths = PathsRan::new("gemm_bf16");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(&case(), |c| {
            let mut rng = Rng(c.seed);
            let a = gen_f32(&mut rng, c.m * c.k, c.amode);
            let b = gen_f32(&mut rng, c.k * c.n, c.bmode);
            let bias_v = gen_f32(&mut rng, c.n, 0);
            let bias = c.bias.then_some(&bias_v[..]);
            let want = reference::gemm_bf16(c.m, c.n, c.k, &a, &b, bias, c.relu);
            for kern in kernels() {
                let got = run_gemm(&kern, &c, &a, &b, bias)?;
                if let Some(i) = same(&got, &want) {
                    return Err(TestCaseError::fail(format!(
                        "isa {} case {c:?}: out[{i}] = {:e} ({:08x}), reference {:e} ({:08x})",
                        kern.isa(),
                        got[i],
                        got[i].to_bits(),
                        want[i],
                        want[i].to_bits()
                    )));
                }
                paths.ran(kern.isa());
            }
            Ok(())
        })
        .unwrap();
    finish(paths, "gemm_bf16");
}

/// Infinities, NaNs, f32::MAX (rounds to inf in bf16), f32 denormals (become zeros), signed
/// zeros, tiny and huge values in A and B: every path equals the reference (NaN where it is NaN).
#[test]
fn gemm_bf16_special_values_every_isa() {
    let paths = PathsRan::new("gemm_bf16 special values");
    let specials = [
        0.0,
        -0.0,
        1.0,
        -1.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        -f32::MAX,
        f32::from_bits(1),
        -f32::from_bits(0x007f_ffff),
        f32::MIN_POSITIVE,
        2f32.powi(-63),
        -(2f32.powi(-64)),
        2f32.powi(64),
        3.0e38,
    ];
    let mut rng = Rng(77);
    for &(m, n, k, density) in &[
        (7, 70, 33, 50u64),
        (13, 129, 64, 5),
        (6, 64, 257, 1),
        (3, 17, 2, 30),
    ] {
        let mut gen = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    if rng.below(100) < density {
                        specials[rng.below(specials.len() as u64) as usize]
                    } else {
                        rng.f32() - 0.5
                    }
                })
                .collect()
        };
        let a = gen(m * k);
        let b = gen(k * n);
        let bias = gen(n);
        let p = PackedBBf16::new(k, n, &b, WeightLayout::KxN).unwrap();
        for relu in [false, true] {
            let want = reference::gemm_bf16(m, n, k, &a, &b, Some(&bias), relu);
            for kern in kernels() {
                let mut out = vec![0f32; m * n];
                gemm_bf16(&kern, m, &a, k, &p, Some(&bias), relu, &mut out, n).unwrap();
                if let Some(i) = same(&out, &want) {
                    panic!(
                        "{} {m}x{n}x{k}: out[{i}] = {:08x}, reference {:08x}",
                        kern.isa(),
                        out[i].to_bits(),
                        want[i].to_bits()
                    );
                }
                paths.ran(kern.isa());
            }
        }
    }
    finish(paths, "gemm_bf16 special values");
}

/// Operands with one fixed exponent each, around the bound (exponent sum 143) above which the
/// emulated paths skip their per-FMA FTZ check, and below it, where sums cross 2^-126.
#[test]
fn gemm_bf16_ftz_boundary_every_isa() {
    let paths = PathsRan::new("gemm_bf16 FTZ boundary");
    let mut rng = Rng(99);
    for (ea, eb) in [(71, 72), (72, 72), (71, 71), (60, 66), (64, 63)] {
        let (m, n, k) = (13, 70, 301);
        let mut gen = |e: i32, len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    let s = if rng.below(2) == 0 { 1.0 } else { -1.0 };
                    s * (1.0 + rng.below(128) as f32 / 128.0) * 2f32.powi(e - 127)
                })
                .collect()
        };
        let a = gen(ea, m * k);
        let b = gen(eb, k * n);
        let p = PackedBBf16::new(k, n, &b, WeightLayout::KxN).unwrap();
        let want = reference::gemm_bf16(m, n, k, &a, &b, None, false);
        for kern in kernels() {
            let mut out = vec![0f32; m * n];
            gemm_bf16(&kern, m, &a, k, &p, None, false, &mut out, n).unwrap();
            assert_eq!(
                same(&out, &want),
                None,
                "{} exponents {ea}+{eb}",
                kern.isa()
            );
            paths.ran(kern.isa());
        }
    }
    // 129*129 - 128*130 = 1: one pair whose exact sum is a single quantum 2^(ea + eb - 268).
    // Exponent sum 141: 2^-127, flushed to 0; 142: 2^-126, kept. Both on every path.
    for (ea, eb, want) in [
        (70, 71, 0.0),
        (71, 71, f32::MIN_POSITIVE),
        (71, 72, 2.0 * f32::MIN_POSITIVE),
    ] {
        let q = |mant: f32, e: i32| mant * 2f32.powi(e - 134);
        let a = [q(129.0, ea), q(-128.0, ea)];
        let b = [q(129.0, eb), q(130.0, eb)];
        let p = PackedBBf16::new(2, 1, &b, WeightLayout::KxN).unwrap();
        let r = reference::gemm_bf16(1, 1, 2, &a, &b, None, false);
        assert_eq!(
            r[0].to_bits(),
            want.to_bits(),
            "reference, exponents {ea}+{eb}"
        );
        for kern in kernels() {
            let mut out = [7f32];
            gemm_bf16(&kern, 1, &a, 2, &p, None, false, &mut out, 1).unwrap();
            assert_eq!(out[0].to_bits(), want.to_bits(), "{} {ea}+{eb}", kern.isa());
        }
    }
    finish(paths, "gemm_bf16 FTZ boundary");
}

/// Accuracy: against an f64 GEMM of the f32 inputs the error is that of rounding each operand
/// to bf16 (|relative| <= 2^-8 per operand, so <= 2^-7 + 2^-16 per product) plus f32
/// summation; against an f64 GEMM of the bf16-rounded inputs only the f32 summation remains.
#[test]
fn gemm_bf16_accuracy_vs_f64() {
    let paths = PathsRan::new("gemm_bf16 accuracy");
    let mut rng = Rng(11);
    for &(m, n, k) in &[
        (1, 1, 1),
        (5, 63, 17),
        (7, 129, 100),
        (64, 100, 1000),
        (9, 40, 2049),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let p = PackedBBf16::new(k, n, &b, WeightLayout::KxN).unwrap();
        let r = |x: f32| bf16_to_f32(f32_to_bf16(x)) as f64;
        for kern in kernels() {
            let mut out = vec![0f32; m * n];
            gemm_bf16(&kern, m, &a, k, &p, None, false, &mut out, n).unwrap();
            let (mut worst, mut sum_rel) = (0f64, 0f64);
            for i in 0..m {
                for j in 0..n {
                    let (mut exact, mut rounded, mut mag) = (0f64, 0f64, 0f64);
                    for kk in 0..k {
                        let (x, y) = (a[i * k + kk], b[kk * n + j]);
                        exact += x as f64 * y as f64;
                        rounded += r(x) * r(y);
                        mag += (x as f64 * y as f64).abs();
                    }
                    let got = out[i * n + j] as f64;
                    let sum_bound = k as f64 * 2f64.powi(-24) * mag * 1.01;
                    assert!(
                        (got - rounded).abs() <= sum_bound + 1e-30,
                        "{} {m}x{n}x{k} ({i},{j}): {got} vs bf16-input f64 {rounded}",
                        kern.isa()
                    );
                    let rel = (got - exact).abs() / mag.max(1e-30);
                    assert!(
                        rel <= 2f64.powi(-7) + 2f64.powi(-16) + k as f64 * 2f64.powi(-24),
                        "{} {m}x{n}x{k} ({i},{j}): {got} vs f64 {exact} (|a||b| sum {mag})",
                        kern.isa()
                    );
                    worst = worst.max(rel);
                    sum_rel += rel;
                }
            }
            let mean = sum_rel / (m * n) as f64;
            // With K >= 17 the independent operand roundings partly cancel: the mean relative
            // error is below 2^-8 (one product alone can reach 2^-7).
            if k >= 17 {
                assert!(mean <= 2f64.powi(-8), "{}: mean {mean:e}", kern.isa());
            }
            if kern.isa() == kernels().last().unwrap().isa() {
                eprintln!(
                    "{m}x{n}x{k}: error / sum|a*b| max {worst:.2e} (2^{:.1}), mean {mean:.2e} (2^{:.1})",
                    worst.log2(),
                    mean.log2()
                );
            }
            paths.ran(kern.isa());
        }
    }
    finish(paths, "gemm_bf16 accuracy");
}

#[test]
fn gemm_bf16_identical_for_any_thread_count() {
    let paths = PathsRan::new("gemm_bf16 threads");
    let pools: Vec<_> = (1..=3)
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let mut rng = Rng(21);
    for &(m, n, k) in &[
        (97usize, 300usize, 77usize),
        (700, 64, 36),
        (1, 1000, 64),
        (300, 130, 2001),
    ] {
        let a = gen_f32(&mut rng, m * k, 4);
        let b = gen_f32(&mut rng, k * n, 0);
        let bias = gen_f32(&mut rng, n, 0);
        let p = PackedBBf16::new(k, n, &b, WeightLayout::KxN).unwrap();
        let want = reference::gemm_bf16(m, n, k, &a, &b, Some(&bias), true);
        for kern in kernels() {
            for pool in &pools {
                let mut out = vec![0f32; m * n];
                pool.install(|| gemm_bf16(&kern, m, &a, k, &p, Some(&bias), true, &mut out, n))
                    .unwrap();
                assert_eq!(
                    same(&out, &want),
                    None,
                    "{} {m}x{n}x{k} {} threads",
                    kern.isa(),
                    pool.current_num_threads()
                );
            }
            paths.ran(kern.isa());
        }
    }
    finish(paths, "gemm_bf16 threads");
}

#[test]
fn gemm_bf16_bad_arguments_are_errors() {
    assert!(PackedBBf16::new(3, 4, &[0.0; 11], WeightLayout::KxN).is_err());
    assert!(PackedBBf16::new(usize::MAX, 2, &[0.0; 2], WeightLayout::NxK).is_err());
    let p = PackedBBf16::new(3, 4, &[0.5; 12], WeightLayout::KxN).unwrap();
    for kern in kernels() {
        let a = [1.0f32; 6];
        let mut out = [0f32; 8];
        let ok = gemm_bf16(&kern, 2, &a, 3, &p, None, false, &mut out, 4);
        assert!(ok.is_ok());
        assert!(out.iter().all(|&v| v == 1.5));
        let e = |r: Result<(), KernelError>| matches!(r, Err(KernelError::BadArgument(_)));
        assert!(e(gemm_bf16(&kern, 2, &a, 2, &p, None, false, &mut out, 4))); // lda < K
        assert!(e(gemm_bf16(&kern, 3, &a, 3, &p, None, false, &mut out, 4))); // A too short
        assert!(e(gemm_bf16(
            &kern,
            2,
            &a,
            3,
            &p,
            None,
            false,
            &mut out[..7],
            4
        ))); // out short
        assert!(e(gemm_bf16(&kern, 2, &a, 3, &p, None, false, &mut out, 3))); // ldc < N
        assert!(e(gemm_bf16(
            &kern,
            2,
            &a,
            3,
            &p,
            Some(&[0.0; 3]),
            false,
            &mut out,
            4
        ))); // bias length
             // m = 0 and K = 0 are fine; K = 0 gives the bias.
        assert!(gemm_bf16(&kern, 0, &[], 3, &p, None, false, &mut [], 4).is_ok());
        let p0 = PackedBBf16::new(0, 2, &[], WeightLayout::KxN).unwrap();
        let mut o = [9f32; 2];
        gemm_bf16(&kern, 1, &[], 0, &p0, Some(&[-1.0, 2.0]), true, &mut o, 2).unwrap();
        assert_eq!(o, [0.0, 2.0]);
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution.

#[derive(Debug, Clone)]
struct ConvCase {
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    dilation: (usize, usize),
    pads: [usize; 4],
    groups: usize,
    cig: usize,
    cog: usize,
    batch: usize,
    h: usize,
    w: usize,
    xmode: u8,
    wmode: u8,
    bias: bool,
    relu: bool,
    seed: u64,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=3, 1usize..=3, 0u8..3),
        ((1usize..=2, 1usize..=2), (1usize..=2, 1usize..=2)),
        prop_oneof![
            Just([0usize; 4]),
            Just([1; 4]),
            prop::array::uniform4(0usize..=2)
        ],
        (
            prop_oneof![Just(1usize), 1usize..=3],
            1usize..=6,
            prop_oneof![1usize..=5, 15usize..=70],
        ),
        (1usize..=2, 1usize..=9, 1usize..=9),
        (0u8..5, 0u8..5, any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                (kh, kw, pw),
                (stride, dilation),
                pads,
                (groups, cig, cog),
                (batch, h, w),
                (xmode, wmode, bias, relu, seed),
            )| {
                // A third of the cases: pointwise (1x1, stride 1, no padding) to reach the
                // in-place path when C_in/groups is even.
                let pointwise = pw == 0;
                ConvCase {
                    kh: if pointwise { 1 } else { kh },
                    kw: if pointwise { 1 } else { kw },
                    stride: if pointwise { (1, 1) } else { stride },
                    dilation,
                    pads: if pointwise { [0; 4] } else { pads },
                    groups,
                    cig,
                    cog,
                    batch,
                    h,
                    w,
                    xmode,
                    wmode,
                    bias,
                    relu,
                    seed: seed | 1,
                }
            },
        )
}

/// Runs `c` on every ISA (inside `pool` if given) against the reference.
fn run_conv_case(
    c: &ConvCase,
    paths: &PathsRan,
    pool: Option<&rayon::ThreadPool>,
) -> Result<(), TestCaseError> {
    let geom = ConvGeometry {
        kernel: (c.kh, c.kw),
        stride: c.stride,
        dilation: c.dilation,
        pads: c.pads,
        groups: c.groups,
    };
    let (c_in, c_out) = (c.groups * c.cig, c.groups * c.cog);
    let mut rng = Rng(c.seed);
    let x = gen_f32(&mut rng, c.batch * c.h * c.w * c_in, c.xmode);
    let wt = gen_f32(&mut rng, c_out * c.kh * c.kw * c.cig, c.wmode);
    let bias_v = gen_f32(&mut rng, c_out, 0);
    let bias = c.bias.then_some(&bias_v[..]);
    let p = PackedConvBf16::new(geom, c_in, c_out, &wt).unwrap();
    let Ok((oh, ow)) = geom.out_size(c.h, c.w) else {
        // Window larger than the padded input: every path reports it.
        let mut out = vec![0f32; 16];
        for kern in kernels() {
            let r = conv2d_bf16(&kern, &x, (c.batch, c.h, c.w), &p, bias, c.relu, &mut out);
            prop_assert!(r.is_err());
            paths.ran(kern.isa());
        }
        return Ok(());
    };
    let (want, rh, rw) = reference::conv2d_bf16(
        &x,
        (c.batch, c.h, c.w, c_in),
        &wt,
        c_out,
        &geom,
        bias,
        c.relu,
    );
    prop_assert_eq!((rh, rw), (oh, ow));
    for kern in kernels() {
        let mut out = vec![-77f32; want.len() + 3];
        let mut run = || conv2d_bf16(&kern, &x, (c.batch, c.h, c.w), &p, bias, c.relu, &mut out);
        let got = match pool {
            Some(pool) => pool.install(run),
            None => run(),
        };
        prop_assert_eq!(got, Ok((oh, ow)));
        prop_assert_eq!(
            &out[want.len()..],
            &[-77f32; 3][..],
            "wrote past the output"
        );
        if let Some(i) = same(&out[..want.len()], &want) {
            return Err(TestCaseError::fail(format!(
                "isa {} {c:?}: out[{i}] = {:08x}, reference {:08x}",
                kern.isa(),
                out[i].to_bits(),
                want[i].to_bits()
            )));
        }
        paths.ran(kern.isa());
    }
    Ok(())
}

#[test]
fn conv_bf16_bit_exact_every_isa() {
    let paths = PathsRan::new("conv2d_bf16");
    let mut runner = TestRunner::new(Config {
        cases: 192,
        ..Config::default()
    });
    runner
        .run(&conv_case(), |c| run_conv_case(&c, &paths, None))
        .unwrap();
    finish(paths, "conv2d_bf16");
}

/// More output rows than one im2col chunk (1024), in the im2col and the in-place pointwise
/// paths, and with 2 threads.
#[test]
fn conv_bf16_large_and_threaded() {
    let paths = PathsRan::new("conv2d_bf16 large");
    let pool2 = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for (i, (kh, pad, groups, cig, cog, h, w)) in [
        (3usize, 1usize, 1usize, 6usize, 20usize, 37usize, 31usize),
        (1, 0, 2, 4, 33, 41, 29),
        (1, 0, 1, 3, 8, 40, 30),
    ]
    .into_iter()
    .enumerate()
    {
        let c = ConvCase {
            kh,
            kw: kh,
            stride: (1, 1),
            dilation: (1, 1),
            pads: [pad; 4],
            groups,
            cig,
            cog,
            batch: 1,
            h,
            w,
            xmode: 4,
            wmode: 0,
            bias: true,
            relu: i % 2 == 0,
            seed: 1 + i as u64,
        };
        run_conv_case(&c, &paths, None).unwrap();
        run_conv_case(&c, &paths, Some(&pool2)).unwrap();
    }
    finish(paths, "conv2d_bf16 large");
}

#[test]
fn conv_bf16_bad_arguments_are_errors() {
    let g = ConvGeometry::new(3, 3).pad(1);
    assert!(PackedConvBf16::new(g, 4, 8, &[0.0; 8 * 9 * 4 - 1]).is_err());
    assert!(PackedConvBf16::new(g.groups(3), 4, 6, &[0.0; 6 * 9]).is_err());
    assert!(PackedConvBf16::new(g.stride(0, 1), 4, 8, &[0.0; 8 * 9 * 4]).is_err());
    let p = PackedConvBf16::new(g, 4, 8, &[0.25; 8 * 9 * 4]).unwrap();
    let x = vec![1f32; 5 * 5 * 4];
    for kern in kernels() {
        let mut out = vec![0f32; 5 * 5 * 8];
        assert_eq!(
            conv2d_bf16(&kern, &x, (1, 5, 5), &p, None, false, &mut out),
            Ok((5, 5))
        );
        assert_eq!(out[6 * 8], 9.0); // interior pixel: 9 taps x 4 channels x 0.25
        assert!(conv2d_bf16(&kern, &x[1..], (1, 5, 5), &p, None, false, &mut out).is_err());
        assert!(conv2d_bf16(&kern, &x, (1, 5, 5), &p, None, false, &mut out[1..]).is_err());
        assert!(conv2d_bf16(&kern, &x, (1, 5, 5), &p, Some(&[0.0; 7]), false, &mut out).is_err());
        let p5 = PackedConvBf16::new(ConvGeometry::new(5, 5), 4, 8, &[0.0; 8 * 25 * 4]).unwrap();
        assert!(conv2d_bf16(&kern, &x[..16], (1, 2, 2), &p5, None, false, &mut out).is_err());
        assert!(conv2d_bf16(&kern, &x, (usize::MAX, 5, 5), &p, None, false, &mut out).is_err());
    }
}
