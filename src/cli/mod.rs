//! The `octet` command line: argument definitions (clap) and one file per subcommand.

pub mod bench;
pub mod compile;
pub mod export;
pub mod inspect;
pub mod profile;
pub mod qat;
pub mod quantize;
pub mod run;
pub mod tune;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "octet",
    version,
    about = "Compile ONNX models into fast, accurate int8 programs for x86 CPUs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show a model's inputs, outputs, operators, parameter count and any unsupported operators.
    Inspect(inspect::InspectArgs),
    /// Run a model on inputs from an .npz (or .npy): int8 kernels for quantized nodes.
    Run(run::RunArgs),
    /// Quantize a model (static with calibration data, or dynamic) and write it as QDQ ONNX.
    Quantize(quantize::QuantizeArgs),
    /// Accuracy-aware tuning: find the most int8 model that meets an accuracy goal.
    Tune(tune::TuneArgs),
    /// Compile a model into a standalone int8 executable (or a .octet compiled-model file).
    Compile(compile::CompileArgs),
    /// Export a quantized model as standard ONNX (QDQ or QOperator) for other runtimes.
    Export(export::ExportArgs),
    /// Quantization-aware training (fake quant + straight-through estimator), then int8 export.
    Qat(qat::QatArgs),
    /// Measure latency and throughput of a model (fp32, or quantized static/dynamic).
    Bench(bench::BenchArgs),
    /// Time each step of the compiled plan and each op type (share of total, top N).
    Profile(profile::ProfileArgs),
}

pub fn main_with(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::inspect(a),
        Command::Run(a) => run::run(a),
        Command::Bench(a) => bench::bench(a),
        Command::Compile(a) => compile::compile(a),
        Command::Qat(a) => qat::qat(a),
        Command::Export(a) => export::export(a),
        Command::Profile(a) => profile::profile(a),
        Command::Tune(a) => tune::tune(a),
        Command::Quantize(a) => quantize::quantize(a),
    }
}
