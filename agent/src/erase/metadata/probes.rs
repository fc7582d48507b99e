//! Where each kind of metadata keeps its magic, and what to zero to remove it.
//!
//! Offsets follow the on-disk formats (and where libblkid looks for them); comments give
//! the layout facts each probe relies on.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use super::{MetadataEraseError, Signature};
use crate::disk::{le_u16, le_u32, le_u64, Geometry};

/// One signature found, with the bytes that must be zeroed to remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub signature: Signature,
    /// Byte ranges to zero, whole sectors, inside the device.
    pub zero: Vec<Range<u64>>,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Reads from the window being probed (a whole device, or one partition of it); reads
/// past its end find nothing. Offsets given to it are relative to the window; hits are
/// recorded with offsets on the device.
struct Dev<'a> {
    file: &'a File,
    base: u64,
    len: u64,
    /// Write granularity: the logical sector size, at least 512.
    sector: u64,
    hits: Vec<Hit>,
}

impl Dev<'_> {
    /// `len` bytes at `offset`, or `None` when the device ends before them.
    fn read(&self, offset: u64, len: usize) -> Result<Option<Vec<u8>>, MetadataEraseError> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.len) {
            return Ok(None);
        }
        let mut buf = vec![0u8; len];
        match self.file.read_exact_at(&mut buf, self.base + offset) {
            Ok(()) => Ok(Some(buf)),
            // A device that shrank under us: nothing there.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(source) => Err(MetadataEraseError::Read { offset, len, source }),
        }
    }

    fn has(&self, offset: u64, magic: &[u8]) -> Result<bool, MetadataEraseError> {
        Ok(self.read(offset, magic.len())?.is_some_and(|b| b == magic))
    }

    /// The whole sectors holding `offset..offset+len` of the window, as device offsets.
    fn sectors(&self, offset: u64, len: u64) -> Range<u64> {
        let start = offset / self.sector * self.sector;
        let end = offset.saturating_add(len).div_ceil(self.sector).saturating_mul(self.sector);
        self.base + start..self.base + end.min(self.len)
    }

    fn hit(&mut self, name: &'static str, offset: u64, magic_len: u64) {
        let zero = self.sectors(offset, magic_len);
        self.hit_range(name, offset, zero);
    }

    fn hit_range(&mut self, name: &'static str, offset: u64, zero: Range<u64>) {
        let offset = self.base + offset;
        self.hits.push(Hit { signature: Signature { name, offset }, zero: vec![zero] });
    }
}

/// Every signature in `window` (byte range) of the device, in the order of the probes.
/// The window is the whole device, or one partition found in its table.
pub fn probe(
    file: &File,
    geometry: Geometry,
    window: Range<u64>,
) -> Result<Vec<Hit>, MetadataEraseError> {
    let end = window.end.min(geometry.len);
    let mut dev = Dev {
        file,
        base: window.start,
        len: end.saturating_sub(window.start),
        sector: geometry.sector.max(512),
        hits: vec![],
    };
    let boot_sector_fs = fixed_magics(&mut dev)?;
    ext(&mut dev)?;
    vfat(&mut dev)?;
    btrfs(&mut dev)?;
    swap(&mut dev)?;
    lvm2(&mut dev)?;
    md_raid(&mut dev)?;
    luks(&mut dev)?;
    zfs(&mut dev)?;
    volume_descriptors(&mut dev)?;
    let vfat_at_zero = dev
        .hits
        .iter()
        .any(|h| h.signature.name == "vfat" && h.signature.offset < window.start + 512);
    if !boot_sector_fs && !vfat_at_zero {
        mbr(&mut dev)?;
    }
    gpt(&mut dev, geometry.sector)?;
    Ok(dev.hits)
}

