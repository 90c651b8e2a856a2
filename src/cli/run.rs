//! `octet run MODEL --input in.npz [--output out.npz] [--shape name=DxD..]`: run the whole batch
//! with the reference interpreter.

use crate::passes::bind_shapes::parse_shape_arg;
use crate::prepare;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Input data: .npz with one array per model input (batch first), or a .npy for a
    /// single-input model. Arrays that are not model inputs (e.g. `label`) are ignored.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Write the outputs here (.npz, keyed by output name).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Fix an input's shape (otherwise taken from the data).
    #[arg(long = "shape", value_name = "NAME=DxD..")]
    pub shapes: Vec<String>,
    /// Run on the reference interpreter only (the oracle, on the same lowered integer graph as
    /// the engine), not on the kernels.
    #[arg(long)]
    pub reference: bool,
    /// Print which kernel (and ISA) runs each Conv/Gemm/MatMul, and why any is not int8.
    #[arg(long)]
    pub report: bool,
    /// Worker threads for the kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    if crate::artifact::format::is_compiled(&a.model) {
        return run_compiled(&a);
    }
    let model = crate::frontend::onnx::load(&a.model)?;
    let mut g = model.graph;
    let arrays = prepare::read_inputs(&a.input)?;
    let labels = arrays
        .iter()
        .find(|(n, _)| n == "label")
        .map(|(_, t)| t.to_i64_vec());
    let (feeds, ignored) = prepare::match_inputs(&g, arrays)?;
    for name in &ignored {
        eprintln!(
            "note: '{name}' in {} is not a model input; ignored",
            a.input.display()
        );
    }
    let mut shapes: Vec<(String, Vec<usize>)> = a
        .shapes
        .iter()
        .map(|s| parse_shape_arg(s))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    for (name, t) in &feeds {
        match shapes.iter().find(|(n, _)| n == name) {
            Some((_, s)) if s.as_slice() != t.shape() => {
                anyhow::bail!(
                    "input '{name}': --shape says {s:?} but the data has shape {:?}",
                    t.shape()
                )
            }
            Some(_) => {}
            None => shapes.push((name.clone(), t.shape().to_vec())),
        }
    }
    prepare::prepare(&mut g, &shapes).map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let t0 = std::time::Instant::now();
    let (outs, how) = if a.reference {
        (
            // The oracle runs the same integer graph the engine runs.
            crate::reference::run_graph(&crate::prepare::lower(g)?, &feeds)?,
            "the reference interpreter".to_string(),
        )
    } else {
        let engine = crate::prepare::engine(g, a.threads)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
        if a.report {
            eprint!("{}", engine.report());
        }
        let how = format!(
            "the engine ({} int8 kernel nodes, best ISA {})",
            engine.report().int8_count(),
            engine.report().isa
        );
        (engine.run(&feeds)?, how)
    };
    let dt = t0.elapsed();
    eprintln!(
        "ran {} on {how} in {:.1} ms",
        a.model.display(),
        dt.as_secs_f64() * 1e3
    );
    report_outputs(&outs, labels.as_deref(), a.output.as_deref())
}

/// Print each output (dtype, shape, first values), the top-1 accuracy of the first output when
/// the data had labels, and write the outputs to `output` (.npz) if given. Shared by `octet run`
/// (ONNX and .octet) and compiled executables.
pub fn report_outputs(
    outs: &[(String, octet_ir::Tensor)],
    labels: Option<&[i64]>,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    for (name, t) in outs {
        let v = t.to_f64_vec();
        let preview: Vec<String> = v.iter().take(6).map(|x| format!("{x:.6}")).collect();
        println!(
            "{name}: {} {:?} [{}{}]",
            t.dtype(),
            t.shape(),
            preview.join(", "),
            if v.len() > 6 { ", ..." } else { "" }
        );
    }
    if let (Some(labels), Some((name, t))) = (labels, outs.first()) {
        if let Some(acc) = top1_accuracy(t, labels) {
            println!(
                "top-1 accuracy of '{name}' against 'label': {:.2}% ({} samples)",
                acc * 100.0,
                labels.len()
            );
        }
    }
    if let Some(out) = output {
        let arrays: Vec<(String, &octet_ir::Tensor)> =
            outs.iter().map(|(n, t)| (n.clone(), t)).collect();
        crate::io::npz::write_npz(out, &arrays)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Top-1 accuracy of logits `[N, C]` against integer labels `[N]`; `None` if shapes don't fit.
pub fn top1_accuracy(logits: &octet_ir::Tensor, labels: &[i64]) -> Option<f64> {
    let sh = logits.shape();
    if sh.len() != 2 || sh[0] != labels.len() || sh[0] == 0 || sh[1] == 0 {
        return None;
    }
    let v = logits.to_f64_vec();
    let c = sh[1];
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(i, &l)| {
            let row = &v[i * c..(i + 1) * c];
            let best = (0..c).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            best as i64 == l
        })
        .count();
    Some(correct as f64 / labels.len() as f64)
}

/// `octet run model.octet ...`: a compiled model (checked on load: format, checksum, CPU).
fn run_compiled(a: &RunArgs) -> anyhow::Result<()> {
    let mut session = crate::artifact::Session::load(&a.model)?;
    if let Some(t) = a.threads {
        session = session.with_threads(t);
    }
    let arrays = prepare::read_inputs(&a.input)?;
    let labels = arrays
        .iter()
        .find(|(n, _)| n == "label")
        .map(|(_, t)| t.to_i64_vec());
    let (feeds, ignored) = prepare::match_inputs(&session.model().graph, arrays)?;
    for name in &ignored {
        eprintln!(
            "note: '{name}' in {} is not a model input; ignored",
            a.input.display()
        );
    }
    let outs = session.run(&feeds)?;
    report_outputs(&outs, labels.as_deref(), a.output.as_deref())
}
