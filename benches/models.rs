//! Criterion benchmarks of whole models on the engine: fp32 and int8 (static for the CNNs,
//! dynamic for BERT) on the test fixtures, 1 thread and all threads. Run with
//! `cargo bench --bench models` (`-- resnet8` to filter).

use criterion::{criterion_group, criterion_main, Criterion};
use octet::engine::Engine;
use octet::quantizer::{self, Approach, QuantConfig};
use octet_ir::Tensor;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn feeds(name: &str) -> Vec<(String, Tensor)> {
    octet::io::npz::read_npz(&fixture(name)).unwrap()
}

fn shapes(f: &[(String, Tensor)]) -> Vec<(String, Vec<usize>)> {
    f.iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect()
}

/// (label, engine, feeds) for every model and mode.
fn engines(threads: Option<usize>) -> Vec<(String, Engine, Vec<(String, Tensor)>)> {
    let cfg = QuantConfig {
        quiet: true,
        ..Default::default()
    };
    let mut v = vec![];
    for (model, inputs, dynamic) in [
        ("resnet8", "resnet8_inputs.npz", false),
        ("mobilenetv2_035", "mobilenetv2_035_inputs.npz", false),
        ("tiny_bert", "tiny_bert_inputs.npz", true),
    ] {
        let f = feeds(inputs);
        let f: Vec<(String, Tensor)> = if dynamic {
            f
        } else {
            // batch 1
            f.into_iter()
                .map(|(n, t)| {
                    let per = t.bytes().len() / t.shape()[0];
                    let mut s = t.shape().to_vec();
                    s[0] = 1;
                    (
                        n,
                        Tensor::from_raw(t.dtype(), &s, &t.bytes()[..per]).unwrap(),
                    )
                })
                .collect()
        };
        let g = octet::prepare::load(&fixture(&format!("{model}.onnx")), &shapes(&f))
            .unwrap()
            .graph;
        let q = if dynamic {
            let c = QuantConfig {
                approach: Approach::Dynamic,
                ..cfg.clone()
            };
            quantizer::quantize_dynamic(&g, &c).unwrap().0
        } else {
            quantizer::quantize_static(&g, &feeds(inputs), &cfg)
                .unwrap()
                .0
        };
        let mut q = q;
        octet::prepare::prepare(&mut q, &shapes(&f)).unwrap();
        v.push((
            format!("{model}/fp32"),
            octet::prepare::engine(g, threads).unwrap(),
            f.clone(),
        ));
        v.push((
            format!("{model}/int8"),
            octet::prepare::engine(q, threads).unwrap(),
            f,
        ));
    }
    v
}

fn bench(c: &mut Criterion) {
    for (threads, tag) in [(Some(1), "t1"), (None, "tall")] {
        let mut group = c.benchmark_group(tag);
        group.sample_size(20);
        group.measurement_time(std::time::Duration::from_secs(2));
        group.warm_up_time(std::time::Duration::from_millis(500));
        for (label, engine, f) in engines(threads) {
            group.bench_function(&label, |b| b.iter(|| engine.run(&f).unwrap()));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
