//! The only place that names host paths.
//!
//! Every read of `/sys`, `/proc`, `/dev` and `/run` goes through a [`HostRoot`], so the
//! whole agent can run against a generated fake tree (tests, benchmarks) instead of the
//! machine it happens to run on. On a real server the root is `/`.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// A directory that stands for the host's `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::new("/")
    }
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory that stands for `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this is the real host (`/`): only then may callers use facilities that
    /// cannot be redirected into a fake tree (ioctls on the real kernel, `reboot(2)`).
    pub fn is_real_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Maps an absolute host path (`/sys/block`) to the path under this root.
    /// `..` components are dropped so a path can never climb out of the root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let mut out = self.root.clone();
        for c in host_path.as_ref().components() {
            if let Component::Normal(part) = c {
                out.push(part);
            }
        }
        out
    }

    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        self.path(host_path).exists()
    }

    pub fn read_to_string(&self, host_path: impl AsRef<Path>) -> io::Result<String> {
        fs::read_to_string(self.path(host_path))
    }

    pub fn read_bytes(&self, host_path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        fs::read(self.path(host_path))
    }

    /// Reads a one-value sysfs attribute: trimmed, `None` when the file is missing,
    /// unreadable (some attributes fail with EINVAL when a device is down) or empty.
    pub fn read_attr(&self, host_path: impl AsRef<Path>) -> Option<String> {
        let s = self.read_to_string(host_path).ok()?;
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_owned())
    }

    /// The target of a symbolic link, as stored in the link (not resolved).
    pub fn read_link(&self, host_path: impl AsRef<Path>) -> io::Result<PathBuf> {
        fs::read_link(self.path(host_path))
    }

    /// The names in a directory, sorted, so every listing is deterministic.
    pub fn list_dir(&self, host_path: impl AsRef<Path>) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.path(host_path))? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let h = HostRoot::new("/tmp/fake");
        assert_eq!(h.path("/sys/block"), PathBuf::from("/tmp/fake/sys/block"));
        assert_eq!(h.path("/sys/../../etc/passwd"), PathBuf::from("/tmp/fake/sys/etc/passwd"));
        assert!(!h.is_real_root());
        assert!(HostRoot::default().is_real_root());
    }

    #[test]
    fn reads_attributes_trimmed_and_lists_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let h = HostRoot::new(dir.path());
        fs::create_dir_all(h.path("/sys/block/sdb")).unwrap();
        fs::create_dir_all(h.path("/sys/block/sda")).unwrap();
        fs::write(h.path("/sys/block/sda/size"), "2048\n").unwrap();
        fs::write(h.path("/sys/block/sda/empty"), "\n").unwrap();
        assert_eq!(h.read_attr("/sys/block/sda/size").as_deref(), Some("2048"));
        assert_eq!(h.read_attr("/sys/block/sda/empty"), None);
        assert_eq!(h.read_attr("/sys/block/sda/missing"), None);
        assert_eq!(h.list_dir("/sys/block").unwrap(), vec!["sda", "sdb"]);
    }
}
