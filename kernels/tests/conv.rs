//! int8 convolution (1x1, kxk, strides, padding, dilation, groups, depthwise) on every ISA
//! against the direct-convolution oracle, bit-exactly.
mod common;

use common::Rng;
use common::*;
use octet_kernels::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone)]
struct C {
    batch: usize,
    h: usize,
    w: usize,
    cig: usize,
    cog: usize,
    groups: usize,
    depthwise: bool,
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
    pads: [usize; 4],
    zx: i32,
    zw: i32,
    seed: u64,
    u8out: bool,
}

fn strat() -> impl Strategy<Value = C> {
    (
        (1usize..3, 1usize..12, 1usize..12),
        (
            1usize..20,
            1usize..70,
            prop_oneof![Just(1usize), Just(2), Just(3)],
            any::<bool>(),
        ),
        (
            prop_oneof![
                Just((1usize, 1usize)),
                Just((3, 3)),
                Just((5, 5)),
                (1usize..4, 1usize..4)
            ],
            prop_oneof![Just((1usize, 1usize)), (1usize..3, 1usize..3)],
            prop_oneof![Just((1usize, 1usize)), (1usize..3, 1usize..3)],
            prop_oneof![
                Just([0usize; 4]),
                Just([1; 4]),
                (0usize..3, 0usize..3, 0usize..3, 0usize..3).prop_map(|(a, b, c, d)| [a, b, c, d])
            ],
        ),
        (
            0i32..256,
            prop_oneof![Just(0i32), -10i32..10],
            any::<u64>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (batch, h, w),
                (cig, cog, groups, depthwise),
                (k, s, d, pads),
                (zx, zw, seed, u8out),
            )| C {
                batch,
                h,
                w,
                cig,
                cog,
                groups,
                depthwise,
                k,
                s,
                d,
                pads,
                zx,
                zw,
                seed,
                u8out,
            },
        )
}

fn run_case(c: &C, paths: &PathsRan) -> Result<(), TestCaseError> {
    let (groups, cig, cog) = if c.depthwise {
        (c.cig + 1, 1, 1)
    } else {
        (c.groups, c.cig, c.cog)
    };
    let (c_in, c_out) = (groups * cig, groups * cog);
    let geom = ConvGeometry {
        kernel: c.k,
        stride: c.s,
        dilation: c.d,
        pads: c.pads,
        groups,
    };
    let Ok((oh, ow)) = geom.out_size(c.h, c.w) else {
        return Ok(());
    };
    let mut rng = Rng(c.seed | 1);
    let (am, wm) = (rng.below(3) as u8, rng.below(3) as u8);
    let x = gen_u8(&mut rng, c.batch * c.h * c.w * c_in, am);
    // 7-bit weights: exact on every ISA (the saturating paths are covered by the GEMM tests).
    let wt = gen_i8(&mut rng, c_out * c.k.0 * c.k.1 * cig, wm, -64, 64);
    let (acc, roh, row_) =
        reference::conv2d_u8s8_i32(&x, (c.batch, c.h, c.w, c_in), c.zx, &wt, c_out, c.zw, &geom);
    prop_assert_eq!((roh, row_), (oh, ow));
    let bias: Vec<i32> = (0..c_out).map(|_| rng.below(2001) as i32 - 1000).collect();
    // Usually small multipliers (the epilogue's integer clamp); one seed in four has some up to
    // 3 (its float clamp, for the plain and the residual epilogue).
    let big = c.seed.is_multiple_of(4);
    let mults: Vec<f32> = (0..c_out)
        .map(|_| (0.5 + rng.f32()) * if big { 2.0 } else { 1e-2 })
        .collect();
    let packed = PackedConv::new(geom, c_in, c_out, &wt, c.zw).unwrap();
    let t = TensorU8 {
        data: &x,
        batch: c.batch,
        h: c.h,
        w: c.w,
        zero_point: c.zx,
    };
    for kern in kernels() {
        if c.u8out {
            let ep = Epilogue::requant(Scale::PerChannel(&mults), 100)
                .with_bias(&bias)
                .with_clamp(100, 250);
            let mut out = vec![0u8; c.batch * oh * ow * c_out];
            let dims = conv2d_u8s8(&kern, t, &packed, &ep, OutputSlice::U8(&mut out)).unwrap();
            prop_assert_eq!(dims, (oh, ow));
            let want = reference::requantize_i32(&acc, c_out, Some(&bias), &mults, 100, 100, 250);
            prop_assert_eq!(
                out.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                want,
                "isa {} {:?}",
                kern.isa(),
                c
            );
            // Fused residual add: the same bytes as the conv's output then the add's rule; once
            // with the add's own zero point for the conv's value, once with the conv's (100, as
            // a quantizer writes it: the fused kernels then skip the shift).
            for a_zp in [None, Some(100)] {
                let add = residual_add(&mut rng, (c.seed / 4) % 2 == 1, a_zp);
                let other = gen_u8(&mut rng, out.len(), 0);
                let mut fused = vec![0u8; out.len()];
                conv2d_u8s8_add(
                    &kern,
                    t,
                    &packed,
                    &ep,
                    &other,
                    &add,
                    OutputSlice::U8(&mut fused),
                )
                .unwrap();
                let want: Vec<u8> = out
                    .iter()
                    .zip(&other)
                    .map(|(&x, &y)| add.one(x, y))
                    .collect();
                prop_assert!(
                    fused == want,
                    "residual, isa {} a_zp {a_zp:?} {:?}",
                    kern.isa(),
                    c
                );
            }
        } else {
            let mut out = vec![0i32; c.batch * oh * ow * c_out];
            conv2d_u8s8(
                &kern,
                t,
                &packed,
                &Epilogue::raw(),
                OutputSlice::I32(&mut out),
            )
            .unwrap();
            prop_assert_eq!(&out, &acc, "isa {} {:?}", kern.isa(), c);
        }
        paths.ran(kern.isa());
    }
    Ok(())
}

