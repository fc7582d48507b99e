//! The config drive: an ISO 9660 image labelled `config-2` that Ironic sends as
//! base64(gzip(ISO)) and that cloud-init finds by its label. For a whole-disk image it is
//! written to its own partition at the end of the disk, or over an existing `config-2`
//! partition that the image already carries.

use std::fs::File;
use std::io::Read;

use base64::Engine as _;

use super::gpt::{self, Gpt, GptError};
use super::mbr::{self, Mbr, MbrError};
use super::{read_at, reread_partition_table, write_at, TableIoError, MIB};

/// Largest config drive accepted, decoded (Ironic's and IPA's limit).
pub const MAX_CONFIG_DRIVE: u64 = 64 * MIB;
/// Largest encoded config drive accepted: base64 of a gzip stream of at most
/// [`MAX_CONFIG_DRIVE`] bytes (gzip adds little even to incompressible data), with room
/// for line breaks. Callers downloading a config drive from a URL stop reading here.
pub const MAX_ENCODED: u64 = 96 * MIB;
/// The volume label cloud-init looks for.
pub const LABEL: &str = "config-2";

const ISO_SECTOR: u64 = 2048;
/// Volume descriptors start at ISO sector 16.
const DESCRIPTORS_AT: u64 = 16 * ISO_SECTOR;
/// How many descriptors are examined for the primary one before giving up.
const MAX_DESCRIPTORS: u64 = 16;

