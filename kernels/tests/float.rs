//! fp32 kernels on every ISA against f64 references, within tolerance (paths differ by FMA).
mod common;

use common::Rng;
use common::*;
use octet_kernels::*;

fn close(got: f32, want: f64, rel: f64, abs: f64) -> bool {
    ((got as f64) - want).abs() <= abs + rel * want.abs()
}

#[test]
fn gemm_f32_every_isa() {
    let paths = PathsRan::new("gemm_f32");
    let mut rng = Rng(5);
    for &(m, n, k) in &[
        (1, 1, 1),
        (1, 64, 7),
        (5, 63, 17),
        (6, 65, 64),
        (7, 129, 100),
        (13, 31, 257),
        (100, 200, 50),
        (70, 130, 2100),
        (9, 40, 33),
        (11, 110, 20),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.f32() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f32() - 0.5).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.f32() - 0.5).collect();
        let p = PackedBF32::new(k, n, &b, WeightLayout::KxN).unwrap();
        for kern in kernels() {
            for relu in [false, true] {
                let mut out = vec![0f32; m * n];
                gemm_f32(&kern, m, &a, k, &p, Some(&bias), relu, &mut out, n).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let mut s = bias[j] as f64;
                        for kk in 0..k {
                            s += a[i * k + kk] as f64 * b[kk * n + j] as f64;
                        }
                        if relu {
                            s = s.max(0.0);
                        }
                        assert!(
                            close(out[i * n + j], s, 1e-5, 1e-5 * (k as f64).sqrt()),
                            "{} {m}x{n}x{k} ({i},{j}): {} vs {s}",
                            kern.isa(),
                            out[i * n + j]
                        );
                    }
                }
            }
            paths.ran(kern.isa());
        }
    }
    paths.finish();
}

#[test]
fn conv_f32_every_isa() {
    let paths = PathsRan::new("conv2d_f32");
    let mut rng = Rng(9);
    for (geom, c_in, c_out, h, w) in [
        (ConvGeometry::new(3, 3).pad(1), 8, 16, 7, 9),
        (
            ConvGeometry::new(3, 3).stride(2, 2).dilation(1, 2).pad(2),
            6,
            4,
            9,
            8,
        ),
        (ConvGeometry::new(1, 1).groups(2), 6, 10, 4, 5),
        (ConvGeometry::new(3, 3).pad(1).groups(5), 5, 5, 6, 6),
    ] {
        let x: Vec<f32> = (0..h * w * c_in).map(|_| rng.f32() - 0.5).collect();
        let cig = c_in / geom.groups;
        let wt: Vec<f32> = (0..c_out * 9 * cig)
            .take(c_out * geom.kernel.0 * geom.kernel.1 * cig)
            .map(|_| rng.f32() - 0.5)
            .collect();
        let bias: Vec<f32> = (0..c_out).map(|_| rng.f32()).collect();
        // Reference via the int8 oracle's geometry loop, in f64.
        let (oh, ow) = geom.out_size(h, w).unwrap();
        let (kh, kw) = geom.kernel;
        let cog = c_out / geom.groups;
        let p = PackedConvF32::new(geom, c_in, c_out, &wt).unwrap();
        for kern in kernels() {
            let mut out = vec![0f32; oh * ow * c_out];
            assert_eq!(
                conv2d_f32(&kern, &x, (1, h, w), &p, Some(&bias), false, &mut out).unwrap(),
                (oh, ow)
            );
            for oy in 0..oh {
                for ox in 0..ow {
                    for oc in 0..c_out {
                        let gi = oc / cog;
                        let mut s = bias[oc] as f64;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * geom.stride.0 + ky * geom.dilation.0) as isize
                                    - geom.pads[0] as isize;
                                let ix = (ox * geom.stride.1 + kx * geom.dilation.1) as isize
                                    - geom.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                    continue;
                                }
                                for ci in 0..cig {
                                    s += x[(iy as usize * w + ix as usize) * c_in + gi * cig + ci]
                                        as f64
                                        * wt[((oc * kh + ky) * kw + kx) * cig + ci] as f64;
                                }
                            }
                        }
                        let got = out[(oy * ow + ox) * c_out + oc];
                        assert!(
                            close(got, s, 1e-5, 1e-5),
                            "{} {geom:?}: {got} vs {s}",
                            kern.isa()
                        );
                    }
                }
            }
            paths.ran(kern.isa());
        }
    }
    paths.finish();
}

fn erf64(x: f64) -> f64 {
    // High-accuracy erf via series / continued fraction (f64), for the tests only.
    if x.abs() < 3.0 {
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc continued fraction (Lentz), accurate for |x| >= 3.
        let z = x.abs();
        let mut f = z;
        for k in (1..60).rev() {
            f = z + (k as f64 / 2.0) / f;
        }
        let erfc = (-z * z).exp() / (f * std::f64::consts::PI.sqrt());
        x.signum() * (1.0 - erfc)
    }
}

