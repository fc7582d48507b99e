//! Just enough of an SMBIOS structure table (`/sys/firmware/dmi/tables/DMI`) to sum the
//! installed memory devices (type 17), which is what lshw's `physical_mb` reflects.

/// Why the table could not be walked to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmbiosError {
    #[error("structure at offset {offset} has a header length of {length} (minimum 4)")]
    ShortHeader { offset: usize, length: u8 },
    #[error("structure at offset {offset} runs past the end of the table")]
    Truncated { offset: usize },
}

/// SMBIOS structure type of a Memory Device.
pub const MEMORY_DEVICE: u8 = 17;
/// SMBIOS End-of-Table structure type.
pub const END_OF_TABLE: u8 = 127;

/// The size a type-17 structure declares for its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSize {
    /// No module in the slot.
    Empty,
    /// The firmware does not know.
    Unknown,
    Mib(u64),
}

/// One formatted structure: its type and formatted area (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Structure<'a> {
    pub kind: u8,
    pub formatted: &'a [u8],
}

/// Splits a table into structures, stopping after End-of-Table.
pub fn structures(table: &[u8]) -> Result<Vec<Structure<'_>>, SmbiosError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < table.len() {
        let rest = &table[offset..];
        let (Some(&kind), Some(&length)) = (rest.first(), rest.get(1)) else {
            return Err(SmbiosError::Truncated { offset });
        };
        if length < 4 {
            return Err(SmbiosError::ShortHeader { offset, length });
        }
        let formatted = rest.get(..usize::from(length)).ok_or(SmbiosError::Truncated { offset })?;
        // The string set follows the formatted area and ends with two NULs (a structure
        // without strings is followed by exactly those two).
        let strings = &rest[usize::from(length)..];
        let end = strings
            .windows(2)
            .position(|w| w == [0, 0])
            .ok_or(SmbiosError::Truncated { offset })?;
        out.push(Structure { kind, formatted });
        if kind == END_OF_TABLE {
            break;
        }
        offset += usize::from(length) + end + 2;
    }
    Ok(out)
}

fn word(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn dword(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a type-17 Size (offset 0x0C) and, when it says so, Extended Size (0x1C).
pub fn memory_device_size(formatted: &[u8]) -> DeviceSize {
    match word(formatted, 0x0C) {
        None | Some(0xFFFF) => DeviceSize::Unknown,
        Some(0) => DeviceSize::Empty,
        // 32 GiB or more: the real size is the Extended Size dword, in MiB (bit 31 is
        // reserved).
        Some(0x7FFF) => match dword(formatted, 0x1C) {
            Some(ext) if ext & 0x7FFF_FFFF != 0 => DeviceSize::Mib(u64::from(ext & 0x7FFF_FFFF)),
            _ => DeviceSize::Unknown,
        },
        // Bit 15 set: the value is in KiB.
        Some(s) if s & 0x8000 != 0 => DeviceSize::Mib(u64::from(s & 0x7FFF) / 1024),
        Some(s) => DeviceSize::Mib(u64::from(s)),
    }
}

/// The sizes of all populated memory devices, in MiB; devices of unknown size are left
/// out.
pub fn memory_device_sizes_mib(table: &[u8]) -> Result<Vec<u64>, SmbiosError> {
    Ok(structures(table)?
        .into_iter()
        .filter(|s| s.kind == MEMORY_DEVICE)
        .filter_map(|s| match memory_device_size(s.formatted) {
            DeviceSize::Mib(m) if m > 0 => Some(m),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type17(size: u16, ext: u32) -> Vec<u8> {
        let mut f = vec![0u8; 0x28];
        f[0] = MEMORY_DEVICE;
        f[1] = 0x28;
        f[0x0C..0x0E].copy_from_slice(&size.to_le_bytes());
        f[0x1C..0x20].copy_from_slice(&ext.to_le_bytes());
        f[0x10] = 1; // device locator: string 1
        f.extend_from_slice(b"DIMM A1\0\0");
        f
    }

    #[test]
    fn size_encodings() {
        let cases = [
            (0x0000, 0, DeviceSize::Empty),
            (0xFFFF, 0, DeviceSize::Unknown),
            (16384, 0, DeviceSize::Mib(16384)),
            (0x8000 | 0x4000, 0, DeviceSize::Mib(16)), // 16384 KiB
            (0x7FFF, 65536, DeviceSize::Mib(65536)),
            (0x7FFF, 0x8000_0000 | 131072, DeviceSize::Mib(131072)),
            (0x7FFF, 0, DeviceSize::Unknown),
        ];
        for (size, ext, want) in cases {
            assert_eq!(memory_device_size(&type17(size, ext)), want, "{size:#x}/{ext:#x}");
        }
        // A 2.1-era structure too short to hold the extended size.
        let short = &type17(0x7FFF, 65536)[..0x15];
        assert_eq!(memory_device_size(short), DeviceSize::Unknown);
    }

    #[test]
    fn walks_table_and_sums_only_memory_devices() {
        let mut table = vec![0u8, 4, 0, 0];
        table.extend_from_slice(b"Vendor\0BIOS 1.0\0\0");
        table.extend(type17(16384, 0));
        table.extend(type17(0, 0));
        table.extend(type17(0x7FFF, 65536));
        table.extend([END_OF_TABLE, 4, 9, 0, 0, 0]);
        table.extend(type17(999, 0)); // after End-of-Table: ignored
        assert_eq!(memory_device_sizes_mib(&table).unwrap(), vec![16384, 65536]);
    }

    #[test]
    fn malformed_tables_are_errors() {
        assert_eq!(
            memory_device_sizes_mib(&[17, 2, 0, 0, 0, 0]),
            Err(SmbiosError::ShortHeader { offset: 0, length: 2 })
        );
        assert_eq!(
            memory_device_sizes_mib(&[17, 40, 0, 0]),
            Err(SmbiosError::Truncated { offset: 0 })
        );
        let mut unterminated = type17(1024, 0);
        unterminated.truncate(unterminated.len() - 1);
        assert_eq!(
            memory_device_sizes_mib(&unterminated),
            Err(SmbiosError::Truncated { offset: 0 })
        );
        assert_eq!(memory_device_sizes_mib(&[17]), Err(SmbiosError::Truncated { offset: 0 }));
        assert_eq!(memory_device_sizes_mib(&[]), Ok(vec![]));
    }
}
