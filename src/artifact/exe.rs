//! Standalone executables: `octet compile` writes a copy of the octet runtime with the compiled
//! model appended (`[octet binary][.octet bytes][length u64 LE]["OCTETEXE"]`). When such a file
//! starts, it finds the model in its own tail and runs it: no Rust toolchain, no octet install
//! and no model file are needed on the target machine. At start-up it checks that the CPU has
//! the model's target instruction set.

use super::format::CompiledModel;
use super::session::Session;
use octet_ir::Tensor;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub const TRAILER: &[u8; 8] = b"OCTETEXE";

/// The compiled model appended to the running executable, if any.
pub fn embedded_payload() -> Option<Vec<u8>> {
    let exe = std::env::current_exe().ok()?;
    let mut f = std::fs::File::open(exe).ok()?;
    let len = f.metadata().ok()?.len();
    if len < 16 {
        return None;
    }
    f.seek(SeekFrom::Start(len - 16)).ok()?;
    let mut tail = [0u8; 16];
    f.read_exact(&mut tail).ok()?;
    if &tail[8..] != TRAILER {
        return None;
    }
    let plen = u64::from_le_bytes(tail[..8].try_into().ok()?);
    if plen > len - 16 {
        return None;
    }
    f.seek(SeekFrom::Start(len - 16 - plen)).ok()?;
    let mut buf = vec![0u8; plen as usize];
    f.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Write a standalone executable for `model` at `out` (atomically; mode 0755).
pub fn write_executable(model: &CompiledModel, out: &Path) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let mut runtime = std::fs::read(&me)?;
    // If this octet is itself a compiled executable, strip its payload first.
    if runtime.len() >= 16 && &runtime[runtime.len() - 8..] == TRAILER {
        let plen =
            u64::from_le_bytes(runtime[runtime.len() - 16..runtime.len() - 8].try_into()?) as usize;
        runtime.truncate(runtime.len() - 16 - plen);
    }
    let payload = model.to_bytes()?;
    crate::io::atomic::write_atomic(out, |f| {
        use std::io::Write;
        f.write_all(&runtime)?;
        f.write_all(&payload)?;
        f.write_all(&(payload.len() as u64).to_le_bytes())?;
        f.write_all(TRAILER)?;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))
    })?;
    Ok(())
}

fn usage(name: &str, m: &CompiledModel) -> String {
    let mut s = format!(
        "{name}: an octet-compiled model (target {}).\n\nUsage:\n  {name} --input x.npz [--output y.npz] [--threads N]\n  {name} --bench [--input x.npz] [--batch B] [--threads N] [--iters K] [--json]\n  {name} --help\n\nInputs (.npz keys; batch first):\n",
        m.target.name()
    );
    for i in &m.inputs {
        s.push_str(&format!("  {i}\n"));
    }
    s.push_str("Outputs:\n");
    for o in &m.outputs {
        s.push_str(&format!("  {o}\n"));
    }
    s
}

fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(|s| s.as_str())
}

/// Entry point of a compiled executable. Returns the process exit code.
pub fn run_embedded(payload: Vec<u8>, args: Vec<String>) -> i32 {
    let name = args
        .first()
        .map(|s| {
            Path::new(s)
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    match run_inner(&name, &payload, &args[1.min(args.len())..]) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            1
        }
    }
}

fn run_inner(name: &str, payload: &[u8], args: &[String]) -> anyhow::Result<()> {
    let model = CompiledModel::from_bytes(payload, name)?;
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", usage(name, &model));
        return Ok(());
    }
    let known = [
        "--input",
        "--output",
        "--threads",
        "--bench",
        "--batch",
        "--iters",
        "--json",
    ];
    let mut i = 0;
    while i < args.len() {
        if !known.contains(&args[i].as_str()) {
            anyhow::bail!("unknown argument '{}' (see --help)", args[i]);
        }
        i += if matches!(args[i].as_str(), "--bench" | "--json") {
            1
        } else {
            2
        };
    }
    let threads = value(args, "--threads")
        .map(|t| t.parse::<usize>())
        .transpose()?;
    let mut session = Session::new(model);
    if let Some(t) = threads {
        session = session.with_threads(t);
    }
    let arrays: Vec<(String, Tensor)> = match value(args, "--input") {
        Some(p) => crate::prepare::read_inputs(Path::new(p))?,
        None => vec![],
    };
    let labels = arrays
        .iter()
        .find(|(n, _)| n == "label")
        .map(|(_, t)| t.to_i64_vec());
    let (feeds, _) = if arrays.is_empty() {
        (vec![], vec![])
    } else {
        crate::prepare::match_inputs(&session.model().graph, arrays)?
    };
    if args.iter().any(|a| a == "--bench") {
        let batch: usize = value(args, "--batch")
            .map(|b| b.parse())
            .transpose()?
            .unwrap_or(1);
        let iters: usize = value(args, "--iters")
            .map(|b| b.parse())
            .transpose()?
            .unwrap_or(50);
        let feeds: Vec<(String, Tensor)> = if feeds.is_empty() {
            session
                .inputs()
                .iter()
                .map(|s| {
                    let dims: Vec<usize> =
                        s.ty.shape
                            .0
                            .iter()
                            .enumerate()
                            .map(|(j, d)| d.fixed().unwrap_or(if j == 0 { batch } else { 1 }))
                            .collect();
                    (s.name.clone(), Tensor::zeros(s.ty.dtype, &dims))
                })
                .collect()
        } else {
            feeds
                .iter()
                .map(|(n, t)| (n.clone(), first(t, batch)))
                .collect()
        };
        let engine = session.engine_for(&feeds)?;
        for _ in 0..5 {
            engine.run(&feeds)?;
        }
        let mut times = vec![];
        for _ in 0..iters.max(1) {
            let t = std::time::Instant::now();
            std::hint::black_box(engine.run(&feeds)?);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| times[(((times.len() - 1) as f64) * q).round() as usize];
        if args.iter().any(|a| a == "--json") {
            println!(
                "{}",
                serde_json::json!({"model": name, "batch": batch, "threads": threads.unwrap_or_else(rayon::current_num_threads), "p90_ms": p(0.9), "p99_ms": p(0.99), "median_ms": p(0.5)})
            );
        } else {
            println!(
                "{name}: median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms ({} runs, batch {batch})",
                p(0.5),
                p(0.9),
                p(0.99),
                times.len()
            );
        }
        return Ok(());
    }
    if feeds.is_empty() {
        anyhow::bail!("--input x.npz is required (see --help)");
    }
    let outs = session.run(&feeds)?;
    crate::cli::run::report_outputs(
        &outs,
        labels.as_deref(),
        value(args, "--output").map(Path::new),
    )
}

/// The first `b` samples of a batch-first tensor (all of it if it has fewer).
fn first(t: &Tensor, b: usize) -> Tensor {
    t.first_rows(b).unwrap_or_else(|| t.clone())
}
