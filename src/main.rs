//! The `tollgate` binary: the command-line edge of Tollgate.
//!
//! Errors from the crates are typed; they are rendered here, once, as a clear line
//! on stderr with a non-zero exit code.

mod cli;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: a request allocates a few dozen
/// small blocks (HTTP, JSON, the ledger record), and glibc's malloc/free were a
/// third of the server's instructions per request (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // A command whose output is piped (`tollgate usage export | head`) ends
    // quietly when the reader goes away, like any Unix tool, instead of
    // panicking on EPIPE. Not for the commands that run a server: a client
    // hanging up must never kill it.
    if !matches!(cli.command, cli::Command::Serve(_) | cli::Command::Demo(_)) {
        sigpipe::reset();
    }
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
