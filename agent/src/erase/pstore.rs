//! `erase_pstore`: remove the kernel's persistent-store records (crash dumps, console
//! logs kept across reboots in firmware or reserved memory), which can hold a previous
//! tenant's data.
//!
//! Deleting a file under the mounted pstore filesystem (`/sys/fs/pstore`) makes the
//! kernel erase the record from its backend. When the directory is absent there is no
//! pstore to empty, which is success with nothing removed.

use std::io;

use serde_json::{json, Value};

use super::run::EraseStepError;
use crate::host::HostRoot;

/// Where the kernel mounts the pstore filesystem.
pub const PSTORE_DIR: &str = "/sys/fs/pstore";

/// Removes every record under the host's pstore directory. The result lists the removed
/// file names: `{"pstore_dir": "/sys/fs/pstore", "removed": ["dmesg-efi-1", ...]}`.
pub fn erase_pstore(host: &HostRoot) -> Result<Value, EraseStepError> {
    let names = match host.list_dir(PSTORE_DIR) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(EraseStepError::Pstore { path: PSTORE_DIR.to_owned(), source }),
    };
    let mut removed = Vec::new();
    for name in names {
        let host_path = format!("{PSTORE_DIR}/{name}");
        let path = host.path(&host_path);
        // Records are plain files; anything else is not ours to remove.
        let is_file = std::fs::symlink_metadata(&path).map(|m| m.is_file()).unwrap_or(false);
        if !is_file {
            continue;
        }
        std::fs::remove_file(&path)
            .map_err(|source| EraseStepError::Pstore { path: host_path.clone(), source })?;
        removed.push(name);
    }
    tracing::info!(count = removed.len(), "pstore records removed");
    Ok(json!({"pstore_dir": PSTORE_DIR, "removed": removed}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::tree;

    #[test]
    fn removes_records_and_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        tree::write(&host, "/sys/fs/pstore/dmesg-efi-177", "Oops").unwrap();
        tree::write(&host, "/sys/fs/pstore/console-ramoops-0", "log").unwrap();
        tree::mkdir(&host, "/sys/fs/pstore/not-a-record").unwrap();
        let out = erase_pstore(&host).unwrap();
        assert_eq!(
            out,
            json!({"pstore_dir": "/sys/fs/pstore",
                   "removed": ["console-ramoops-0", "dmesg-efi-177"]})
        );
        assert_eq!(host.list_dir(PSTORE_DIR).unwrap(), vec!["not-a-record"]);
        // A second run finds nothing left to remove.
        assert_eq!(erase_pstore(&host).unwrap()["removed"], json!([]));
    }

    #[test]
    fn no_pstore_is_nothing_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = erase_pstore(&HostRoot::new(dir.path())).unwrap();
        assert_eq!(out["removed"], json!([]));
    }

    #[test]
    fn unreadable_pstore_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        // A file where the directory should be: listing it fails with ENOTDIR.
        tree::write(&host, "/sys/fs/pstore", "x").unwrap();
        let err = erase_pstore(&host).unwrap_err();
        assert!(err.to_string().contains("/sys/fs/pstore"), "{err}");
    }
}