/// A u8 QLinearAdd with a random table half the time. With `tiny_out` its output scale is so
/// small that the sum leaves the int32 range: the fused epilogue then clamps in float instead of
/// by the packs' saturation.
/// `a_zp`: the first operand's zero point (default random).
fn residual_add(rng: &mut Rng, tiny_out: bool, a_zp: Option<i32>) -> QAdd {
    let s = |rng: &mut Rng| (0.05 + rng.f32()) * 0.1;
    let c_scale = s(rng) * if tiny_out { 1e-9 } else { 1.0 };
    let post: Option<Vec<u8>> =
        (rng.below(2) == 0).then(|| (0..256).map(|_| rng.next() as u8).collect());
    let a_zp = a_zp.unwrap_or_else(|| rng.below(256) as i32);
    QAdd::new(
        (s(rng), a_zp),
        (s(rng), rng.below(256) as i32),
        (c_scale, rng.below(256) as i32),
        false,
        post.as_deref(),
    )
    .unwrap()
}

#[test]
fn conv_bit_exact_every_isa() {
    let paths = PathsRan::new("conv2d_u8s8");
    TestRunner::new(Config {
        cases: 320,
        ..Config::default()
    })
    .run(&strat(), |c| run_case(&c, &paths))
    .unwrap();
    paths.finish();
}

