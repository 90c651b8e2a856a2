//! int8 GEMM: every supported ISA path against the scalar triple-loop oracle, bit-exactly.
mod common;

use common::*;
use octet_kernels::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const MS: [usize; 12] = [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 17, 25];
const NS: [usize; 15] = [1, 2, 3, 13, 16, 17, 31, 40, 47, 63, 64, 65, 127, 128, 129];
const KS: [usize; 16] = [1, 2, 3, 4, 5, 7, 8, 31, 63, 64, 65, 127, 128, 129, 256, 257];

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    za: i32,
    zb: i32,
    amode: u8,
    bmode: u8,
    seed: u64,
    pad_a: usize,
    pad_c: usize,
    nxk: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (prop::sample::select(&MS[..]), 1usize..40).prop_map(|(a, b)| if b < 30 { a } else { b }),
        (prop::sample::select(&NS[..]), 1usize..200).prop_map(|(a, b)| if b < 150 { a } else { b }),
        (prop::sample::select(&KS[..]), 1usize..300).prop_map(|(a, b)| if b < 220 { a } else { b }),
        prop_oneof![Just(0i32), Just(255), Just(128), 0i32..256],
        prop_oneof![Just(0i32), Just(0), Just(-128), Just(127), -128i32..128],
        0u8..4,
        0u8..4,
        any::<u64>(),
        prop_oneof![Just(0usize), 1usize..5],
        prop_oneof![Just(0usize), 1usize..5],
        any::<bool>(),
    )
        .prop_map(
            |(m, n, k, za, zb, amode, bmode, seed, pad_a, pad_c, nxk)| Case {
                m,
                n,
                k,
                za,
                zb,
                amode,
                bmode,
                seed: seed | 1,
                pad_a,
                pad_c,
                nxk,
            },
        )
}

/// Runs the raw int32 GEMM for `c` on `kernel` with weights bounded to [wlo, whi].
fn run_i32(kernel: &Kernel, c: &Case, wlo: i32, whi: i32) -> (Vec<i32>, Vec<u8>, Vec<i8>) {
    let mut rng = Rng(c.seed);
    let a = gen_u8(&mut rng, c.m * c.k, c.amode);
    let b = gen_i8(&mut rng, c.k * c.n, c.bmode, wlo, whi);
    let lda = c.k + c.pad_a;
    let mut ap = vec![7u8; c.m * lda];
    for i in 0..c.m {
        ap[i * lda..i * lda + c.k].copy_from_slice(&a[i * c.k..(i + 1) * c.k]);
    }
    let packed = if c.nxk {
        let mut bt = vec![0i8; c.k * c.n];
        for kk in 0..c.k {
            for j in 0..c.n {
                bt[j * c.k + kk] = b[kk * c.n + j];
            }
        }
        PackedB::new(c.k, c.n, &bt, WeightLayout::NxK, c.zb).unwrap()
    } else {
        PackedB::new(c.k, c.n, &b, WeightLayout::KxN, c.zb).unwrap()
    };
    let ldc = c.n + c.pad_c;
    let mut out = vec![-99i32; c.m * ldc];
    gemm_u8s8(
        kernel,
        MatrixU8 {
            data: &ap,
            rows: c.m,
            ld: lda,
            zero_point: c.za,
        },
        &packed,
        &Epilogue::raw(),
        OutputSlice::I32(&mut out),
        ldc,
    )
    .unwrap();
    let mut dense = vec![0; c.m * c.n];
    for i in 0..c.m {
        dense[i * c.n..(i + 1) * c.n].copy_from_slice(&out[i * ldc..i * ldc + c.n]);
        for p in 0..c.pad_c {
            assert_eq!(out[i * ldc + c.n + p], -99, "wrote outside the output row");
        }
    }
    (dense, a, b)
}

