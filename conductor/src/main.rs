//! `ferric`: the conductor service and operator CLI.

use std::process::ExitCode;

use clap::Parser;
use ferric_conductor::cli::{self, Cli, Console};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferric: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let mut console =
        Console { out: &mut stdout, status: &mut stderr, live: Console::stderr_is_tty() };
    match runtime.block_on(cli::run(cli, &mut console)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The whole chain: "GET … failed: error sending request: connection refused".
            eprintln!("ferric: {:#}", anyhow::Error::new(error));
            ExitCode::FAILURE
        }
    }
}
