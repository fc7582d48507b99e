//! GUID Partition Table (UEFI specification, chapter 5): the primary header at LBA 1, its
//! entry array, and the backup copy at the disk's last LBA.
//!
//! Everything read from the disk is validated before it is used (CRCs, LBAs inside the
//! disk, entry array bounded, entries inside the usable range and disjoint), so a hostile
//! table yields a [`GptError`] naming the problem, never a panic or a write outside the
//! disk.

use std::fs::File;

use uuid::Uuid;

use super::mbr::Mbr;
use super::{check_sector_size, le_u32, le_u64, read_at, write_at, TableIoError};

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The size of the fields defined by the specification; a larger header is zero-padded.
const HEADER_MIN: u32 = 92;
/// Largest entry array accepted. The usual array is 16 KiB; this bound keeps a hostile
/// entry count from making us read or allocate more than a few MiB.
const MAX_ENTRY_ARRAY: u64 = 4 * 1024 * 1024;
/// Entry names are 36 UTF-16 code units.
const NAME_UNITS: usize = 36;

/// Partition type "Linux filesystem data".
pub const LINUX_FILESYSTEM: Uuid = Uuid::from_u128(0x0fc63daf_8483_4772_8e79_3d69d8477de4);
/// Partition type "Microsoft basic data".
pub const BASIC_DATA: Uuid = Uuid::from_u128(0xebd0a0a2_b9e5_4433_87c0_68b6b72699c7);

/// Which of the two header copies a problem was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCopy {
    Primary,
    Backup,
}

impl std::fmt::Display for HeaderCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeaderCopy::Primary => "primary",
            HeaderCopy::Backup => "backup",
        })
    }
}

/// Why a GPT could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("disk I/O on the GPT failed")]
    Io(#[from] TableIoError),
    #[error("{copy} GPT header size {size} is outside {HEADER_MIN}..={sector}")]
    HeaderSize { copy: HeaderCopy, size: u32, sector: u64 },
    #[error("{copy} GPT header CRC32 is {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc { copy: HeaderCopy, stored: u32, computed: u32 },
    #[error("{copy} GPT header says it lives at LBA {found}, but it was read from LBA {expected}")]
    MisplacedHeader { copy: HeaderCopy, expected: u64, found: u64 },
    #[error("GPT entry size {0} is not a power of two from 128 to 4096")]
    EntrySize(u32),
    #[error("GPT entry array of {count} entries of {size} bytes exceeds {MAX_ENTRY_ARRAY} bytes")]
    EntryArrayTooLarge { count: u32, size: u32 },
    #[error("{copy} GPT entry array CRC32 is {stored:#010x}, computed {computed:#010x}")]
    EntriesCrc { copy: HeaderCopy, stored: u32, computed: u32 },
    #[error("{copy} GPT {what} (LBA {lba}) lies outside the disk's {disk_sectors} sectors")]
    BeyondDisk { copy: HeaderCopy, what: &'static str, lba: u64, disk_sectors: u64 },
    #[error("{copy} GPT layout is inconsistent: {what}")]
    Layout { copy: HeaderCopy, what: &'static str },
    #[error(
        "GPT partition {number} spans LBA {first}..={last}, outside the usable range \
         {first_usable}..={last_usable}"
    )]
    EntryOutOfRange { number: u32, first: u64, last: u64, first_usable: u64, last_usable: u64 },
    #[error("GPT partition {number} ends (LBA {last}) before it starts (LBA {first})")]
    EntryInverted { number: u32, first: u64, last: u64 },
    #[error("GPT partitions {a} and {b} overlap")]
    EntriesOverlap { a: u32, b: u32 },
    #[error("the disk ({disk_sectors} sectors) is too small for this GPT's partitions")]
    DiskTooSmall { disk_sectors: u64 },
    #[error("no free GPT entry for a new partition")]
    NoFreeEntry,
    #[error(
        "no room for a {needed_sectors}-sector partition at the end of the disk: the last \
         partition ends at LBA {last_used}, the last usable LBA is {last_usable}"
    )]
    NoSpace { needed_sectors: u64, last_used: u64, last_usable: u64 },
    #[error("partition name is longer than {NAME_UNITS} UTF-16 code units")]
    NameTooLong,
}

/// One GPT header, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    pub revision: u32,
    pub header_size: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Uuid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc32: u32,
}

impl GptHeader {
    fn array_len(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }

    fn array_sectors(&self, sector: u64) -> u64 {
        self.array_len().div_ceil(sector)
    }
}

