//! `ferric`: the conductor service and operator CLI.

use std::process::ExitCode;

use clap::Parser;
use ferric_conductor::cli::{self, Cli, Console};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = matches!(&cli.command, cli::Command::Conductor(args) if args.action.is_none());
    let mut builder = if service {
        // The service: logs on stderr (`FERRIC_LOG` filters), one worker per core.
        let filter = tracing_subscriber::EnvFilter::try_from_env("FERRIC_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
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
