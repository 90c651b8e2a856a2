//! Criterion benchmarks of the shapes, single-threaded (the whole measurement loop runs
//! inside a 1-thread pool, so no per-iteration cross-thread hand-off;
//! set OCTET_BENCH_THREADS=2 for two). Throughput is reported in "elements" = int8 ops
//! (2*M*N*K) per second, i.e. GOPS when read as Gelem/s. Peak: 465 GOPS int8, 117 GFLOPS fp32
//! per Zen 4 core (234 bf16 GFLOPS: group `bf16_*`, run alone with `-- bf16`). For one JSON line
//! per shape use `examples/gemm_gops.rs` instead.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use octet_kernels::*;
use std::time::Duration;

fn pool() -> rayon::ThreadPool {
    let t = std::env::var("OCTET_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build()
        .unwrap()
}

fn int8_gemm(c: &mut Criterion) {
    let kern = Kernel::best().unwrap();
    let pool = pool();
    let mut g = c.benchmark_group(format!("u8s8_gemm_requant_{}", kern.isa()));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    for &(m, n, k) in &[
        (1024, 1024, 1024),
        (128, 1536, 384),
        (128, 384, 1536),
        (1, 4096, 4096),
        (3136, 64, 576),
    ] {
        let a: Vec<u8> = (0..m * k).map(|i| (i * 7) as u8).collect();
        let b: Vec<i8> = (0..k * n).map(|i| (i * 13) as i8).collect();
        let p = PackedB::new(k, n, &b, WeightLayout::KxN, 0).unwrap();
        let mults = vec![1e-4f32; n];
        let ep = Epilogue::requant(Scale::PerChannel(&mults), 128);
        let mut out = vec![0u8; m * n];
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        g.bench_function(format!("{m}x{n}x{k}"), |bch| {
            bch.iter(|| {
                pool.install(|| {
                    gemm_u8s8(
                        &kern,
                        MatrixU8 {
                            data: &a,
                            rows: m,
                            ld: k,
                            zero_point: 3,
                        },
                        &p,
                        &ep,
                        OutputSlice::U8(&mut out),
                        n,
                    )
                    .unwrap()
                })
            })
        });
    }
    // BERT's dense layers as dynamic quantization runs them: dequantized f32 output (+ bias),
    // and the intermediate layer with GELU fused.
    for &(m, n, k, gelu) in &[
        (128, 1536, 384, false),
        (128, 1536, 384, true),
        (128, 384, 1536, false),
    ] {
        let a: Vec<u8> = (0..m * k).map(|i| (i * 7) as u8).collect();
        let b: Vec<i8> = (0..k * n).map(|i| (i * 13) as i8).collect();
        let p = PackedB::new(k, n, &b, WeightLayout::KxN, 0).unwrap();
        // Outputs mostly in [-3, 3], as BERT's pre-GELU activations.
        let scales = vec![3e-6f32; n];
        let bias = vec![-0.5f32; n];
        let mut ep = Epilogue::requant(Scale::PerChannel(&scales), 0).with_f32_bias(&bias);
        if gelu {
            ep = ep.with_f32_gelu();
        }
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let name = format!("{m}x{n}x{k}_f32{}", if gelu { "_gelu" } else { "" });
        g.bench_function(name, |bch| {
            bch.iter(|| {
                pool.install(|| {
                    gemm_u8s8(
                        &kern,
                        MatrixU8 {
                            data: &a,
                            rows: m,
                            ld: k,
                            zero_point: 3,
                        },
                        &p,
                        &ep,
                        OutputSlice::F32(&mut out),
                        n,
                    )
                    .unwrap()
                })
            })
        });
    }
    g.finish();
}

fn f32_gemm(c: &mut Criterion) {
    let kern = Kernel::best().unwrap();
    let pool = pool();
    let mut g = c.benchmark_group(format!("f32_gemm_{}", kern.isa()));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    let (m, n, k) = (1024, 1024, 1024);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.1).collect();
    let p = PackedBF32::new(k, n, &b, WeightLayout::KxN).unwrap();
    let mut out = vec![0f32; m * n];
    g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
    g.bench_function("1024x1024x1024", |bch| {
        bch.iter(|| {
            pool.install(|| gemm_f32(&kern, m, &a, k, &p, None, false, &mut out, n).unwrap())
        })
    });
    g.finish();
}

