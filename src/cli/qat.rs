//! `octet qat MODEL --train train.npz [--eval eval.npz] --epochs N [--lr LR] [--batch B]
//! [--optimizer adam|sgd] [--weight-bits 8] [--per-tensor] [--reduce-range] -o OUT.onnx`:
//! quantization-aware fine-tuning (fake quantization, straight-through estimator) of a CNN/MLP,
//! then static quantization of the trained model to a QDQ ONNX file (calibrated on the training
//! inputs). The .npz files hold the model input (by its name) and `label` (i64 class ids).
//! A progress bar shows the loss and the quantized eval accuracy per epoch.

use crate::qat::{self, Buf, EpochStats, OptimKind, QatConfig, QatHooks, QatModel};
use crate::quantizer::{self, export_onnx, QuantConfig, ReduceRange};
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct QatArgs {
    /// The fp32 ONNX model (one input, one logits output).
    pub model: PathBuf,
    /// Training data: .npz with the model input and `label`.
    #[arg(long)]
    pub train: PathBuf,
    /// Evaluation data: .npz with the model input and `label`.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Output: the int8 QDQ ONNX model.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Also write the fine-tuned fp32 model here.
    #[arg(long = "fp32-out")]
    pub fp32_out: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f32,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// adam or sgd (momentum 0.9).
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
    #[arg(long = "weight-bits", default_value_t = 8)]
    pub weight_bits: u32,
    /// Per-tensor weights (default per channel).
    #[arg(long = "per-tensor")]
    pub per_tensor: bool,
    /// Train for (and export with) reduced-range (7-bit) weights.
    #[arg(long = "reduce-range")]
    pub reduce_range: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

fn read_labelled(path: &Path, input: &str) -> anyhow::Result<(Buf, Vec<i64>)> {
    let arrays =
        crate::io::npz::read_npz(path).with_context(|| format!("reading {}", path.display()))?;
    let find = |k: &str| arrays.iter().find(|(n, _)| n == k).map(|(_, t)| t);
    let x = match find(input) {
        Some(t) => t,
        None if arrays.len() == 2 => arrays
            .iter()
            .find(|(n, _)| n != "label")
            .map(|(_, t)| t)
            .unwrap(),
        None => bail!("{}: no array named '{input}'", path.display()),
    };
    let Some(l) = find("label") else {
        bail!("{}: no 'label' array", path.display());
    };
    let x = qat::to_buf(x)?;
    let l = l.to_i64_vec();
    if l.len() != x.shape[0] {
        bail!(
            "{}: {} labels for {} samples",
            path.display(),
            l.len(),
            x.shape[0]
        );
    }
    Ok((x, l))
}

struct Bar {
    pb: Option<ProgressBar>,
}

impl QatHooks for Bar {
    fn on_batch_end(&mut self, _e: usize, _b: usize, loss: f32) {
        if let Some(pb) = &self.pb {
            pb.set_message(format!("batch loss {loss:.4}"));
        }
    }
    fn on_epoch_end(&mut self, _m: &QatModel, s: &EpochStats) {
        let acc = s
            .eval_accuracy
            .map(|a| format!("{:.2}%", a * 100.0))
            .unwrap_or_else(|| "-".into());
        let line = format!(
            "epoch {}: loss {:.4}, eval accuracy (int8) {acc}",
            s.epoch + 1,
            s.loss
        );
        match &self.pb {
            Some(pb) if !pb.is_hidden() => {
                pb.println(&line);
                pb.inc(1);
            }
            _ => println!("{line}"),
        }
    }
}

pub fn qat(a: QatArgs) -> anyhow::Result<()> {
    let optimizer = match a.optimizer.as_str() {
        "adam" => OptimKind::adam(),
        "sgd" => OptimKind::Sgd { momentum: 0.9 },
        o => bail!("--optimizer must be adam or sgd, got '{o}'"),
    };
    if !(2..=8).contains(&a.weight_bits) {
        bail!("--weight-bits must be in 2..=8");
    }
    let probe = crate::frontend::onnx::load(&a.model)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let input = crate::prepare::input_names(&probe.graph)
        .into_iter()
        .next()
        .context("the model has no input")?;
    let (tx, ty) = read_labelled(&a.train, &input)?;
    let eval = a
        .eval
        .as_ref()
        .map(|p| read_labelled(p, &input))
        .transpose()?;
    // Keep the model's own (usually symbolic) batch dimension: the exported model serves any
    // batch; the training tape takes its shapes from the data.
    let model = crate::prepare::load(&a.model, &[])?;
    let cfg = QatConfig {
        weight_bits: a.weight_bits,
        per_channel: !a.per_tensor,
        reduce_range: a.reduce_range,
        lr: a.lr,
        epochs: a.epochs,
        batch: a.batch.max(1),
        optimizer,
        seed: a.seed,
        ..QatConfig::default()
    };
    // BatchNorm after Conv trains folded into the conv (the usual QAT recipe for inference).
    let mut graph = model.graph;
    {
        use crate::passes::Pass;
        if crate::passes::fold_batchnorm::FoldBatchNorm.run(&mut graph)? {
            graph.infer_types()?;
        }
    }
    let mut m = QatModel::prepare(&graph, cfg)?;
    if let Some((ex, ey)) = &eval {
        let fp = m.evaluate(ex, ey, false);
        let n = tx.shape[0].min(256);
        m.calibrate(&Buf::new(
            [vec![n], tx.shape[1..].to_vec()].concat(),
            tx.data[..n * tx.data.len() / tx.shape[0]].to_vec(),
        ));
        let q = m.evaluate(ex, ey, true);
        println!(
            "before QAT: eval accuracy fp32 {:.2}%, quantized {:.2}%",
            fp * 100.0,
            q * 100.0
        );
    }
    let pb = (!a.quiet).then(|| {
        let pb = ProgressBar::new(a.epochs as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:30} epoch {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    });
    let mut hooks = Bar { pb };
    m.fit(
        (&tx, &ty),
        eval.as_ref().map(|(x, y)| (x, y.as_slice())),
        &mut hooks,
    );
    if let Some(pb) = &hooks.pb {
        pb.finish_and_clear();
    }
    let trained = m.convert(false);
    if let Some(p) = &a.fp32_out {
        export_onnx::write_onnx(&trained, p).with_context(|| format!("writing {}", p.display()))?;
    }
    if a.weight_bits != 8 {
        eprintln!(
            "note: trained for {}-bit weights; the exported QDQ model uses the quantizer's 8-bit weights",
            a.weight_bits
        );
    }
    let qcfg = QuantConfig {
        per_channel: !a.per_tensor,
        reduce_range: if a.reduce_range {
            ReduceRange::On
        } else {
            ReduceRange::Off
        },
        quiet: a.quiet,
        ..QuantConfig::default()
    };
    let n = tx.shape[0].min(256);
    let per = tx.data.len() / tx.shape[0].max(1);
    let calib = vec![(
        input,
        octet_ir::Tensor::from_vec(
            &[vec![n], tx.shape[1..].to_vec()].concat(),
            tx.data[..n * per].to_vec(),
        ),
    )];
    let (q, report) = quantizer::quantize_static(&trained, &calib, &qcfg)
        .context("quantizing the trained model")?;
    export_onnx::write_onnx(&q, &a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    print!("{report}");
    Ok(())
}
