//! After warm-up a run allocates (almost) nothing beyond the outputs it returns: tensors come from
//! the engine's pool, the kernels' per-call buffers (im2col rows, indirection pointers, padded
//! copies, epilogue constants) from per-thread reused scratch, attention's run-time packed
//! operands from buffers kept in the node. What remains is small bookkeeping (shape vectors,
//! index conversions): a few KB per run, bounded here. The pool stays bounded across runs.

mod common;
use common::*;
use octet::quantizer::{self, QuantConfig};
use octet_ir::Tensor;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        BYTES.fetch_add(n, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// (bytes allocated by the first run, by a run after warm-up, output bytes).
fn measure(
    name: &str,
    e: &octet::engine::Engine,
    feeds: &[(String, Tensor)],
) -> (usize, usize, usize) {
    let before = BYTES.load(Ordering::Relaxed);
    e.run(feeds).unwrap();
    let cold = BYTES.load(Ordering::Relaxed) - before;
    for _ in 0..3 {
        e.run(feeds).unwrap();
    }
    let arena = e.arena_bytes();
    let before = BYTES.load(Ordering::Relaxed);
    let outs = e.run(feeds).unwrap();
    let used = BYTES.load(Ordering::Relaxed) - before;
    let out_bytes: usize = outs.iter().map(|(_, t)| t.bytes().len()).sum();
    for _ in 0..3 {
        e.run(feeds).unwrap();
    }
    assert_eq!(e.arena_bytes(), arena, "{name}: the pool grows across runs");
    println!(
        "{name}: first run allocates {cold} B, later runs {used} B (outputs {out_bytes} B); pool holds {arena} B"
    );
    (cold, used, out_bytes)
}

fn shapes(feeds: &[(String, Tensor)]) -> Vec<(String, Vec<usize>)> {
    feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect()
}

#[test]
fn runs_reuse_buffers_after_warmup() {
    let cfg = QuantConfig {
        quiet: true,
        ..Default::default()
    };
    let feeds = npz("resnet8_inputs.npz");
    let g = octet::prepare::load(&fixture("resnet8.onnx"), &shapes(&feeds))
        .unwrap()
        .graph;
    let (q, _) = quantizer::quantize_static(&g, &feeds, &cfg).unwrap();
    let e = octet::prepare::engine(q, Some(1)).unwrap();
    // (Before the kernels' scratch was reused: ~1 MB per int8 run, ~2.1 MB per fp32 run.)
    let (_, warm, out) = measure("resnet8 int8", &e, &feeds);
    assert!(
        warm <= out + 16 * 1024,
        "resnet8 int8: {warm} B per warm run"
    );
    let e = octet::prepare::engine(g, Some(1)).unwrap();
    let (_, warm, out) = measure("resnet8 fp32", &e, &feeds);
    assert!(
        warm <= out + 16 * 1024,
        "resnet8 fp32: {warm} B per warm run"
    );
    // Two threads: the workers' scratch is theirs, reused the same way.
    let e2 = octet::prepare::engine(q_for_threads(&feeds, &cfg), Some(2)).unwrap();
    let (_, warm, out) = measure("resnet8 int8, 2 threads", &e2, &feeds);
    assert!(
        warm <= out + 16 * 1024,
        "resnet8 int8 2 threads: {warm} B per warm run"
    );

    let feeds = npz("tiny_bert_inputs.npz");
    let g = octet::prepare::load(&fixture("tiny_bert.onnx"), &shapes(&feeds))
        .unwrap()
        .graph;
    let (q, _) = quantizer::quantize_dynamic(&g, &cfg).unwrap();
    let e = octet::prepare::engine(q, Some(1)).unwrap();
    // (Before: ~318 KB per run, most of it attention's per-run packing.)
    let (_, warm, out) = measure("tiny_bert dynamic int8", &e, &feeds);
    assert!(warm <= out + 48 * 1024, "tiny_bert: {warm} B per warm run");
}

fn q_for_threads(feeds: &[(String, Tensor)], cfg: &QuantConfig) -> octet_ir::Graph {
    let g = octet::prepare::load(&fixture("resnet8.onnx"), &shapes(feeds))
        .unwrap()
        .graph;
    quantizer::quantize_static(&g, feeds, cfg).unwrap().0
}
