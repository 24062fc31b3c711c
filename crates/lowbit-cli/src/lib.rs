//! The `lowbit` command line: argument definitions and the commands behind them.
//!
//! `main` parses arguments with clap, runs one command, and turns any error into a single
//! `error: …` line on stderr. Exit codes: 1 for a problem with the files (unreadable, malformed,
//! not convertible, no room to write), 2 for a mistake in what was asked (clap's own usage
//! errors, an unknown target or type, a bad rule, recipe or output extension), 130 for Ctrl-C.
//! A closed stdout (`lowbit inspect … | head`) is not an error.

mod budget;
mod cli;
mod convert;
mod dequantize;
mod diff;
mod inspect;
mod output;
mod validate;

use clap::Parser;
use std::process::ExitCode;

/// Runs the command line and returns the process exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Inspect(args) => inspect::run(&args),
        cli::Command::Convert(args) => convert::run(&args),
        cli::Command::Dequantize(args) => dequantize::run(&args),
        cli::Command::Diff(args) => diff::run(&args),
        cli::Command::Validate(args) => validate::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            output::error_line(&e);
            if convert::is_cancelled(&e) {
                ExitCode::from(130)
            } else if convert::is_usage(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
