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
        raise_open_file_limit();
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

/// Raises the soft limit on open files to the hard limit: every BMC session holds a socket
/// (a UDP socket per IPMI BMC, a connection per Redfish BMC), and the usual soft limit of
/// 1024 is far below a large fleet.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot read the open-file limit");
        return;
    }
    if limit.rlim_cur >= limit.rlim_max {
        tracing::info!(limit = limit.rlim_cur, "open-file limit already at its maximum");
        return;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, soft = before, hard = limit.rlim_max,
            "cannot raise the open-file limit");
        return;
    }
    tracing::info!(from = before, to = limit.rlim_max, "raised the open-file limit");
}
