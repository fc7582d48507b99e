//! Reading an erased disk back: the first and last MiB and random 1 MiB samples spread
//! over the whole disk must be zero.
//!
//! The samples are stratified: the disk is cut into as many equal stretches as there
//! are samples and one sample lies at a random, 4 KiB-aligned place in each, so no large
//! region goes unchecked however the random draw falls. Reads bypass the page cache
//! (`O_DIRECT`) where the device allows it, so what is checked is what the device
//! returns, not what the kernel remembers.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::report::Verification;

/// Size of one sample.
pub const SAMPLE_BYTES: u64 = 1 << 20;
/// Random samples besides the first and last MiB.
pub const DEFAULT_SAMPLES: u32 = 256;
/// Sample offsets are multiples of this (the largest logical block size).
const ALIGN: u64 = 4096;

/// Why the disk could not be read back (a mismatch is not an error: it is
/// [`Verification::Failed`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot open {} for reading back", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read back {} at byte {offset}", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("{} ended at byte {offset}, before its size of {size} bytes", path.display())]
    Short { path: PathBuf, offset: u64, size: u64 },
}

/// The byte ranges to read on a disk of `size` bytes: the first and last MiB, then
/// `samples` ranges of up to 1 MiB, one in each of `samples` equal stretches. A disk no
/// larger than all of that together is read whole. Ranges are sorted and do not overlap.
pub fn sample_ranges(size: u64, samples: u32, seed: u64) -> Vec<(u64, u64)> {
    let wanted = SAMPLE_BYTES.saturating_mul(u64::from(samples) + 2);
    if size <= wanted {
        let mut out = Vec::new();
        let mut at = 0;
        while at < size {
            let len = SAMPLE_BYTES.min(size - at);
            out.push((at, len));
            at += len;
        }
        return out;
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = vec![(0, SAMPLE_BYTES)];
    let tail = (size - SAMPLE_BYTES) / ALIGN * ALIGN;
    // The random samples lie between the first MiB and the tail range.
    let body_start = SAMPLE_BYTES;
    let body_len = tail - body_start;
    let stretch = body_len / u64::from(samples.max(1)) / ALIGN * ALIGN;
    for i in 0..u64::from(samples) {
        let start = body_start + i * stretch;
        let room = stretch.saturating_sub(SAMPLE_BYTES);
        let offset = start + rng.u64(0..=room) / ALIGN * ALIGN;
        let len = SAMPLE_BYTES.min(stretch).min(tail - offset);
        if len > 0 {
            out.push((offset, len));
        }
    }
    out.push((tail, size - tail));
    out.sort_unstable();
    out.dedup_by(|b, a| b.0 < a.0 + a.1);
    out
}

/// A heap buffer aligned for `O_DIRECT`.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN as usize];
        let start = raw.as_ptr().align_offset(ALIGN as usize).min(ALIGN as usize);
        Aligned { raw, start, len }
    }
    fn slice(&mut self, n: usize) -> &mut [u8] {
        let n = n.min(self.len);
        &mut self.raw[self.start..self.start + n]
    }
}

struct Reader {
    path: PathBuf,
    buffered: File,
    direct: Option<File>,
}

impl Reader {
    fn open(path: &Path) -> Result<Reader, VerifyError> {
        let open_err = |source| VerifyError::Open { path: path.to_owned(), source };
        let buffered = File::open(path).map_err(open_err)?;
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
            .open(path)
            .ok();
        Ok(Reader { path: path.to_owned(), buffered, direct })
    }

    /// Fills `buf` from `offset`: with `O_DIRECT` when the range is aligned and the
    /// device takes it, through the page cache otherwise.
    fn read_exact(&mut self, buf: &mut [u8], offset: u64, size: u64) -> Result<(), VerifyError> {
        let aligned = offset % ALIGN == 0 && buf.len() as u64 % ALIGN == 0;
        if let (true, Some(direct)) = (aligned, &self.direct) {
            match direct.read_exact_at(buf, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(self.read_err(offset, e, size)),
            }
        }
        self.buffered.read_exact_at(buf, offset).map_err(|e| self.read_err(offset, e, size))
    }

    fn read_err(&self, offset: u64, e: io::Error, size: u64) -> VerifyError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            VerifyError::Short { path: self.path.clone(), offset, size }
        } else {
            VerifyError::Read { path: self.path.clone(), offset, source: e }
        }
    }
}