/// Magics at fixed offsets that need no further parsing. Returns whether one of them is
/// a filesystem whose boot sector ends in 0x55AA (so that is not reported as an MBR).
fn fixed_magics(dev: &mut Dev<'_>) -> Result<bool, MetadataEraseError> {
    const TABLE: &[(&str, u64, &[u8], bool)] = &[
        ("xfs", 0, b"XFSB", false),
        ("ntfs", 3, b"NTFS    ", true),
        ("exfat", 3, b"EXFAT   ", true),
        ("BitLocker", 3, b"-FVE-FS-", true),
        ("squashfs", 0, b"hsqs", false),
        ("jfs", 0x8000, b"JFS1", false),
        ("f2fs", 0x400, &[0x10, 0x20, 0xf5, 0xf2], false),
        ("erofs", 0x400, &[0xe2, 0xe1, 0xf5, 0xe0], false),
        ("reiserfs", 0x10034, b"ReIsEr2Fs", false),
        ("reiserfs", 0x10034, b"ReIsEr3Fs", false),
        ("reiserfs", 0x10034, b"ReIsErFs", false),
        ("ceph_bluestore", 0, b"bluestore block device", false),
        // bcache: the cache_sb at 4 KiB carries its 16-byte magic at offset 24.
        (
            "bcache",
            0x1018,
            &[
                0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba,
                0x6d, 0x81,
            ],
            false,
        ),
        // VMFS: the volume header at 1 MiB, the filesystem descriptor at 2 MiB.
        ("VMFS_volume_member", MIB, &[0x0d, 0xd0, 0x01, 0xc0], false),
        ("VMFS", 2 * MIB, &[0x5e, 0xf1, 0xab, 0x2f], false),
    ];
    let mut boot_sector_fs = false;
    for &(name, offset, magic, boot) in TABLE {
        if dev.has(offset, magic)? {
            dev.hit(name, offset, magic.len() as u64);
            boot_sector_fs |= boot;
        }
    }
    Ok(boot_sector_fs)
}

