//! int8 (and fp32) GEMM throughput, one JSON line per shape, comparable with
//! `shared/bench/peers_gemm.py` (ONNX Runtime MatMulInteger).
//!
//! cargo run -p octet-kernels --release --example gemm_gops -- [--threads N] [--isa NAME]
//!     [--shapes MxNxK,...] [--secs S] [--no-f32] [--no-conv] [--conv NAME-SUBSTRING] [--elementwise]
//!     [--bf16] [--no-int8] [--resnet50] [--cold | --cold-weights]
//!     (`--shapes none` skips the GEMM shapes)
//!
//! int8 lines: u8 x s8 GEMM with the fused per-channel requantization to u8 (the graph's real
//! case); `pct_peak` against 465 GOPS per core (vpdpbusd, 1 zmm/cycle at ~3.65 GHz).
//! fp32 lines (`"op":"f32gemm"`): GFLOPS against 117 per core. bf16 lines (`--bf16`,
//! `"op":"bf16gemm"` / `"conv_bf16"`): GFLOPS against 234 per core (`vdpbf16ps` does two
//! multiply-adds per f32 lane); `"bf16_dot"` says whether the instruction or its emulation ran.
//! `--resnet50` (with `--conv SUBSTRING`: only the matching shapes): fp32 `conv2d_f32` (bias + ReLU) on each distinct convolution shape of
//! ResNet-50 at batch 1 / 224x224 (`"op":"conv_f32_r50"`, with the layer's count in the model)
//! and a last line with the count-weighted total (the model's fp32 convolution time).
use octet_kernels::*;
use std::time::Instant;

/// `--cold`: before each timed call, 64 MiB are written, evicting the weights and activations
/// from every cache level (as in a whole model, where each layer's weights arrive from DRAM).
static COLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn evict_caches() {
    static BUF: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
    let mut b = BUF.lock().unwrap();
    if b.is_empty() {
        b.resize(8 << 20, 0);
    }
    for (i, v) in b.iter_mut().enumerate() {
        *v = v.wrapping_add(i as u64);
    }
    std::hint::black_box(&*b);
}

/// `--cold-weights`: as `--cold`, then the activations (registered here) are read back into the
/// caches, so only the weights arrive cold.
static WARM: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());
static WARM_ACT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn warm_bytes<T>(v: &[T]) {
    let mut w = WARM.lock().unwrap();
    w.push((v.as_ptr() as usize, std::mem::size_of_val(v)));
}

fn touch_warm() {
    let w = WARM.lock().unwrap();
    let mut s = 0u8;
    for &(p, n) in w.iter() {
        for off in (0..n).step_by(64) {
            // SAFETY: registered slices outlive the timed closure (cleared after each shape).
            s = s.wrapping_add(unsafe { std::ptr::read_volatile((p + off) as *const u8) });
        }
    }
    std::hint::black_box(s);
}

