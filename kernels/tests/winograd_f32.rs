//! fp32 3x3 convolutions served by Winograd F(2x2, 3x3) (`PackedConvF32::algorithm`): each
//! output against the f64 sum within a bound of the same order as the direct path's summation
//! bound (F(2x2,3x3) adds a few roundings per product); odd sizes (partial tiles), batch 2,
//! several 64-column panels and tile blocks, bias / residual / ReLU; identical bits for 1, 2
//! and 3 threads and for the fused residual add vs the separate ops. ISAs without AVX-512 run
//! the direct path on the same weights (also checked against f64).
mod common;

use common::Rng;
use common::*;
use octet_kernels::*;

fn vals(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

#[test]
fn winograd_3x3_every_isa() {
    let paths = PathsRan::new("conv2d_f32 winograd");
    let pools = pools(&[1, 2, 3]);
    let mut rng = Rng(0x3a3a);
    let geom = ConvGeometry::new(3, 3).pad(1);
    let (mut worst, mut cases) = (0f64, 0);
    // (c_in, c_out, h, w, batch): ResNet-like, odd sizes, many tiles (several blocks), 256.
    for (c_in, c_out, h, w, batch) in [
        (16, 16, 5, 7, 1),
        (64, 64, 14, 14, 1),
        (32, 80, 9, 11, 2),
        (48, 128, 23, 20, 1),
        (128, 48, 3, 2, 1),
        (256, 256, 7, 7, 1),
        (16, 32, 1, 1, 3),
    ] {
        let x = vals(&mut rng, batch * h * w * c_in);
        let wt = vals(&mut rng, c_out * 9 * c_in);
        let bias = vals(&mut rng, c_out);
        let res = vals(&mut rng, batch * h * w * c_out);
        let p = PackedConvF32::new(geom, c_in, c_out, &wt).unwrap();
        for kern in kernels() {
            // (`OCTET_WINOGRAD=0` turns the path off: then the direct path is what is checked.)
            let on = std::env::var("OCTET_WINOGRAD").map_or(true, |v| v != "0");
            let wino = p.algorithm(&kern).starts_with("winograd");
            assert_eq!(
                wino,
                on && matches!(kern.isa(), Isa::Avx512 | Isa::Avx512Vnni),
                "{}",
                kern.isa()
            );
            let n = batch * h * w * c_out;
            let run = |pool: &rayon::ThreadPool, res: Option<&[f32]>, relu: bool| {
                let mut out = vec![0f32; n];
                pool.install(|| {
                    conv2d_f32_add(
                        &kern,
                        &x,
                        (batch, h, w),
                        &p,
                        Some(&bias),
                        res,
                        relu,
                        &mut out,
                    )
                })
                .unwrap();
                out
            };
            let plain = run(&pools[0], None, false);
            // Against f64, with bias, before any activation.
            for b in 0..batch {
                for oy in 0..h {
                    for ox in 0..w {
                        for oc in 0..c_out {
                            let (mut e, mut abs) = (bias[oc] as f64, (bias[oc] as f64).abs());
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (oy as isize + ky - 1, ox as isize + kx - 1);
                                    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                        continue;
                                    }
                                    let xo = ((b * h + iy as usize) * w + ix as usize) * c_in;
                                    let wo = (oc * 9 + (ky * 3 + kx) as usize) * c_in;
                                    for ci in 0..c_in {
                                        let t = x[xo + ci] as f64 * wt[wo + ci] as f64;
                                        e += t;
                                        abs += t.abs();
                                    }
                                }
                            }
                            let got = plain[((b * h + oy) * w + ox) * c_out + oc] as f64;
                            let k = 9.0 * c_in as f64;
                            let bound = 4.0 * (k + 16.0) * 2f64.powi(-24) * abs;
                            worst = worst.max((got - e).abs() / bound);
                            assert!(
                                (got - e).abs() <= bound,
                                "{} {c_in}->{c_out} {h}x{w} b{b} ({oy},{ox},{oc}): {got} vs {e}",
                                kern.isa()
                            );
                        }
                    }
                }
            }
            // Residual + ReLU fused = the same ops separately; any thread count, same bits.
            let want: Vec<u32> = plain
                .iter()
                .zip(&res)
                .map(|(&y, &r)| (y + r).max(0.0).to_bits())
                .collect();
            for pool in &pools {
                let got: Vec<u32> = run(pool, Some(&res), true)
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert!(got == want, "{} {c_in}->{c_out} {h}x{w}", kern.isa());
            }
            cases += 1;
            paths.ran(kern.isa());
        }
    }
    eprintln!(
        "[conv2d_f32 winograd] {cases} shape x ISA cases, worst error {worst:.3} of the bound"
    );
    paths.finish();
}
