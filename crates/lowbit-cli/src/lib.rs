//! The `lowbit` command line: argument definitions and the commands behind them.
//!
//! `main` parses arguments with clap, runs one command, and turns any error into a single
//! `error: …` line on stderr and exit code 1 (clap's own usage errors exit with 2).
//! A closed stdout (`lowbit inspect … | head`) is not an error.

mod cli;
mod convert;
mod inspect;
mod output;

use clap::Parser;
use std::process::ExitCode;

/// Runs the command line and returns the process exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Inspect(args) => inspect::run(&args),
        cli::Command::Convert(args) => convert::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            output::error_line(&e);
            if convert::is_cancelled(&e) { ExitCode::from(130) } else { ExitCode::FAILURE }
        }
    }
}