#[test]
fn int32_accumulators_bit_exact_every_isa() {
    let paths = PathsRan::new("gemm_u8s8 i32");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(&case(), |c| {
            for kern in kernels() {
                let isa = kern.isa();
                // Full-range weights.
                let (got, a, b) = run_i32(&kern, &c, -128, 127);
                let want = if gemm_u8s8_is_exact(isa) {
                    reference::gemm_u8s8_i32(c.m, c.n, c.k, &a, c.za, &b, c.zb)
                } else {
                    reference::gemm_u8s8_i32_saturating(c.m, c.n, c.k, &a, c.za, &b, c.zb)
                };
                prop_assert_eq!(&got, &want, "isa {} case {:?}", isa, c);
                // reduce_range (7-bit) weights: every path is exact.
                let (got, a, b) = run_i32(&kern, &c, -64, 64);
                let want = reference::gemm_u8s8_i32(c.m, c.n, c.k, &a, c.za, &b, c.zb);
                prop_assert_eq!(&got, &want, "isa {} reduce_range case {:?}", isa, c);
                paths.ran(isa);
            }
            Ok(())
        })
        .unwrap();
    paths.finish();
}

#[derive(Debug, Clone)]
struct EpiCase {
    base: Case,
    kind: u8,
    per_channel: bool,
    bias: bool,
    zp: i32,
    clamp: Option<(i32, i32)>,
    mult_exp: i32,
}

fn epi_case() -> impl Strategy<Value = EpiCase> {
    (
        case(),
        0u8..4,
        any::<bool>(),
        any::<bool>(),
        0i32..256,
        prop_oneof![Just(None), (0i32..128, 128i32..256).prop_map(Some)],
        // Multipliers from 2^-16 to 2^2: the whole-row epilogues' integer clamp (multipliers
        // <= 0.99) and their float clamp (larger) both run.
        -16i32..2,
    )
        .prop_map(
            |(base, kind, per_channel, bias, zp, clamp, mult_exp)| EpiCase {
                base,
                kind,
                per_channel,
                bias,
                zp,
                clamp,
                mult_exp,
            },
        )
}

#[test]
fn fused_epilogue_bit_exact_every_isa() {
    let paths = PathsRan::new("gemm_u8s8 epilogue");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(&epi_case(), |e| {
            let c = &e.base;
            let mut rng = Rng(c.seed ^ 0xabcdef);
            let a = gen_u8(&mut rng, c.m * c.k, c.amode);
            let b = gen_i8(&mut rng, c.k * c.n, c.bmode, -64, 64);
            let bias: Vec<i32> = (0..c.n).map(|_| rng.below(20001) as i32 - 10000).collect();
            let mults: Vec<f32> = (0..c.n)
                .map(|_| (1.0 + rng.f32()) * 2f32.powi(e.mult_exp))
                .collect();
            let fbias: Vec<f32> = (0..c.n).map(|_| rng.f32() - 0.5).collect();
            let packed = PackedB::new(c.k, c.n, &b, WeightLayout::KxN, c.zb).unwrap();
            let acc = reference::gemm_u8s8_i32(c.m, c.n, c.k, &a, c.za, &b, c.zb);
            let scale = if e.per_channel {
                Scale::PerChannel(&mults)
            } else {
                Scale::PerTensor(mults[0])
            };
            let mvec: Vec<f32> = if e.per_channel {
                mults.clone()
            } else {
                vec![mults[0]]
            };
            let (zp, lo, hi) = if e.kind == 1 {
                (e.zp - 128, -128, 127)
            } else {
                (e.zp, 0, 255)
            };
            let (lo, hi) = match e.clamp {
                Some((l, h)) if e.kind == 1 => ((l - 128).max(lo), (h - 128).min(hi)),
                Some((l, h)) => (l.max(lo), h.min(hi)),
                None => (lo, hi),
            };
            let mut ep = Epilogue::requant(scale, zp);
            if e.bias {
                ep = ep.with_bias(&bias);
            }
            if let Some((l, h)) = e.clamp {
                ep = if e.kind == 1 {
                    ep.with_clamp(l - 128, h - 128)
                } else {
                    ep.with_clamp(l, h)
                };
            }
            if e.kind == 3 && e.bias {
                ep = ep.with_f32_bias(&fbias);
            }
            let am = MatrixU8 {
                data: &a,
                rows: c.m,
                ld: c.k,
                zero_point: c.za,
            };
            let bb = if e.bias { Some(&bias[..]) } else { None };
            for kern in kernels() {
                let isa = kern.isa();
                match e.kind {
                    0 => {
                        let mut out = vec![0u8; c.m * c.n];
                        gemm_u8s8(&kern, am, &packed, &ep, OutputSlice::U8(&mut out), c.n).unwrap();
                        let want = reference::requantize_i32(&acc, c.n, bb, &mvec, zp, lo, hi);
                        let got: Vec<i32> = out.iter().map(|&x| x as i32).collect();
                        prop_assert_eq!(got, want, "u8 isa {} {:?}", isa, e);
                    }
                    1 => {
                        let mut out = vec![0i8; c.m * c.n];
                        gemm_u8s8(&kern, am, &packed, &ep, OutputSlice::I8(&mut out), c.n).unwrap();
                        let want = reference::requantize_i32(&acc, c.n, bb, &mvec, zp, lo, hi);
                        let got: Vec<i32> = out.iter().map(|&x| x as i32).collect();
                        prop_assert_eq!(got, want, "i8 isa {} {:?}", isa, e);
                    }
                    2 => {
                        let mut out = vec![0i32; c.m * c.n];
                        gemm_u8s8(&kern, am, &packed, &ep, OutputSlice::I32(&mut out), c.n)
                            .unwrap();
                        let want: Vec<i32> = acc
                            .iter()
                            .enumerate()
                            .map(|(i, v)| v + bb.map_or(0, |b| b[i % c.n]))
                            .collect();
                        prop_assert_eq!(out, want, "i32 isa {}", isa);
                    }
                    _ => {
                        let mut out = vec![0f32; c.m * c.n];
                        gemm_u8s8(&kern, am, &packed, &ep, OutputSlice::F32(&mut out), c.n)
                            .unwrap();
                        let want: Vec<u32> = acc
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| {
                                let j = i % c.n;
                                let v = v + bb.map_or(0, |b| b[j]);
                                let mut y = v as f32 * mvec[if e.per_channel { j } else { 0 }];
                                if e.bias {
                                    y += fbias[j];
                                }
                                y.to_bits()
                            })
                            .collect();
                        let got: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
                        prop_assert_eq!(got, want, "f32 isa {}", isa);
                    }
                }
                paths.ran(isa);
            }
            Ok(())
        })
        .unwrap();
    paths.finish();
}

