//! The disk identifier Ironic records as `root uuid` for a whole-disk image
//! (`standby.get_partition_uuids`): the GPT disk GUID, or the MBR disk signature in IPA's
//! `0x%08x` shape.

use std::fs::File;

use super::gpt::{Gpt, GptError};
use super::mbr::Mbr;

/// The identifier of the disk in `file`, using its own size and logical block size.
/// `Ok(None)` when the disk carries no partition table.
pub fn disk_identifier(file: &File) -> Result<Option<String>, GptError> {
    let geometry = super::geometry(file)?;
    disk_identifier_with(file, geometry.len, geometry.sector)
}

/// [`disk_identifier`] for a disk whose length and logical block size are known.
///
/// A GPT disk answers with its disk GUID in lowercase canonical form (as `blkid` reports
/// `PTUUID`); an MBR disk with `0x` and its 32-bit signature as eight lowercase hex digits.
/// A damaged primary GPT is an error rather than a silent fallback to the protective MBR,
/// whose signature would identify nothing.
pub fn disk_identifier_with(
    file: &File,
    disk_len: u64,
    sector: u64,
) -> Result<Option<String>, GptError> {
    if let Some(gpt) = Gpt::read(file, disk_len, sector)? {
        return Ok(Some(gpt.primary.disk_guid.hyphenated().to_string()));
    }
    if disk_len < super::mbr::MBR_LEN as u64 {
        return Ok(None);
    }
    match Mbr::read(file) {
        Ok(Some((mbr, _))) if !mbr.is_protective() => {
            Ok(Some(format!("0x{:08x}", mbr.disk_signature)))
        }
        Ok(_) => Ok(None),
        Err(super::mbr::MbrError::Io(io)) => Err(GptError::Io(io)),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn mbr_signature_shape() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 20).unwrap();
        assert_eq!(disk_identifier(&file).unwrap(), None);
        let mut mbr = vec![0u8; 512];
        mbr[440..444].copy_from_slice(&0x00ab_cdefu32.to_le_bytes());
        mbr[446 + 4] = 0x83;
        mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&100u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        file.write_all_at(&mbr, 0).unwrap();
        assert_eq!(disk_identifier(&file).unwrap().as_deref(), Some("0x00abcdef"));
        // A protective MBR without a GPT behind it identifies nothing.
        file.write_all_at(&[0xee], 446 + 4).unwrap();
        assert_eq!(disk_identifier(&file).unwrap(), None);
        // A file shorter than an MBR.
        let tiny = tempfile::tempfile().unwrap();
        tiny.set_len(100).unwrap();
        assert_eq!(disk_identifier(&tiny).unwrap(), None);
    }
}