#[test]
fn depthwise_3x3_and_resnet_like_shapes() {
    let paths = PathsRan::new("conv2d_u8s8 fixed shapes");
    let cases = [
        // depthwise 3x3 pad 1, stride 1 and 2, 35 channels (not a multiple of 16 or 8)
        C {
            batch: 1,
            h: 9,
            w: 10,
            cig: 34,
            cog: 1,
            groups: 1,
            depthwise: true,
            k: (3, 3),
            s: (1, 1),
            d: (1, 1),
            pads: [1; 4],
            zx: 3,
            zw: 0,
            seed: 1,
            u8out: true,
        },
        C {
            batch: 2,
            h: 9,
            w: 10,
            cig: 34,
            cog: 1,
            groups: 1,
            depthwise: true,
            k: (3, 3),
            s: (2, 2),
            d: (1, 1),
            pads: [1; 4],
            zx: 250,
            zw: 2,
            seed: 2,
            u8out: false,
        },
        // 3x3 conv 64 -> 64 on 8x8, pad 1
        C {
            batch: 1,
            h: 8,
            w: 8,
            cig: 64,
            cog: 64,
            groups: 1,
            depthwise: false,
            k: (3, 3),
            s: (1, 1),
            d: (1, 1),
            pads: [1; 4],
            zx: 128,
            zw: 0,
            seed: 3,
            u8out: true,
        },
        // 1x1 with groups
        C {
            batch: 1,
            h: 5,
            w: 7,
            cig: 12,
            cog: 20,
            groups: 3,
            depthwise: false,
            k: (1, 1),
            s: (1, 1),
            d: (1, 1),
            pads: [0; 4],
            zx: 7,
            zw: 1,
            seed: 4,
            u8out: false,
        },
        // indirection path (VNNI, c_in/group % 4 == 0): groups, stride/dilation/asymmetric pads, weight zero point
        C {
            batch: 2,
            h: 7,
            w: 6,
            cig: 8,
            cog: 5,
            groups: 2,
            depthwise: false,
            k: (3, 3),
            s: (2, 1),
            d: (2, 1),
            pads: [2, 1, 0, 1],
            zx: 200,
            zw: -3,
            seed: 6,
            u8out: false,
        },
        C {
            batch: 1,
            h: 9,
            w: 9,
            cig: 12,
            cog: 70,
            groups: 1,
            depthwise: false,
            k: (3, 3),
            s: (1, 1),
            d: (1, 1),
            pads: [1; 4],
            zx: 0,
            zw: 5,
            seed: 7,
            u8out: true,
        },
        // more output rows than one im2col chunk (256) : chunked im2col / indirection paths
        C {
            batch: 1,
            h: 40,
            w: 41,
            cig: 16,
            cog: 24,
            groups: 1,
            depthwise: false,
            k: (3, 3),
            s: (1, 1),
            d: (1, 1),
            pads: [1; 4],
            zx: 77,
            zw: 0,
            seed: 8,
            u8out: true,
        },
        C {
            batch: 2,
            h: 23,
            w: 19,
            cig: 3,
            cog: 8,
            groups: 1,
            depthwise: false,
            k: (3, 3),
            s: (1, 1),
            d: (1, 1),
            pads: [1; 4],
            zx: 77,
            zw: 1,
            seed: 9,
            u8out: false,
        },
        // first layer: c_in 3, 7x7 stride 2 pad 3 (K = 147, not a multiple of 4)
        C {
            batch: 1,
            h: 20,
            w: 20,
            cig: 3,
            cog: 16,
            groups: 1,
            depthwise: false,
            k: (7, 7),
            s: (2, 2),
            d: (1, 1),
            pads: [3; 4],
            zx: 0,
            zw: 0,
            seed: 5,
            u8out: true,
        },
        // the same over more than one im2col chunk (440 rows), u8 out: chunk offsets of the
        // fused residual add
        C {
            batch: 1,
            h: 40,
            w: 44,
            cig: 3,
            cog: 64,
            groups: 1,
            depthwise: false,
            k: (7, 7),
            s: (2, 2),
            d: (1, 1),
            pads: [3; 4],
            zx: 9,
            zw: 0,
            seed: 10,
            u8out: true,
        },
    ];
    for c in &cases {
        run_case(c, &paths).unwrap();
    }
    // Whole 64-column rows (the fused kernels' packed-row epilogues, plain and with the residual
    // add): 1x1 and 3x3 to 128 channels; seeds 0..8 give every combination of small / large
    // multipliers and in-range / out-of-range residual sums (see `run_case`).
    for seed in 0..8 {
        for k in [(1, 1), (3, 3)] {
            let c = C {
                batch: 1,
                h: 7,
                w: 9,
                cig: 64,
                cog: 128,
                groups: 1,
                depthwise: false,
                k,
                s: (1, 1),
                d: (1, 1),
                pads: [k.0 / 2; 4],
                zx: 5 + seed as i32,
                zw: 0,
                seed,
                u8out: true,
            };
            run_case(&c, &paths).unwrap();
        }
    }
    paths.finish();
}

