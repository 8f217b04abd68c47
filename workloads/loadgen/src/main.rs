use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = loadgen::config::Cli::parse();
    loadgen::run_cli(&cli)
}
