//! The qcow2 header (versions 2 and 3), big-endian, and the refusals that keep the decoder
//! safe: nothing that would make the image's content depend on another file, on a key,
//! or on a layout this decoder does not implement.

use super::Qcow2Error;

pub(crate) const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Bytes of the header this decoder reads (a v3 header up to and including its
/// compression type byte).
pub(crate) const HEADER_READ_LEN: usize = 105;
const V2_HEADER_LEN: u32 = 72;
const V3_MIN_HEADER_LEN: u32 = 104;

pub(crate) const MIN_CLUSTER_BITS: u32 = 9;
pub(crate) const MAX_CLUSTER_BITS: u32 = 21;

/// The largest virtual size accepted: 1 PiB, far beyond any disk this agent writes; the
/// caller still checks the size against its target.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 50;

/// The most L1 entries read; QEMU's own bound (a 32 MiB table).
pub(crate) const MAX_L1_ENTRIES: u64 = 32 * 1024 * 1024 / 8;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_EXTERNAL_DATA: u64 = 1 << 2;
const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_EXTERNAL_DATA
    | INCOMPAT_COMPRESSION_TYPE
    | INCOMPAT_EXTENDED_L2;

const COMPRESSION_ZLIB: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;

/// The header fields the decoder uses, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    /// The guest-visible size in bytes.
    pub virtual_size: u64,
    /// Entries in the L1 table as allocated (may exceed what the virtual size needs).
    pub l1_size: u32,
    pub l1_table_offset: u64,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in one L2 table (one cluster of 8-byte entries).
    pub fn l2_entries(&self) -> u64 {
        1 << (self.cluster_bits - 3)
    }

    /// L1 entries needed to map the virtual size.
    pub fn l1_entries_needed(&self) -> u64 {
        let per_l1 = self.l2_entries() << self.cluster_bits;
        self.virtual_size.div_ceil(per_l1)
    }

    /// Parses and validates the header at the start of `bytes` (at least
    /// [`HEADER_READ_LEN`] bytes when the file is that long).
    pub fn parse(bytes: &[u8]) -> Result<Self, Qcow2Error> {
        let be32 = |at: usize| -> Option<u32> {
            let b = bytes.get(at..at + 4)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let be64 = |at: usize| -> Option<u64> {
            let b = bytes.get(at..at + 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Some(u64::from_be_bytes(a))
        };
        let truncated = || Qcow2Error::Truncated {
            what: "header",
            offset: 0,
            wanted: V2_HEADER_LEN as u64,
            got: bytes.len() as u64,
        };
        if bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(if bytes.len() < 4 && MAGIC.starts_with(bytes) {
                truncated()
            } else {
                Qcow2Error::NotQcow2
            });
        }
        let version = be32(4).ok_or_else(truncated)?;
        if version != 2 && version != 3 {
            return Err(Qcow2Error::UnsupportedVersion(version));
        }
        if bytes.len() < V2_HEADER_LEN as usize {
            return Err(truncated());
        }
        let field32 = |at| be32(at).ok_or_else(truncated);
        let field64 = |at| be64(at).ok_or_else(truncated);
        let backing_file_offset = field64(8)?;
        let cluster_bits = field32(20)?;
        let virtual_size = field64(24)?;
        let crypt_method = field32(32)?;
        let l1_size = field32(36)?;
        let l1_table_offset = field64(40)?;

        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Qcow2Error::ClusterBits(cluster_bits));
        }
        let cluster_size = 1u64 << cluster_bits;

        if version == 3 {
            let want = V3_MIN_HEADER_LEN as u64;
            let v3 = |at| {
                be64(at).ok_or(Qcow2Error::Truncated {
                    what: "version 3 header",
                    offset: 0,
                    wanted: want,
                    got: bytes.len() as u64,
                })
            };
            let incompatible = v3(72)?;
            let header_length = be32(100).ok_or(Qcow2Error::Truncated {
                what: "version 3 header",
                offset: 0,
                wanted: want,
                got: bytes.len() as u64,
            })?;
            if header_length < V3_MIN_HEADER_LEN
                || header_length % 8 != 0
                || u64::from(header_length) > cluster_size
            {
                return Err(Qcow2Error::HeaderLength(header_length));
            }
            let unknown = incompatible & !INCOMPAT_KNOWN;
            if unknown != 0 {
                return Err(Qcow2Error::UnknownIncompatibleFeatures(unknown));
            }
            if incompatible & INCOMPAT_EXTERNAL_DATA != 0 {
                return Err(Qcow2Error::ExternalDataFile);
            }
            if incompatible & INCOMPAT_EXTENDED_L2 != 0 {
                return Err(Qcow2Error::ExtendedL2);
            }
            if incompatible & INCOMPAT_CORRUPT != 0 {
                return Err(Qcow2Error::MarkedCorrupt);
            }
            // The dirty bit only says the refcounts may be stale; they are not read.
            if header_length > V3_MIN_HEADER_LEN {
                let compression = *bytes.get(104).ok_or(Qcow2Error::Truncated {
                    what: "version 3 header",
                    offset: 0,
                    wanted: HEADER_READ_LEN as u64,
                    got: bytes.len() as u64,
                })?;
                match compression {
                    COMPRESSION_ZLIB => {}
                    COMPRESSION_ZSTD => return Err(Qcow2Error::ZstdCompression),
                    other => return Err(Qcow2Error::UnknownCompression(other)),
                }
            } else if incompatible & INCOMPAT_COMPRESSION_TYPE != 0 {
                // The bit promises a compression type field the header is too short for.
                return Err(Qcow2Error::HeaderLength(header_length));
            }
        }

        if backing_file_offset != 0 {
            return Err(Qcow2Error::BackingFile);
        }
        if crypt_method != 0 {
            return Err(Qcow2Error::Encrypted(crypt_method));
        }
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(Qcow2Error::VirtualSizeTooLarge {
                size: virtual_size,
                max: MAX_VIRTUAL_SIZE,
            });
        }
        let header = Header { version, cluster_bits, virtual_size, l1_size, l1_table_offset };
        let needed = header.l1_entries_needed();
        if needed > MAX_L1_ENTRIES {
            return Err(Qcow2Error::L1TooLarge { entries: needed, max: MAX_L1_ENTRIES });
        }
        if u64::from(l1_size) < needed {
            return Err(Qcow2Error::L1TooSmall { l1_size, needed });
        }
        if needed > 0 && l1_table_offset % cluster_size != 0 {
            return Err(Qcow2Error::Unaligned { what: "L1 table", offset: l1_table_offset });
        }
        Ok(header)
    }
}