#[test]
fn conv_bad_arguments() {
    let k = Kernel::scalar();
    let g = ConvGeometry::new(3, 3);
    assert!(PackedConv::new(g, 4, 4, &[0; 10], 0).is_err());
    assert!(PackedConv::new(g.groups(3), 4, 6, &[0; 6 * 9], 0).is_err());
    assert!(PackedConv::new(
        ConvGeometry::new(3, 3).stride(0, 1),
        4,
        4,
        &[0; 4 * 9 * 4],
        0
    )
    .is_err());
    let p = PackedConv::new(g, 4, 4, &[0; 4 * 9 * 4], 0).unwrap();
    let x = [0u8; 2 * 2 * 4];
    let t = TensorU8 {
        data: &x,
        batch: 1,
        h: 2,
        w: 2,
        zero_point: 0,
    };
    let mut o = [0i32; 16];
    assert!(
        conv2d_u8s8(&k, t, &p, &Epilogue::raw(), OutputSlice::I32(&mut o)).is_err(),
        "window does not fit"
    );
    let t = TensorU8 {
        data: &x,
        batch: 1,
        h: 3,
        w: 3,
        zero_point: 0,
    };
    assert!(
        conv2d_u8s8(&k, t, &p, &Epilogue::raw(), OutputSlice::I32(&mut o)).is_err(),
        "input too small"
    );
}

#[test]
fn conv_identical_for_one_and_two_threads() {
    let paths = PathsRan::new("conv threads");
    let p1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let p2 = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut rng = Rng(11);
    for (geom, c_in, c_out) in [
        (ConvGeometry::new(3, 3).pad(1), 16usize, 24usize),
        (
            ConvGeometry::new(3, 3).pad(1).stride(2, 2).groups(24),
            24,
            24,
        ),
        // stride 1 depthwise: pairs of output rows per task on the VNNI path
        (ConvGeometry::new(3, 3).pad(1).groups(40), 40, 40),
    ] {
        let (batch, h, w) = (2, 23, 19);
        let x = gen_u8(&mut rng, batch * h * w * c_in, 0);
        let wt = gen_i8(&mut rng, c_out * 9 * (c_in / geom.groups), 0, -128, 127);
        let p = PackedConv::new(geom, c_in, c_out, &wt, 0).unwrap();
        let (oh, ow) = geom.out_size(h, w).unwrap();
        let mults: Vec<f32> = (0..c_out).map(|_| rng.f32() * 1e-3).collect();
        for kern in kernels() {
            let run = |pool: &rayon::ThreadPool| {
                let mut out = vec![0u8; batch * oh * ow * c_out];
                pool.install(|| {
                    conv2d_u8s8(
                        &kern,
                        TensorU8 {
                            data: &x,
                            batch,
                            h,
                            w,
                            zero_point: 9,
                        },
                        &p,
                        &Epilogue::requant(Scale::PerChannel(&mults), 3),
                        OutputSlice::U8(&mut out),
                    )
                })
                .unwrap();
                out
            };
            assert_eq!(run(&p1), run(&p2), "{}", kern.isa());
            paths.ran(kern.isa());
        }
    }
    paths.finish();
}

