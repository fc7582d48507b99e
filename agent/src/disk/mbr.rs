//! The master boot record in the first 512 bytes: boot code, the 32-bit disk signature at
//! byte 440, four primary entries at 446, and the 0x55AA signature at 510. A protective
//! MBR (an entry of type 0xEE) marks a GPT disk.

use std::fs::File;

use super::{le_u32, read_at, write_at, TableIoError};

/// The MBR is always 512 bytes, whatever the logical block size.
pub const MBR_LEN: usize = 512;
const SIGNATURE_AT: usize = 510;
const DISK_SIGNATURE_AT: usize = 440;
const ENTRIES_AT: usize = 446;
const ENTRY_LEN: usize = 16;

/// Partition type of the protective entry of a GPT disk.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xee;
/// Partition type "Linux".
pub const TYPE_LINUX: u8 = 0x83;
const EXTENDED_TYPES: [u8; 3] = [0x05, 0x0f, 0x85];

/// Why an MBR could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum MbrError {
    #[error("disk I/O on the MBR failed")]
    Io(#[from] TableIoError),
    #[error("no MBR: bytes 510..512 are not 0x55 0xaa")]
    NoSignature,
    #[error("MBR is {0} bytes, expected {MBR_LEN}")]
    Short(usize),
    #[error("MBR partition {number} (sectors {first}..{end}) extends past the disk's {disk_sectors} sectors")]
    BeyondDisk { number: u8, first: u64, end: u64, disk_sectors: u64 },
    #[error("MBR partitions {a} and {b} overlap")]
    Overlap { a: u8, b: u8 },
    #[error("the disk has a protective MBR; its partitions live in the GPT")]
    Protective,
    #[error("no free primary MBR entry for a new partition")]
    NoFreeEntry,
    #[error(
        "no room for a {needed_sectors}-sector partition at the end of the disk: the last \
         partition ends before sector {used_end}, the MBR can address {limit} sectors"
    )]
    NoSpace { needed_sectors: u64, used_end: u64, limit: u64 },
}

/// One primary entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MbrEntry {
    /// 0x80 for the active (bootable) partition.
    pub boot: u8,
    /// Partition type; 0 marks an empty slot.
    pub kind: u8,
    pub first_lba: u32,
    pub sectors: u32,
}

impl MbrEntry {
    pub fn is_empty(&self) -> bool {
        self.kind == 0
    }

    /// One past the last sector.
    pub fn end(&self) -> u64 {
        u64::from(self.first_lba) + u64::from(self.sectors)
    }

    pub fn is_extended(&self) -> bool {
        EXTENDED_TYPES.contains(&self.kind)
    }
}

/// A used primary entry with its kernel partition number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrPartition {
    /// 1..=4.
    pub number: u8,
    pub entry: MbrEntry,
}

impl MbrPartition {
    pub fn start_bytes(&self, sector: u64) -> u64 {
        u64::from(self.entry.first_lba) * sector
    }

    pub fn len_bytes(&self, sector: u64) -> u64 {
        u64::from(self.entry.sectors) * sector
    }
}

/// A parsed MBR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    pub disk_signature: u32,
    pub entries: [MbrEntry; 4],
}

impl Mbr {
    /// Parses the first 512 bytes of a disk.
    pub fn parse(buf: &[u8]) -> Result<Mbr, MbrError> {
        if buf.len() < MBR_LEN {
            return Err(MbrError::Short(buf.len()));
        }
        if buf.get(SIGNATURE_AT..SIGNATURE_AT + 2) != Some([0x55, 0xaa].as_slice()) {
            return Err(MbrError::NoSignature);
        }
        let mut entries = [MbrEntry::default(); 4];
        for (i, e) in entries.iter_mut().enumerate() {
            let at = ENTRIES_AT + i * ENTRY_LEN;
            *e = MbrEntry {
                boot: buf.get(at).copied().unwrap_or(0),
                kind: buf.get(at + 4).copied().unwrap_or(0),
                first_lba: le_u32(buf, at + 8),
                sectors: le_u32(buf, at + 12),
            };
        }
        Ok(Mbr { disk_signature: le_u32(buf, DISK_SIGNATURE_AT), entries })
    }