/// Round-half-to-even at exact .5 ties, on every path.
#[test]
fn requant_rounds_half_to_even() {
    let paths = PathsRan::new("gemm_u8s8 ties");
    // A = [v], B = [1] (k=1): acc = v; mult 0.5 gives ties for odd v.
    let vals: Vec<u8> = (0..=255).collect();
    let packed = PackedB::new(1, 1, &[1], WeightLayout::KxN, 0).unwrap();
    for kern in kernels() {
        let mut out = vec![0u8; 256];
        gemm_u8s8(
            &kern,
            MatrixU8 {
                data: &vals,
                rows: 256,
                ld: 1,
                zero_point: 0,
            },
            &packed,
            &Epilogue::requant(Scale::PerTensor(0.5), 0),
            OutputSlice::U8(&mut out),
            1,
        )
        .unwrap();
        for (v, &o) in out.iter().enumerate() {
            assert_eq!(
                o as f32,
                (v as f32 * 0.5).round_ties_even(),
                "{} v={v}",
                kern.isa()
            );
        }
        assert_eq!(out[1], 0);
        assert_eq!(out[3], 2);
        assert_eq!(out[5], 2);
        paths.ran(kern.isa());
    }
    paths.finish();
}

/// The reason reduce_range exists: vpmaddubsw saturates with full-range u8 x s8 operands.
#[test]
fn avx2_saturates_full_range_and_is_exact_with_reduce_range() {
    let k = 4;
    let a = vec![255u8; k];
    let full = vec![127i8; k];
    let seven = vec![64i8; k];
    let exact_full = reference::gemm_u8s8_i32(1, 1, k, &a, 0, &full, 0)[0];
    assert_eq!(exact_full, 4 * 255 * 127);
    let mut checked = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512] {
        let Ok(kern) = Kernel::new(isa) else { continue };
        let run = |w: &[i8]| {
            let p = PackedB::new(k, 1, w, WeightLayout::KxN, 0).unwrap();
            let mut out = [0i32];
            gemm_u8s8(
                &kern,
                MatrixU8 {
                    data: &a,
                    rows: 1,
                    ld: k,
                    zero_point: 0,
                },
                &p,
                &Epilogue::raw(),
                OutputSlice::I32(&mut out),
                1,
            )
            .unwrap();
            out[0]
        };
        let got = run(&full);
        assert_eq!(
            got,
            2 * 32767,
            "{isa}: each pair 255*127*2 = 64770 saturates to 32767"
        );
        assert_ne!(got, exact_full, "{isa}: must differ from the exact result");
        assert_eq!(run(&seven), 4 * 255 * 64, "{isa}: 7-bit weights are exact");
        checked.push(isa.name());
    }
    if let Ok(k) = Kernel::new(Isa::Avx512Vnni) {
        let p = PackedB::new(4, 1, &full, WeightLayout::KxN, 0).unwrap();
        let mut out = [0i32];
        gemm_u8s8(
            &k,
            MatrixU8 {
                data: &a,
                rows: 1,
                ld: 4,
                zero_point: 0,
            },
            &p,
            &Epilogue::raw(),
            OutputSlice::I32(&mut out),
            1,
        )
        .unwrap();
        assert_eq!(out[0], exact_full, "VNNI never saturates");
        checked.push("avx512vnni");
    }
    eprintln!("[saturation] isa paths ran: {}", checked.join(", "));
    if Isa::supported().unwrap().contains(&Isa::Avx2) {
        assert!(checked.contains(&"avx2"));
    }
}

