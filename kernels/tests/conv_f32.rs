//! fp32 GEMM / convolution / transpose on every ISA path (proptest): each result is checked
//! (1) against an f64 reference within the f32 summation error bound and (2) bit for bit against
//! the path's own sequential rule (`acc = acc + a*b` on scalar, `acc = fma(a, b, acc)` on AVX2 and
//! AVX-512, K in (ky, kx, c) order with padding taps as zeros, then `+ bias`, then ReLU), which
//! shows that the indirection buffer, the border scratch, the K blocking and the thread split
//! change nothing. Also: identical bits for 1, 2 and 3 threads, argument errors.
mod common;

use common::Rng;
use common::*;
use octet_kernels::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

fn fused(isa: Isa) -> bool {
    isa != Isa::Scalar
}

/// One output: the sequential f32 rule of the path, and the f64 sum with sum |terms|.
struct Dot {
    acc: f32,
    exact: f64,
    abs: f64,
}
impl Dot {
    fn new() -> Self {
        Dot {
            acc: 0.0,
            exact: 0.0,
            abs: 0.0,
        }
    }
    fn add(&mut self, a: f32, b: f32, fma: bool) {
        self.acc = if fma {
            a.mul_add(b, self.acc)
        } else {
            self.acc + a * b
        };
        let p = a as f64 * b as f64;
        self.exact += p;
        self.abs += p.abs();
    }
    /// (bit-exact value of the path, f64 value, tolerance)
    fn finish(&self, k: usize, bias: Option<f32>, relu: bool) -> (f32, f64, f64) {
        let (mut v, mut e, mut abs) = (self.acc, self.exact, self.abs);
        if let Some(b) = bias {
            v += b;
            e += b as f64;
            abs += (b as f64).abs();
        }
        if relu {
            v = v.max(0.0);
            e = e.max(0.0);
        }
        // Recursive f32 summation of k + 1 terms: |error| <= (k + 1) u sum|terms| (u = 2^-24);
        // doubled for the final rounding and margin.
        (v, e, 2.0 * (k as f64 + 2.0) * 2f64.powi(-24) * abs + 1e-30)
    }
}

