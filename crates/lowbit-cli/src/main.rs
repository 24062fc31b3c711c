//! The `lowbit` binary: parse arguments, run, print errors on one line.

use std::process::ExitCode;

fn main() -> ExitCode {
    lowbit_cli::main()
}