fn erfc64(x: f64) -> f64 {
    if x >= 3.0 {
        let mut f = x;
        for k in (1..60).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
    } else {
        1.0 - erf64(x)
    }
}

#[test]
fn elementwise_every_isa() {
    let paths = PathsRan::new("elementwise f32");
    let xs: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) / 100.0).collect();
    for kern in kernels() {
        let mut g = xs.clone();
        gelu_inplace(&kern, &mut g);
        let mut e = xs.clone();
        erf_inplace(&kern, &mut e);
        let mut ex = xs.clone();
        exp_inplace(&kern, &mut ex);
        let mut r = xs.clone();
        relu_inplace(&kern, &mut r);
        let mut max_rel_gelu = 0f64;
        for (i, &x) in xs.iter().enumerate() {
            let x64 = x as f64;
            let z = x64 / std::f64::consts::SQRT_2;
            let one_plus = if z >= 0.0 {
                2.0 - erfc64(z)
            } else {
                erfc64(-z)
            };
            let want = 0.5 * x64 * one_plus;
            if want != 0.0 {
                max_rel_gelu = max_rel_gelu.max(((g[i] as f64 - want) / want).abs());
            }
            // Far negative tail (|x| > 5, |gelu| < 2e-6): f32 rounding of z^2 inside exp(-z^2) costs ~1e-5 relative.
            let rel = if x.abs() > 5.0 { 2e-5 } else { 2e-6 };
            assert!(
                close(g[i], want, rel, 1e-30),
                "{} gelu({x}) = {} vs {want}",
                kern.isa(),
                g[i]
            );
            assert!(
                close(e[i], erf64(x64), 1e-6, 1e-7),
                "{} erf({x}) = {} vs {}",
                kern.isa(),
                e[i],
                erf64(x64)
            );
            assert!(
                close(ex[i], x64.exp(), 1e-6, 0.0),
                "{} exp({x}) = {} vs {}",
                kern.isa(),
                ex[i],
                x64.exp()
            );
            assert_eq!(r[i], x.max(0.0));
        }
        eprintln!("{}: max relative GELU error {max_rel_gelu:.2e}", kern.isa());
        let a: Vec<f32> = xs.iter().map(|x| x * 0.3).collect();
        let mut o = vec![0f32; xs.len()];
        add(&kern, &xs, &a, &mut o).unwrap();
        assert!(o.iter().zip(&xs).zip(&a).all(|((o, x), y)| *o == x + y));
        mul(&kern, &xs, &a, &mut o).unwrap();
        assert!(o.iter().zip(&xs).zip(&a).all(|((o, x), y)| *o == x * y));
        assert!(add(&kern, &xs, &a[1..], &mut o).is_err());
        paths.ran(kern.isa());
    }
    paths.finish();
}

#[test]
fn softmax_and_layer_norm_every_isa() {
    let paths = PathsRan::new("softmax/layernorm f32");
    let mut rng = Rng(3);
    for n in [1usize, 7, 16, 17, 64, 100, 384] {
        let rows = 3;
        let x: Vec<f32> = (0..rows * n).map(|_| (rng.f32() - 0.5) * 20.0).collect();
        let gamma: Vec<f32> = (0..n).map(|_| rng.f32() + 0.5).collect();
        let beta: Vec<f32> = (0..n).map(|_| rng.f32() - 0.5).collect();
        for kern in kernels() {
            let mut s = x.clone();
            softmax_rows(&kern, &mut s, n).unwrap();
            let mut ln = vec![0f32; rows * n];
            layer_norm_rows(&kern, &x, &gamma, &beta, 1e-5, &mut ln).unwrap();
            for r in 0..rows {
                let row = &x[r * n..(r + 1) * n];
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                let mean: f64 = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                let var: f64 =
                    row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                for j in 0..n {
                    let want = (row[j] as f64 - m).exp() / z;
                    assert!(
                        close(s[r * n + j], want, 1e-5, 1e-9),
                        "{} softmax n={n}",
                        kern.isa()
                    );
                    let want = (row[j] as f64 - mean) / (var + 1e-5).sqrt() * gamma[j] as f64
                        + beta[j] as f64;
                    assert!(
                        close(ln[r * n + j], want, 1e-5, 1e-5),
                        "{} layernorm n={n}: {} vs {want}",
                        kern.isa(),
                        ln[r * n + j]
                    );
                }
            }
            paths.ran(kern.isa());
        }
    }
    let k = Kernel::scalar();
    assert!(softmax_rows(&k, &mut [0.0; 5], 2).is_err());
    assert!(layer_norm_rows(&k, &[0.0; 4], &[1.0; 2], &[0.0; 3], 1e-5, &mut [0.0; 4]).is_err());
    paths.finish();
}

