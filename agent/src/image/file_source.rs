//! Images (and checksum files, config drives) on a local filesystem: `file://` URLs and
//! plain paths.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::source::{ImageSource, SourceError, SourceEvent, SourceStats};

/// Bytes per stream event: large enough that syscalls and the hand-offs between threads
/// cost little, small enough that the queues between threads stay a few MiB.
pub const CHUNK: usize = 256 * 1024;

/// Why a local path could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("{url:?} is not a local file URL")]
    NotLocal { url: String },
    #[error("file URL {url:?} names a remote host")]
    RemoteHost { url: String },
    #[error("file URL {url:?} has an invalid percent escape")]
    BadEscape { url: String },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether `url` is served by [`FileSource`]: a `file:` URL or anything without a scheme.
pub fn is_local(url: &str) -> bool {
    url.starts_with("file:") || !url.contains("://")
}

/// The path a `file://` URL (or a plain path) names. `file:///p`, `file://localhost/p`
/// and `file:/p` are accepted; percent escapes are decoded.
pub fn local_path(url: &str) -> Result<PathBuf, FileSourceError> {
    let Some(rest) = url.strip_prefix("file:") else {
        if url.contains("://") {
            return Err(FileSourceError::NotLocal { url: url.to_owned() });
        }
        return Ok(PathBuf::from(url));
    };
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => {
            let (host, path) = match authority_and_path.find('/') {
                Some(i) => authority_and_path.split_at(i),
                None => (authority_and_path, ""),
            };
            if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                return Err(FileSourceError::RemoteHost { url: url.to_owned() });
            }
            path
        }
        None => rest,
    };
    let decoded =
        percent_decode(path).ok_or_else(|| FileSourceError::BadEscape { url: url.to_owned() })?;
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(decoded)))
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16))?;
            let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16))?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// Reads a whole local file named by URL or path (checksum files, config drives).
pub fn read_local(url: &str) -> Result<Vec<u8>, FileSourceError> {
    let path = local_path(url)?;
    std::fs::read(&path).map_err(|source| FileSourceError::Io { path, source })
}

/// A local image file as an [`ImageSource`].
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    file: File,
    size: u64,
    position: u64,
}

impl FileSource {
    pub fn open(url: &str) -> Result<FileSource, FileSourceError> {
        let path = local_path(url)?;
        let io_err = |source| FileSourceError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(io_err(io::Error::from_raw_os_error(libc::EISDIR)));
        }
        Ok(FileSource { size: meta.len(), path, file, position: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, source: io::Error) -> SourceError {
        into_source_error(FileSourceError::Io { path: self.path.clone(), source })
    }
}

/// The one place a [`FileSourceError`] becomes the source trait's error type.
fn into_source_error(error: FileSourceError) -> SourceError {
    SourceError::Other(crate::executor::error_chain(&error))
}

impl ImageSource for FileSource {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError> {
        let available = self.size.saturating_sub(offset).min(len as u64) as usize;
        let mut buf = vec![0u8; available];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| self.io_error(e))?;
        Ok(buf)
    }

    fn next_event(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        let mut buf = super::buffers::take_filled(CHUNK);
        let mut filled = 0;
        // A regular file can still return short reads; fill the chunk unless at the end.
        while filled < buf.len() {
            match self.file.read_at(&mut buf[filled..], self.position + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        if filled == 0 {
            super::buffers::give(buf);
            return Ok(None);
        }
        buf.truncate(filled);
        self.position += filled as u64;
        Ok(Some(SourceEvent::Data(buf)))
    }

    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_and_paths() {
        let table: [(&str, Option<&str>); 8] = [
            ("file:///var/lib/img.raw", Some("/var/lib/img.raw")),
            ("file://localhost/var/img.raw", Some("/var/img.raw")),
            ("file:/var/img.raw", Some("/var/img.raw")),
            ("file:///a%20b/c%2fd", Some("/a b/c/d")),
            ("/plain/path.raw", Some("/plain/path.raw")),
            ("relative.raw", Some("relative.raw")),
            ("file:///bad%zz", None),
            ("file:///bad%4", None),
        ];
        for (url, expected) in table {
            assert_eq!(local_path(url).ok(), expected.map(PathBuf::from), "{url}");
        }
        assert!(matches!(
            local_path("file://server/x").unwrap_err(),
            FileSourceError::RemoteHost { .. }
        ));
        assert!(matches!(local_path("http://h/x").unwrap_err(), FileSourceError::NotLocal { .. }));
        assert!(is_local("file:///x") && is_local("/x") && !is_local("https://h/x"));
    }

    #[test]
    fn streams_the_whole_file_and_reads_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let data: Vec<u8> = (0..(CHUNK * 2 + 123)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut source = FileSource::open(&format!("file://{}", path.display())).unwrap();
        assert_eq!(source.size(), Some(data.len() as u64));
        assert_eq!(
            source.read_range(CHUNK as u64 * 2 + 100, 50).unwrap(),
            &data[CHUNK * 2 + 100..]
        );
        assert_eq!(source.read_range(10, 5).unwrap(), &data[10..15]);
        let mut streamed = Vec::new();
        let mut events = 0;
        while let Some(event) = source.next_event().unwrap() {
            match event {
                SourceEvent::Data(d) => streamed.extend_from_slice(&d),
                SourceEvent::Restart => panic!("a file never restarts"),
                SourceEvent::Hole(_) => panic!("a local file lists no holes"),
            }
            events += 1;
        }
        assert_eq!(events, 3);
        assert_eq!(streamed, data);
        assert_eq!(source.next_event().unwrap(), None);
    }

    #[test]
    fn missing_files_and_directories_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            FileSource::open(missing.to_str().unwrap()).unwrap_err(),
            FileSourceError::Io { .. }
        ));
        assert!(FileSource::open(dir.path().to_str().unwrap()).is_err());
    }
}
