//! A cheap, deterministic stand-in for the cargo-fuzz target (fuzz/fuzz_targets/load_model.rs):
//! thousands of mutated and truncated copies of real models must load or fail with an error,
//! never panic, through import, shape preparation and the verifier.

mod common;
use common::*;
use std::path::Path;

fn lcg(s: &mut u64) -> u64 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *s >> 33
}

#[test]
fn mutated_models_never_panic() {
    let mut seed = 12345u64;
    let mut loaded = 0;
    let mut rejected = 0;
    for model in [
        "digits_cnn.onnx",
        "resnet8.onnx",
        "digits_cnn_qoperator_ort.onnx",
    ] {
        let orig = std::fs::read(fixture(model)).unwrap();
        for i in 0..700 {
            let mut b = orig.clone();
            match i % 4 {
                0 => b.truncate((lcg(&mut seed) as usize) % b.len()),
                1 => {
                    for _ in 0..1 + lcg(&mut seed) % 8 {
                        let p = (lcg(&mut seed) as usize) % b.len();
                        b[p] = lcg(&mut seed) as u8;
                    }
                }
                2 => {
                    // Mutate near the start, where the graph's small fields (names, attributes,
                    // dims) live rather than weight bytes.
                    let p = (lcg(&mut seed) as usize) % b.len().min(4096);
                    b[p] = b[p].wrapping_add(1 + (lcg(&mut seed) % 5) as u8);
                }
                _ => {
                    let p = (lcg(&mut seed) as usize) % b.len();
                    let q = (p + (lcg(&mut seed) as usize % 64)).min(b.len());
                    b.drain(p..q);
                }
            }
            let r = std::panic::catch_unwind(|| {
                match octet::frontend::onnx::import_bytes(&b, Path::new("mutant.onnx"), None) {
                    Ok(mut m) => {
                        let _ = m.graph.verify();
                        let _ = octet::prepare::prepare(&mut m.graph, &[]);
                        let _ = m.graph.to_text();
                        true
                    }
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        false
                    }
                }
            });
            match r {
                Ok(true) => loaded += 1,
                Ok(false) => rejected += 1,
                Err(_) => panic!("{model}: mutation {i} panicked the loader"),
            }
        }
    }
    println!("mutated models: {loaded} loaded, {rejected} rejected with an error, 0 panics");
}