fn convs(c: &mut Criterion) {
    let kern = Kernel::best().unwrap();
    let pool = pool();
    let mut g = c.benchmark_group(format!("conv_u8s8_{}", kern.isa()));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    // 3x3 56x56x64 -> 64, pad 1 (ResNet-50 stage 1)
    {
        let (h, w, ci, co) = (56, 56, 64, 64);
        let x: Vec<u8> = (0..h * w * ci).map(|i| (i * 7) as u8).collect();
        let wt: Vec<i8> = (0..co * 9 * ci).map(|i| (i * 13) as i8).collect();
        let p = PackedConv::new(ConvGeometry::new(3, 3).pad(1), ci, co, &wt, 0).unwrap();
        let mults = vec![1e-4f32; co];
        let ep = Epilogue::requant(Scale::PerChannel(&mults), 0).with_clamp(0, 255);
        let mut out = vec![0u8; h * w * co];
        g.throughput(Throughput::Elements(2 * (h * w * co * 9 * ci) as u64));
        g.bench_function("3x3_56x56x64-64", |bch| {
            bch.iter(|| {
                pool.install(|| {
                    conv2d_u8s8(
                        &kern,
                        TensorU8 {
                            data: &x,
                            batch: 1,
                            h,
                            w,
                            zero_point: 5,
                        },
                        &p,
                        &ep,
                        OutputSlice::U8(&mut out),
                    )
                    .unwrap()
                })
            })
        });
    }
    // depthwise 3x3 pad 1, MobileNetV2 shapes (input h x w x c, stride); throughput counts the
    // 2 * 9 ops of every output element.
    for &(h, w, c, s) in &[
        (112, 112, 32, 1),
        (112, 112, 96, 2),
        (56, 56, 144, 1),
        (28, 28, 192, 1),
        (14, 14, 384, 1),
        (14, 14, 576, 2),
        (7, 7, 960, 1),
    ] {
        let x: Vec<u8> = (0..h * w * c).map(|i| (i * 7) as u8).collect();
        let wt: Vec<i8> = (0..c * 9).map(|i| (i * 13) as i8).collect();
        let geom = ConvGeometry::new(3, 3).pad(1).stride(s, s).groups(c);
        let (oh, ow) = geom.out_size(h, w).unwrap();
        let p = PackedConv::new(geom, c, c, &wt, 0).unwrap();
        let mults = vec![1e-3f32; c];
        let ep = Epilogue::requant(Scale::PerChannel(&mults), 0);
        let mut out = vec![0u8; oh * ow * c];
        g.throughput(Throughput::Elements(2 * (oh * ow * c * 9) as u64));
        let name = if s == 1 {
            format!("dw3x3_{h}x{w}x{c}")
        } else {
            format!("dw3x3_{h}x{w}x{c}_s{s}")
        };
        g.bench_function(name, |bch| {
            bch.iter(|| {
                pool.install(|| {
                    conv2d_u8s8(
                        &kern,
                        TensorU8 {
                            data: &x,
                            batch: 1,
                            h,
                            w,
                            zero_point: 5,
                        },
                        &p,
                        &ep,
                        OutputSlice::U8(&mut out),
                    )
                    .unwrap()
                })
            })
        });
    }
    g.finish();
}

/// bf16 GEMM / conv (`vdpbf16ps` when `Kernel::has_bf16_dot`, else the emulation), with the
/// fp32 GEMM / conv of the same shapes in the same group, so `cargo bench -p octet-kernels
/// --bench kernels -- bf16` measures both in one run. Throughput in FLOPs (2*M*N*K); one Zen 4
/// core peaks at about 234 bf16 GFLOPS (2x fp32's 117).
fn bf16(c: &mut Criterion) {
    let kern = Kernel::best().unwrap();
    let pool = pool();
    let dot = if kern.has_bf16_dot() {
        "vdpbf16ps"
    } else {
        "emulated"
    };
    let mut g = c.benchmark_group(format!("bf16_{}_{dot}", kern.isa()));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    for &(m, n, k) in &[(1024, 1024, 1024), (128, 384, 1536), (128, 1536, 384)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 1e-3).collect();
        let pb = PackedBBf16::new(k, n, &b, WeightLayout::KxN).unwrap();
        let pf = PackedBF32::new(k, n, &b, WeightLayout::KxN).unwrap();
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        g.bench_function(format!("gemm_bf16/{m}x{n}x{k}"), |bch| {
            bch.iter(|| {
                pool.install(|| {
                    gemm_bf16(&kern, m, &a, k, &pb, Some(&bias), true, &mut out, n).unwrap()
                })
            })
        });
        g.bench_function(format!("gemm_f32/{m}x{n}x{k}"), |bch| {
            bch.iter(|| {
                pool.install(|| {
                    gemm_f32(&kern, m, &a, k, &pf, Some(&bias), true, &mut out, n).unwrap()
                })
            })
        });
    }
    // 3x3 56x56x64 -> 64, pad 1 (ResNet-50 stage 1), bias + ReLU.
    let (h, w, ci, co) = (56, 56, 64, 64);
    let x: Vec<f32> = (0..h * w * ci).map(|i| (i % 7) as f32 * 0.1).collect();
    let wt: Vec<f32> = (0..co * 9 * ci)
        .map(|i| (i % 13) as f32 * 0.01 - 0.06)
        .collect();
    let bias = vec![0.1f32; co];
    let geom = ConvGeometry::new(3, 3).pad(1);
    let pb = PackedConvBf16::new(geom, ci, co, &wt).unwrap();
    let pf = PackedConvF32::new(geom, ci, co, &wt).unwrap();
    let mut out = vec![0f32; h * w * co];
    g.throughput(Throughput::Elements(2 * (h * w * co * 9 * ci) as u64));
    g.bench_function("conv_bf16/3x3_56x56x64-64", |bch| {
        bch.iter(|| {
            pool.install(|| {
                conv2d_bf16(&kern, &x, (1, h, w), &pb, Some(&bias), true, &mut out).unwrap()
            })
        })
    });
    g.bench_function("conv_f32/3x3_56x56x64-64", |bch| {
        bch.iter(|| {
            pool.install(|| {
                conv2d_f32(&kern, &x, (1, h, w), &pf, Some(&bias), true, &mut out).unwrap()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, int8_gemm, f32_gemm, convs, bf16);
criterion_main!(benches);