#[test]
fn s8_activations_via_shift() {
    let paths = PathsRan::new("gemm s8s8 shift");
    let (m, n, k) = (5, 70, 33);
    let mut rng = Rng(42);
    let a: Vec<i8> = gen_i8(&mut rng, m * k, 0, -128, 127);
    let b = gen_i8(&mut rng, k * n, 0, -64, 64);
    let za = -3;
    let mut au = vec![0u8; m * k];
    shift_s8_to_u8(&a, &mut au).unwrap();
    let p = PackedB::new(k, n, &b, WeightLayout::KxN, 0).unwrap();
    let want: Vec<i32> = (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            (0..k)
                .map(|kk| (a[i * k + kk] as i32 - za) * b[kk * n + j] as i32)
                .sum()
        })
        .collect();
    for kern in kernels() {
        let mut out = vec![0i32; m * n];
        gemm_u8s8(
            &kern,
            MatrixU8 {
                data: &au,
                rows: m,
                ld: k,
                zero_point: za + 128,
            },
            &p,
            &Epilogue::raw(),
            OutputSlice::I32(&mut out),
            n,
        )
        .unwrap();
        assert_eq!(out, want, "{}", kern.isa());
        paths.ran(kern.isa());
    }
    paths.finish();
}

#[test]
fn identical_results_for_one_and_two_threads() {
    let paths = PathsRan::new("gemm threads");
    let p1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let p2 = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let p3 = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for &(m, n, k) in &[(97usize, 300usize, 77usize), (1, 1000, 64), (700, 64, 36)] {
        let mut rng = Rng(m as u64 * 31 + n as u64);
        let a = gen_u8(&mut rng, m * k, 0);
        let b = gen_i8(&mut rng, k * n, 0, -128, 127);
        let p = PackedB::new(k, n, &b, WeightLayout::KxN, 3).unwrap();
        let mults: Vec<f32> = (0..n).map(|_| rng.f32() * 1e-3).collect();
        for kern in kernels() {
            let run = |pool: &rayon::ThreadPool| {
                let mut out = vec![0u8; m * n];
                pool.install(|| {
                    gemm_u8s8(
                        &kern,
                        MatrixU8 {
                            data: &a,
                            rows: m,
                            ld: k,
                            zero_point: 17,
                        },
                        &p,
                        &Epilogue::requant(Scale::PerChannel(&mults), 5),
                        OutputSlice::U8(&mut out),
                        n,
                    )
                })
                .unwrap();
                out
            };
            let r1 = run(&p1);
            assert_eq!(r1, run(&p2), "{}", kern.isa());
            assert_eq!(r1, run(&p3), "{}", kern.isa());
            paths.ran(kern.isa());
        }
    }
    paths.finish();
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let k = Kernel::scalar();
    assert!(PackedB::new(3, 4, &[0; 11], WeightLayout::KxN, 0).is_err());
    assert!(PackedB::new(3, 4, &[0; 12], WeightLayout::KxN, 200).is_err());
    let p = PackedB::new(3, 4, &[0; 12], WeightLayout::KxN, 0).unwrap();
    let a = [0u8; 6];
    let mut o = [0i32; 8];
    let am = MatrixU8 {
        data: &a,
        rows: 2,
        ld: 3,
        zero_point: 0,
    };
    assert!(gemm_u8s8(&k, am, &p, &Epilogue::raw(), OutputSlice::I32(&mut o), 4).is_ok());
    let short = MatrixU8 {
        data: &a[..5],
        ..am
    };
    let e = gemm_u8s8(&k, short, &p, &Epilogue::raw(), OutputSlice::I32(&mut o), 4).unwrap_err();
    assert!(e.to_string().contains("too small"), "{e}");
    assert!(gemm_u8s8(
        &k,
        am,
        &p,
        &Epilogue::raw(),
        OutputSlice::I32(&mut o[..7]),
        4
    )
    .is_err());
    assert!(gemm_u8s8(&k, am, &p, &Epilogue::raw(), OutputSlice::I32(&mut o), 3).is_err());
    assert!(gemm_u8s8(
        &k,
        am,
        &p,
        &Epilogue::raw().with_bias(&[1, 2, 3]),
        OutputSlice::I32(&mut o),
        4
    )
    .is_err());
    let mut o8 = [0u8; 8];
    assert!(gemm_u8s8(
        &k,
        am,
        &p,
        &Epilogue::requant(Scale::PerChannel(&[1.0; 3]), 0),
        OutputSlice::U8(&mut o8),
        4
    )
    .is_err());
    assert!(gemm_u8s8(
        &k,
        am,
        &p,
        &Epilogue::requant(Scale::PerTensor(1.0), 300),
        OutputSlice::U8(&mut o8),
        4
    )
    .is_err());
    assert!(gemm_u8s8(
        &k,
        am,
        &p,
        &Epilogue::requant(Scale::PerTensor(1.0), 0).with_clamp(300, 400),
        OutputSlice::U8(&mut o8),
        4
    )
    .is_err());
    let bad_zp = MatrixU8 {
        zero_point: -1,
        ..am
    };
    assert!(gemm_u8s8(
        &k,
        bad_zp,
        &p,
        &Epilogue::raw(),
        OutputSlice::I32(&mut o),
        4
    )
    .is_err());
}

