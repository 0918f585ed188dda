//! The `tollgate` binary: the command-line edge of Tollgate.
//!
//! Errors from the crates are typed; they are rendered here, once, as a clear line
//! on stderr with a non-zero exit code.

mod cli;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
