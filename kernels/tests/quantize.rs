//! Vectorized quantize/dequantize/requantize/dynamic scan: every ISA against the scalar rule.
mod common;

use common::Rng;
use common::*;
use octet_kernels::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn ref_q(x: f32, scale: f32, zp: i32, lo: i32, hi: i32) -> i32 {
    // ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zp)
    let f = x / scale;
    if f.is_nan() {
        return lo;
    }
    let r = f.round_ties_even();
    let r = r.clamp(-1e9, 1e9) as i64 + zp as i64;
    r.clamp(lo as i64, hi as i64) as i32
}

fn gen_f32(rng: &mut Rng, n: usize, mode: u8, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| match mode {
            0 => (rng.f32() - 0.5) * 600.0 * scale,
            // exact ties: (k + 0.5) * scale
            1 => ((rng.below(600) as f32 - 300.0) + 0.5) * scale,
            2 => [
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                0.0,
                -0.0,
                1e30,
                -1e30,
            ][rng.below(7) as usize],
            // a few ulps either side of a tie (k + 0.5) * scale: where multiplying by the
            // reciprocal could round the other way than the division
            3 => {
                let t = ((rng.below(600) as f32 - 300.0) + 0.5) * scale;
                let ulps = rng.below(9) as i32 - 4;
                f32::from_bits((t.to_bits() as i32 + ulps) as u32)
            }
            _ => (rng.f32() - 0.5) * 2.0,
        })
        .collect()
}

#[test]
fn quantize_dequantize_requantize_bit_exact() {
    let paths = PathsRan::new("quantize");
    let strat = (
        0usize..200,
        0u8..5,
        any::<u64>(),
        0i32..256,
        prop_oneof![Just(0.5f32), Just(0.1f32), 1e-3f32..10.0],
    );
    TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    })
    .run(&strat, |(n, mode, seed, zp, scale)| {
        let mut rng = Rng(seed | 1);
        let x = gen_f32(&mut rng, n, mode, scale);
        let qs: Vec<u8> = gen_u8(&mut rng, n, 2);
        let acc: Vec<i32> = (0..n)
            .map(|_| rng.next() as i32 >> (rng.below(24) as u32))
            .collect();
        for kern in kernels() {
            let isa = kern.isa();
            let mut o = vec![0u8; n];
            quantize_u8(&kern, &x, scale, zp, &mut o).unwrap();
            for i in 0..n {
                prop_assert_eq!(
                    o[i] as i32,
                    ref_q(x[i], scale, zp, 0, 255),
                    "{} x={}",
                    isa,
                    x[i]
                );
            }
            let mut o8 = vec![0i8; n];
            quantize_i8(&kern, &x, scale, zp - 128, &mut o8).unwrap();
            for i in 0..n {
                prop_assert_eq!(
                    o8[i] as i32,
                    ref_q(x[i], scale, zp - 128, -128, 127),
                    "{} x={}",
                    isa,
                    x[i]
                );
            }
            let mut d = vec![0f32; n];
            dequantize_u8(&kern, &qs, scale, zp, &mut d).unwrap();
            for i in 0..n {
                prop_assert_eq!(
                    d[i].to_bits(),
                    ((qs[i] as i32 - zp) as f32 * scale).to_bits()
                );
            }
            let qi: Vec<i8> = qs.iter().map(|&v| v as i8).collect();
            dequantize_i8(&kern, &qi, scale, zp - 128, &mut d).unwrap();
            for i in 0..n {
                prop_assert_eq!(
                    d[i].to_bits(),
                    ((qi[i] as i32 - (zp - 128)) as f32 * scale).to_bits()
                );
            }
            let mult = scale * 1e-3;
            requantize_u8(&kern, &acc, mult, zp, &mut o).unwrap();
            let want = reference::requantize_i32(&acc, 1, None, &[mult], zp, 0, 255);
            prop_assert_eq!(
                o.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                want,
                "{}",
                isa
            );
            requantize_i8(&kern, &acc, mult, zp - 128, &mut o8).unwrap();
            let want = reference::requantize_i32(&acc, 1, None, &[mult], zp - 128, -128, 127);
            prop_assert_eq!(
                o8.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                want,
                "{}",
                isa
            );
            paths.ran(isa);
        }
        Ok(())
    })
    .unwrap();
    paths.finish();
}