fn vals(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

fn check(
    isa: Isa,
    what: &str,
    got: f32,
    (want, exact, tol): (f32, f64, f64),
) -> Result<(), TestCaseError> {
    if got.to_bits() != want.to_bits() {
        return Err(TestCaseError::fail(format!(
            "isa {isa} {what}: {got:e} ({:08x}), sequential rule {want:e} ({:08x})",
            got.to_bits(),
            want.to_bits()
        )));
    }
    if (got as f64 - exact).abs() > tol {
        return Err(TestCaseError::fail(format!(
            "isa {isa} {what}: {got:e} vs f64 {exact:e}, tolerance {tol:e}"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct ConvCase {
    geom: ConvGeometry,
    cig: usize,
    cog: usize,
    h: usize,
    w: usize,
    batch: usize,
    bias: bool,
    relu: bool,
    seed: u64,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (
            1usize..=5,
            1usize..=5,
            1usize..=3,
            1usize..=3,
            1usize..=2,
            1usize..=2,
        ),
        (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3, 1usize..=3),
        (
            1usize..=9,
            prop::sample::select(vec![1usize, 3, 16, 17, 32, 63, 64, 65]),
        ),
        (1usize..=11, 1usize..=11, 1usize..=2),
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                (kh, kw, sh, sw, dh, dw),
                (pt, pl, pb, pr, g),
                (cig, cog),
                (h, w, batch),
                (bias, relu, seed),
            )| {
                let mut geom = ConvGeometry::new(kh, kw)
                    .stride(sh, sw)
                    .dilation(dh, dw)
                    .groups(g);
                geom.pads = [pt, pl, pb, pr];
                // Make the padded input at least as large as the dilated kernel.
                let (eh, ew) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
                let h = h.max(eh.saturating_sub(pt + pb)).max(1);
                let w = w.max(ew.saturating_sub(pl + pr)).max(1);
                ConvCase {
                    geom,
                    cig,
                    cog: if g > 1 { cog.min(17) } else { cog },
                    h,
                    w,
                    batch,
                    bias,
                    relu,
                    seed,
                }
            },
        )
}

/// Runs `conv2d_f32` on `kern` and checks every output (and that nothing past it is written).
fn run_conv(
    kern: &Kernel,
    c: &ConvCase,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    packed: &PackedConvF32,
) -> Result<(), TestCaseError> {
    let geom = c.geom;
    let g = geom.groups;
    let (c_in, c_out) = (c.cig * g, c.cog * g);
    let (oh, ow) = geom.out_size(c.h, c.w).unwrap();
    let rows = c.batch * oh * ow;
    let mut out = vec![-7.0f32; rows * c_out + 5];
    let got = conv2d_f32(kern, x, (c.batch, c.h, c.w), packed, bias, c.relu, &mut out)
        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(got, (oh, ow));
    prop_assert!(
        out[rows * c_out..].iter().all(|&v| v == -7.0),
        "wrote past the output"
    );
    let (kh, kw) = geom.kernel;
    let k = kh * kw * c.cig;
    let isa = kern.isa();
    for b in 0..c.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..c_out {
                    let gi = oc / c.cog;
                    let mut d = Dot::new();
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * geom.stride.0 + ky * geom.dilation.0) as isize
                                - geom.pads[0] as isize;
                            let ix = (ox * geom.stride.1 + kx * geom.dilation.1) as isize
                                - geom.pads[1] as isize;
                            let inside =
                                iy >= 0 && ix >= 0 && (iy as usize) < c.h && (ix as usize) < c.w;
                            for ci in 0..c.cig {
                                let a = if inside {
                                    x[((b * c.h + iy as usize) * c.w + ix as usize) * c_in
                                        + gi * c.cig
                                        + ci]
                                } else {
                                    0.0
                                };
                                d.add(a, wt[((oc * kh + ky) * kw + kx) * c.cig + ci], fused(isa));
                            }
                        }
                    }
                    let r = ((b * oh + oy) * ow + ox) * c_out + oc;
                    check(
                        isa,
                        &format!("{c:?} out[{b},{oy},{ox},{oc}]"),
                        out[r],
                        d.finish(k, bias.map(|bb| bb[oc]), c.relu),
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn conv_f32_every_isa_proptest() {
    let paths = PathsRan::new("conv2d_f32 (proptest)");
    let mut runner = TestRunner::new(Config {
        cases: 160,
        ..Config::default()
    });
    runner
        .run(&conv_case(), |c| {
            let mut rng = Rng(c.seed | 1);
            let g = c.geom.groups;
            let (c_in, c_out) = (c.cig * g, c.cog * g);
            let k = c.geom.kernel.0 * c.geom.kernel.1 * c.cig;
            let x = vals(&mut rng, c.batch * c.h * c.w * c_in);
            let wt = vals(&mut rng, c_out * k);
            let bias_v = vals(&mut rng, c_out);
            let bias = c.bias.then_some(&bias_v[..]);
            let packed = PackedConvF32::new(c.geom, c_in, c_out, &wt)
                .map_err(|e| TestCaseError::fail(format!("{e}")))?;
            for kern in kernels() {
                run_conv(&kern, &c, &x, &wt, bias, &packed)?;
                paths.ran(kern.isa());
            }
            Ok(())
        })
        .unwrap();
    paths.finish();
}

/// Shapes the proptest does not reach: ResNet's 7x7 stride-2 stem (3 channels, border rows
/// copied into the scratch), K above the K blocking threshold (3x3 with 352 channels: K = 3168; 1x1
/// stride 2 with 3100 channels), a 1x1 with padding, several 64-column panels, batch 2.
#[test]
fn conv_f32_large_shapes_every_isa() {
    let paths = PathsRan::new("conv2d_f32 (large shapes)");
    let cases = [
        (
            ConvGeometry::new(7, 7).stride(2, 2).pad(3),
            3,
            64,
            23,
            21,
            1,
        ),
        (ConvGeometry::new(3, 3).pad(1), 352, 70, 6, 7, 2),
        (ConvGeometry::new(1, 1).stride(2, 2), 3100, 130, 5, 6, 1),
        (ConvGeometry::new(1, 1).pad(1), 20, 129, 4, 3, 1),
        (
            ConvGeometry::new(3, 3).stride(2, 2).pad(1),
            40,
            200,
            9,
            10,
            1,
        ),
    ];
    let mut rng = Rng(77);
    for (geom, c_in, c_out, h, w, batch) in cases {
        let c = ConvCase {
            geom,
            cig: c_in,
            cog: c_out,
            h,
            w,
            batch,
            bias: true,
            relu: true,
            seed: 0,
        };
        let k = geom.kernel.0 * geom.kernel.1 * c_in;
        let x = vals(&mut rng, batch * h * w * c_in);
        let wt = vals(&mut rng, c_out * k);
        let bias = vals(&mut rng, c_out);
        let packed = PackedConvF32::new(geom, c_in, c_out, &wt).unwrap();
        for kern in kernels() {
            run_conv(&kern, &c, &x, &wt, Some(&bias), &packed).unwrap();
            paths.ran(kern.isa());
        }
    }
    paths.finish();
}

#[derive(Debug, Clone)]
struct GemmCase {
    m: usize,
    n: usize,
    k: usize,
    lda_pad: usize,
    ldc_pad: usize,
    bias: bool,
    relu: bool,
    seed: u64,
}

fn gemm_case() -> impl Strategy<Value = GemmCase> {
    (
        1usize..=20,
        prop_oneof![1usize..=140, Just(64usize), Just(65usize)],
        prop_oneof![2 => 1usize..=80, 1 => 3073usize..=3300],
        0usize..=3,
        0usize..=3,
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(|(m, n, k, lda_pad, ldc_pad, (bias, relu, seed))| GemmCase {
            m,
            n,
            k,
            lda_pad,
            ldc_pad,
            bias,
            relu,
            seed,
        })
}

/// K above 3072 is cut into K blocks (partial sums through the output).
#[test]
fn gemm_f32_every_isa_proptest() {
    let paths = PathsRan::new("gemm_f32 (proptest)");
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&gemm_case(), |c| {
            let mut rng = Rng(c.seed | 1);
            let (m, n, k) = (c.m, c.n, c.k);
            let (lda, ldc) = (k + c.lda_pad, n + c.ldc_pad);
            let a = vals(&mut rng, m * lda);
            let b = vals(&mut rng, k * n);
            let bias_v = vals(&mut rng, n);
            let bias = c.bias.then_some(&bias_v[..]);
            let p = PackedBF32::new(k, n, &b, WeightLayout::KxN).unwrap();
            for kern in kernels() {
                let isa = kern.isa();
                let mut out = vec![-7.0f32; m * ldc];
                gemm_f32(&kern, m, &a, lda, &p, bias, c.relu, &mut out, ldc)
                    .map_err(|e| TestCaseError::fail(format!("{e}")))?;
                for i in 0..m {
                    for j in 0..n {
                        let mut d = Dot::new();
                        for kk in 0..k {
                            d.add(a[i * lda + kk], b[kk * n + j], fused(isa));
                        }
                        check(
                            isa,
                            &format!("{c:?} ({i},{j})"),
                            out[i * ldc + j],
                            d.finish(k, bias.map(|bb| bb[j]), c.relu),
                        )?;
                    }
                    prop_assert!(
                        out[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == -7.0),
                        "wrote outside the output row"
                    );
                }
                paths.ran(isa);
            }
            Ok(())
        })
        .unwrap();
    paths.finish();
}

#[test]
fn conv_f32_identical_for_any_thread_count() {
    let paths = PathsRan::new("conv2d_f32 threads");
    let pools: Vec<_> = (1..=3)
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let mut rng = Rng(31);
    for (geom, c_in, c_out, h, w) in [
        (ConvGeometry::new(3, 3).pad(1), 24, 70, 20, 19),
        (ConvGeometry::new(7, 7).stride(2, 2).pad(3), 3, 64, 40, 37),
        (ConvGeometry::new(1, 1).stride(2, 2), 64, 200, 17, 18),
        (ConvGeometry::new(1, 1), 40, 130, 30, 30),
        (ConvGeometry::new(3, 3).pad(1), 360, 64, 9, 9), // K = 3240: K blocks
        (ConvGeometry::new(3, 3).pad(1).groups(2), 16, 32, 12, 12),
    ] {
        let k = geom.kernel.0 * geom.kernel.1 * c_in / geom.groups;
        let x = vals(&mut rng, h * w * c_in);
        let wt = vals(&mut rng, c_out * k);
        let bias = vals(&mut rng, c_out);
        let p = PackedConvF32::new(geom, c_in, c_out, &wt).unwrap();
        let (oh, ow) = geom.out_size(h, w).unwrap();
        for kern in kernels() {
            let outs: Vec<Vec<u32>> = pools
                .iter()
                .map(|pool| {
                    let mut out = vec![0f32; oh * ow * c_out];
                    pool.install(|| {
                        conv2d_f32(&kern, &x, (1, h, w), &p, Some(&bias), true, &mut out)
                    })
                    .unwrap();
                    out.iter().map(|v| v.to_bits()).collect()
                })
                .collect();
            assert!(
                outs.iter().all(|o| *o == outs[0]),
                "{} {geom:?} {c_in}->{c_out}",
                kern.isa()
            );
            paths.ran(kern.isa());
        }
    }
    paths.finish();
}

#[test]
fn transpose_f32_every_isa() {
    let paths = PathsRan::new("transpose_f32");
    let mut rng = Rng(3);
    for (rows, cols) in [
        (1, 1),
        (1, 9),
        (7, 1),
        (16, 16),
        (17, 33),
        (64, 49),
        (100, 37),
        (3, 224),
    ] {
        let src = vals(&mut rng, rows * cols);
        for kern in kernels() {
            let mut dst = vec![0f32; rows * cols];
            transpose_f32(&kern, &src, rows, cols, &mut dst).unwrap();
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r].to_bits(), src[r * cols + c].to_bits());
                }
            }
            paths.ran(kern.isa());
        }
    }
    let k = Kernel::scalar();
    assert!(transpose_f32(&k, &[0.0; 5], 2, 3, &mut [0.0; 6]).is_err());
    assert!(transpose_f32(&k, &[0.0; 6], 2, 3, &mut [0.0; 5]).is_err());
    assert!(transpose_f32(&k, &[], usize::MAX, 2, &mut []).is_err());
    paths.finish();
}