/// Shapes large enough for several L2 row blocks and many panels (the proptest shapes fit in
/// one block), against the oracle, with 1 and 2 threads.
#[test]
fn large_shapes_multi_block_against_reference() {
    let paths = PathsRan::new("gemm large shapes");
    let p2 = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for &(m, n, k, za, zb) in &[
        (200usize, 130usize, 3001usize, 7i32, 0i32),
        (13, 700, 2048, 200, -2),
        (97, 64, 1024, 0, 0),
    ] {
        let mut rng = Rng((m * n + k) as u64);
        let a = gen_u8(&mut rng, m * k, 2);
        let b = gen_i8(&mut rng, k * n, 2, -128, 127);
        let p = PackedB::new(k, n, &b, WeightLayout::KxN, zb).unwrap();
        let exact = reference::gemm_u8s8_i32(m, n, k, &a, za, &b, zb);
        let sat = reference::gemm_u8s8_i32_saturating(m, n, k, &a, za, &b, zb);
        for kern in kernels() {
            let want = if gemm_u8s8_is_exact(kern.isa()) {
                &exact
            } else {
                &sat
            };
            for threads in [1, 2] {
                let mut out = vec![0i32; m * n];
                let mut run = || {
                    gemm_u8s8(
                        &kern,
                        MatrixU8 {
                            data: &a,
                            rows: m,
                            ld: k,
                            zero_point: za,
                        },
                        &p,
                        &Epilogue::raw(),
                        OutputSlice::I32(&mut out),
                        n,
                    )
                };
                if threads == 1 { run() } else { p2.install(run) }.unwrap();
                assert_eq!(&out, want, "{} {m}x{n}x{k} threads {threads}", kern.isa());
            }
            paths.ran(kern.isa());
        }
    }
    paths.finish();
}

