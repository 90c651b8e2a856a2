//! `octet profile MODEL [bench options] [--top N]`: time per step of the compiled plan (fused
//! nodes are one step) and per op type, as a share of the total, over `--iters` runs after
//! warm-up.

use super::bench::{prepare_engine, BenchArgs, Prepared};
use std::collections::HashMap;

#[derive(clap::Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub bench: BenchArgs,
    /// How many of the slowest steps to list.
    #[arg(long, default_value_t = 15)]
    pub top: usize,
}

pub fn profile(a: ProfileArgs) -> anyhow::Result<()> {
    let Prepared {
        engine,
        feeds,
        mode,
        compile_ms,
    } = prepare_engine(&a.bench)?;
    for _ in 0..a.bench.warmup {
        engine.run(&feeds)?;
    }
    let steps = engine.steps();
    let mut times = vec![0f64; steps.len()];
    let iters = a.bench.iters.max(1);
    let t0 = std::time::Instant::now();
    for _ in 0..iters {
        std::hint::black_box(engine.run_profiled(&feeds, &mut times)?);
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3 / iters as f64;
    let per: Vec<f64> = times.iter().map(|t| t * 1e3 / iters as f64).collect();
    let total: f64 = per.iter().sum();
    let pct = |t: f64| if total > 0.0 { 100.0 * t / total } else { 0.0 };
    let mut by_op: HashMap<(String, &'static str), (f64, usize)> = HashMap::new();
    for (s, &t) in steps.iter().zip(&per) {
        let e = by_op.entry((s.op.clone(), s.exec)).or_default();
        e.0 += t;
        e.1 += 1;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|x, y| y.1 .0.partial_cmp(&x.1 .0).unwrap());
    let threads = a.bench.threads.unwrap_or_else(rayon::current_num_threads);
    if a.bench.json {
        let mut idx: Vec<usize> = (0..steps.len()).collect();
        idx.sort_by(|&x, &y| per[y].partial_cmp(&per[x]).unwrap());
        let j = serde_json::json!({
            "model": a.bench.model.display().to_string(), "mode": mode, "threads": threads,
            "iters": iters, "total_ms": total, "wall_ms": wall, "compile_ms": compile_ms,
            "by_op": ops.iter().map(|((op, exec), (t, n))| serde_json::json!({
                "op": op, "exec": exec, "count": n, "ms": t, "pct": pct(*t)})).collect::<Vec<_>>(),
            "top": idx.iter().take(a.top).map(|&i| serde_json::json!({
                "node": steps[i].node, "op": steps[i].op, "exec": steps[i].exec,
                "ms": per[i], "pct": pct(per[i])})).collect::<Vec<_>>(),
        });
        println!("{j}");
        return Ok(());
    }
    println!(
        "{} [{mode}, {threads} thread(s), {}]: {total:.3} ms in {} steps per run (wall {wall:.3} ms; {iters} runs; compiled in {compile_ms:.0} ms)",
        a.bench.model.display(),
        engine.report().isa,
        steps.len()
    );
    println!("\nby op type:");
    println!(
        "  {:<44} {:<9} {:>5} {:>10} {:>7}",
        "op", "exec", "count", "ms", "%"
    );
    for ((op, exec), (t, n)) in &ops {
        println!("  {op:<44} {exec:<9} {n:>5} {t:>10.4} {:>6.1}%", pct(*t));
    }
    let mut idx: Vec<usize> = (0..steps.len()).collect();
    idx.sort_by(|&x, &y| per[y].partial_cmp(&per[x]).unwrap());
    println!("\ntop {} steps:", a.top.min(steps.len()));
    for &i in idx.iter().take(a.top) {
        let s = &steps[i];
        println!(
            "  {:>9.4} ms {:>5.1}%  {:<28} {:<9} {}",
            per[i],
            pct(per[i]),
            s.op,
            s.exec,
            s.node
        );
    }
    Ok(())
}