#[test]
fn conv_f32_argument_errors() {
    let k = Kernel::scalar();
    let g = ConvGeometry::new(3, 3).pad(1);
    assert!(PackedConvF32::new(g, 4, 8, &[0.0; 8 * 9 * 4 - 1]).is_err());
    assert!(PackedConvF32::new(g.groups(3), 4, 6, &[0.0; 6 * 9]).is_err());
    assert!(PackedConvF32::new(g, 0, 8, &[]).is_err());
    assert!(PackedConvF32::new(ConvGeometry::new(0, 3), 4, 8, &[]).is_err());
    let p = PackedConvF32::new(g, 4, 8, &[0.5; 8 * 9 * 4]).unwrap();
    let x = vec![1.0f32; 5 * 5 * 4];
    let mut out = vec![0f32; 5 * 5 * 8];
    assert!(conv2d_f32(&k, &x[1..], (1, 5, 5), &p, None, false, &mut out).is_err());
    assert!(conv2d_f32(&k, &x, (1, 5, 5), &p, None, false, &mut out[1..]).is_err());
    assert!(conv2d_f32(&k, &x, (1, 5, 5), &p, Some(&[0.0; 7]), false, &mut out).is_err());
    assert!(conv2d_f32(&k, &x, (usize::MAX, 5, 5), &p, None, false, &mut out).is_err());
    let nopad = PackedConvF32::new(ConvGeometry::new(3, 3), 4, 8, &[0.5; 8 * 9 * 4]).unwrap();
    assert!(conv2d_f32(&k, &x, (1, 2, 5), &nopad, None, false, &mut out).is_err());
    assert_eq!(
        conv2d_f32(&k, &x, (1, 5, 5), &p, None, false, &mut out).unwrap(),
        (5, 5)
    );
    // Every output: 4 channels x (number of taps inside) x 0.5.
    assert_eq!(out[0], 4.0 * 4.0 * 0.5);
    assert_eq!(out[(2 * 5 + 2) * 8], 4.0 * 9.0 * 0.5);
    let pb = PackedBF32::new(3, 2, &[1.0; 6], WeightLayout::KxN).unwrap();
    assert!(gemm_f32(&k, 2, &[0.0; 5], 3, &pb, None, false, &mut [0.0; 4], 2).is_err());
    assert!(gemm_f32(&k, 2, &[0.0; 6], 2, &pb, None, false, &mut [0.0; 4], 2).is_err());
    assert!(gemm_f32(&k, 2, &[0.0; 6], 3, &pb, None, false, &mut [0.0; 3], 2).is_err());
}