#[test]
fn gemm_f32_identical_for_any_thread_count() {
    let paths = PathsRan::new("gemm_f32 threads");
    let pools: Vec<_> = (1..=3)
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let mut rng = Rng(21);
    for &(m, n, k) in &[(97usize, 300usize, 77usize), (700, 64, 36), (1, 1000, 64)] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.f32() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f32() - 0.5).collect();
        let p = PackedBF32::new(k, n, &b, WeightLayout::KxN).unwrap();
        for kern in kernels() {
            let outs: Vec<Vec<u32>> = pools
                .iter()
                .map(|pool| {
                    let mut out = vec![0f32; m * n];
                    pool.install(|| gemm_f32(&kern, m, &a, k, &p, None, true, &mut out, n))
                        .unwrap();
                    out.iter().map(|v| v.to_bits()).collect()
                })
                .collect();
            assert!(
                outs.iter().all(|o| *o == outs[0]),
                "{} {m}x{n}x{k}",
                kern.isa()
            );
            paths.ran(kern.isa());
        }
    }
    paths.finish();
}

/// `softmax_rows_nan_to`: rows whose softmax is NaN (all -inf, as a fully masked attention row)
/// become the constant; every other row equals `softmax_rows` bit for bit; on every ISA.
#[test]
fn softmax_nan_to_replaces_only_nan_rows_every_isa() {
    let paths = PathsRan::new("softmax + NaN replace");
    let mut rng = Rng(11);
    for n in [1usize, 5, 16, 33, 128] {
        let rows = 4;
        let mut x: Vec<f32> = (0..rows * n).map(|_| (rng.f32() - 0.5) * 20.0).collect();
        // Row 1: fully masked; row 3: one masked element (a normal softmax).
        x[n..2 * n].fill(f32::NEG_INFINITY);
        if n > 1 {
            x[3 * n] = f32::NEG_INFINITY;
        }
        for kern in kernels() {
            let mut plain = x.clone();
            softmax_rows(&kern, &mut plain, n).unwrap();
            assert!(plain[n..2 * n].iter().all(|v| v.is_nan()), "n={n}");
            let mut fixed = x.clone();
            softmax_rows_nan_to(&kern, &mut fixed, n, 0.0).unwrap();
            for (i, (&a, &b)) in plain.iter().zip(&fixed).enumerate() {
                if (n..2 * n).contains(&i) {
                    assert_eq!(b, 0.0, "{} n={n} element {i}", kern.isa());
                } else {
                    assert_eq!(a.to_bits(), b.to_bits(), "{} n={n} element {i}", kern.isa());
                }
            }
            paths.ran(kern.isa());
        }
    }
    assert!(softmax_rows_nan_to(&Kernel::scalar(), &mut [0.0; 5], 2, 0.0).is_err());
    paths.finish();
}

/// Large softmax / layer-norm inputs are split over the pool by rows: 1, 2 and 3 threads give
/// the same bits, on every ISA.
#[test]
fn row_kernels_identical_for_any_thread_count() {
    let paths = PathsRan::new("softmax/layernorm threads");
    let pools = pools(&[1, 2, 3]);
    let mut rng = Rng(5);
    let (rows, n) = (301, 128);
    let mut x: Vec<f32> = (0..rows * n).map(|_| (rng.f32() - 0.5) * 16.0).collect();
    x[7 * n..8 * n].fill(f32::NEG_INFINITY);
    let gamma: Vec<f32> = (0..n).map(|_| rng.f32() + 0.5).collect();
    let beta: Vec<f32> = (0..n).map(|_| rng.f32() - 0.5).collect();
    for kern in kernels() {
        let run = |pool: &rayon::ThreadPool| {
            pool.install(|| {
                let mut s = x.clone();
                softmax_rows_nan_to(&kern, &mut s, n, 0.0).unwrap();
                let mut s2 = x.clone();
                softmax_rows(&kern, &mut s2, n).unwrap();
                let mut ln = vec![0f32; x.len()];
                let xf: Vec<f32> = x
                    .iter()
                    .map(|v| if v.is_finite() { *v } else { 1.0 })
                    .collect();
                layer_norm_rows(&kern, &xf, &gamma, &beta, 1e-5, &mut ln).unwrap();
                [s, s2, ln].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
            })
        };
        let want = run(&pools[0]);
        for p in &pools[1..] {
            assert_eq!(run(p), want, "{}", kern.isa());
        }
        paths.ran(kern.isa());
    }
    paths.finish();
}

/// K = 0: the product is empty, the output is the bias (then ReLU) on every ISA.
#[test]
fn gemm_f32_with_empty_k_is_the_bias() {
    let paths = PathsRan::new("gemm_f32 K = 0");
    let (m, n) = (7usize, 70usize);
    let p = PackedBF32::new(0, n, &[], WeightLayout::KxN).unwrap();
    let bias: Vec<f32> = (0..n).map(|j| j as f32 - 30.5).collect();
    for kern in kernels() {
        let mut out = vec![f32::NAN; m * n];
        gemm_f32(&kern, m, &[], 0, &p, Some(&bias), true, &mut out, n).unwrap();
        for row in out.chunks(n) {
            let want: Vec<f32> = bias.iter().map(|&b| b.max(0.0)).collect();
            assert_eq!(row, &want[..], "isa {}", kern.isa());
        }
        paths.ran(kern.isa());
    }
    paths.finish();
}
