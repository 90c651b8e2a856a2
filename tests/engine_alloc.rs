//! The engine's buffer pool: after warm-up a run allocates (almost) no tensor memory beyond the
//! outputs it returns, and the pool stays bounded across runs.

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
    // What remains after warm-up is the kernels' per-call scratch (im2col / packing buffers),
    // not tensors.
    let (cold, warm, _) = measure("resnet8 int8", &e, &feeds);
    assert!(warm < cold, "{warm} vs {cold}");
    let e = octet::prepare::engine(g, Some(1)).unwrap();
    // fp32 convolutions: the kernel allocates its im2col buffer per call (most of what remains).
    let (cold, warm, _) = measure("resnet8 fp32", &e, &feeds);
    assert!(warm < cold, "{warm} vs {cold}");

    let feeds = npz("tiny_bert_inputs.npz");
    let g = octet::prepare::load(&fixture("tiny_bert.onnx"), &shapes(&feeds))
        .unwrap()
        .graph;
    let (q, _) = quantizer::quantize_dynamic(&g, &cfg).unwrap();
    let e = octet::prepare::engine(q, Some(1)).unwrap();
    let (cold, warm, _) = measure("tiny_bert dynamic int8", &e, &feeds);
    assert!(warm < cold / 2, "{warm} vs {cold}");
}