/// u8 x u8 (two activations, e.g. attention) through `PackedB::from_u8`.
#[test]
fn u8_times_u8_via_from_u8() {
    let paths = PathsRan::new("gemm u8u8 from_u8");
    let (m, n, k) = (7, 70, 37);
    let mut rng = Rng(99);
    let a = gen_u8(&mut rng, m * k, 0);
    let b = gen_u8(&mut rng, k * n, 0);
    let (za, zb) = (3, 200);
    let want: Vec<i32> = (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            (0..k)
                .map(|kk| (a[i * k + kk] as i32 - za) * (b[kk * n + j] as i32 - zb))
                .sum()
        })
        .collect();
    let p = PackedB::from_u8(k, n, &b, WeightLayout::KxN, zb).unwrap();
    assert!(PackedB::from_u8(k, n, &b, WeightLayout::KxN, 256).is_err());
    // What the saturating paths compute: the emulation on the shifted s8 operand.
    let bs: Vec<i8> = b.iter().map(|&v| (v ^ 0x80) as i8).collect();
    let sat = reference::gemm_u8s8_i32_saturating(m, n, k, &a, za, &bs, zb - 128);
    for kern in kernels() {
        let mut out = vec![0i32; m * n];
        gemm_u8s8(
            &kern,
            MatrixU8 {
                data: &a,
                rows: m,
                ld: k,
                zero_point: za,
            },
            &p,
            &Epilogue::raw(),
            OutputSlice::I32(&mut out),
            n,
        )
        .unwrap();
        let expect = if gemm_u8s8_is_exact(kern.isa()) {
            &want
        } else {
            &sat
        };
        assert_eq!(&out, expect, "{}", kern.isa());
        paths.ran(kern.isa());
    }
    paths.finish();
}

/// The F32 epilogue's GELU and post-scale, applied per tile, equal the separate passes
/// (`gelu_inplace` on the whole output, then the per-column multiply) bit for bit, on every ISA
/// and for 1 and 2 threads (different tilings).
#[test]
fn f32_gelu_post_scale_equal_separate_passes_every_isa() {
    let paths = PathsRan::new("gemm_u8s8 f32 gelu + post-scale");
    let pools = pools(&[1, 2]);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    runner
        .run(&(case(), any::<bool>()), |(c, post)| {
            let mut rng = Rng(c.seed ^ 0x5eed);
            let a = gen_u8(&mut rng, c.m * c.k, c.amode);
            let b = gen_i8(&mut rng, c.k * c.n, c.bmode, -128, 128);
            let scales: Vec<f32> = (0..c.n).map(|_| (0.5 + rng.f32()) * 1e-3).collect();
            let fbias: Vec<f32> = (0..c.n).map(|_| rng.f32() - 0.5).collect();
            let ps: Vec<f32> = (0..c.n).map(|_| 0.25 + rng.f32()).collect();
            let packed = PackedB::new(c.k, c.n, &b, WeightLayout::KxN, c.zb).unwrap();
            let am = MatrixU8 {
                data: &a,
                rows: c.m,
                ld: c.k,
                zero_point: c.za,
            };
            let plain = Epilogue::requant(Scale::PerChannel(&scales), 0).with_f32_bias(&fbias);
            let mut fused = plain.with_f32_gelu();
            if post {
                fused = fused.with_f32_post_scale(&ps);
            }
            for kern in kernels() {
                let mut want = vec![0f32; c.m * c.n];
                gemm_u8s8(&kern, am, &packed, &plain, OutputSlice::F32(&mut want), c.n).unwrap();
                gelu_inplace(&kern, &mut want);
                if post {
                    for (i, y) in want.iter_mut().enumerate() {
                        *y *= ps[i % c.n];
                    }
                }
                let want: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
                for pool in &pools {
                    let mut got = vec![0f32; c.m * c.n];
                    pool.install(|| {
                        gemm_u8s8(&kern, am, &packed, &fused, OutputSlice::F32(&mut got), c.n)
                    })
                    .unwrap();
                    let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                    prop_assert_eq!(&got, &want, "isa {} {:?}", kern.isa(), c);
                }
                paths.ran(kern.isa());
            }
            Ok(())
        })
        .unwrap();
    // A GELU epilogue on a byte output is an error, not a silent no-op.
    let kern = Kernel::best().unwrap();
    let packed = PackedB::new(4, 2, &[1i8; 8], WeightLayout::KxN, 0).unwrap();
    let a = [1u8; 4];
    let am = MatrixU8 {
        data: &a,
        rows: 1,
        ld: 4,
        zero_point: 0,
    };
    let mut out = [0u8; 2];
    let ep = Epilogue::requant(Scale::PerTensor(0.1), 0).with_f32_gelu();
    assert!(gemm_u8s8(&kern, am, &packed, &ep, OutputSlice::U8(&mut out), 2).is_err());
    paths.finish();
}

