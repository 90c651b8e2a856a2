use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = octet::cli::Cli::parse();
    match octet::cli::main_with(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