/// Why a config drive could not be decoded or installed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("config drive is not valid base64")]
    Base64(#[source] base64::DecodeError),
    #[error("config drive is not gzip-compressed (no 1f 8b magic after base64 decoding)")]
    NotGzip,
    #[error("config drive's gzip stream is corrupt")]
    Gzip(#[source] std::io::Error),
    #[error("config drive is larger than {MAX_CONFIG_DRIVE} bytes")]
    TooBig,
    #[error("config drive is not an ISO 9660 image (no primary volume descriptor `CD001` at byte 32769)")]
    NotIso,
    #[error("config drive ISO declares {declared} bytes but only {actual} were given")]
    IsoTruncated { declared: u64, actual: u64 },
    #[error("the disk has no partition table to add a config-drive partition to")]
    NoPartitionTable,
    #[error(
        "existing config-drive partition {number} holds {len} bytes, the config drive needs {needed}"
    )]
    ExistingTooSmall { number: u32, len: u64, needed: u64 },
    #[error("cannot place the config drive in the GPT")]
    Gpt(#[from] GptError),
    #[error("cannot place the config drive in the MBR")]
    Mbr(#[from] MbrError),
    #[error("disk I/O for the config drive failed")]
    Io(#[from] TableIoError),
}

/// What the primary volume descriptor of an ISO 9660 image says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoInfo {
    /// Volume identifier, trailing spaces removed.
    pub label: String,
    /// Volume space size × logical block size, in bytes.
    pub size: u64,
}

/// True when the `configdrive` value is a URL to fetch rather than the data itself.
pub fn is_url(configdrive: &str) -> bool {
    configdrive.starts_with("http://") || configdrive.starts_with("https://")
}

/// Decodes the `base64(gzip(ISO 9660))` form Ironic sends inline or serves at a config
/// drive URL, refusing anything that decompresses past [`MAX_CONFIG_DRIVE`] without
/// inflating more than that.
pub fn decode(encoded: impl AsRef<[u8]>) -> Result<Vec<u8>, ConfigDriveError> {
    let encoded = encoded.as_ref();
    if encoded.len() as u64 > MAX_ENCODED {
        return Err(ConfigDriveError::TooBig);
    }
    // Line-wrapped base64 is common in hand-made config drives.
    let compact: Vec<u8> = encoded.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(ConfigDriveError::Base64)?;
    if gz.get(..2) != Some([0x1f, 0x8b].as_slice()) {
        return Err(ConfigDriveError::NotGzip);
    }
    let mut iso = Vec::new();
    flate2::read::MultiGzDecoder::new(gz.as_slice())
        .take(MAX_CONFIG_DRIVE + 1)
        .read_to_end(&mut iso)
        .map_err(ConfigDriveError::Gzip)?;
    if iso.len() as u64 > MAX_CONFIG_DRIVE {
        return Err(ConfigDriveError::TooBig);
    }
    inspect_iso(&iso)?;
    Ok(iso)
}

/// Reads the primary volume descriptor of an ISO 9660 image held in memory.
pub fn inspect_iso(iso: &[u8]) -> Result<IsoInfo, ConfigDriveError> {
    let info = find_pvd(|offset| {
        let start = usize::try_from(offset).ok()?;
        iso.get(start..start.checked_add(ISO_SECTOR as usize)?).map(<[u8]>::to_vec)
    })
    .ok_or(ConfigDriveError::NotIso)?;
    if info.size > iso.len() as u64 {
        return Err(ConfigDriveError::IsoTruncated {
            declared: info.size,
            actual: iso.len() as u64,
        });
    }
    Ok(info)
}

/// Walks the volume descriptor set through `read(offset)` (one 2048-byte descriptor) and
/// decodes the primary volume descriptor.
fn find_pvd(mut read: impl FnMut(u64) -> Option<Vec<u8>>) -> Option<IsoInfo> {
    for i in 0..MAX_DESCRIPTORS {
        let d = read(DESCRIPTORS_AT + i * ISO_SECTOR)?;
        if d.get(1..6) != Some(b"CD001".as_slice()) {
            return None;
        }
        match d.first() {
            Some(1) => {
                let label = String::from_utf8_lossy(d.get(40..72)?)
                    .trim_end_matches([' ', '\0'])
                    .to_owned();
                let blocks = u64::from(super::le_u32(&d, 80));
                let block_size = u64::from(super::le_u16(&d, 128));
                return Some(IsoInfo { label, size: blocks * block_size });
            }
            // Set terminator: no primary descriptor.
            Some(255) => return None,
            _ => {}
        }
    }
    None
}

/// The ISO 9660 label of what is stored at `start` on the disk, if it is an ISO.
fn iso_label_at(file: &File, start: u64, len: u64) -> Result<Option<String>, TableIoError> {
    let mut failure = None;
    let info = find_pvd(|offset| {
        if offset + ISO_SECTOR > len {
            return None;
        }
        match read_at(file, ISO_SECTOR as usize, start + offset, "probing a partition for ISO 9660")
        {
            Ok(d) => Some(d),
            Err(err) => {
                failure = Some(err);
                None
            }
        }
    });
    match failure {
        Some(err) => Err(err),
        None => Ok(info.map(|i| i.label)),
    }
}

/// Which table a partition was found in or added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Gpt,
    Mbr,
}

/// Where the config drive went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDrivePart {
    pub table: TableKind,
    /// Kernel partition number (1-based).
    pub number: u32,
    /// Byte offset of the partition on the disk.
    pub start: u64,
    /// Partition length in bytes.
    pub len: u64,
    /// True when an existing `config-2` partition was overwritten.
    pub reused: bool,
    /// The ISO's volume label as written.
    pub label: String,
    /// Whether the kernel re-read the table (false for a regular file).
    pub reread: bool,
}