/// One used GPT entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// 1-based partition number (the entry's index + 1), as the kernel numbers it.
    pub number: u32,
    pub type_guid: Uuid,
    pub unique_guid: Uuid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl GptPartition {
    /// Byte offset of the partition's first sector.
    pub fn start_bytes(&self, sector: u64) -> u64 {
        self.first_lba * sector
    }

    /// Length in bytes.
    pub fn len_bytes(&self, sector: u64) -> u64 {
        (self.last_lba.saturating_sub(self.first_lba) + 1) * sector
    }
}

/// A validated GPT: the primary header, its entry array, and the backup header when the
/// backup copy is intact.
#[derive(Debug, Clone)]
pub struct Gpt {
    sector: u64,
    pub primary: GptHeader,
    /// `None` when the backup header or its entry array is missing or damaged.
    pub backup: Option<GptHeader>,
    /// The raw entry array (entry_count × entry_size bytes), kept whole so that fields
    /// this module does not interpret survive a rewrite.
    entries: Vec<u8>,
}

/// Decodes the fixed fields of a header sector. `Ok(None)` when the signature is absent.
fn parse_header(buf: &[u8], copy: HeaderCopy, sector: u64) -> Result<Option<GptHeader>, GptError> {
    if buf.get(..8) != Some(SIGNATURE.as_slice()) {
        return Ok(None);
    }
    let header_size = le_u32(buf, 12);
    if header_size < HEADER_MIN || u64::from(header_size) > sector {
        return Err(GptError::HeaderSize { copy, size: header_size, sector });
    }
    let stored = le_u32(buf, 16);
    let computed = header_crc(buf, header_size as usize);
    if stored != computed {
        return Err(GptError::HeaderCrc { copy, stored, computed });
    }
    let mut guid = [0u8; 16];
    if let Some(g) = buf.get(56..72) {
        guid.copy_from_slice(g);
    }
    let header = GptHeader {
        revision: le_u32(buf, 8),
        header_size,
        my_lba: le_u64(buf, 24),
        alternate_lba: le_u64(buf, 32),
        first_usable_lba: le_u64(buf, 40),
        last_usable_lba: le_u64(buf, 48),
        disk_guid: Uuid::from_bytes_le(guid),
        entries_lba: le_u64(buf, 72),
        entry_count: le_u32(buf, 80),
        entry_size: le_u32(buf, 84),
        entries_crc32: le_u32(buf, 88),
    };
    let size = header.entry_size;
    if !(size.is_power_of_two() && (128..=4096).contains(&size)) {
        return Err(GptError::EntrySize(size));
    }
    if header.array_len() > MAX_ENTRY_ARRAY {
        return Err(GptError::EntryArrayTooLarge { count: header.entry_count, size });
    }
    Ok(Some(header))
}

/// CRC32 of the first `size` bytes of a header with its CRC field taken as zero.
fn header_crc(buf: &[u8], size: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(buf.get(..16).unwrap_or_default());
    h.update(&[0u8; 4]);
    h.update(buf.get(20..size).unwrap_or_default());
    h.finalize()
}

