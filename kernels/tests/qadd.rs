//! QLinearAdd (+ byte table) on every ISA against the scalar rule, over all 65536 byte pairs, and
//! the scalar rule against the ONNX Runtime formula written out independently.
mod common;

use common::Rng;
use common::*;
use octet_kernels::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// ONNX Runtime's QLinearAdd, as the reference interpreter writes it (i64, f32 operations).
fn ort_qadd(q: &QAdd, a: u8, b: u8) -> u8 {
    let val = |x: u8| if q.signed { x as i8 as i64 } else { x as i64 };
    let (lo, hi) = if q.signed { (-128, 127) } else { (0, 255) };
    let xa = (val(a) - q.a.1 as i64) as f32 * q.a.0;
    let yb = (val(b) - q.b.1 as i64) as f32 * q.b.0;
    let v = ((xa + yb) / q.c.0).round_ties_even() as i64 + q.c.1 as i64;
    let r = v.clamp(lo, hi) as u8;
    match &q.post {
        Some(t) => t[r as usize],
        None => r,
    }
}

fn gen_scale(rng: &mut Rng) -> f32 {
    match rng.below(4) {
        0 => 1.0 / (1 + rng.below(64)) as f32,
        1 => 2f32.powi(-(rng.below(10) as i32)),
        _ => (0.05 + rng.f32()) * 0.1,
    }
}

pub fn gen_qadd(rng: &mut Rng, signed: bool, table: bool) -> QAdd {
    let zp = |rng: &mut Rng| {
        if signed {
            rng.below(256) as i32 - 128
        } else {
            rng.below(256) as i32
        }
    };
    let post: Option<Vec<u8>> = table.then(|| (0..256).map(|_| rng.next() as u8).collect());
    let (sa, za) = (gen_scale(rng), zp(rng));
    let (sb, zb) = (gen_scale(rng), zp(rng));
    let (sc, zc) = (gen_scale(rng), zp(rng));
    QAdd::new((sa, za), (sb, zb), (sc, zc), signed, post.as_deref()).unwrap()
}

#[test]
fn qadd_all_byte_pairs_bit_exact_every_isa() {
    let paths = PathsRan::new("qadd_u8");
    // Every (a, b) pair, in an order that puts all pairs at every SIMD lane position.
    let a: Vec<u8> = (0..65536u32).map(|i| (i >> 8) as u8).collect();
    let b: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
    TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    })
    .run(
        &(any::<u64>(), any::<bool>(), any::<bool>(), 0usize..200),
        |(seed, signed, table, skip)| {
            let mut rng = Rng(seed | 1);
            let q = gen_qadd(&mut rng, signed, table);
            let want: Vec<u8> = a.iter().zip(&b).map(|(&x, &y)| q.one(x, y)).collect();
            for (i, (&x, &y)) in a.iter().zip(&b).enumerate().step_by(97) {
                prop_assert_eq!(want[i], ort_qadd(&q, x, y), "rule vs ORT formula {:?}", q);
            }
            // Exchanged operands with exchanged parameters: the same bytes.
            let s = q.swapped();
            for (i, (&x, &y)) in a.iter().zip(&b).enumerate().step_by(31) {
                prop_assert_eq!(want[i], s.one(y, x));
            }
            for kern in kernels() {
                // Unaligned start and a ragged tail: lengths not a multiple of 8 / 16 / 64.
                let (aa, bb) = (&a[skip..], &b[skip..]);
                let mut out = vec![0u8; aa.len()];
                qadd_u8(&kern, aa, bb, &mut out, &q).unwrap();
                prop_assert!(out == want[skip..], "isa {} {:?}", kern.isa(), q);
                paths.ran(kern.isa());
            }
            Ok(())
        },
    )
    .unwrap();
    paths.finish();
}

#[test]
fn qadd_bad_arguments() {
    let k = Kernel::scalar();
    assert!(QAdd::new((f32::NAN, 0), (1.0, 0), (1.0, 0), false, None).is_err());
    assert!(QAdd::new((1.0, 0), (1.0, 0), (0.0, 0), false, None).is_err());
    assert!(QAdd::new((1.0, 300), (1.0, 0), (1.0, 0), false, None).is_err());
    assert!(QAdd::new((1.0, 0), (1.0, 0), (1.0, 0), false, Some(&[0u8; 10])).is_err());
    let q = QAdd::new((1.0, 0), (1.0, 0), (1.0, 0), false, None).unwrap();
    let mut out = [0u8; 3];
    assert!(qadd_u8(&k, &[1, 2], &[1, 2, 3], &mut out, &q).is_err());
}
