//! Debian packages fetched with `apt-get download` into a cache directory and unpacked with
//! `dpkg-deb -x`, never installed: tests take kernels, busybox and emulators from them
//! without changing the machine they run on.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The `.deb` of `package` in `cache`, downloaded first unless one is already there.
///
/// The download lands in a private directory inside `cache` and is moved into place only
/// once apt has finished, so an interrupted download is never mistaken for a package.
pub fn fetch(cache: &Path, package: &str) -> anyhow::Result<PathBuf> {
    if package.is_empty() || package.contains(['/', '_']) || package.starts_with('-') {
        bail!("{package:?} is not a Debian package name");
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    if let Some(deb) = cached(cache, package)? {
        return Ok(deb);
    }
    let staging = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(cache)
        .with_context(|| format!("creating a download directory in {}", cache.display()))?;
    let out = Command::new("apt-get")
        .args(["download", "--", package])
        .current_dir(staging.path())
        .output()
        .with_context(|| format!("running apt-get download {package}"))?;
    if !out.status.success() {
        bail!("apt-get download {package} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let Some(downloaded) = cached(staging.path(), package)? else {
        bail!(
            "apt-get download {package} succeeded but left no {package}_*.deb: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    };
    let Some(name) = downloaded.file_name() else {
        bail!("apt-get download {package} produced {}", downloaded.display());
    };
    let deb = cache.join(name);
    std::fs::rename(&downloaded, &deb)
        .with_context(|| format!("moving {} into {}", downloaded.display(), cache.display()))?;
    Ok(deb)
}

/// The newest-named `PACKAGE_*.deb` directly in `dir`, if any.
fn cached(dir: &Path, package: &str) -> anyhow::Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    Ok(found.pop())
}

/// Unpacks the files of `deb` under `into` (created when missing), as `dpkg-deb -x` does.
pub fn unpack(deb: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(into)
        .output()
        .with_context(|| format!("running dpkg-deb -x {}", deb.display()))?;
    if !out.status.success() {
        bail!(
            "dpkg-deb -x {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_package_fails_by_name_with_apts_words_and_leaves_the_cache_clean() {
        if Command::new("apt-get").arg("--version").output().is_err() {
            println!("skipped: `apt-get` is not installed");
            return;
        }
        let cache = tempfile::tempdir().unwrap();
        let err = fetch(cache.path(), "ferric-no-such-package").unwrap_err().to_string();
        assert!(err.contains("apt-get download ferric-no-such-package failed: E:"), "{err}");
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "{err}");
    }

    #[test]
    fn names_that_are_not_package_names_are_refused() {
        let cache = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a_b", "-option"] {
            let err = fetch(cache.path(), bad).unwrap_err().to_string();
            assert!(err.contains("not a Debian package name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_file_that_is_not_a_deb_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("broken_1_amd64.deb");
        std::fs::write(&deb, b"not an archive").unwrap();
        let err = unpack(&deb, &dir.path().join("root")).unwrap_err().to_string();
        assert!(err.contains("broken_1_amd64.deb"), "{err}");
    }
}
