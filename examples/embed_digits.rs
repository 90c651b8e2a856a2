//! Embedding octet in a Rust program: compile the digits model to int8 in-process, open a
//! `Session`, and classify the held-out test set.
//!
//! `cargo run --release --example embed_digits`

use octet::artifact::compile::{compile, parse_target, Quantize};
use octet::artifact::Session;
use octet::quantizer::QuantConfig;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let model = compile(
        &dir.join("digits_cnn.onnx"),
        &Quantize::Static {
            config: QuantConfig {
                quiet: true,
                ..QuantConfig::default()
            },
            calib: dir.join("digits_calib.npz"),
        },
        parse_target("native").map_err(anyhow::Error::msg)?,
    )?;
    let session = Session::new(model).with_threads(1);
    let test = octet::io::npz::read_npz(&dir.join("digits_test.npz"))?;
    let images = test
        .iter()
        .find(|(n, _)| n == "input")
        .map(|(_, t)| t.clone())
        .expect("input array");
    let labels = test
        .iter()
        .find(|(n, _)| n == "label")
        .map(|(_, t)| t.to_i64_vec())
        .expect("label array");
    let out = session.run(&[("input".to_string(), images)])?;
    let logits: &[f32] = out[0].1.view::<f32>()?; // zero-copy typed view
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(i, &l)| {
            let row = &logits[i * 10..(i + 1) * 10];
            (0..10).fold(0, |b, j| if row[j] > row[b] { j } else { b }) as i64 == l
        })
        .count();
    println!(
        "int8 digits model: {correct}/{} correct ({:.2}%)",
        labels.len(),
        100.0 * correct as f64 / labels.len() as f64
    );
    Ok(())
}