/// Reads the sample ranges of `path` (whose size is `size`) and checks they are zero.
/// `samples` is the number of random samples (at least [`DEFAULT_SAMPLES`] for a step);
/// `seed` picks their places.
pub fn verify_zeros(
    path: &Path,
    size: u64,
    samples: u32,
    seed: u64,
) -> Result<Verification, VerifyError> {
    let mut reader = Reader::open(path)?;
    let mut buf = Aligned::new(SAMPLE_BYTES as usize);
    let ranges = sample_ranges(size, samples, seed);
    let mut checked = 0u64;
    for &(offset, len) in &ranges {
        let data = buf.slice(len as usize);
        reader.read_exact(data, offset, size)?;
        if let Some(at) = first_non_zero(data) {
            let value = data.get(at).copied().unwrap_or(0);
            return Ok(Verification::Failed {
                offset: offset + at as u64,
                detail: format!(
                    "byte {} is {value:#04x}, expected zero (sample {offset}+{len})",
                    offset + at as u64
                ),
            });
        }
        checked += len;
    }
    Ok(Verification::Verified {
        samples: u32::try_from(ranges.len()).unwrap_or(u32::MAX),
        bytes_checked: checked,
    })
}

/// Index of the first non-zero byte, scanning eight bytes at a time.
pub fn first_non_zero(data: &[u8]) -> Option<usize> {
    let mut chunks = data.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        if word != 0 {
            return chunk.iter().position(|b| *b != 0).map(|i| base + i);
        }
        base += 8;
    }
    chunks.remainder().iter().position(|b| *b != 0).map(|i| base + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MIB: u64 = 1 << 20;

    #[test]
    fn ranges_cover_both_ends_and_spread_over_the_disk() {
        let size = 100 * 1024 * MIB + 12_345;
        let ranges = sample_ranges(size, 256, 7);
        assert_eq!(ranges.first(), Some(&(0, MIB)));
        let last = ranges.last().unwrap();
        assert_eq!(last.0 + last.1, size, "ends at the disk's end");
        assert!(last.1 >= MIB);
        assert_eq!(ranges.len(), 258);
        let stretch = (size - 2 * MIB) / 256;
        for (i, w) in ranges.windows(2).enumerate() {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap at {i}: {w:?}");
            assert!(w[1].0 - w[0].0 <= 2 * stretch + MIB, "gap too large at {i}: {w:?}");
        }
        for (off, len) in &ranges[1..ranges.len() - 1] {
            assert_eq!(off % ALIGN, 0);
            assert_eq!(*len, MIB);
        }
        assert_ne!(sample_ranges(size, 256, 8), ranges, "the seed moves the samples");
    }

    #[test]
    fn a_small_disk_is_read_whole() {
        let size = 5 * MIB + 100;
        let ranges = sample_ranges(size, 256, 1);
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        assert_eq!(total, size);
        assert_eq!(ranges.last(), Some(&(5 * MIB, 100)));
        assert!(sample_ranges(0, 256, 1).is_empty());
    }

    #[test]
    fn first_non_zero_finds_every_position() {
        let mut data = vec![0u8; 37];
        assert_eq!(first_non_zero(&data), None);
        for i in 0..37 {
            data[i] = 9;
            assert_eq!(first_non_zero(&data), Some(i));
            data[i] = 0;
        }
    }

    #[test]
    fn zeros_verify_and_a_stray_byte_fails_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let size = 300 * MIB;
        let file = File::create(&path).unwrap();
        file.set_len(size).unwrap();
        match verify_zeros(&path, size, 256, 3).unwrap() {
            Verification::Verified { samples, bytes_checked } => {
                assert_eq!(samples, 258);
                assert_eq!(bytes_checked, 258 * MIB);
            }
            other => panic!("{other:?}"),
        }
        // A byte inside the last MiB is always sampled.
        let at = size - 1000;
        file.write_all_at(&[0x5a], at).unwrap();
        match verify_zeros(&path, size, 256, 3).unwrap() {
            Verification::Failed { offset, detail } => {
                assert_eq!(offset, at);
                assert!(detail.contains("0x5a"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_disk_shorter_than_its_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        File::create(&path).unwrap().write_all(&[0u8; 4096]).unwrap();
        let err = verify_zeros(&path, 8192, 4, 0).unwrap_err();
        assert!(matches!(err, VerifyError::Short { offset: 0, .. }), "{err}");
    }
}
