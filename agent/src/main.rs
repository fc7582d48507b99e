//! `ferric-agent`: runs the deploy agent, or prints the hardware inventory.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ferric_agent::config::{self, AgentConfig, Invocation};
use ferric_agent::host::HostRoot;
use ferric_agent::inventory::{self, InventorySources};
use ferric_agent::logbuf::{LogBuffer, TeeWriter};
use tracing_subscriber::EnvFilter;

/// How much of the agent's own log is kept for `log.collect_system_logs`.
const LOG_BUFFER_BYTES: usize = 2 * 1024 * 1024;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("erase") {
        return erase(std::env::args().skip(2));
    }
    let invocation = match config::parse_invocation(std::env::args().skip(1)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("ferric-agent: {}", ferric_agent::executor::error_chain(&e));
            eprintln!("Try 'ferric-agent --help'.");
            return ExitCode::from(2);
        }
    };
    let result = match invocation {
        Invocation::Help(text) => {
            println!("{text}");
            Ok(())
        }
        Invocation::Version => {
            println!("ferric-agent {}", ferric_agent::run::AGENT_VERSION);
            Ok(())
        }
        Invocation::Inventory(config) => print_inventory(&config),
        Invocation::Run(config) => run(config),
        Invocation::WriteImage(args) => write_image(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ferric-agent stopped");
            eprintln!("ferric-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: AgentConfig) -> anyhow::Result<()> {
    let logs = Arc::new(LogBuffer::new(LOG_BUFFER_BYTES));
    let default_level = if config.debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("FERRIC_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},hyper=info,rustls=info")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(TeeWriter::new(logs.clone()))
        .with_ansi(false)
        .init();
    tracing::info!(version = ferric_agent::run::AGENT_VERSION, ?config, "ferric-agent starting");
    // Two workers: one can sit in a long disk operation while the other serves the API
    // and heartbeats.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(ferric_agent::run::run(config, logs))?;
    Ok(())
}

fn print_inventory(config: &AgentConfig) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let host = HostRoot::new(config.host_root.clone());
    let sources = InventorySources::for_host(host, config.bootif.clone());
    let inventory = inventory::collect(&sources).context("collecting the inventory")?;
    let json = serde_json::to_string_pretty(&inventory).context("encoding the inventory")?;
    println!("{json}");
    Ok(())
}

fn write_image(args: &ferric_agent::write_image_cli::WriteImageArgs) -> anyhow::Result<()> {
    // Progress has its own display on stderr; the log only adds warnings and errors.
    let filter = EnvFilter::try_from_env("FERRIC_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let report = ferric_agent::write_image_cli::run(args)?;
    println!("{}", ferric_agent::write_image_cli::summary(&report, &args.request.target));
    Ok(())
}

fn erase(args: impl Iterator<Item = String>) -> ExitCode {
    use ferric_agent::erase_cli::{self, EraseCommand};
    let args = match erase_cli::parse_args(args) {
        Ok(EraseCommand::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(EraseCommand::Erase(args)) => args,
        Err(e) => {
            eprintln!("ferric-agent erase: {e}");
            eprintln!("Try 'ferric-agent erase --help'.");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_env("FERRIC_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let outcomes = erase_cli::run(&HostRoot::new("/"), &args);
    if args.json {
        match serde_json::to_string_pretty(&erase_cli::to_json(&outcomes)) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("ferric-agent erase: encoding the report: {e}"),
        }
    } else {
        print!("{}", erase_cli::table(&outcomes));
    }
    if outcomes.iter().all(|o| o.result.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