#[test]
fn dynamic_quantization_matches_onnx_rule() {
    let paths = PathsRan::new("dynamic quantize");
    // ONNX DynamicQuantizeLinear example: x = [0, 2, -3, -2.5, 1.34, 0.5] -> scale 5/255, zp 153.
    let x = [0.0f32, 2.0, -3.0, -2.5, 1.34, 0.5];
    for kern in kernels() {
        let mut q = [0u8; 6];
        let p = dynamic_quantize_u8(&kern, &x, &mut q).unwrap();
        assert_eq!(p.scale, 5.0 / 255.0);
        assert_eq!(p.zero_point, 153);
        assert_eq!(q, [153, 255, 0, 26, 221, 179], "{}", kern.isa());
        // all zeros
        let z = vec![0.0f32; 37];
        let mut qz = vec![9u8; 37];
        let p = dynamic_quantize_u8(&kern, &z, &mut qz).unwrap();
        assert_eq!((p.scale, p.zero_point), (0.0, 0));
        assert!(qz.iter().all(|&v| v == 0));
        // random: SIMD scan == scalar scan
        let mut rng = Rng(77);
        for n in [1usize, 15, 16, 17, 100, 1000] {
            let v: Vec<f32> = (0..n).map(|_| (rng.f32() - 0.3) * 10.0).collect();
            let (lo, hi) = min_max(&kern, &v);
            let slo = v.iter().cloned().fold(f32::INFINITY, f32::min);
            let shi = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!((lo, hi), (slo, shi));
            let mut q1 = vec![0u8; n];
            let mut q2 = vec![0u8; n];
            let p = dynamic_quantize_u8(&kern, &v, &mut q1).unwrap();
            dynamic_quantize_u8(&Kernel::scalar(), &v, &mut q2).unwrap();
            assert_eq!(q1, q2);
            assert_eq!(p, dynamic_qparams_u8(slo, shi));
        }
        paths.ran(kern.isa());
    }
    paths.finish();
}

#[test]
fn quantize_bad_arguments() {
    let k = Kernel::scalar();
    let mut o = [0u8; 3];
    assert!(quantize_u8(&k, &[1.0; 4], 1.0, 0, &mut o).is_err());
    assert!(quantize_u8(&k, &[1.0; 3], 0.0, 0, &mut o).is_err());
    assert!(quantize_u8(&k, &[1.0; 3], f32::NAN, 0, &mut o).is_err());
    assert!(quantize_u8(&k, &[1.0; 3], 1.0, 256, &mut o).is_err());
    assert!(dynamic_quantize_u8(&k, &[f32::INFINITY, 0.0, 1.0], &mut o).is_err());
}

/// DynamicQuantizeLinear of a large tensor splits both passes over the pool: 1, 2 and 3 threads
/// give the same bytes and parameters (NaN and +-0 included).
#[test]
fn dynamic_quantize_identical_for_any_thread_count() {
    let paths = PathsRan::new("dynamic quantize threads");
    let pools = pools(&[1, 2, 3]);
    let mut rng = Rng(9);
    let mut x: Vec<f32> = (0..100_003).map(|_| (rng.f32() - 0.3) * 7.0).collect();
    x[5] = f32::NAN;
    x[60_000] = -0.0;
    x[99_999] = 9.5;
    for kern in kernels() {
        let run = |pool: &rayon::ThreadPool| {
            pool.install(|| {
                let mut q = vec![0u8; x.len()];
                let p = dynamic_quantize_u8(&kern, &x, &mut q).unwrap();
                (p.scale.to_bits(), p.zero_point, q)
            })
        };
        let want = run(&pools[0]);
        for p in &pools[1..] {
            assert!(run(p) == want, "{}", kern.isa());
        }
        paths.ran(kern.isa());
    }
    paths.finish();
}