/// One packed convolution called again and again, as the engine does: new contents in the same
/// input buffer (the kept indirection pointers must read them), another buffer, another zero
/// point (the padding segment), another shape, and back to the first buffer: every call equals
/// the oracle.
#[test]
fn repeated_calls_on_reused_buffers_match_the_oracle() {
    let paths = PathsRan::new("conv repeated calls");
    let mut rng = Rng(0xcace);
    let geom = ConvGeometry::new(3, 3).pad(1);
    let (c_in, c_out) = (16usize, 40usize);
    let wt = gen_i8(&mut rng, c_out * 9 * c_in, 0, -64, 64);
    let p = PackedConv::new(geom, c_in, c_out, &wt, 0).unwrap();
    let mut buf_a = gen_u8(&mut rng, 9 * 11 * c_in, 0);
    let mut buf_b = gen_u8(&mut rng, 9 * 11 * c_in, 0);
    let mut calls = 0;
    for kern in kernels() {
        // (which buffer, h, w, zero point, refresh contents)
        for (which, h, w, zx, refresh) in [
            (0, 9, 11, 3, false),
            (0, 9, 11, 3, true),
            (1, 9, 11, 3, true),
            (0, 9, 11, 200, false),
            (0, 11, 9, 200, true),
            (0, 9, 11, 3, true),
            (1, 9, 11, 3, false),
        ] {
            let x: &mut Vec<u8> = if which == 0 { &mut buf_a } else { &mut buf_b };
            if refresh {
                *x = gen_u8(&mut rng, 9 * 11 * c_in, 0);
            }
            let (oh, ow) = geom.out_size(h, w).unwrap();
            let mut out = vec![0i32; oh * ow * c_out];
            conv2d_u8s8(
                &kern,
                TensorU8 {
                    data: x,
                    batch: 1,
                    h,
                    w,
                    zero_point: zx,
                },
                &p,
                &Epilogue::raw(),
                OutputSlice::I32(&mut out),
            )
            .unwrap();
            let (want, _, _) =
                reference::conv2d_u8s8_i32(x, (1, h, w, c_in), zx, &wt, c_out, 0, &geom);
            assert_eq!(out, want, "isa {} call {calls}", kern.isa());
            calls += 1;
        }
        paths.ran(kern.isa());
    }
    println!("{calls} calls identical to the oracle");
    paths.finish();
}