    /// Reads the MBR of `file`; `Ok(None)` when there is none (no 0x55AA signature).
    pub fn read(file: &File) -> Result<Option<(Mbr, Vec<u8>)>, MbrError> {
        let buf = read_at(file, MBR_LEN, 0, "reading the MBR")?;
        match Mbr::parse(&buf) {
            Ok(mbr) => Ok(Some((mbr, buf))),
            Err(MbrError::NoSignature) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// True when an entry of type 0xEE is present: the disk is GPT (protective or hybrid).
    pub fn is_protective(&self) -> bool {
        self.entries.iter().any(|e| e.kind == TYPE_GPT_PROTECTIVE)
    }

    /// The used primary entries.
    pub fn partitions(&self) -> Vec<MbrPartition> {
        self.entries
            .iter()
            .zip(1u8..)
            .filter(|(e, _)| !e.is_empty())
            .map(|(e, number)| MbrPartition { number, entry: *e })
            .collect()
    }

    /// Checks that every entry lies inside a disk of `disk_sectors` sectors and that no
    /// two entries overlap.
    pub fn validate(&self, disk_sectors: u64) -> Result<(), MbrError> {
        let mut parts = self.partitions();
        for p in &parts {
            if p.entry.end() > disk_sectors || p.entry.first_lba == 0 {
                return Err(MbrError::BeyondDisk {
                    number: p.number,
                    first: u64::from(p.entry.first_lba),
                    end: p.entry.end(),
                    disk_sectors,
                });
            }
        }
        parts.sort_by_key(|p| p.entry.first_lba);
        for pair in parts.windows(2) {
            if let [a, b] = pair {
                if u64::from(b.entry.first_lba) < a.entry.end() {
                    return Err(MbrError::Overlap { a: a.number, b: b.number });
                }
            }
        }
        Ok(())
    }

    /// Resizes a pure protective MBR (one 0xEE entry from LBA 1, nothing else) to cover a
    /// disk of `disk_sectors` sectors, capped at what 32 bits hold. Returns whether it
    /// changed. Hybrid MBRs are left alone: their layout is deliberate.
    pub fn fit_protective(&mut self, disk_sectors: u64) -> bool {
        let used = self.partitions();
        let [only] = used.as_slice() else {
            return false;
        };
        if only.entry.kind != TYPE_GPT_PROTECTIVE || only.entry.first_lba != 1 {
            return false;
        }
        let want = u32::try_from(disk_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
        let slot = usize::from(only.number - 1);
        match self.entries.get_mut(slot) {
            Some(e) if e.sectors != want => {
                e.sectors = want;
                true
            }
            _ => false,
        }
    }

    /// Adds a primary partition of type `kind` and at least `size_bytes`, ending as close
    /// to the end of the disk (or of the 32-bit addressable range) as `align_bytes`
    /// alignment of its start allows. In memory only; [`Mbr::to_bytes`] and a write store it.
    pub fn add_primary_at_end(
        &mut self,
        kind: u8,
        size_bytes: u64,
        align_bytes: u64,
        sector: u64,
        disk_sectors: u64,
    ) -> Result<MbrPartition, MbrError> {
        if self.is_protective() {
            return Err(MbrError::Protective);
        }
        self.validate(disk_sectors)?;
        let slot = self.entries.iter().position(MbrEntry::is_empty).ok_or(MbrError::NoFreeEntry)?;
        let sector = sector.max(1);
        let needed = size_bytes.div_ceil(sector).max(1);
        let align = (align_bytes / sector).max(1);
        let limit = disk_sectors.min(1 << 32);
        let used_end = self.partitions().iter().map(|p| p.entry.end()).max().unwrap_or(1);
        let no_space = MbrError::NoSpace { needed_sectors: needed, used_end, limit };
        let Some(start) = limit.checked_sub(needed).map(|s| s / align * align) else {
            return Err(no_space);
        };
        if start < used_end || start == 0 {
            return Err(no_space);
        }
        let (first_lba, sectors) = match (u32::try_from(start), u32::try_from(needed)) {
            (Ok(f), Ok(s)) => (f, s),
            _ => return Err(no_space),
        };
        let entry = MbrEntry { boot: 0, kind, first_lba, sectors };
        let number = match self.entries.get_mut(slot) {
            Some(e) => {
                *e = entry;
                // `slot` < 4.
                slot as u8 + 1
            }
            None => return Err(MbrError::NoFreeEntry),
        };
        Ok(MbrPartition { number, entry })
    }

    /// The 512 bytes of this MBR, keeping the boot code and anything else of `original`
    /// (the sector it was read from) outside the signature and the entries.
    pub fn to_bytes(&self, original: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; MBR_LEN];
        let keep = original.len().min(MBR_LEN);
        buf[..keep].copy_from_slice(&original[..keep]);
        buf[DISK_SIGNATURE_AT..DISK_SIGNATURE_AT + 4]
            .copy_from_slice(&self.disk_signature.to_le_bytes());
        for (i, e) in self.entries.iter().enumerate() {
            let at = ENTRIES_AT + i * ENTRY_LEN;
            let out = &mut buf[at..at + ENTRY_LEN];
            if e.is_empty() {
                out.fill(0);
                continue;
            }
            out[0] = e.boot;
            out[1..4].copy_from_slice(&chs(u64::from(e.first_lba)));
            out[4] = e.kind;
            let last = e.end().saturating_sub(1);
            out[5..8].copy_from_slice(&chs(last));
            out[8..12].copy_from_slice(&e.first_lba.to_le_bytes());
            out[12..16].copy_from_slice(&e.sectors.to_le_bytes());
        }
        buf[SIGNATURE_AT] = 0x55;
        buf[SIGNATURE_AT + 1] = 0xaa;
        buf
    }

    /// Writes this MBR to sector 0 over `original`.
    pub fn write(&self, file: &File, original: &[u8]) -> Result<(), MbrError> {
        write_at(file, &self.to_bytes(original), 0, "writing the MBR")?;
        Ok(())
    }
}

/// Cylinder/head/sector address of `lba` in the customary 255-head, 63-sector geometry;
/// addresses beyond cylinder 1023 saturate to the usual 1023/254/63 marker. Only legacy
/// BIOSes read these fields, but tools compare them with the LBA fields.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    // Each value fits its field: head < 255, sector <= 63, cylinder <= 1023.
    [head as u8, (sector as u8) | (((cylinder >> 2) & 0xc0) as u8), (cylinder & 0xff) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr_bytes(sig: u32, entries: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut buf = vec![0u8; MBR_LEN];
        buf[0] = 0xeb; // boot code that must survive a rewrite
        buf[440..444].copy_from_slice(&sig.to_le_bytes());
        for (i, &(kind, first, sectors)) in entries.iter().enumerate() {
            let at = 446 + 16 * i;
            buf[at + 4] = kind;
            buf[at + 8..at + 12].copy_from_slice(&first.to_le_bytes());
            buf[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
        }
        buf[510] = 0x55;
        buf[511] = 0xaa;
        buf
    }

    #[test]
    fn parse_entries_and_signature() {
        let buf = mbr_bytes(0x1234_abcd, &[(0x83, 2048, 4096), (0x82, 8192, 100)]);
        let mbr = Mbr::parse(&buf).unwrap();
        assert_eq!(mbr.disk_signature, 0x1234_abcd);
        let parts = mbr.partitions();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[1].number, parts[1].entry.kind, parts[1].entry.end()), (2, 0x82, 8292));
        assert!(!mbr.is_protective());
        assert!(mbr.validate(10_000).is_ok());
    }

    #[test]
    fn hostile_mbrs() {
        assert!(matches!(Mbr::parse(&[0u8; 100]), Err(MbrError::Short(100))));
        let mut no_sig = mbr_bytes(1, &[]);
        no_sig[511] = 0;
        assert!(matches!(Mbr::parse(&no_sig), Err(MbrError::NoSignature)));
        let past = Mbr::parse(&mbr_bytes(1, &[(0x83, 2048, u32::MAX)])).unwrap();
        assert!(matches!(past.validate(10_000), Err(MbrError::BeyondDisk { number: 1, .. })));
        let overlap = Mbr::parse(&mbr_bytes(1, &[(0x83, 2048, 4096), (0x83, 4000, 10)])).unwrap();
        assert!(matches!(overlap.validate(10_000), Err(MbrError::Overlap { a: 1, b: 2 })));
    }

    #[test]
    fn protective_detection_and_fit() {
        let mut mbr = Mbr::parse(&mbr_bytes(0, &[(0xee, 1, 131_071)])).unwrap();
        assert!(mbr.is_protective());
        assert!(mbr.fit_protective(2_097_152));
        assert_eq!(mbr.entries[0].sectors, 2_097_151);
        assert!(!mbr.fit_protective(2_097_152));
        // Beyond 2 TiB the size saturates.
        assert!(mbr.fit_protective(1 << 40));
        assert_eq!(mbr.entries[0].sectors, u32::MAX);
        // A hybrid MBR is not touched.
        let mut hybrid = Mbr::parse(&mbr_bytes(0, &[(0xee, 1, 100), (0x0c, 2048, 100)])).unwrap();
        assert!(!hybrid.fit_protective(1_000_000));
        assert!(matches!(
            hybrid.add_primary_at_end(0x83, 1 << 20, 1 << 20, 512, 1_000_000),
            Err(MbrError::Protective)
        ));
    }

    #[test]
    fn add_primary_at_end() {
        let buf = mbr_bytes(7, &[(0x83, 2048, 4096)]);
        let mut mbr = Mbr::parse(&buf).unwrap();
        let disk = 1_000_000u64;
        let p = mbr.add_primary_at_end(TYPE_LINUX, 3 << 20, 1 << 20, 512, disk).unwrap();
        assert_eq!(p.number, 2);
        assert_eq!(u64::from(p.entry.first_lba) % 2048, 0);
        assert_eq!(p.entry.sectors, 6144);
        assert!(p.entry.end() <= disk);
        let bytes = mbr.to_bytes(&buf);
        assert_eq!(bytes[0], 0xeb);
        assert_eq!(Mbr::parse(&bytes).unwrap(), mbr);
        // Fill the remaining slots, then there is none left.
        mbr.entries[2].kind = 0x83;
        mbr.entries[2].first_lba = 7000;
        mbr.entries[2].sectors = 10;
        mbr.entries[3].kind = 0x83;
        mbr.entries[3].first_lba = 8000;
        mbr.entries[3].sectors = 10;
        assert!(matches!(
            mbr.add_primary_at_end(TYPE_LINUX, 1 << 20, 1 << 20, 512, disk),
            Err(MbrError::NoFreeEntry)
        ));
        // No room after the last partition.
        let mut full = Mbr::parse(&mbr_bytes(7, &[(0x83, 2048, 990_000)])).unwrap();
        assert!(matches!(
            full.add_primary_at_end(TYPE_LINUX, 64 << 20, 1 << 20, 512, disk),
            Err(MbrError::NoSpace { .. })
        ));
    }

    #[test]
    fn chs_encoding() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(u64::from(u32::MAX)), [0xfe, 0xff, 0xff]);
    }
}
