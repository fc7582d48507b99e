//! Binaries of this workspace for tests that run them as child processes: built with
//! cargo into the target directory of the running test (cargo does nothing when they are
//! up to date), once per process and binary.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context};

/// The target directory the running executable was built into: test executables live
/// in `<target>/<profile>/deps/`, binaries in `<target>/<profile>/`.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the running executable")?;
    let mut dir = exe.parent().context("the running executable has no directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("deps/ has no parent")?;
    }
    let target = dir.parent().context("the profile directory has no parent")?;
    Ok(target.to_path_buf())
}

/// `<target dir>/debug/<bin>` of `package`, built first (once per process).
pub fn workspace_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(format!("{package}/{bin}"))
        .or_insert_with(|| build(package, bin).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let target_dir = target_dir()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(&cargo)
        .current_dir(&workspace)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(&target_dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        bail!(
            "building {bin} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let binary = target_dir.join("debug").join(bin);
    if !binary.is_file() {
        bail!("cargo built {bin} but {} does not exist", binary.display());
    }
    Ok(binary)
}
