use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A compiled executable carries its model in its own tail: run it.
    if let Some(payload) = octet::artifact::exe::embedded_payload() {
        let code = octet::artifact::exe::run_embedded(payload, std::env::args().collect());
        return ExitCode::from(code as u8);
    }
    let cli = octet::cli::Cli::parse();
    match octet::cli::main_with(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
