//! Helpers shared by the integration tests.
#![allow(dead_code)]

use octet_ir::Tensor;
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn npz(name: &str) -> Vec<(String, Tensor)> {
    octet::io::npz::read_npz(&fixture(name)).unwrap()
}

pub fn get(arrays: &[(String, Tensor)], name: &str) -> Tensor {
    arrays
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no array {name}"))
        .1
        .clone()
}

/// The first `n` items along the batch axis.
pub fn take_batch(t: &Tensor, n: usize) -> Tensor {
    t.first_rows(n).expect("enough samples")
}

/// Max |a-b| and max |b| over two float tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> (f64, f64) {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let m = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    (d, m)
}
