//! Max pooling (NHWC u8, i8, f32) on every ISA against the scalar reference, bit for bit: random
//! geometries (kernel, stride, dilation, padding, channel counts around the vector widths) and
//! values that include NaN, +-0 and +-inf for f32.
mod common;

use common::Rng;
use common::*;
use octet_kernels::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn below(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

fn geometry(rng: &mut Rng) -> PoolGeometry {
    let kernel = (1 + below(rng, 4), 1 + below(rng, 4));
    let stride = (1 + below(rng, 3), 1 + below(rng, 3));
    let dilation = (1 + below(rng, 2), 1 + below(rng, 2));
    // Padding up to a kernel beyond its size (windows entirely in the padding) and, rarely, an
    // empty image.
    let pad = (below(rng, kernel.0 + 2), below(rng, kernel.1 + 2));
    let (h, w) = (below(rng, 10), below(rng, 10));
    let c = [1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 130][below(rng, 14)];
    // Output sizes as ONNX computes them (floor mode, end padding = start padding), at least 1.
    let out = |i: usize, k: usize, s: usize, d: usize, p: usize| {
        ((i + 2 * p).saturating_sub(d * (k - 1) + 1) / s + 1).max(1)
    };
    PoolGeometry {
        n: 1 + below(rng, 2),
        h,
        w,
        c,
        // Sometimes more outputs than ONNX would make (their windows read nothing).
        oh: out(h, kernel.0, stride.0, dilation.0, pad.0) + below(rng, 2),
        ow: out(w, kernel.1, stride.1, dilation.1, pad.1) + below(rng, 2),
        kernel,
        stride,
        dilation,
        pad,
    }
}

#[test]
fn maxpool_every_isa_matches_the_reference_bit_for_bit() {
    let paths = PathsRan::new("maxpool_nhwc");
    TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    })
    .run(&any::<u64>(), |seed| {
        let mut rng = Rng(seed | 1);
        let g = geometry(&mut rng);
        let (xn, yn) = (g.n * g.h * g.w * g.c, g.n * g.oh * g.ow * g.c);
        let xb: Vec<u8> = (0..xn).map(|_| rng.next() as u8).collect();
        let xf: Vec<f32> = (0..xn)
            .map(|_| match below(&mut rng, 12) {
                0 => f32::NAN,
                1 => -0.0,
                2 => 0.0,
                3 => f32::INFINITY,
                4 => f32::NEG_INFINITY,
                _ => rng.f32() - 0.5,
            })
            .collect();
        let mut want_u = vec![0u8; yn];
        maxpool_nhwc_reference(&xb, &mut want_u, &g, 0u8).unwrap();
        let xi: Vec<i8> = xb.iter().map(|&v| v as i8).collect();
        let mut want_i = vec![0i8; yn];
        maxpool_nhwc_reference(&xi, &mut want_i, &g, i8::MIN).unwrap();
        let mut want_f = vec![0f32; yn];
        maxpool_nhwc_reference(&xf, &mut want_f, &g, f32::NEG_INFINITY).unwrap();
        for kern in kernels() {
            let mut y = vec![7u8; yn];
            maxpool_nhwc_u8(&kern, &xb, &mut y, &g, false).unwrap();
            prop_assert!(y == want_u, "u8 {} {:?}", kern.isa(), g);
            maxpool_nhwc_u8(&kern, &xb, &mut y, &g, true).unwrap();
            let yi: Vec<i8> = y.iter().map(|&v| v as i8).collect();
            prop_assert!(yi == want_i, "i8 {} {:?}", kern.isa(), g);
            let mut yf = vec![1f32; yn];
            maxpool_nhwc_f32(&kern, &xf, &mut yf, &g).unwrap();
            let same = yf
                .iter()
                .zip(&want_f)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same, "f32 {} {:?}", kern.isa(), g);
            paths.ran(kern.isa());
        }
        Ok(())
    })
    .unwrap();
    paths.finish();
}

#[test]
fn maxpool_rejects_bad_geometry_and_short_buffers() {
    let k = Kernel::scalar();
    let g = PoolGeometry {
        n: 1,
        h: 4,
        w: 4,
        c: 2,
        oh: 2,
        ow: 2,
        kernel: (2, 2),
        stride: (2, 2),
        dilation: (1, 1),
        pad: (0, 0),
    };
    let x = vec![0u8; 32];
    let mut y = vec![0u8; 8];
    assert!(maxpool_nhwc_u8(&k, &x, &mut y, &g, false).is_ok());
    assert!(maxpool_nhwc_u8(&k, &x[..31], &mut y, &g, false).is_err());
    assert!(maxpool_nhwc_u8(&k, &x, &mut y[..7], &g, false).is_err());
    let zero_stride = PoolGeometry {
        stride: (0, 2),
        ..g
    };
    assert!(maxpool_nhwc_u8(&k, &x, &mut y, &zero_stride, false).is_err());
    let huge = PoolGeometry { n: usize::MAX, ..g };
    assert!(maxpool_nhwc_u8(&k, &x, &mut y, &huge, false).is_err());
    for bad_geom in [
        PoolGeometry {
            stride: (usize::MAX / 2, 1),
            ..g
        },
        PoolGeometry {
            dilation: (1, usize::MAX),
            ..g
        },
        PoolGeometry {
            pad: (usize::MAX, 0),
            ..g
        },
    ] {
        assert!(
            maxpool_nhwc_u8(&k, &x, &mut y, &bad_geom, false).is_err(),
            "{bad_geom:?}"
        );
    }
}