/// `conv2d_f32_add`: the residual Add fused before the ReLU equals `conv2d_f32` without ReLU,
/// then `+ res`, then ReLU, bit for bit, on every ISA, for the proptest's shapes (padding,
/// strides, groups, K blocking, partial panels) and 1 and 2 threads.
#[test]
fn conv_f32_residual_add_equals_separate_ops_every_isa() {
    let paths = PathsRan::new("conv2d_f32 + residual add");
    let pools = pools(&[1, 2]);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    runner
        .run(&conv_case(), |c| {
            let mut rng = Rng(c.seed | 3);
            let g = c.geom.groups;
            let (c_in, c_out) = (c.cig * g, c.cog * g);
            let k = c.geom.kernel.0 * c.geom.kernel.1 * c.cig;
            let x = vals(&mut rng, c.batch * c.h * c.w * c_in);
            let wt = vals(&mut rng, c_out * k);
            let bias_v = vals(&mut rng, c_out);
            let bias = c.bias.then_some(&bias_v[..]);
            let packed = PackedConvF32::new(c.geom, c_in, c_out, &wt).unwrap();
            let (oh, ow) = c.geom.out_size(c.h, c.w).unwrap();
            let n = c.batch * oh * ow * c_out;
            let res = vals(&mut rng, n);
            for kern in kernels() {
                let mut want = vec![0f32; n];
                conv2d_f32(
                    &kern,
                    &x,
                    (c.batch, c.h, c.w),
                    &packed,
                    bias,
                    false,
                    &mut want,
                )
                .unwrap();
                for (y, &r) in want.iter_mut().zip(&res) {
                    *y += r;
                    if c.relu {
                        *y = y.max(0.0);
                    }
                }
                for pool in &pools {
                    let mut got = vec![0f32; n];
                    pool.install(|| {
                        conv2d_f32_add(
                            &kern,
                            &x,
                            (c.batch, c.h, c.w),
                            &packed,
                            bias,
                            Some(&res),
                            c.relu,
                            &mut got,
                        )
                    })
                    .unwrap();
                    let (gb, wb): (Vec<u32>, Vec<u32>) = (
                        got.iter().map(|v| v.to_bits()).collect(),
                        want.iter().map(|v| v.to_bits()).collect(),
                    );
                    prop_assert_eq!(gb, wb, "{} {:?}", kern.isa(), c);
                }
                paths.ran(kern.isa());
            }
            Ok(())
        })
        .unwrap();
    // A residual operand shorter than the output is an error.
    let k = Kernel::best().unwrap();
    let p = PackedConvF32::new(ConvGeometry::new(1, 1), 2, 2, &[1.0; 4]).unwrap();
    let mut out = [0f32; 8];
    assert!(conv2d_f32_add(
        &k,
        &[1.0; 8],
        (1, 2, 2),
        &p,
        None,
        Some(&[0.0; 7]),
        false,
        &mut out
    )
    .is_err());
    paths.finish();
}
