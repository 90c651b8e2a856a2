//! `interleave3_u8` (three byte planes to interleaved pixels, XOR flip) against the scalar rule,
//! lengths around the 64-pixel blocks, on every ISA.
mod common;

use common::*;
use octet_kernels::*;

#[test]
fn interleave3_every_isa() {
    let paths = PathsRan::new("interleave3_u8");
    let mut rng = Rng(0x1a7e);
    for n in [0usize, 1, 2, 63, 64, 65, 127, 128, 200, 50176] {
        let planes: Vec<Vec<u8>> = (0..3).map(|_| gen_u8(&mut rng, n + 5, 0)).collect();
        for flip in [0u8, 0x80] {
            let want: Vec<u8> = (0..3 * n).map(|g| planes[g % 3][g / 3] ^ flip).collect();
            for kern in kernels() {
                let mut out = vec![0xA5u8; 3 * n];
                interleave3_u8(&kern, [&planes[0], &planes[1], &planes[2]], &mut out, flip);
                assert!(out == want, "isa {} n {n} flip {flip:#x}", kern.isa());
                paths.ran(kern.isa());
            }
        }
    }
    paths.finish();
}