/// ext2/3/4: superblock at 1 KiB, magic 0xEF53 at its offset 0x38.
fn ext(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    let Some(sb) = dev.read(KIB, 1024)? else { return Ok(()) };
    if le_u16(&sb, 0x38) != 0xef53 {
        return Ok(());
    }
    let compat = le_u32(&sb, 0x5c);
    let incompat = le_u32(&sb, 0x60);
    let ro_compat = le_u32(&sb, 0x64);
    // A journal device, or features only ext4 has (extents, 64bit, flex_bg, huge_file,
    // gdt_csum, dir_nlink, extra_isize, metadata_csum): named the way blkid names them.
    let name = if incompat & 0x8 != 0 {
        "jbd"
    } else if incompat & (0x40 | 0x80 | 0x200) != 0
        || ro_compat & (0x8 | 0x10 | 0x20 | 0x40 | 0x400) != 0
    {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    dev.hit(name, KIB + 0x38, 2);
    Ok(())
}

/// FAT12/16/32: a boot sector with a jump instruction and a FAT type string; FAT32 also
/// keeps a backup boot sector (usually sector 6) that tools restore from.
fn vfat(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    let Some(bs) = dev.read(0, 512)? else { return Ok(()) };
    let jump = matches!(bs.first(), Some(0xeb) | Some(0xe9));
    let at = |o: usize, m: &[u8]| bs.get(o..o + m.len()) == Some(m);
    let fat16 = [&b"FAT12   "[..], b"FAT16   ", b"FAT     ", b"MSDOS", b"MSWIN"]
        .iter()
        .any(|m| at(0x36, m));
    let fat32 = at(0x52, b"FAT32   ") || at(0x52, b"MSWIN");
    if !(jump && (fat16 || fat32)) {
        return Ok(());
    }
    let magic_at = if fat32 { 0x52 } else { 0x36 };
    // The whole boot sector goes: it also holds the 0x55AA that marks it.
    dev.hit_range("vfat", magic_at, dev.sectors(0, 512));
    if fat32 {
        let backup = u64::from(le_u16(&bs, 0x32));
        let bytes_per_sector = u64::from(le_u16(&bs, 0x0b));
        if (1..32).contains(&backup) && (512..=4096).contains(&bytes_per_sector) {
            let off = backup * bytes_per_sector;
            if dev.has(off + 0x52, b"FAT32   ")? {
                dev.hit_range("vfat", off + 0x52, dev.sectors(off, 512));
            }
        }
    }
    Ok(())
}

/// btrfs: the superblock at 64 KiB and its mirrors at 64 MiB and 256 GiB, magic at 0x40.
fn btrfs(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    for sb in [64 * KIB, 64 * MIB, 256 * 1024 * MIB] {
        if dev.has(sb + 0x40, b"_BHRfS_M")? {
            dev.hit("btrfs", sb + 0x40, 8);
        }
    }
    Ok(())
}

/// Swap: the signature ends the first page, whatever the page size was.
fn swap(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    const MAGICS: &[(&str, &[u8])] = &[
        ("swap", b"SWAPSPACE2"),
        ("swap", b"SWAP-SPACE"),
        ("swsuspend", b"S1SUSPEND"),
        ("swsuspend", b"S2SUSPEND"),
        ("swsuspend", b"ULSUSPEND"),
        ("swsuspend", b"LINHIB0001"),
        ("swsuspend", &[0xed, 0xc3, 0x02, 0xe9, 0x98, 0x56, 0xe5, 0x0c]),
    ];
    for page in [4 * KIB, 8 * KIB, 16 * KIB, 32 * KIB, 64 * KIB] {
        let Some(tail) = dev.read(page - 10, 10)? else { continue };
        for &(name, magic) in MAGICS {
            if tail.starts_with(magic) {
                dev.hit(name, page - 10, magic.len() as u64);
            }
        }
    }
    Ok(())
}

/// LVM2 physical volume: a `LABELONE` label in one of the first four 512-byte sectors,
/// with the `LVM2 001` type at its offset 0x18.
fn lvm2(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    for n in 0..4u64 {
        let Some(label) = dev.read(n * 512, 32)? else { continue };
        if label.starts_with(b"LABELONE") && label.get(0x18..0x20) == Some(b"LVM2 001") {
            dev.hit_range("LVM2_member", n * 512 + 0x18, dev.sectors(n * 512, 32));
        }
    }
    Ok(())
}

/// Linux software RAID: superblock 0.90 in the last 64 KiB-aligned 64 KiB, 1.0 at least
/// 8 KiB from the end (4 KiB aligned), 1.1 at 0, 1.2 at 4 KiB.
fn md_raid(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    const MAGIC: u32 = 0xa92b_4efc;
    let len = dev.len;
    let mut places = Vec::new();
    if len >= 128 * KIB {
        places.push(((len & !(64 * KIB - 1)) - 64 * KIB, false));
    }
    if len >= 16 * 512 {
        places.push((((len / 512 - 16) & !7) * 512, true));
    }
    places.push((0, true));
    places.push((4 * KIB, true));
    places.sort_unstable();
    places.dedup_by_key(|p| p.0);
    for (off, v1) in places {
        let Some(sb) = dev.read(off, 8)? else { continue };
        let magic_le = le_u32(&sb, 0) == MAGIC;
        // 0.90 superblocks are written in host byte order: accept either.
        let magic_be = !v1 && le_u32(&sb, 0).swap_bytes() == MAGIC;
        let major = if magic_be { le_u32(&sb, 4).swap_bytes() } else { le_u32(&sb, 4) };
        let version_ok = if v1 { major == 1 } else { major == 0 };
        if (magic_le || magic_be) && version_ok {
            dev.hit("linux_raid_member", off, 4);
        }
    }
    Ok(())
}

/// LUKS: the primary header at 0; LUKS2 keeps a secondary header (magic `SKUL\xba\xbe`)
/// at one of the offsets its specification allows.
fn luks(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    if dev.has(0, b"LUKS\xba\xbe")? {
        dev.hit("crypto_LUKS", 0, 6);
    }
    for k in [16u64, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
        let off = k * KIB;
        if dev.has(off, b"SKUL\xba\xbe")? {
            dev.hit("crypto_LUKS", off, 6);
        }
    }
    Ok(())
}

/// ZFS: four 256 KiB labels, two at the start and two at the end of the device (the end
/// rounded down to 256 KiB); each ends with 128 uberblock slots of 1 KiB whose magic is
/// 0x00bab10c in either byte order. Every slot holding one is zeroed.
fn zfs(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    const LABEL: u64 = 256 * KIB;
    const MAGIC: u64 = 0x00ba_b10c;
    let len = dev.len;
    if len < 4 * LABEL {
        return Ok(());
    }
    let end = len - len % LABEL;
    let mut labels = vec![0, LABEL, end - 2 * LABEL, end - LABEL];
    labels.dedup();
    for label in labels {
        let area = label + 128 * KIB;
        let Some(ubs) = dev.read(area, 128 * KIB as usize)? else { continue };
        for (i, slot) in ubs.chunks_exact(KIB as usize).enumerate() {
            let v = le_u64(slot, 0);
            if v == MAGIC || v.swap_bytes() == MAGIC {
                dev.hit("zfs_member", area + i as u64 * KIB, 8);
            }
        }
    }
    Ok(())
}

/// ISO 9660 / UDF volume recognition: 2 KiB descriptors from 32 KiB on, each with a
/// five-letter identifier at offset 1 (`CD001` for ISO 9660's primary, El Torito boot
/// record, Joliet supplementary and terminator; `BEA01`/`NSR0x`/`TEA01` for UDF), ended
/// by the first block that carries none of them.
fn volume_descriptors(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    const IDS: &[(&str, &[u8])] = &[
        ("iso9660", b"CD001"),
        ("udf", b"BEA01"),
        ("udf", b"NSR02"),
        ("udf", b"NSR03"),
        ("udf", b"TEA01"),
        ("udf", b"BOOT2"),
        ("udf", b"CDW02"),
    ];
    // High Sierra, the pre-ISO format: `CDROM` at offset 9 of the first descriptor.
    if dev.has(32 * KIB + 9, b"CDROM")? {
        dev.hit("iso9660", 32 * KIB + 9, 5);
    }
    for i in 0..64u64 {
        let off = 32 * KIB + i * 2 * KIB;
        let Some(d) = dev.read(off, 6)? else { break };
        let Some(&(name, _)) = IDS.iter().find(|(_, id)| d.get(1..6) == Some(*id)) else {
            break;
        };
        dev.hit(name, off + 1, 5);
    }
    Ok(())
}

/// MBR: the boot signature 0x55AA ends sector 0. The whole sector goes (boot code and
/// partition table too); a protective MBR is named `PMBR` as blkid does.
fn mbr(dev: &mut Dev<'_>) -> Result<(), MetadataEraseError> {
    let Some(s0) = dev.read(0, 512)? else { return Ok(()) };
    if s0.get(510..512) != Some(&[0x55, 0xaa][..]) {
        return Ok(());
    }
    let protective = (0..4).any(|i| s0.get(0x1be + i * 16 + 4) == Some(&0xee));
    let name = if protective { "PMBR" } else { "dos" };
    dev.hit_range(name, 510, dev.sectors(0, 512));
    Ok(())
}

/// GPT: a header (`EFI PART`) at LBA 1 and its backup at the last LBA (or wherever the
/// primary's alternate-LBA field points), each with the entry array it names. Both the
/// device's logical sector size and the other common one are tried, since an image
/// written for one may sit on a disk of the other.
fn gpt(dev: &mut Dev<'_>, logical: u64) -> Result<(), MetadataEraseError> {
    let mut sizes = vec![logical.max(512), 512, 4096];
    sizes.dedup();
    let mut seen: Vec<u64> = Vec::new();
    for ss in sizes {
        if dev.len < 3 * ss {
            continue;
        }
        let mut headers = vec![ss, dev.len / ss * ss - ss];
        let mut i = 0;
        while let Some(&at) = headers.get(i) {
            i += 1;
            if seen.contains(&at) {
                continue;
            }
            let Some(h) = dev.read(at, 92)? else { continue };
            if h.get(..8) != Some(b"EFI PART") {
                continue;
            }
            seen.push(at);
            let mut zero = Vec::with_capacity(2);
            zero.push(dev.base + at..dev.base + at + ss);
            let entries_lba = le_u64(&h, 72);
            let array = u64::from(le_u32(&h, 80)).saturating_mul(u64::from(le_u32(&h, 84)));
            // A sane entry array is a few KiB; never zero more than 4 MiB for one header.
            if array > 0 && array <= 4 * MIB {
                if let Some(start) = entries_lba.checked_mul(ss).filter(|&s| s < dev.len) {
                    let end = start.saturating_add(array).div_ceil(ss).saturating_mul(ss);
                    zero.push(dev.base + start..dev.base + end.min(dev.len));
                }
            }
            let offset = dev.base + at;
            dev.hits.push(Hit { signature: Signature { name: "gpt", offset }, zero });
            if let Some(alt) = le_u64(&h, 32)
                .checked_mul(ss)
                .filter(|&a| a.checked_add(ss).is_some_and(|e| e <= dev.len))
            {
                if !headers.contains(&alt) {
                    headers.push(alt);
                }
            }
        }
    }
    Ok(())
}