/// The 3x3 depthwise fast paths (AVX-512 VNNI, horizontal stride 1 / 2: 8-pixel blocks,
/// zero-point padding, the correction folded into the bias) and the general path they fall back
/// to (horizontal dilation, weights whose `w - zw` leaves int8) against the oracle, for every
/// output type with per-channel and per-tensor scales: tiny images, widths that leave block
/// remainders, asymmetric pads, channel counts off 16, batch 2.
#[test]
fn depthwise_3x3_fast_paths_every_output() {
    let paths = PathsRan::new("depthwise 3x3 fast paths");
    let mut rng = Rng(0x5eed);
    let mut cases = 0;
    for &(h, w) in &[(1, 1), (2, 2), (3, 3), (7, 7), (5, 21), (4, 18), (2, 33)] {
        for &c in &[1usize, 2, 8, 16, 35, 48] {
            for &s in &[1usize, 2] {
                for pads in [[1usize; 4], [0; 4], [2, 0, 1, 2], [0, 2, 2, 1]] {
                    for d in [(1usize, 1usize), (2, 1), (1, 2)] {
                        let batch = 1 + rng.below(2) as usize;
                        let geom = ConvGeometry {
                            kernel: (3, 3),
                            stride: (s, s),
                            dilation: d,
                            pads,
                            groups: c,
                        };
                        let Ok((oh, ow)) = geom.out_size(h, w) else {
                            continue;
                        };
                        // Mostly int8-fitting `w - zw` (the fast path), sometimes not (fallback).
                        // One channel is a plain GEMM convolution (groups = 1), not depthwise:
                        // 7-bit weights there (the AVX2 GEMM's saturation is tested elsewhere).
                        let (zw, wlo, whi) = match rng.below(4) {
                            _ if c == 1 => (rng.below(21) as i32 - 10, -64, 64),
                            0 => (0, -128, 127),
                            1 => (rng.below(21) as i32 - 10, -64, 64),
                            2 => (-100, -128, 127),
                            _ => (0, -64, 64),
                        };
                        let zx = rng.below(256) as i32;
                        let (am, wm) = (rng.below(3) as u8, rng.below(3) as u8);
                        let x = gen_u8(&mut rng, batch * h * w * c, am);
                        let wt = gen_i8(&mut rng, c * 9, wm, wlo, whi);
                        let (acc, _, _) =
                            reference::conv2d_u8s8_i32(&x, (batch, h, w, c), zx, &wt, c, zw, &geom);
                        let bias: Vec<i32> =
                            (0..c).map(|_| rng.below(2001) as i32 - 1000).collect();
                        let mults: Vec<f32> = (0..c).map(|_| (0.5 + rng.f32()) * 1e-2).collect();
                        let fb: Vec<f32> = (0..c).map(|_| rng.f32() - 0.5).collect();
                        let packed = PackedConv::new(geom, c, c, &wt, zw).unwrap();
                        let t = TensorU8 {
                            data: &x,
                            batch,
                            h,
                            w,
                            zero_point: zx,
                        };
                        let len = batch * oh * ow * c;
                        let ctx = format!(
                            "{batch}x{h}x{w}x{c} s{s} d{d:?} pads {pads:?} zx {zx} zw {zw}"
                        );
                        for kern in kernels() {
                            let isa = kern.isa();
                            // u8, per-channel, bias, clamp
                            let ep = Epilogue::requant(Scale::PerChannel(&mults), 100)
                                .with_bias(&bias)
                                .with_clamp(20, 240);
                            let mut o = vec![0u8; len];
                            conv2d_u8s8(&kern, t, &packed, &ep, OutputSlice::U8(&mut o)).unwrap();
                            let want = reference::requantize_i32(
                                &acc,
                                c,
                                Some(&bias),
                                &mults,
                                100,
                                20,
                                240,
                            );
                            let got: Vec<i32> = o.iter().map(|&v| v as i32).collect();
                            assert_eq!(got, want, "u8 per-channel, isa {isa}, {ctx}");
                            // u8, per-tensor, no bias
                            let ep = Epilogue::requant(Scale::PerTensor(0.013), 7);
                            conv2d_u8s8(&kern, t, &packed, &ep, OutputSlice::U8(&mut o)).unwrap();
                            let want =
                                reference::requantize_i32(&acc, c, None, &[0.013], 7, 0, 255);
                            let got: Vec<i32> = o.iter().map(|&v| v as i32).collect();
                            assert_eq!(got, want, "u8 per-tensor, isa {isa}, {ctx}");
                            // i8, per-channel, bias
                            let ep =
                                Epilogue::requant(Scale::PerChannel(&mults), -3).with_bias(&bias);
                            let mut o = vec![0i8; len];
                            conv2d_u8s8(&kern, t, &packed, &ep, OutputSlice::I8(&mut o)).unwrap();
                            let want = reference::requantize_i32(
                                &acc,
                                c,
                                Some(&bias),
                                &mults,
                                -3,
                                -128,
                                127,
                            );
                            let got: Vec<i32> = o.iter().map(|&v| v as i32).collect();
                            assert_eq!(got, want, "i8, isa {isa}, {ctx}");
                            // f32, per-channel, int32 bias and f32 bias
                            let ep = Epilogue::requant(Scale::PerChannel(&mults), 0)
                                .with_bias(&bias)
                                .with_f32_bias(&fb);
                            let mut o = vec![0f32; len];
                            conv2d_u8s8(&kern, t, &packed, &ep, OutputSlice::F32(&mut o)).unwrap();
                            let want: Vec<f32> = acc
                                .iter()
                                .enumerate()
                                .map(|(i, &v)| {
                                    let j = i % c;
                                    v.wrapping_add(bias[j]) as f32 * mults[j] + fb[j]
                                })
                                .collect();
                            assert!(
                                o.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "f32, isa {isa}, {ctx}"
                            );
                            // raw int32 with bias
                            let ep = Epilogue {
                                bias: Some(&bias),
                                ..Epilogue::raw()
                            };
                            let mut o = vec![0i32; len];
                            conv2d_u8s8(&kern, t, &packed, &ep, OutputSlice::I32(&mut o)).unwrap();
                            let want: Vec<i32> = acc
                                .iter()
                                .enumerate()
                                .map(|(i, &v)| v.wrapping_add(bias[i % c]))
                                .collect();
                            assert_eq!(o, want, "i32, isa {isa}, {ctx}");
                            paths.ran(isa);
                        }
                        cases += 1;
                    }
                }
            }
        }
    }
    eprintln!("[depthwise 3x3 fast paths] {cases} shapes");
    assert!(cases > 500);
    paths.finish();
}

