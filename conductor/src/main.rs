//! `ferric`: the conductor service and operator CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("ferric {}", ferric_conductor::VERSION);
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") | None => {
            println!("ferric {}: bare-metal provisioning conductor", ferric_conductor::VERSION);
            println!("The conductor service and the operator CLI are not part of this build yet.");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("ferric: '{other}' is not available in this build yet");
            ExitCode::from(2)
        }
    }
}
