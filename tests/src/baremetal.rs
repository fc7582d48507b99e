//! The real `baremetal` CLI (python-ironicclient) as a test peer, and the `ferric` CLI
//! binary, both run as child processes against an API on `127.0.0.1` — in the tests, the
//! real conductor started in-process by [`crate::conductor::InProcessConductor`] or the
//! flow tests' lab.
//!
//! The `baremetal` CLI lives in a Python venv made by `tests/peers/setup-venv.sh`, found at
//! `$FERRIC_BAREMETAL_VENV` or else `<target dir>/baremetal-venv`. A missing venv is an
//! error that says how to create it: tests that need the peer fail, they never skip.
//!
//! Each `baremetal` run gets a private cache directory: the client caches the microversion
//! it negotiated per host and port, and a shared cache would let one run hide the
//! negotiation of the next.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// Environment variable naming the venv that holds the `baremetal` CLI.
pub const VENV_ENV: &str = "FERRIC_BAREMETAL_VENV";

/// How long one CLI run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

pub use crate::workspace_bin::target_dir;

/// Where the venv is expected: `$FERRIC_BAREMETAL_VENV`, else `<target dir>/baremetal-venv`.
pub fn venv_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os(VENV_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(target_dir()?.join("baremetal-venv")),
    }
}

/// The `baremetal` executable, or an error explaining how to install it.
pub fn baremetal_binary() -> anyhow::Result<PathBuf> {
    baremetal_binary_in(&venv_dir()?)
}

/// The `baremetal` executable of the venv at `venv`, or an error explaining how to create it.
pub fn baremetal_binary_in(venv: &Path) -> anyhow::Result<PathBuf> {
    let binary = venv.join("bin").join("baremetal");
    if !binary.is_file() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers").join("setup-venv.sh");
        bail!(
            "the real `baremetal` CLI is not installed at {}: create the venv with `{} {}` \
             (or point {VENV_ENV} at an existing one); CI always creates it",
            binary.display(),
            script.display(),
            venv.display()
        );
    }
    Ok(binary)
}

/// What a CLI run produced.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Fails with both output streams unless the run exited 0.
    pub fn ensure_success(&self, what: &str) -> anyhow::Result<&Self> {
        if !self.success() {
            bail!(
                "{what} exited with {}\nstdout:\n{}\nstderr:\n{}",
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }

    /// Standard output parsed as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!("output is not JSON:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

/// Runs `command` to completion with null stdin, capturing its output.
pub async fn run_child(
    mut command: tokio::process::Command,
    what: &str,
) -> anyhow::Result<CliOutput> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = command.spawn().with_context(|| format!("starting {what}"))?;
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("{what} did not finish within {RUN_TIMEOUT:?}"))?
        .with_context(|| format!("waiting for {what}"))?;
    Ok(CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The `baremetal` CLI pointed at one endpoint with authentication off.
#[derive(Debug)]
pub struct Baremetal {
    binary: PathBuf,
    endpoint: String,
    home: tempfile::TempDir,
}

impl Baremetal {
    /// `endpoint` is the API root, e.g. `http://127.0.0.1:40123`.
    pub fn new(endpoint: impl Into<String>) -> anyhow::Result<Self> {
        let home = tempfile::tempdir().context("creating a home for the baremetal CLI")?;
        Ok(Self { binary: baremetal_binary()?, endpoint: endpoint.into(), home })
    }

    /// Forgets the microversion the client negotiated (its per-endpoint cache).
    pub fn clear_version_cache(&self) -> anyhow::Result<()> {
        let cache = self.home.path().join("cache");
        if cache.exists() {
            std::fs::remove_dir_all(&cache).context("clearing the baremetal CLI cache")?;
        }
        Ok(())
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(["--os-endpoint", &self.endpoint, "--os-auth-type", "none"])
            .args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin")),
            )
            .env("HOME", self.home.path())
            .env("XDG_CACHE_HOME", self.home.path().join("cache"))
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("LC_ALL", "C.UTF-8");
        command
    }

    /// Runs `baremetal --os-endpoint … --os-auth-type none ARGS…`.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        run_child(self.command(args), &format!("baremetal {}", args.join(" "))).await
    }

    /// Runs `baremetal … ARGS… -f json`, requires exit 0, and parses the output.
    pub async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut with_format = args.to_vec();
        with_format.extend(["-f", "json"]);
        let output = self.run(&with_format).await?;
        output.ensure_success(&format!("baremetal {}", args.join(" ")))?;
        output.json()
    }
}

/// The `ferric` binary, built (once per process) into the target directory of the running
/// tests; cargo does nothing when it is up to date.
pub fn ferric_binary() -> anyhow::Result<PathBuf> {
    crate::workspace_bin::workspace_binary("ferric-conductor", "ferric")
}

/// Runs `ferric --url URL ARGS…` (with `--wait` polling every 50 ms).
pub async fn run_ferric(url: &str, args: &[&str]) -> anyhow::Result<CliOutput> {
    let mut command = tokio::process::Command::new(ferric_binary()?);
    command.args(["--url", url, "--poll-interval-ms", "50"]).args(args).env_remove("FERRIC_URL");
    run_child(command, &format!("ferric {}", args.join(" "))).await
}

#[cfg(test)]
mod tests;