/// Writes `iso` (already decoded) as the config drive of the disk in `file`.
///
/// An existing partition whose content is an ISO 9660 labelled `config-2` is reused.
/// Otherwise a partition of the ISO's size rounded up to 1 MiB is created at the end of
/// the disk: a GPT entry named `config-2` of type Linux filesystem (after moving the backup
/// GPT to the disk's end), or an MBR primary partition of type 0x83. Tables are written
/// after the ISO, the disk is flushed, and the kernel is asked to re-read the table.
pub fn install(
    file: &File,
    disk_len: u64,
    sector: u64,
    iso: &[u8],
) -> Result<ConfigDrivePart, ConfigDriveError> {
    super::check_sector_size(sector)?;
    if iso.len() as u64 > MAX_CONFIG_DRIVE {
        return Err(ConfigDriveError::TooBig);
    }
    let info = inspect_iso(iso)?;
    if info.label != LABEL {
        tracing::warn!(label = %info.label, "config drive ISO is not labelled {LABEL}; writing it anyway");
    }
    let needed = iso.len() as u64;
    let size = needed.div_ceil(MIB).max(1) * MIB;

    gpt::relocate_backup(file, disk_len, sector)?;
    let mut part = if let Some(mut table) = Gpt::read(file, disk_len, sector)? {
        place_in_gpt(file, disk_len, &mut table, iso, size)?
    } else {
        match Mbr::read(file)? {
            Some((m, _)) if m.is_protective() => return Err(ConfigDriveError::NoPartitionTable),
            Some((mut m, original)) => {
                place_in_mbr(file, disk_len, sector, &mut m, &original, iso, size)?
            }
            None => return Err(ConfigDriveError::NoPartitionTable),
        }
    };
    part.label = info.label;
    file.sync_all().map_err(|source| TableIoError::Io {
        action: "flushing the config drive",
        offset: part.start,
        source,
    })?;
    part.reread = reread_partition_table(file)?;
    tracing::info!(
        number = part.number,
        start = part.start,
        len = part.len,
        reused = part.reused,
        "config drive written"
    );
    Ok(part)
}

fn place_in_gpt(
    file: &File,
    disk_len: u64,
    table: &mut Gpt,
    iso: &[u8],
    size: u64,
) -> Result<ConfigDrivePart, ConfigDriveError> {
    let sector = table.sector();
    for p in table.partitions() {
        let (start, len) = (p.start_bytes(sector), p.len_bytes(sector));
        if iso_label_at(file, start, len)?.as_deref() == Some(LABEL) {
            write_iso(file, start, len, iso, p.number)?;
            return Ok(part(TableKind::Gpt, p.number, start, len, true));
        }
    }
    let p = table.add_partition_at_end(gpt::LINUX_FILESYSTEM, LABEL, size, MIB)?;
    let (start, len) = (p.start_bytes(sector), p.len_bytes(sector));
    write_iso(file, start, len, iso, p.number)?;
    table.write(file, disk_len)?;
    Ok(part(TableKind::Gpt, p.number, start, len, false))
}

fn place_in_mbr(
    file: &File,
    disk_len: u64,
    sector: u64,
    table: &mut Mbr,
    original: &[u8],
    iso: &[u8],
    size: u64,
) -> Result<ConfigDrivePart, ConfigDriveError> {
    let disk_sectors = disk_len / sector;
    table.validate(disk_sectors)?;
    for p in table.partitions() {
        if p.entry.is_extended() {
            continue;
        }
        let (start, len) = (p.start_bytes(sector), p.len_bytes(sector));
        if iso_label_at(file, start, len)?.as_deref() == Some(LABEL) {
            write_iso(file, start, len, iso, u32::from(p.number))?;
            return Ok(part(TableKind::Mbr, u32::from(p.number), start, len, true));
        }
    }
    let p = table.add_primary_at_end(mbr::TYPE_LINUX, size, MIB, sector, disk_sectors)?;
    let (start, len) = (p.start_bytes(sector), p.len_bytes(sector));
    write_iso(file, start, len, iso, u32::from(p.number))?;
    table.write(file, original)?;
    Ok(part(TableKind::Mbr, u32::from(p.number), start, len, false))
}

fn part(table: TableKind, number: u32, start: u64, len: u64, reused: bool) -> ConfigDrivePart {
    ConfigDrivePart { table, number, start, len, reused, label: String::new(), reread: false }
}