fn serialize_header(h: &GptHeader, sector: u64) -> Vec<u8> {
    // `sector` is at most 4096 and `header_size` was checked against it.
    let mut buf = vec![0u8; sector as usize];
    buf[..8].copy_from_slice(SIGNATURE);
    buf[8..12].copy_from_slice(&h.revision.to_le_bytes());
    buf[12..16].copy_from_slice(&h.header_size.to_le_bytes());
    buf[24..32].copy_from_slice(&h.my_lba.to_le_bytes());
    buf[32..40].copy_from_slice(&h.alternate_lba.to_le_bytes());
    buf[40..48].copy_from_slice(&h.first_usable_lba.to_le_bytes());
    buf[48..56].copy_from_slice(&h.last_usable_lba.to_le_bytes());
    buf[56..72].copy_from_slice(&h.disk_guid.to_bytes_le());
    buf[72..80].copy_from_slice(&h.entries_lba.to_le_bytes());
    buf[80..84].copy_from_slice(&h.entry_count.to_le_bytes());
    buf[84..88].copy_from_slice(&h.entry_size.to_le_bytes());
    buf[88..92].copy_from_slice(&h.entries_crc32.to_le_bytes());
    let crc = header_crc(&buf, h.header_size as usize);
    buf[16..20].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Checks that a header's areas fit the disk and do not overlap each other.
fn check_layout(
    h: &GptHeader,
    copy: HeaderCopy,
    sector: u64,
    disk_sectors: u64,
) -> Result<(), GptError> {
    let beyond = |what, lba| GptError::BeyondDisk { copy, what, lba, disk_sectors };
    let layout = |what| GptError::Layout { copy, what };
    let array_end = h
        .entries_lba
        .checked_add(h.array_sectors(sector))
        .ok_or(layout("entry array LBA overflows"))?;
    if array_end > disk_sectors {
        return Err(beyond("entry array", h.entries_lba));
    }
    if h.alternate_lba >= disk_sectors {
        return Err(beyond("alternate header", h.alternate_lba));
    }
    if h.last_usable_lba >= disk_sectors {
        return Err(beyond("last usable LBA", h.last_usable_lba));
    }
    if h.first_usable_lba > h.last_usable_lba {
        return Err(layout("first usable LBA is after the last usable LBA"));
    }
    if h.first_usable_lba < 2 {
        return Err(layout("usable range starts inside the protective MBR or header"));
    }
    match copy {
        HeaderCopy::Primary => {
            if h.entries_lba < 2 || array_end > h.first_usable_lba {
                return Err(layout("entry array overlaps the header or the usable range"));
            }
            if h.alternate_lba <= h.last_usable_lba {
                return Err(layout("backup header lies inside the usable range"));
            }
        }
        HeaderCopy::Backup => {
            if h.entries_lba <= h.last_usable_lba || array_end > h.my_lba {
                return Err(layout("entry array overlaps the usable range or the header"));
            }
        }
    }
    Ok(())
}

fn entry_partition(entry: &[u8], number: u32) -> Option<GptPartition> {
    let mut type_bytes = [0u8; 16];
    type_bytes.copy_from_slice(entry.get(..16)?);
    let type_guid = Uuid::from_bytes_le(type_bytes);
    if type_guid.is_nil() {
        return None;
    }
    let mut unique = [0u8; 16];
    unique.copy_from_slice(entry.get(16..32)?);
    let units: Vec<u16> = entry
        .get(56..56 + 2 * NAME_UNITS)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let name =
        char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect();
    Some(GptPartition {
        number,
        type_guid,
        unique_guid: Uuid::from_bytes_le(unique),
        first_lba: le_u64(entry, 32),
        last_lba: le_u64(entry, 40),
        attributes: le_u64(entry, 48),
        name,
    })
}

impl Gpt {
    /// Reads and validates the GPT of a disk `disk_len` bytes long with `sector`-byte
    /// logical blocks. `Ok(None)` when LBA 1 holds no GPT signature.
    ///
    /// The primary copy must be intact. The backup is checked too and recorded in
    /// [`Gpt::backup`]; a damaged backup is not an error because rewriting it is exactly
    /// what [`relocate_backup`] does.
    pub fn read(file: &File, disk_len: u64, sector: u64) -> Result<Option<Gpt>, GptError> {
        check_sector_size(sector)?;
        let disk_sectors = disk_len / sector;
        if disk_sectors < 3 {
            return Ok(None);
        }
        // `sector` is at most 4096.
        let buf = read_at(file, sector as usize, sector, "reading the primary GPT header")?;
        let Some(primary) = parse_header(&buf, HeaderCopy::Primary, sector)? else {
            return Ok(None);
        };
        if primary.my_lba != 1 {
            return Err(GptError::MisplacedHeader {
                copy: HeaderCopy::Primary,
                expected: 1,
                found: primary.my_lba,
            });
        }
        check_layout(&primary, HeaderCopy::Primary, sector, disk_sectors)?;
        let entries = read_entries(file, &primary, HeaderCopy::Primary, sector)?;
        let gpt = Gpt {
            sector,
            backup: read_backup(file, &primary, sector, disk_sectors),
            primary,
            entries,
        };
        gpt.check_partitions()?;
        Ok(Some(gpt))
    }

    /// The logical block size this table was read with.
    pub fn sector(&self) -> u64 {
        self.sector
    }

    /// The used entries, in entry order.
    pub fn partitions(&self) -> Vec<GptPartition> {
        let size = self.primary.entry_size as usize;
        self.entries
            .chunks_exact(size)
            .zip(1u32..)
            .filter_map(|(entry, number)| entry_partition(entry, number))
            .collect()
    }

    fn check_partitions(&self) -> Result<(), GptError> {
        let h = &self.primary;
        let mut parts = self.partitions();
        for p in &parts {
            if p.last_lba < p.first_lba {
                return Err(GptError::EntryInverted {
                    number: p.number,
                    first: p.first_lba,
                    last: p.last_lba,
                });
            }
            if p.first_lba < h.first_usable_lba || p.last_lba > h.last_usable_lba {
                return Err(GptError::EntryOutOfRange {
                    number: p.number,
                    first: p.first_lba,
                    last: p.last_lba,
                    first_usable: h.first_usable_lba,
                    last_usable: h.last_usable_lba,
                });
            }
        }
        parts.sort_by_key(|p| p.first_lba);
        for pair in parts.windows(2) {
            if let [a, b] = pair {
                if b.first_lba <= a.last_lba {
                    return Err(GptError::EntriesOverlap { a: a.number, b: b.number });
                }
            }
        }
        Ok(())
    }

    /// Moves the backup copy to the last LBA of a disk of `disk_sectors` sectors and
    /// extends the usable range up to the backup entry array, in memory only.
    fn place_backup_at_end(&mut self, disk_sectors: u64) -> Result<(), GptError> {
        let too_small = || GptError::DiskTooSmall { disk_sectors };
        let last_lba = disk_sectors.checked_sub(1).ok_or_else(too_small)?;
        let backup_entries =
            last_lba.checked_sub(self.primary.array_sectors(self.sector)).ok_or_else(too_small)?;
        let last_usable = backup_entries.checked_sub(1).ok_or_else(too_small)?;
        let last_used = self.partitions().iter().map(|p| p.last_lba).max();
        if last_usable < self.primary.first_usable_lba || last_used.is_some_and(|l| l > last_usable)
        {
            return Err(too_small());
        }
        self.primary.alternate_lba = last_lba;
        self.primary.last_usable_lba = last_usable;
        let mut backup = self.primary.clone();
        backup.my_lba = last_lba;
        backup.alternate_lba = 1;
        backup.entries_lba = backup_entries;
        self.backup = Some(backup);
        Ok(())
    }

    /// Adds a partition of at least `size_bytes` ending as close to the end of the usable
    /// range as `align_bytes` alignment of its start allows. The table is changed in
    /// memory only; [`Gpt::write`] stores it.
    pub fn add_partition_at_end(
        &mut self,
        type_guid: Uuid,
        name: &str,
        size_bytes: u64,
        align_bytes: u64,
    ) -> Result<GptPartition, GptError> {
        let units: Vec<u16> = name.encode_utf16().collect();
        if units.len() > NAME_UNITS {
            return Err(GptError::NameTooLong);
        }
        let sector = self.sector;
        let size_sectors = size_bytes.div_ceil(sector).max(1);
        let align = (align_bytes / sector).max(1);
        let last_usable = self.primary.last_usable_lba;
        let last_used = self.partitions().iter().map(|p| p.last_lba).max().unwrap_or(0);
        let no_space =
            || GptError::NoSpace { needed_sectors: size_sectors, last_used, last_usable };
        let start = (last_usable + 1)
            .checked_sub(size_sectors)
            .map(|s| s / align * align)
            .ok_or_else(no_space)?;
        if start < self.primary.first_usable_lba || start <= last_used {
            return Err(no_space());
        }
        let entry_size = self.primary.entry_size as usize;
        let (slot, index) = self
            .entries
            .chunks_exact_mut(entry_size)
            .zip(0u32..)
            .find(|(e, _)| e.get(..16).is_some_and(|t| t.iter().all(|&b| b == 0)))
            .ok_or(GptError::NoFreeEntry)?;
        let part = GptPartition {
            number: index + 1,
            type_guid,
            unique_guid: Uuid::new_v4(),
            first_lba: start,
            last_lba: start + size_sectors - 1,
            attributes: 0,
            name: name.to_owned(),
        };
        slot.fill(0);
        slot[..16].copy_from_slice(&part.type_guid.to_bytes_le());
        slot[16..32].copy_from_slice(&part.unique_guid.to_bytes_le());
        slot[32..40].copy_from_slice(&part.first_lba.to_le_bytes());
        slot[40..48].copy_from_slice(&part.last_lba.to_le_bytes());
        slot[48..56].copy_from_slice(&part.attributes.to_le_bytes());
        for (i, u) in units.iter().enumerate() {
            slot[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        Ok(part)
    }

    /// Writes both copies (entry arrays, then headers, backup before primary) with fresh
    /// CRCs. When the backup copy is missing, it is first placed at the disk's end.
    pub fn write(&mut self, file: &File, disk_len: u64) -> Result<(), GptError> {
        let disk_sectors = disk_len / self.sector;
        if self.backup.is_none() {
            self.place_backup_at_end(disk_sectors)?;
        }
        let crc = crc32fast::hash(&self.entries);
        self.primary.entries_crc32 = crc;
        let mut backup = self.backup.clone().unwrap_or_else(|| self.primary.clone());
        backup.entries_crc32 = crc;
        backup.last_usable_lba = self.primary.last_usable_lba;
        backup.first_usable_lba = self.primary.first_usable_lba;
        check_layout(&self.primary, HeaderCopy::Primary, self.sector, disk_sectors)?;
        check_layout(&backup, HeaderCopy::Backup, self.sector, disk_sectors)?;
        let s = self.sector;
        write_at(file, &self.entries, backup.entries_lba * s, "writing the backup GPT entries")?;
        write_at(
            file,
            &serialize_header(&backup, s),
            backup.my_lba * s,
            "writing the backup GPT header",
        )?;
        write_at(
            file,
            &self.entries,
            self.primary.entries_lba * s,
            "writing the primary GPT entries",
        )?;
        write_at(file, &serialize_header(&self.primary, s), s, "writing the primary GPT header")?;
        self.backup = Some(backup);
        Ok(())
    }
}

fn read_entries(
    file: &File,
    h: &GptHeader,
    copy: HeaderCopy,
    sector: u64,
) -> Result<Vec<u8>, GptError> {
    // Bounded by MAX_ENTRY_ARRAY in parse_header.
    let len = h.array_len() as usize;
    let action = match copy {
        HeaderCopy::Primary => "reading the primary GPT entries",
        HeaderCopy::Backup => "reading the backup GPT entries",
    };
    let entries = read_at(file, len, h.entries_lba * sector, action)?;
    let computed = crc32fast::hash(&entries);
    if computed != h.entries_crc32 {
        return Err(GptError::EntriesCrc { copy, stored: h.entries_crc32, computed });
    }
    Ok(entries)
}

/// The backup header at the primary's alternate LBA, if it is intact and agrees with the
/// primary.
fn read_backup(
    file: &File,
    primary: &GptHeader,
    sector: u64,
    disk_sectors: u64,
) -> Option<GptHeader> {
    let lba = primary.alternate_lba;
    let result = (|| -> Result<Option<GptHeader>, GptError> {
        let buf = read_at(file, sector as usize, lba * sector, "reading the backup GPT header")?;
        let Some(b) = parse_header(&buf, HeaderCopy::Backup, sector)? else {
            return Ok(None);
        };
        if b.my_lba != lba {
            return Err(GptError::MisplacedHeader {
                copy: HeaderCopy::Backup,
                expected: lba,
                found: b.my_lba,
            });
        }
        check_layout(&b, HeaderCopy::Backup, sector, disk_sectors)?;
        let agrees = b.alternate_lba == 1
            && b.disk_guid == primary.disk_guid
            && b.entry_count == primary.entry_count
            && b.entry_size == primary.entry_size
            && b.entries_crc32 == primary.entries_crc32
            && b.first_usable_lba == primary.first_usable_lba
            && b.last_usable_lba == primary.last_usable_lba;
        if !agrees {
            return Err(GptError::Layout {
                copy: HeaderCopy::Backup,
                what: "backup header disagrees with the primary",
            });
        }
        read_entries(file, &b, HeaderCopy::Backup, sector)?;
        Ok(Some(b))
    })();
    match result {
        Ok(b) => b,
        Err(err) => {
            tracing::debug!(error = %err, lba, "backup GPT header unusable");
            None
        }
    }
}

/// After an image smaller than the disk was written, moves the backup GPT (entries and
/// header) to the disk's end and extends the usable range to match, as `sgdisk -e` does.
/// A pure protective MBR is resized to cover the disk too.
///
/// Returns `Ok(false)` without writing when the disk has no GPT (MBR only or nothing) or
/// when an intact backup already sits at the last LBA.
pub fn relocate_backup(file: &File, disk_len: u64, sector: u64) -> Result<bool, GptError> {
    let Some(mut gpt) = Gpt::read(file, disk_len, sector)? else {
        return Ok(false);
    };
    let disk_sectors = disk_len / sector;
    let last_lba = disk_sectors - 1;
    if gpt.primary.alternate_lba == last_lba && gpt.backup.is_some() {
        return Ok(false);
    }
    let old_backup = gpt.backup.as_ref().map(|b| b.my_lba);
    gpt.place_backup_at_end(disk_sectors)?;
    gpt.write(file, disk_len)?;
    if let Some(old) = old_backup.filter(|&old| old != last_lba) {
        // The stale header now lies in free space; a tool that scans for headers must not
        // find a second, outdated table.
        write_at(
            file,
            &vec![0u8; sector as usize],
            old * sector,
            "clearing the old backup GPT header",
        )?;
    }
    let mbr_buf = read_at(file, 512, 0, "reading the protective MBR")?;
    if let Ok(mut mbr) = Mbr::parse(&mbr_buf) {
        if mbr.fit_protective(disk_sectors) {
            write_at(file, &mbr.to_bytes(&mbr_buf), 0, "writing the protective MBR")?;
        }
    }
    file.sync_data().map_err(|source| TableIoError::Io {
        action: "flushing the relocated GPT",
        offset: 0,
        source,
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const REVISION_1_0: u32 = 0x0001_0000;

    /// Builds a minimal valid GPT in memory on a `disk_sectors`-sector disk: 128 entries
    /// of 128 bytes, usable range 34..=last-33, with the given partitions.
    fn build(sector: u64, disk_sectors: u64, parts: &[(u64, u64)]) -> (File, u64) {
        let file = tempfile::tempfile().unwrap();
        let disk_len = disk_sectors * sector;
        file.set_len(disk_len).unwrap();
        let array_sectors = (128 * 128u64).div_ceil(sector);
        let primary = GptHeader {
            revision: REVISION_1_0,
            header_size: HEADER_MIN,
            my_lba: 1,
            alternate_lba: disk_sectors - 1,
            first_usable_lba: 2 + array_sectors,
            last_usable_lba: disk_sectors - 2 - array_sectors,
            disk_guid: Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            entries_lba: 2,
            entry_count: 128,
            entry_size: 128,
            entries_crc32: 0,
        };
        let mut gpt = Gpt { sector, primary, backup: None, entries: vec![0u8; 128 * 128] };
        for (i, &(first, last)) in parts.iter().enumerate() {
            let e = &mut gpt.entries[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&LINUX_FILESYSTEM.to_bytes_le());
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        gpt.write(&file, disk_len).unwrap();
        (file, disk_len)
    }

    fn patch(file: &File, offset: u64, bytes: &[u8]) {
        file.write_all_at(bytes, offset).unwrap();
    }

    /// Rewrites the primary header's CRC after a field was patched, so that the field's
    /// own validation is what fails.
    fn fix_header_crc(file: &File, sector: u64) {
        let buf = read_at(file, sector as usize, sector, "t").unwrap();
        let crc = header_crc(&buf, HEADER_MIN as usize);
        patch(file, sector + 16, &crc.to_le_bytes());
    }

    fn fix_entries_crc(file: &File, sector: u64) {
        let entries = read_at(file, 128 * 128, 2 * sector, "t").unwrap();
        patch(file, sector + 88, &crc32fast::hash(&entries).to_le_bytes());
        fix_header_crc(file, sector);
    }

    use std::os::unix::fs::FileExt;

    #[test]
    fn round_trip_and_backup_found() {
        for sector in [512u64, 4096] {
            let (file, len) = build(sector, 8 * MIB / sector, &[(256, 511), (512, 1023)]);
            let gpt = Gpt::read(&file, len, sector).unwrap().unwrap();
            assert_eq!(gpt.backup.as_ref().unwrap().my_lba, len / sector - 1);
            let parts = gpt.partitions();
            assert_eq!(parts.len(), 2);
            assert_eq!((parts[1].number, parts[1].first_lba, parts[1].last_lba), (2, 512, 1023));
            assert_eq!(parts[0].type_guid, LINUX_FILESYSTEM);
        }
    }

    #[test]
    fn no_signature_is_not_a_gpt() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(MIB).unwrap();
        assert!(Gpt::read(&file, MIB, 512).unwrap().is_none());
        assert!(!relocate_backup(&file, MIB, 512).unwrap());
        // A disk too short to hold a header.
        assert!(Gpt::read(&file, 1024, 512).unwrap().is_none());
    }

    #[test]
    fn hostile_headers_are_named_errors() {
        let sector = 512;
        type Case = (&'static str, fn(&File), fn(&GptError) -> bool);
        let cases: Vec<Case> = vec![
            (
                "bad header crc",
                |f| patch(f, 512 + 16, &[1, 2, 3, 4]),
                |e| matches!(e, GptError::HeaderCrc { copy: HeaderCopy::Primary, .. }),
            ),
            (
                "huge header size",
                |f| {
                    patch(f, 512 + 12, &100_000u32.to_le_bytes());
                },
                |e| matches!(e, GptError::HeaderSize { size: 100_000, .. }),
            ),
            (
                "huge entry count",
                |f| {
                    patch(f, 512 + 80, &u32::MAX.to_le_bytes());
                    fix_header_crc(f, 512);
                },
                |e| matches!(e, GptError::EntryArrayTooLarge { .. }),
            ),
            (
                "odd entry size",
                |f| {
                    patch(f, 512 + 84, &100u32.to_le_bytes());
                    fix_header_crc(f, 512);
                },
                |e| matches!(e, GptError::EntrySize(100)),
            ),
            (
                "entry array past the end",
                |f| {
                    patch(f, 512 + 72, &(u64::MAX - 1).to_le_bytes());
                    fix_header_crc(f, 512);
                },
                |e| matches!(e, GptError::Layout { .. } | GptError::BeyondDisk { .. }),
            ),
            (
                "alternate past the end",
                |f| {
                    patch(f, 512 + 32, &1_000_000u64.to_le_bytes());
                    fix_header_crc(f, 512);
                },
                |e| matches!(e, GptError::BeyondDisk { what: "alternate header", .. }),
            ),
            (
                "header claims another LBA",
                |f| {
                    patch(f, 512 + 24, &7u64.to_le_bytes());
                    fix_header_crc(f, 512);
                },
                |e| matches!(e, GptError::MisplacedHeader { found: 7, .. }),
            ),
            (
                "bad entries crc",
                |f| patch(f, 2 * 512 + 100, &[0xff]),
                |e| matches!(e, GptError::EntriesCrc { copy: HeaderCopy::Primary, .. }),
            ),
            (
                "entry past the usable range",
                |f| {
                    patch(f, 2 * 512 + 40, &50_000u64.to_le_bytes());
                    fix_entries_crc(f, 512);
                },
                |e| matches!(e, GptError::EntryOutOfRange { number: 1, .. }),
            ),
            (
                "entry ends before it starts",
                |f| {
                    patch(f, 2 * 512 + 40, &100u64.to_le_bytes());
                    fix_entries_crc(f, 512);
                },
                |e| matches!(e, GptError::EntryInverted { number: 1, .. }),
            ),
            (
                "overlapping entries",
                |f| {
                    patch(f, 2 * 512 + 128 + 32, &400u64.to_le_bytes());
                    fix_entries_crc(f, 512);
                },
                |e| matches!(e, GptError::EntriesOverlap { a: 1, b: 2 }),
            ),
        ];
        for (name, damage, expected) in cases {
            let (file, len) = build(sector, 8 * MIB / sector, &[(256, 511), (512, 1023)]);
            damage(&file);
            let err = Gpt::read(&file, len, sector).expect_err(name);
            assert!(expected(&err), "{name}: got {err:?}");
            // Relocation refuses the same table instead of writing over it.
            assert!(relocate_backup(&file, len * 2, sector).is_err(), "{name}");
        }
    }

    /// Random values in random header and entry fields (CRCs recomputed so that the
    /// semantic checks are what is exercised): reading, relocating and adding a partition
    /// must never panic, and nothing may be written past the disk's end.
    #[test]
    fn random_field_damage_never_panics_or_writes_past_the_disk() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_d15c);
        let sector = 512;
        let small = 4 * MIB / sector;
        let big = 8 * MIB;
        let header_fields =
            [(12u64, 4usize), (24, 8), (32, 8), (40, 8), (48, 8), (72, 8), (80, 4), (84, 4)];
        let (mut readable, mut refused) = (0, 0);
        for _ in 0..400 {
            let (file, _) = build(sector, small, &[(64, 127), (128, 1023), (2000, 2047)]);
            file.set_len(big).unwrap();
            for _ in 0..rng.usize(1..4) {
                let (offset, width) = match rng.u8(0..3) {
                    0 => {
                        let (o, w) = header_fields[rng.usize(..header_fields.len())];
                        (sector + o, w)
                    }
                    1 => (2 * sector + rng.u64(0..4) * 128 + [32, 40][rng.usize(..2)], 8),
                    _ => (rng.u64(sector..34 * sector), 1),
                };
                let value = [
                    0,
                    1,
                    2,
                    33,
                    34,
                    small - 1,
                    small,
                    big / sector - 1,
                    big / sector,
                    u64::MAX,
                    rng.u64(..),
                ][rng.usize(..11)];
                patch(&file, offset, &value.to_le_bytes()[..width]);
            }
            fix_entries_crc(&file, sector);
            match Gpt::read(&file, big, sector) {
                Ok(_) => readable += 1,
                Err(_) => refused += 1,
            }
            let _ = relocate_backup(&file, big, sector);
            if let Ok(Some(mut gpt)) = Gpt::read(&file, big, sector) {
                if gpt.add_partition_at_end(LINUX_FILESYSTEM, "config-2", MIB, MIB).is_ok() {
                    gpt.write(&file, big).unwrap();
                    assert!(Gpt::read(&file, big, sector).unwrap().is_some());
                }
            }
            assert_eq!(file.metadata().unwrap().len(), big);
        }
        assert!(readable > 20 && refused > 20, "{readable} read, {refused} refused");
    }

    #[test]
    fn damaged_backup_is_rebuilt() {
        let sector = 512;
        let (file, len) = build(sector, 8 * MIB / sector, &[(256, 511)]);
        patch(&file, len - 512 + 20, &[9]);
        let gpt = Gpt::read(&file, len, sector).unwrap().unwrap();
        assert!(gpt.backup.is_none());
        assert!(relocate_backup(&file, len, sector).unwrap());
        let gpt = Gpt::read(&file, len, sector).unwrap().unwrap();
        assert_eq!(gpt.backup.unwrap().my_lba, len / sector - 1);
        // Second call: nothing left to do.
        assert!(!relocate_backup(&file, len, sector).unwrap());
    }

    #[test]
    fn relocation_to_a_larger_disk_in_memory() {
        for sector in [512u64, 4096] {
            let (file, len) = build(sector, 8 * MIB / sector, &[(256, 511)]);
            let big = 32 * MIB;
            file.set_len(big).unwrap();
            assert!(relocate_backup(&file, big, sector).unwrap());
            let gpt = Gpt::read(&file, big, sector).unwrap().unwrap();
            let last = big / sector - 1;
            let array = (128 * 128) / sector;
            assert_eq!(gpt.primary.alternate_lba, last);
            assert_eq!(gpt.primary.last_usable_lba, last - array - 1);
            let backup = gpt.backup.unwrap();
            assert_eq!((backup.my_lba, backup.entries_lba), (last, last - array));
            // The old backup header at the small disk's end is gone.
            let old = read_at(&file, 8, len - sector, "t").unwrap();
            assert_ne!(&old[..], SIGNATURE);
            // A disk smaller than the table is refused.
            assert!(matches!(
                relocate_backup(&file, 4 * MIB, sector),
                Err(GptError::BeyondDisk { .. })
            ));
        }
    }

    #[test]
    fn add_partition_at_end_aligned_and_bounded() {
        let sector = 512;
        let (file, len) = build(sector, 64 * MIB / sector, &[(2048, 4095)]);
        let mut gpt = Gpt::read(&file, len, sector).unwrap().unwrap();
        let p = gpt.add_partition_at_end(LINUX_FILESYSTEM, "config-2", 3 * MIB + 1, MIB).unwrap();
        assert_eq!(p.number, 2);
        assert_eq!(p.first_lba % (MIB / sector), 0);
        assert!(p.last_lba <= gpt.primary.last_usable_lba);
        assert!(p.len_bytes(sector) > 3 * MIB);
        gpt.write(&file, len).unwrap();
        let again = Gpt::read(&file, len, sector).unwrap().unwrap();
        let parts = again.partitions();
        assert_eq!(parts[1].name, "config-2");
        assert_eq!(parts[1].unique_guid, p.unique_guid);
        // Too big for the free space after partition 1.
        let mut gpt = again.clone();
        assert!(matches!(
            gpt.add_partition_at_end(LINUX_FILESYSTEM, "x", 62 * MIB, MIB),
            Err(GptError::NoSpace { .. })
        ));
        assert!(matches!(
            gpt.add_partition_at_end(LINUX_FILESYSTEM, &"n".repeat(37), MIB, MIB),
            Err(GptError::NameTooLong)
        ));
    }

    #[test]
    fn full_entry_array_has_no_slot() {
        let sector = 512;
        let parts: Vec<(u64, u64)> = (0..128).map(|i| (2048 + i * 8, 2048 + i * 8 + 7)).collect();
        let (file, len) = build(sector, 64 * MIB / sector, &parts);
        let mut gpt = Gpt::read(&file, len, sector).unwrap().unwrap();
        assert!(matches!(
            gpt.add_partition_at_end(LINUX_FILESYSTEM, "config-2", MIB, MIB),
            Err(GptError::NoFreeEntry)
        ));
    }
}