/// The branch-free u8 epilogues of whole 64-column tiles (VNNI `FAST` / `FAST_SAT`: zero point
/// added to the int16 packs with saturation, clamp on the bytes), against the scalar
/// requantization: accumulators far outside int16 (K = 257 of 255 x +-127, multipliers up to
/// 0.99), every zero point class and clamps that are, and are not, the whole u8 range.
#[test]
fn whole_tile_u8_epilogues_saturate_like_int32() {
    let paths = PathsRan::new("gemm_u8s8 whole-tile u8 epilogues");
    let (m, k) = (13, 257);
    let mut rng = Rng(0x5eed_f00d);
    let mut cases = 0;
    for n in [64usize, 128, 129] {
        // Rows of 255 and of 0 next to random ones; weights of one sign per column half, so
        // sums reach about +-8.3e6.
        let a: Vec<u8> = (0..m * k)
            .map(|i| match (i / k) % 3 {
                0 => 255,
                1 => 0,
                _ => rng.below(256) as u8,
            })
            .collect();
        let b: Vec<i8> = (0..k * n)
            .map(|i| match (i % n) % 4 {
                0 => 127,
                1 => -128,
                _ => (rng.below(256) as i32 - 128) as i8,
            })
            .collect();
        let packed = PackedB::new(k, n, &b, WeightLayout::KxN, 0).unwrap();
        let am = MatrixU8 {
            data: &a,
            rows: m,
            ld: k,
            zero_point: 0,
        };
        // Full-range weights: the vpmaddubsw paths saturate pairs (their own oracle).
        let exact = reference::gemm_u8s8_i32(m, n, k, &a, 0, &b, 0);
        let saturating = reference::gemm_u8s8_i32_saturating(m, n, k, &a, 0, &b, 0);
        for zp in [0, 1, 128, 255] {
            for clamp in [
                None,
                Some((0, 255)),
                Some((3, 250)),
                Some((100, 100)),
                Some((0, 0)),
            ] {
                for top in [0.99f32, 1e-3, 2e-5] {
                    let mults: Vec<f32> = (0..n).map(|j| top / (1 + j % 7) as f32).collect();
                    let mut ep = Epilogue::requant(Scale::PerChannel(&mults), zp);
                    let (lo, hi) = clamp.unwrap_or((0, 255));
                    if let Some((l, h)) = clamp {
                        ep = ep.with_clamp(l, h);
                    }
                    for kern in kernels() {
                        let acc = if gemm_u8s8_is_exact(kern.isa()) {
                            &exact
                        } else {
                            &saturating
                        };
                        let want = reference::requantize_i32(acc, n, None, &mults, zp, lo, hi);
                        let mut out = vec![0u8; m * n];
                        gemm_u8s8(&kern, am, &packed, &ep, OutputSlice::U8(&mut out), n).unwrap();
                        let got: Vec<i32> = out.iter().map(|&x| x as i32).collect();
                        assert_eq!(
                            got,
                            want,
                            "isa {} n {n} zp {zp} clamp {clamp:?}",
                            kern.isa()
                        );
                        paths.ran(kern.isa());
                    }
                    cases += 1;
                }
            }
        }
    }
    eprintln!("[gemm_u8s8 whole-tile u8 epilogues] {cases} cases");
    paths.finish();
}