/// Writes the ISO at the partition's start and zeros the rest of the partition (up to the
/// config-drive limit), so that no older signature there makes `blkid` ambivalent.
fn write_iso(
    file: &File,
    start: u64,
    len: u64,
    iso: &[u8],
    number: u32,
) -> Result<(), ConfigDriveError> {
    let needed = iso.len() as u64;
    if needed > len {
        return Err(ConfigDriveError::ExistingTooSmall { number, len, needed });
    }
    write_at(file, iso, start, "writing the config drive")?;
    let tail_end = len.min(MAX_CONFIG_DRIVE);
    let zeros = vec![0u8; MIB as usize];
    let mut at = needed;
    while at < tail_end {
        // At most one MiB apart.
        let n = (tail_end - at).min(MIB) as usize;
        write_at(file, &zeros[..n], start + at, "clearing the rest of the config-drive partition")?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal ISO 9660 volume: system area, one primary volume descriptor, a set
    /// terminator. Enough for the descriptor checks; the tool tests use real genisoimage
    /// output.
    fn tiny_iso(label: &str, blocks: u32) -> Vec<u8> {
        let mut iso = vec![0u8; (blocks as usize).max(18) * 2048];
        let pvd = &mut iso[32768..34816];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[6] = 1;
        let mut id = [b' '; 32];
        id[..label.len()].copy_from_slice(label.as_bytes());
        pvd[40..72].copy_from_slice(&id);
        pvd[80..84].copy_from_slice(&blocks.to_le_bytes());
        pvd[84..88].copy_from_slice(&blocks.to_be_bytes());
        pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
        let term = &mut iso[34816..36864];
        term[0] = 255;
        term[1..6].copy_from_slice(b"CD001");
        iso
    }

    fn encode(data: &[u8]) -> String {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())
    }

    #[test]
    fn decode_round_trip_with_wrapped_base64() {
        let iso = tiny_iso("config-2", 20);
        let mut text = encode(&iso);
        text.insert(10, '\n');
        assert_eq!(decode(&text).unwrap(), iso);
        assert_eq!(
            inspect_iso(&iso).unwrap(),
            IsoInfo { label: "config-2".into(), size: 20 * 2048 }
        );
    }

    #[test]
    fn decode_errors_name_the_problem() {
        assert!(matches!(decode("@@not base64@@"), Err(ConfigDriveError::Base64(_))));
        let plain = base64::engine::general_purpose::STANDARD.encode(tiny_iso("config-2", 20));
        assert!(matches!(decode(&plain), Err(ConfigDriveError::NotGzip)));
        let mut gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tiny_iso("config-2", 20)).unwrap();
            e.finish().unwrap()
        };
        let cut = gz.len() / 2;
        gz.truncate(cut);
        let broken = base64::engine::general_purpose::STANDARD.encode(&gz);
        assert!(matches!(decode(&broken), Err(ConfigDriveError::Gzip(_))));
        assert!(matches!(decode(encode(&[0u8; 40_000])), Err(ConfigDriveError::NotIso)));
        // Declares more blocks than it carries.
        let mut short = tiny_iso("config-2", 100);
        short.truncate(40 * 2048);
        assert!(matches!(decode(encode(&short)), Err(ConfigDriveError::IsoTruncated { .. })));
    }

    #[test]
    fn url_or_data() {
        assert!(is_url("https://example.test/cd"));
        assert!(is_url("http://example.test/cd"));
        assert!(!is_url("H4sIAAAAAAAA"));
        assert!(!is_url("ftp://example.test/cd"));
    }

    #[test]
    fn decode_stops_at_the_limit() {
        let huge = vec![b'A'; (MAX_ENCODED + 4) as usize];
        assert!(matches!(decode(&huge), Err(ConfigDriveError::TooBig)));
        // 65 MiB of zeros compress to ~65 KiB: the bomb must be refused without keeping
        // more than the limit in memory.
        let bomb = vec![0u8; (MAX_CONFIG_DRIVE + MIB) as usize];
        assert!(matches!(decode(encode(&bomb)), Err(ConfigDriveError::TooBig)));
    }

    #[test]
    fn disk_without_table_is_refused() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(64 * MIB).unwrap();
        let iso = tiny_iso("config-2", 20);
        assert!(matches!(
            install(&file, 64 * MIB, 512, &iso),
            Err(ConfigDriveError::NoPartitionTable)
        ));
        // Nothing was written.
        let head = read_at(&file, 1024, 0, "t").unwrap();
        assert!(head.iter().all(|&b| b == 0));
    }
}