fn median_secs(budget: f64, mut f: impl FnMut()) -> f64 {
    let cold = COLD.load(std::sync::atomic::Ordering::Relaxed);
    let warm_act = WARM_ACT.load(std::sync::atomic::Ordering::Relaxed);
    f();
    let t0 = Instant::now();
    let mut ts = Vec::new();
    while t0.elapsed().as_secs_f64() < budget || ts.len() < 3 {
        if cold {
            evict_caches();
            if warm_act {
                touch_warm();
            }
        }
        let s = Instant::now();
        f();
        ts.push(s.elapsed().as_secs_f64());
    }
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ts[ts.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if args.iter().any(|a| a == "--cold") {
        COLD.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if args.iter().any(|a| a == "--cold-weights") {
        COLD.store(true, std::sync::atomic::Ordering::Relaxed);
        WARM_ACT.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let threads: usize = get("--threads")
        .map(|s| s.parse().expect("--threads N"))
        .unwrap_or(1);
    let secs: f64 = get("--secs")
        .map(|s| s.parse().expect("--secs S"))
        .unwrap_or(1.0);
    let kernel = match get("--isa") {
        Some(s) => Kernel::new(Isa::parse(&s).unwrap_or_else(|e| panic!("{e}"))),
        None => Kernel::best(),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let shapes = get("--shapes").unwrap_or_else(|| {
        "1024x1024x1024,128x1536x384,128x384x1536,1x4096x4096,3136x64x576".into()
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let isa = kernel.isa();
    let f32_too = !args.iter().any(|a| a == "--no-f32");
    let bf16_too = args.iter().any(|a| a == "--bf16");
    let int8 = !args.iter().any(|a| a == "--no-int8");
    let bf16_dot = kernel.has_bf16_dot();
    for sh in shapes.split(',').filter(|s| !s.is_empty() && *s != "none") {
        let d: Vec<usize> = sh.split('x').map(|x| x.parse().expect("MxNxK")).collect();
        let (m, n, k) = (d[0], d[1], d[2]);
        let ops = 2.0 * (m * n * k) as f64;
        let a: Vec<u8> = (0..m * k).map(|i| (i * 7 + 3) as u8).collect();
        let b: Vec<i8> = (0..k * n).map(|i| ((i * 13 + 5) % 255) as i8).collect();
        let packed = PackedB::new(k, n, &b, WeightLayout::KxN, 0).unwrap();
        let mults: Vec<f32> = (0..n).map(|j| 1e-4 * (1.0 + j as f32 / n as f32)).collect();
        let bias: Vec<i32> = (0..n as i32).collect();
        let ep = Epilogue::requant(Scale::PerChannel(&mults), 128).with_bias(&bias);
        let mut out = vec![0u8; m * n];
        let t = pool.install(|| {
            if !int8 {
                return f64::NAN;
            }
            median_secs(secs, || {
                gemm_u8s8(
                    &kernel,
                    MatrixU8 {
                        data: &a,
                        rows: m,
                        ld: k,
                        zero_point: 128,
                    },
                    &packed,
                    &ep,
                    OutputSlice::U8(&mut out),
                    n,
                )
                .unwrap()
            })
        });
        let gops = ops / t / 1e9;
        if int8 {
            println!(
            "{{\"shape\":\"{sh}\",\"op\":\"u8s8gemm_requant\",\"gops\":{gops:.1},\"isa\":\"{isa}\",\"threads\":{threads},\"pct_peak\":{:.1}}}",
            100.0 * gops / (465.0 * threads as f64)
        );
        }
        let af: Vec<f32> = a.iter().map(|&x| x as f32 * 0.01).collect();
        let bf: Vec<f32> = b.iter().map(|&x| x as f32 * 0.01).collect();
        if bf16_too {
            let pb = PackedBBf16::new(k, n, &bf, WeightLayout::KxN).unwrap();
            let mut ob = vec![0f32; m * n];
            let tb = pool.install(|| {
                median_secs(secs, || {
                    gemm_bf16(&kernel, m, &af, k, &pb, None, false, &mut ob, n).unwrap()
                })
            });
            let gb = ops / tb / 1e9;
            println!(
                "{{\"shape\":\"{sh}\",\"op\":\"bf16gemm\",\"gflops\":{gb:.1},\"isa\":\"{isa}\",\"bf16_dot\":{bf16_dot},\"threads\":{threads},\"pct_peak\":{:.1}}}",
                100.0 * gb / (234.0 * threads as f64)
            );
        }
        if f32_too {
            let pf = PackedBF32::new(k, n, &bf, WeightLayout::KxN).unwrap();
            let mut of = vec![0f32; m * n];
            let tf = pool.install(|| {
                median_secs(secs, || {
                    gemm_f32(&kernel, m, &af, k, &pf, None, false, &mut of, n).unwrap()
                })
            });
            let gf = ops / tf / 1e9;
            println!(
                "{{\"shape\":\"{sh}\",\"op\":\"f32gemm\",\"gflops\":{gf:.1},\"isa\":\"{isa}\",\"threads\":{threads},\"pct_peak\":{:.1}}}",
                100.0 * gf / (117.0 * threads as f64)
            );
        }
    }
    if !args.iter().any(|a| a == "--no-conv") {
        // 3x3 56x56x64 -> 64 pad 1, and depthwise 3x3 112x112x32 pad 1; u8 out with ReLU clamp.
        // (name, h, w, c_in, c_out, groups, kernel, stride, pad)
        for (name, h, w, ci, co, groups, kk, st, pd) in [
            (
                "conv3x3_56x56x64-64",
                56usize,
                56usize,
                64usize,
                64usize,
                1usize,
                3usize,
                1usize,
                1usize,
            ),
            ("dwconv3x3_112x112x32", 112, 112, 32, 32, 32, 3, 1, 1),
            // ResNet-50's stem: 7x7 stride 2 pad 3, C_in = 3 (im2col, K = 147)
            ("stem7x7s2_224x224x3-64", 224, 224, 3, 64, 1, 7, 2, 3),
            // MobileNetV2's stem: 3x3 stride 2 pad 1, C_in = 3 (im2col, K = 27)
            ("stem3x3s2_224x224x3-32", 224, 224, 3, 32, 1, 3, 2, 1),
            // ResNet-50's other 3x3 layers
            ("conv3x3_28x28x128-128", 28, 28, 128, 128, 1, 3, 1, 1),
            ("conv3x3_14x14x256-256", 14, 14, 256, 256, 1, 3, 1, 1),
            ("conv3x3_7x7x512-512", 7, 7, 512, 512, 1, 3, 1, 1),
            ("conv3x3s2_56x56x128-128", 56, 56, 128, 128, 1, 3, 2, 1),
        ] {
            if let Some(f) = get("--conv") {
                if !name.contains(f.as_str()) {
                    continue;
                }
            }
            let x: Vec<u8> = (0..h * w * ci).map(|i| (i * 7) as u8).collect();
            let wt: Vec<i8> = (0..co * kk * kk * (ci / groups))
                .map(|i| (i * 13) as i8)
                .collect();
            let geom = ConvGeometry::new(kk, kk)
                .pad(pd)
                .stride(st, st)
                .groups(groups);
            let p = PackedConv::new(geom, ci, co, &wt, 0).unwrap();
            let mults = vec![1e-4f32; co];
            let ep = Epilogue::requant(Scale::PerChannel(&mults), 0).with_clamp(0, 255);
            let (oh, ow) = geom.out_size(h, w).unwrap();
            let mut out = vec![0u8; oh * ow * co];
            let t = pool.install(|| {
                median_secs(secs, || {
                    conv2d_u8s8(
                        &kernel,
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
                    .unwrap();
                })
            });
            let gops = 2.0 * (oh * ow * co * kk * kk * (ci / groups)) as f64 / t / 1e9;
            if bf16_too && groups == 1 && kk == 3 && st == 1 {
                let xf: Vec<f32> = x.iter().map(|&v| v as f32 * 0.01).collect();
                let wf: Vec<f32> = wt.iter().map(|&v| v as f32 * 0.01).collect();
                let pb = PackedConvBf16::new(ConvGeometry::new(3, 3).pad(1), ci, co, &wf).unwrap();
                let mut ob = vec![0f32; h * w * co];
                let tb = pool.install(|| {
                    median_secs(secs, || {
                        conv2d_bf16(&kernel, &xf, (1, h, w), &pb, None, true, &mut ob).unwrap();
                    })
                });
                let gb = 2.0 * (h * w * co * 9 * ci) as f64 / tb / 1e9;
                println!(
                    "{{\"shape\":\"{name}\",\"op\":\"conv_bf16\",\"gflops\":{gb:.1},\"isa\":\"{isa}\",\"bf16_dot\":{bf16_dot},\"threads\":{threads},\"pct_peak\":{:.1},\"ms\":{:.3}}}",
                    100.0 * gb / (234.0 * threads as f64),
                    tb * 1e3
                );
            }
            if f32_too && groups == 1 && kk == 3 && st == 1 {
                let xf: Vec<f32> = x.iter().map(|&v| v as f32 * 0.01).collect();
                let wf: Vec<f32> = wt.iter().map(|&v| v as f32 * 0.01).collect();
                let pf = PackedConvF32::new(ConvGeometry::new(3, 3).pad(1), ci, co, &wf).unwrap();
                let mut of = vec![0f32; h * w * co];
                let tf = pool.install(|| {
                    median_secs(secs, || {
                        conv2d_f32(&kernel, &xf, (1, h, w), &pf, None, true, &mut of).unwrap();
                    })
                });
                let gf = 2.0 * (h * w * co * 9 * ci) as f64 / tf / 1e9;
                println!(
                    "{{\"shape\":\"{name}\",\"op\":\"conv_f32\",\"gflops\":{gf:.1},\"isa\":\"{isa}\",\"threads\":{threads},\"pct_peak\":{:.1},\"ms\":{:.3}}}",
                    100.0 * gf / (117.0 * threads as f64),
                    tf * 1e3
                );
            }
            println!(
                "{{\"shape\":\"{name}\",\"op\":\"conv_u8s8\",\"gops\":{gops:.1},\"isa\":\"{isa}\",\"threads\":{threads},\"pct_peak\":{:.1},\"ms\":{:.3}}}",
                100.0 * gops / (465.0 * threads as f64),
                t * 1e3
            );
        }
    }
    if args.iter().any(|a| a == "--resnet50") {
        resnet50(&kernel, &pool, secs, threads, get("--conv"));
    }
    if args.iter().any(|a| a == "--elementwise") {
        // Element-wise kernels, 1M floats (softmax / layer norm: 2731 rows of 384), Gelem/s.
        let n = 384 * 2731;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 1000) as f32 - 500.0) * 0.01)
            .collect();
        let mut y = x.clone();
        let mut q = vec![0u8; n];
        let gamma = vec![1.1f32; 384];
        let beta = vec![0.1f32; 384];
        let report = |op: &str, t: f64| {
            println!("{{\"op\":\"{op}\",\"elements\":{n},\"gelem_s\":{:.2},\"isa\":\"{isa}\",\"us\":{:.1}}}", n as f64 / t / 1e9, t * 1e6);
        };
        let t = median_secs(secs, || {
            y.copy_from_slice(&x);
            gelu_inplace(&kernel, &mut y);
        });
        report("gelu", t);
        let t = median_secs(secs, || {
            y.copy_from_slice(&x);
            softmax_rows(&kernel, &mut y, 384).unwrap();
        });
        report("softmax_rows384", t);
        let t = median_secs(secs, || {
            layer_norm_rows(&kernel, &x, &gamma, &beta, 1e-5, &mut y).unwrap()
        });
        report("layer_norm_rows384", t);
        let t = median_secs(secs, || {
            quantize_u8(&kernel, &x, 0.02, 128, &mut q).unwrap()
        });
        report("quantize_u8", t);
        let t = median_secs(secs, || {
            dynamic_quantize_u8(&kernel, &x, &mut q).unwrap();
        });
        report("dynamic_quantize_u8", t);
        // QLinearAdd of two u8 tensors, with and without a folded 256-entry table.
        let qb: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
        let qa = q.clone();
        let table: Vec<u8> = (0..256).map(|i| (255 - i) as u8).collect();
        for (name, post) in [("qadd_u8", None), ("qadd_u8+table", Some(&table[..]))] {
            let add = QAdd::new((0.02, 128), (0.03, 120), (0.04, 100), false, post).unwrap();
            let t = median_secs(secs, || qadd_u8(&kernel, &qa, &qb, &mut q, &add).unwrap());
            report(name, t);
        }
    }
}

/// ResNet-50 (torchvision v1.5, stride in the 3x3) convolutions at batch 1, 224x224:
/// (name, kernel, stride, pad, c_in, c_out, input h = w, count in the model).
type R50Layer = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);
const R50: &[R50Layer] = &[
    ("stem7x7s2_3-64@224", 7, 2, 3, 3, 64, 224, 1),
    ("1x1_64-64@56", 1, 1, 0, 64, 64, 56, 1),
    ("3x3_64-64@56", 3, 1, 1, 64, 64, 56, 3),
    ("1x1_64-256@56", 1, 1, 0, 64, 256, 56, 4),
    ("1x1_256-64@56", 1, 1, 0, 256, 64, 56, 2),
    ("1x1_256-128@56", 1, 1, 0, 256, 128, 56, 1),
    ("3x3s2_128-128@56", 3, 2, 1, 128, 128, 56, 1),
    ("1x1s2_256-512@56", 1, 2, 0, 256, 512, 56, 1),
    ("1x1_128-512@28", 1, 1, 0, 128, 512, 28, 4),
    ("1x1_512-128@28", 1, 1, 0, 512, 128, 28, 3),
    ("3x3_128-128@28", 3, 1, 1, 128, 128, 28, 3),
    ("1x1_512-256@28", 1, 1, 0, 512, 256, 28, 1),
    ("3x3s2_256-256@28", 3, 2, 1, 256, 256, 28, 1),
    ("1x1s2_512-1024@28", 1, 2, 0, 512, 1024, 28, 1),
    ("1x1_256-1024@14", 1, 1, 0, 256, 1024, 14, 6),
    ("1x1_1024-256@14", 1, 1, 0, 1024, 256, 14, 5),
    ("3x3_256-256@14", 3, 1, 1, 256, 256, 14, 5),
    ("1x1_1024-512@14", 1, 1, 0, 1024, 512, 14, 1),
    ("3x3s2_512-512@14", 3, 2, 1, 512, 512, 14, 1),
    ("1x1s2_1024-2048@14", 1, 2, 0, 1024, 2048, 14, 1),
    ("1x1_512-2048@7", 1, 1, 0, 512, 2048, 7, 3),
    ("1x1_2048-512@7", 1, 1, 0, 2048, 512, 7, 2),
    ("3x3_512-512@7", 3, 1, 1, 512, 512, 7, 2),
];

fn resnet50(
    kernel: &Kernel,
    pool: &rayon::ThreadPool,
    secs: f64,
    threads: usize,
    filter: Option<String>,
) {
    let isa = kernel.isa();
    let (mut total_ms, mut total_flop) = (0.0, 0.0);
    for &(name, k, s, p, ci, co, hw, count) in R50 {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let geom = ConvGeometry::new(k, k).stride(s, s).pad(p);
        let x: Vec<f32> = (0..hw * hw * ci)
            .map(|i| ((i * 7 + 3) % 23) as f32 * 0.05 - 0.5)
            .collect();
        let wt: Vec<f32> = (0..co * k * k * ci)
            .map(|i| ((i * 13 + 5) % 29) as f32 * 0.01 - 0.14)
            .collect();
        let bias: Vec<f32> = (0..co).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
        let pf = PackedConvF32::new(geom, ci, co, &wt).unwrap();
        let (oh, ow) = geom.out_size(hw, hw).unwrap();
        let mut out = vec![0f32; oh * ow * co];
        warm_bytes(&x);
        warm_bytes(&out);
        let t = pool.install(|| {
            median_secs(secs, || {
                conv2d_f32(kernel, &x, (1, hw, hw), &pf, Some(&bias), true, &mut out).unwrap();
            })
        });
        WARM.lock().unwrap().clear();
        let flop = 2.0 * (oh * ow * co * k * k * ci) as f64;
        let gf = flop / t / 1e9;
        total_ms += count as f64 * t * 1e3;
        total_flop += count as f64 * flop;
        println!(
            "{{\"shape\":\"{name}\",\"op\":\"conv_f32_r50\",\"gflops\":{gf:.1},\"ms\":{:.3},\"count\":{count},\"isa\":\"{isa}\",\"threads\":{threads}}}",
            t * 1e3
        );
    }
    println!(
        "{{\"shape\":\"resnet50_convs_total\",\"op\":\"conv_f32_r50\",\"gflops\":{:.1},\"ms\":{total_ms:.2},\"isa\":\"{isa}\",\"threads\":{threads}}}",
        total_flop / total_ms / 1e6
    );
}