/// `conv2d_u8s8_prepadded` on the input with its padding written in (the zero point) gives the
/// bytes of `conv2d_u8s8` on the unpadded input: the 7x7 / 3x3 stride-2 stems (im2col), a 3x3
/// with 16 channels (indirect), a depthwise 3x3 and asymmetric padding, on every ISA.
#[test]
fn prepadded_input_equals_padding() {
    let paths = PathsRan::new("conv2d_u8s8_prepadded");
    let mut rng = Rng(0x9add);
    for (geom, c_in, c_out, h, w) in [
        (ConvGeometry::new(7, 7).stride(2, 2).pad(3), 3, 64, 23, 30),
        (ConvGeometry::new(3, 3).stride(2, 2).pad(1), 3, 32, 17, 16),
        (ConvGeometry::new(3, 3).pad(1), 16, 64, 9, 11),
        (ConvGeometry::new(3, 3).pad(1).groups(32), 32, 32, 8, 7),
        (
            ConvGeometry {
                pads: [1, 0, 2, 1],
                ..ConvGeometry::new(3, 3)
            },
            8,
            24,
            6,
            5,
        ),
    ] {
        let cig = c_in / geom.groups;
        let x = gen_u8(&mut rng, h * w * c_in, 0);
        let wt = gen_i8(
            &mut rng,
            c_out * geom.kernel.0 * geom.kernel.1 * cig,
            0,
            -64,
            64,
        );
        let packed = PackedConv::new(geom, c_in, c_out, &wt, 0).unwrap();
        let mults: Vec<f32> = (0..c_out).map(|_| (0.5 + rng.f32()) * 1e-2).collect();
        let ep = Epilogue::requant(Scale::PerChannel(&mults), 7);
        let zx = 37;
        let [pt, pl, pb, pr] = geom.pads;
        let (hp, wp) = (h + pt + pb, w + pl + pr);
        let mut xp = vec![zx as u8; hp * wp * c_in];
        for y in 0..h {
            let d = ((y + pt) * wp + pl) * c_in;
            xp[d..d + w * c_in].copy_from_slice(&x[y * w * c_in..(y + 1) * w * c_in]);
        }
        let (oh, ow) = geom.out_size(h, w).unwrap();
        for kern in kernels() {
            fn t(data: &[u8], h: usize, w: usize, zero_point: i32) -> TensorU8<'_> {
                TensorU8 {
                    data,
                    batch: 1,
                    h,
                    w,
                    zero_point,
                }
            }
            // Into a buffer twice, so the kept indirection pointers of one call meet the other.
            for _ in 0..2 {
                let mut want = vec![0u8; oh * ow * c_out];
                let mut got = vec![1u8; oh * ow * c_out];
                let d = conv2d_u8s8(
                    &kern,
                    t(&x, h, w, zx),
                    &packed,
                    &ep,
                    OutputSlice::U8(&mut want),
                )
                .unwrap();
                let dp = conv2d_u8s8_prepadded(
                    &kern,
                    t(&xp, hp, wp, zx),
                    &packed,
                    &ep,
                    OutputSlice::U8(&mut got),
                )
                .unwrap();
                assert_eq!((d, dp), ((oh, ow), (oh, ow)));
                assert!(got == want, "isa {} {geom:?}", kern.isa());
            }
            paths.ran(kern.isa());
        }
    }
    paths.finish();
}
