//! Shared test helpers: a tiny deterministic RNG, operand generators with extreme values, and the
//! "which ISA paths ran" tracker that fails a test if a supported path was skipped.
#![allow(dead_code)]

use octet_kernels::{Isa, Kernel};
use std::collections::BTreeSet;

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// mode 0: uniform; 1: only extremes; 2: mostly extremes; 3: small values.
pub fn gen_u8(rng: &mut Rng, len: usize, mode: u8) -> Vec<u8> {
    (0..len)
        .map(|_| match mode {
            0 => rng.next() as u8,
            1 => [0u8, 255][rng.below(2) as usize],
            2 => [0u8, 255, 1, 254, rng.next() as u8][rng.below(5) as usize],
            _ => rng.below(8) as u8,
        })
        .collect()
}

/// Same modes; `lo..=hi` bounds the values (e.g. -64..=64 for reduce_range weights).
pub fn gen_i8(rng: &mut Rng, len: usize, mode: u8, lo: i32, hi: i32) -> Vec<i8> {
    let span = (hi - lo + 1) as u64;
    (0..len)
        .map(|_| {
            let v = match mode {
                0 => lo + rng.below(span) as i32,
                1 => [lo, hi][rng.below(2) as usize],
                2 => [lo, hi, 0, -1, lo + rng.below(span) as i32][rng.below(5) as usize],
                _ => rng.below(8) as i32 - 4,
            };
            v.clamp(lo, hi) as i8
        })
        .collect()
}

/// One rayon pool per thread count, for tests that compare results across thread counts.
#[allow(dead_code)] // not every test binary compares thread counts
pub fn pools(threads: &[usize]) -> Vec<rayon::ThreadPool> {
    threads
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect()
}

/// The ISA kernels a test must run: all supported ones (respecting OCTET_ISA).
pub fn kernels() -> Vec<Kernel> {
    Isa::supported()
        .expect("OCTET_ISA must be valid to run the tests")
        .into_iter()
        .map(|i| Kernel::new(i).unwrap())
        .collect()
}

/// Records which paths ran; `finish` prints them and fails if a supported path did not run.
pub struct PathsRan {
    name: &'static str,
    ran: std::cell::RefCell<BTreeSet<Isa>>,
}
impl PathsRan {
    pub fn new(name: &'static str) -> Self {
        PathsRan {
            name,
            ran: Default::default(),
        }
    }
    pub fn ran(&self, isa: Isa) {
        self.ran.borrow_mut().insert(isa);
    }
    pub fn finish(self) {
        let ran = self.ran.borrow();
        let names: Vec<_> = ran.iter().map(|i| i.name()).collect();
        eprintln!("[{}] isa paths ran: {}", self.name, names.join(", "));
        for isa in Isa::supported().unwrap() {
            assert!(
                ran.contains(&isa),
                "[{}] supported ISA path {isa} did not run",
                self.name
            );
        }
    }
}
