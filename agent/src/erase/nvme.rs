//! NVMe Format with Secure Erase Settings through the kernel's admin-command ioctl.
//!
//! The command buffers are built by pure functions (`struct nvme_admin_cmd` of
//! `<linux/nvme_ioctl.h>`, 72 bytes), and the Identify data the decision rests on is
//! parsed from plain byte slices, so both are checked without a controller. Only
//! [`IoctlController`] talks to the kernel.
//!
//! The erase keeps the namespace's current LBA format, metadata and protection settings
//! (read from Identify Namespace): the point is to erase, not to reformat.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

/// `_IOWR('N', 0x41, struct nvme_admin_cmd)`.
pub const NVME_IOCTL_ADMIN_CMD: u64 = (3 << 30) | (72 << 16) | (0x4e << 8) | 0x41;
/// `_IO('N', 0x40)`: the namespace id of a namespace block device.
pub const NVME_IOCTL_ID: u64 = (0x4e << 8) | 0x40;

/// Admin opcode Identify.
pub const OPC_IDENTIFY: u8 = 0x06;
/// Admin opcode Format NVM.
pub const OPC_FORMAT_NVM: u8 = 0x80;
/// Identify CNS 00h: the namespace data structure.
const CNS_NAMESPACE: u32 = 0x00;
/// Identify CNS 01h: the controller data structure.
const CNS_CONTROLLER: u32 = 0x01;
/// Identify data is always one 4 KiB page.
pub const IDENTIFY_LEN: usize = 4096;

/// The Format NVM command's Secure Erase Settings (CDW10 bits 11:9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureErase {
    /// 001b: user data erase.
    UserData = 1,
    /// 010b: cryptographic erase.
    Crypto = 2,
}

/// How long a Format may take before the kernel gives up on it. A user-data erase
/// rewrites the whole medium on some controllers; hours are possible on large drives.
pub const FORMAT_TIMEOUT_MS: u32 = 4 * 60 * 60 * 1000;

/// `struct nvme_admin_cmd` (= `struct nvme_passthru_cmd`), field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvmeAdminCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    /// Completion dword 0, written by the kernel.
    pub result: u32,
}

impl NvmeAdminCmd {
    /// The 72 bytes the kernel reads, in the machine's (little-endian) byte order.
    pub fn to_bytes(&self) -> [u8; 72] {
        let mut out = [0u8; 72];
        out[0] = self.opcode;
        out[1] = self.flags;
        out[2..4].copy_from_slice(&self.rsvd1.to_le_bytes());
        let words32 = [(4, self.nsid), (8, self.cdw2), (12, self.cdw3)];
        for (at, v) in words32 {
            out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        out[16..24].copy_from_slice(&self.metadata.to_le_bytes());
        out[24..32].copy_from_slice(&self.addr.to_le_bytes());
        let rest = [
            self.metadata_len,
            self.data_len,
            self.cdw10,
            self.cdw11,
            self.cdw12,
            self.cdw13,
            self.cdw14,
            self.cdw15,
            self.timeout_ms,
            self.result,
        ];
        for (i, v) in rest.iter().enumerate() {
            let at = 32 + 4 * i;
            out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// Identify Controller into the buffer at `addr` (4096 bytes).
pub fn identify_controller_cmd(addr: u64) -> NvmeAdminCmd {
    NvmeAdminCmd {
        opcode: OPC_IDENTIFY,
        addr,
        data_len: IDENTIFY_LEN as u32,
        cdw10: CNS_CONTROLLER,
        ..NvmeAdminCmd::default()
    }
}

/// Identify Namespace `nsid` into the buffer at `addr` (4096 bytes).
pub fn identify_namespace_cmd(nsid: u32, addr: u64) -> NvmeAdminCmd {
    NvmeAdminCmd {
        opcode: OPC_IDENTIFY,
        nsid,
        addr,
        data_len: IDENTIFY_LEN as u32,
        cdw10: CNS_NAMESPACE,
        ..NvmeAdminCmd::default()
    }
}

/// Format NVM of namespace `nsid`, keeping `format` and erasing with `ses`.
///
/// CDW10: bits 3:0 LBAF low, bit 4 MSET, bits 7:5 PI, bit 8 PIL, bits 11:9 SES,
/// bits 13:12 LBAF high (NVMe 2.0; zero for formats below 16).
pub fn format_cmd(nsid: u32, format: &NamespaceFormat, ses: SecureErase) -> NvmeAdminCmd {
    let lbaf = u32::from(format.lba_format);
    let cdw10 = (lbaf & 0xf)
        | (u32::from(format.metadata_extended) << 4)
        | (u32::from(format.protection_type & 0x7) << 5)
        | (u32::from(format.protection_first) << 8)
        | ((ses as u32) << 9)
        | (((lbaf >> 4) & 0x3) << 12);
    NvmeAdminCmd {
        opcode: OPC_FORMAT_NVM,
        nsid,
        cdw10,
        timeout_ms: FORMAT_TIMEOUT_MS,
        ..NvmeAdminCmd::default()
    }
}

/// Why Identify data could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyParseError {
    #[error("Identify {what} data is {len} bytes, expected {IDENTIFY_LEN}")]
    Length { what: &'static str, len: usize },
    #[error("Identify Namespace reports LBA format {index} but only {count} formats")]
    LbaFormat { index: u8, count: u8 },
}

/// What Identify Controller says about erasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerCaps {
    pub model: String,
    pub serial: String,
    /// OACS bit 1: the controller implements Format NVM.
    pub format_supported: bool,
    /// FNA bit 0: a format of one namespace formats all of them.
    pub format_applies_to_all: bool,
    /// FNA bit 1: a secure erase of one namespace erases all of them.
    pub secure_erase_applies_to_all: bool,
    /// FNA bit 2: Format NVM accepts SES = cryptographic erase.
    pub crypto_erase_supported: bool,
    /// SANICAP bits 2:0: the Sanitize command's crypto / block / overwrite operations.
    pub sanitize_crypto: bool,
    pub sanitize_block: bool,
    pub sanitize_overwrite: bool,
}

impl ControllerCaps {
    /// The Secure Erase Settings to format with: cryptographic erase when Format NVM
    /// supports it (FNA bit 2), else user-data erase. SANICAP describes the separate
    /// Sanitize command and does not make SES = 010b valid for Format NVM.
    pub fn secure_erase(&self) -> SecureErase {
        if self.crypto_erase_supported {
            SecureErase::Crypto
        } else {
            SecureErase::UserData
        }
    }
}

/// Parses Identify Controller data (NVMe base spec, Figure "Identify Controller Data
/// Structure": SN 4..24, MN 24..64, OACS 256..258, SANICAP 328..332, FNA 524).
pub fn parse_identify_controller(data: &[u8]) -> Result<ControllerCaps, IdentifyParseError> {
    if data.len() != IDENTIFY_LEN {
        return Err(IdentifyParseError::Length { what: "Controller", len: data.len() });
    }
    let text = |r: std::ops::Range<usize>| {
        String::from_utf8_lossy(data.get(r).unwrap_or_default()).trim().to_owned()
    };
    let byte = |at: usize| data.get(at).copied().unwrap_or(0);
    let oacs = u16::from_le_bytes([byte(256), byte(257)]);
    let sanicap = u32::from_le_bytes([byte(328), byte(329), byte(330), byte(331)]);
    let fna = byte(524);
    Ok(ControllerCaps {
        model: text(24..64),
        serial: text(4..24),
        format_supported: oacs & 0b10 != 0,
        format_applies_to_all: fna & 0b001 != 0,
        secure_erase_applies_to_all: fna & 0b010 != 0,
        crypto_erase_supported: fna & 0b100 != 0,
        sanitize_crypto: sanicap & 0b001 != 0,
        sanitize_block: sanicap & 0b010 != 0,
        sanitize_overwrite: sanicap & 0b100 != 0,
    })
}

/// A namespace's current format, which a Format for erasing keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceFormat {
    /// Index of the LBA format in use (FLBAS bits 3:0, and 6:5 as bits 5:4).
    pub lba_format: u8,
    /// FLBAS bit 4: metadata transferred at the end of the LBA.
    pub metadata_extended: bool,
    /// DPS bits 2:0: protection information type.
    pub protection_type: u8,
    /// DPS bit 3: protection information in the first bytes of metadata.
    pub protection_first: bool,
}

/// Parses Identify Namespace data (NLBAF 25, FLBAS 26, DPS 29).
pub fn parse_identify_namespace(data: &[u8]) -> Result<NamespaceFormat, IdentifyParseError> {
    if data.len() != IDENTIFY_LEN {
        return Err(IdentifyParseError::Length { what: "Namespace", len: data.len() });
    }
    let byte = |at: usize| data.get(at).copied().unwrap_or(0);
    let nlbaf = byte(25);
    let flbas = byte(26);
    let dps = byte(29);
    let lba_format = (flbas & 0x0f) | (((flbas >> 5) & 0x3) << 4);
    // NLBAF is zero-based.
    if lba_format > nlbaf {
        return Err(IdentifyParseError::LbaFormat { index: lba_format, count: nlbaf + 1 });
    }
    Ok(NamespaceFormat {
        lba_format,
        metadata_extended: flbas & 0x10 != 0,
        protection_type: dps & 0x7,
        protection_first: dps & 0x8 != 0,
    })
}

/// Why the NVMe erase did not happen or failed.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    #[error("cannot read the namespace id (NVME_IOCTL_ID)")]
    NamespaceId(#[source] io::Error),
    #[error("admin command {opcode:#04x} could not be submitted")]
    Submit {
        opcode: u8,
        #[source]
        source: io::Error,
    },
    #[error("admin command {opcode:#04x} completed with status {status:#06x}")]
    Status { opcode: u8, status: u32 },
    #[error("unusable Identify data")]
    Identify(#[from] IdentifyParseError),
    #[error("the controller does not implement Format NVM")]
    FormatUnsupported,
}

/// Where admin commands go: the kernel, or a fake controller in tests.
pub trait AdminChannel {
    /// The namespace id of the device the channel was opened on.
    fn namespace_id(&mut self) -> Result<u32, NvmeError>;
    /// Submits `cmd`; a data phase moves through `data` (whose address the channel puts
    /// into `cmd.addr`). Returns completion dword 0.
    fn submit(&mut self, cmd: NvmeAdminCmd, data: Option<&mut [u8]>) -> Result<u32, NvmeError>;
}

/// The kernel's NVMe driver, through an open namespace block device.
#[derive(Debug)]
pub struct IoctlController<'a> {
    file: &'a File,
}

impl<'a> IoctlController<'a> {
    pub fn new(file: &'a File) -> Self {
        Self { file }
    }
}

impl AdminChannel for IoctlController<'_> {
    fn namespace_id(&mut self) -> Result<u32, NvmeError> {
        // SAFETY: NVME_IOCTL_ID takes no argument and returns the id or -1.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), NVME_IOCTL_ID as libc::Ioctl) };
        if rc < 0 {
            return Err(NvmeError::NamespaceId(io::Error::last_os_error()));
        }
        u32::try_from(rc).map_err(|_| NvmeError::NamespaceId(io::ErrorKind::InvalidData.into()))
    }

    fn submit(&mut self, mut cmd: NvmeAdminCmd, data: Option<&mut [u8]>) -> Result<u32, NvmeError> {
        if let Some(buf) = data {
            cmd.addr = buf.as_mut_ptr() as u64;
            cmd.data_len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        }
        // SAFETY: `cmd` is a `struct nvme_admin_cmd`; its addr/data_len describe a live
        // buffer of ours (or are zero), which outlives the synchronous ioctl.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                NVME_IOCTL_ADMIN_CMD as libc::Ioctl,
                &mut cmd as *mut NvmeAdminCmd,
            )
        };
        match rc {
            0 => Ok(cmd.result),
            rc if rc < 0 => {
                Err(NvmeError::Submit { opcode: cmd.opcode, source: io::Error::last_os_error() })
            }
            // A positive return is the NVMe status field of the completion.
            status => Err(NvmeError::Status { opcode: cmd.opcode, status: status as u32 }),
        }
    }
}

/// Reads Identify Controller.
pub fn identify_controller(ch: &mut dyn AdminChannel) -> Result<ControllerCaps, NvmeError> {
    let mut buf = vec![0u8; IDENTIFY_LEN];
    ch.submit(identify_controller_cmd(0), Some(&mut buf))?;
    Ok(parse_identify_controller(&buf)?)
}

/// Formats the channel's namespace with a secure erase, keeping its format. Returns the
/// erase that was done.
pub fn secure_format(ch: &mut dyn AdminChannel) -> Result<SecureErase, NvmeError> {
    let caps = identify_controller(ch)?;
    if !caps.format_supported {
        return Err(NvmeError::FormatUnsupported);
    }
    let nsid = ch.namespace_id()?;
    let mut buf = vec![0u8; IDENTIFY_LEN];
    ch.submit(identify_namespace_cmd(nsid, 0), Some(&mut buf))?;
    let format = parse_identify_namespace(&buf)?;
    let ses = caps.secure_erase();
    ch.submit(format_cmd(nsid, &format, ses), None)?;
    Ok(ses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_nvme_ioctl_h() {
        assert_eq!(NVME_IOCTL_ADMIN_CMD, 0xc048_4e41);
        assert_eq!(NVME_IOCTL_ID, 0x4e40);
        assert_eq!(std::mem::size_of::<NvmeAdminCmd>(), 72);
    }

    /// The in-memory layout is what `to_bytes` writes (the kernel reads the struct).
    #[test]
    fn struct_layout_equals_serialised_bytes() {
        let cmd = NvmeAdminCmd {
            opcode: 1,
            flags: 2,
            rsvd1: 0x0403,
            nsid: 0x0807_0605,
            cdw2: 9,
            cdw3: 10,
            metadata: 0x1211_100f_0e0d_0c0b,
            addr: 0x1a19_1817_1615_1413,
            metadata_len: 0x1e1d_1c1b,
            data_len: 0x2221_201f,
            cdw10: 11,
            cdw11: 12,
            cdw12: 13,
            cdw13: 14,
            cdw14: 15,
            cdw15: 16,
            timeout_ms: 17,
            result: 18,
        };
        // SAFETY: NvmeAdminCmd is repr(C) plain data without padding (72 bytes).
        let raw: [u8; 72] = unsafe { std::mem::transmute(cmd) };
        assert_eq!(raw, cmd.to_bytes());
    }

    #[test]
    fn identify_controller_command_bytes() {
        let cmd = identify_controller_cmd(0x0000_7f00_1234_5000);
        #[rustfmt::skip]
        let expected: [u8; 72] = [
            0x06,                   // opcode: Identify
            0x00,                   // flags
            0x00, 0x00,             // rsvd1
            0x00, 0x00, 0x00, 0x00, // nsid: none for CNS 01h
            0, 0, 0, 0,             // cdw2
            0, 0, 0, 0,             // cdw3
            0, 0, 0, 0, 0, 0, 0, 0, // metadata pointer
            0x00, 0x50, 0x34, 0x12, 0x00, 0x7f, 0x00, 0x00, // addr (data buffer)
            0, 0, 0, 0,             // metadata_len
            0x00, 0x10, 0x00, 0x00, // data_len: 4096
            0x01, 0x00, 0x00, 0x00, // cdw10: CNS 01h = Identify Controller
            0, 0, 0, 0,             // cdw11
            0, 0, 0, 0,             // cdw12
            0, 0, 0, 0,             // cdw13
            0, 0, 0, 0,             // cdw14
            0, 0, 0, 0,             // cdw15
            0, 0, 0, 0,             // timeout_ms: driver default
            0, 0, 0, 0,             // result
        ];
        assert_eq!(cmd.to_bytes(), expected);
    }

    #[test]
    fn identify_namespace_command_bytes() {
        let bytes = identify_namespace_cmd(1, 0).to_bytes();
        assert_eq!(bytes[0], 0x06, "opcode");
        assert_eq!(bytes[4..8], [1, 0, 0, 0], "nsid");
        assert_eq!(bytes[36..40], [0x00, 0x10, 0, 0], "data_len");
        assert_eq!(bytes[40..44], [0, 0, 0, 0], "cdw10: CNS 00h");
    }

    fn format(lba_format: u8) -> NamespaceFormat {
        NamespaceFormat {
            lba_format,
            metadata_extended: false,
            protection_type: 0,
            protection_first: false,
        }
    }

    #[test]
    fn format_crypto_erase_command_bytes() {
        let cmd = format_cmd(1, &format(1), SecureErase::Crypto);
        #[rustfmt::skip]
        let expected: [u8; 72] = [
            0x80,                   // opcode: Format NVM
            0x00, 0x00, 0x00,       // flags, rsvd1
            0x01, 0x00, 0x00, 0x00, // nsid 1
            0, 0, 0, 0, 0, 0, 0, 0, // cdw2, cdw3
            0, 0, 0, 0, 0, 0, 0, 0, // metadata
            0, 0, 0, 0, 0, 0, 0, 0, // addr: no data
            0, 0, 0, 0,             // metadata_len
            0, 0, 0, 0,             // data_len
            // cdw10 = LBAF 1 (bits 3:0) | SES 010b << 9 = 0x0401
            0x01, 0x04, 0x00, 0x00,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // cdw11..cdw15
            0x00, 0xba, 0xdb, 0x00, // timeout_ms: 4 h = 14 400 000 = 0x00dbba00
            0, 0, 0, 0,             // result
        ];
        assert_eq!(cmd.to_bytes(), expected);
    }

    #[test]
    fn format_cdw10_table() {
        let table: &[(NamespaceFormat, SecureErase, u32)] = &[
            // LBAF 0, user data erase: SES 001b << 9.
            (format(0), SecureErase::UserData, 0x0000_0200),
            // LBAF 0, crypto erase: SES 010b << 9.
            (format(0), SecureErase::Crypto, 0x0000_0400),
            // LBAF 5 with extended metadata (MSET, bit 4).
            (
                NamespaceFormat { metadata_extended: true, ..format(5) },
                SecureErase::UserData,
                0x0000_0215,
            ),
            // PI type 1 (bits 7:5) first in metadata (PIL, bit 8).
            (
                NamespaceFormat { protection_type: 1, protection_first: true, ..format(0) },
                SecureErase::UserData,
                0x0000_0320,
            ),
            // LBAF 18 (NVMe 2.0): low nibble 2, high bits 01b at 13:12.
            (format(18), SecureErase::Crypto, 0x0000_1402),
        ];
        for (fmt, ses, cdw10) in table {
            assert_eq!(format_cmd(7, fmt, *ses).cdw10, *cdw10, "{fmt:?} {ses:?}");
        }
    }

    /// An Identify Controller page with the fields this module reads.
    pub(crate) fn controller_page(oacs: u16, fna: u8, sanicap: u32) -> Vec<u8> {
        let mut page = vec![0u8; IDENTIFY_LEN];
        page[4..24].copy_from_slice(b"S3EVNX0K123456      ");
        let model = format!("{:<40}", "Samsung SSD 980 PRO 1TB");
        page[24..64].copy_from_slice(model.as_bytes());
        page[256..258].copy_from_slice(&oacs.to_le_bytes());
        page[328..332].copy_from_slice(&sanicap.to_le_bytes());
        page[524] = fna;
        page
    }

    #[test]
    fn parses_identify_controller() {
        let caps = parse_identify_controller(&controller_page(0x0017, 0x04, 0x0000_0003)).unwrap();
        assert_eq!(caps.model, "Samsung SSD 980 PRO 1TB");
        assert_eq!(caps.serial, "S3EVNX0K123456");
        assert!(caps.format_supported);
        assert!(!caps.format_applies_to_all);
        assert!(!caps.secure_erase_applies_to_all);
        assert!(caps.crypto_erase_supported);
        assert!(caps.sanitize_crypto && caps.sanitize_block && !caps.sanitize_overwrite);
        assert_eq!(caps.secure_erase(), SecureErase::Crypto);

        let caps = parse_identify_controller(&controller_page(0x0000, 0x03, 0)).unwrap();
        assert!(!caps.format_supported);
        assert!(caps.format_applies_to_all && caps.secure_erase_applies_to_all);
        assert_eq!(caps.secure_erase(), SecureErase::UserData);
    }

    #[test]
    fn sanitize_crypto_alone_does_not_select_format_crypto_erase() {
        let caps = parse_identify_controller(&controller_page(0x0002, 0x00, 0x1)).unwrap();
        assert_eq!(caps.secure_erase(), SecureErase::UserData);
    }

    #[test]
    fn short_or_garbage_identify_data_is_an_error_not_a_panic() {
        for len in [0, 1, 524, 525, 4095, 4097] {
            let data = vec![0xffu8; len];
            assert!(parse_identify_controller(&data).is_err(), "{len}");
            assert!(parse_identify_namespace(&data).is_err(), "{len}");
        }
        // Invalid UTF-8 in the strings is replaced, not a failure.
        let caps = parse_identify_controller(&[0xffu8; IDENTIFY_LEN]).unwrap();
        assert!(caps.crypto_erase_supported);
    }

    pub(crate) fn namespace_page(nlbaf: u8, flbas: u8, dps: u8) -> Vec<u8> {
        let mut page = vec![0u8; IDENTIFY_LEN];
        page[25] = nlbaf;
        page[26] = flbas;
        page[29] = dps;
        page
    }

    #[test]
    fn parses_identify_namespace() {
        let f = parse_identify_namespace(&namespace_page(1, 0x01, 0)).unwrap();
        assert_eq!(f, format(1));
        let f = parse_identify_namespace(&namespace_page(63, 0x32, 0x09)).unwrap();
        assert_eq!(
            f,
            NamespaceFormat {
                lba_format: 0x12,
                metadata_extended: true,
                protection_type: 1,
                protection_first: true
            }
        );
        assert_eq!(
            parse_identify_namespace(&namespace_page(0, 0x01, 0)),
            Err(IdentifyParseError::LbaFormat { index: 1, count: 1 })
        );
    }

    /// A controller that answers Identify from pages and records every command.
    struct FakeController {
        controller: Vec<u8>,
        namespace: Vec<u8>,
        nsid: u32,
        format_status: Option<u32>,
        seen: Vec<NvmeAdminCmd>,
    }

    impl AdminChannel for FakeController {
        fn namespace_id(&mut self) -> Result<u32, NvmeError> {
            Ok(self.nsid)
        }

        fn submit(&mut self, cmd: NvmeAdminCmd, data: Option<&mut [u8]>) -> Result<u32, NvmeError> {
            self.seen.push(cmd);
            match (cmd.opcode, cmd.cdw10, data) {
                (OPC_IDENTIFY, CNS_CONTROLLER, Some(buf)) => buf.copy_from_slice(&self.controller),
                (OPC_IDENTIFY, CNS_NAMESPACE, Some(buf)) => buf.copy_from_slice(&self.namespace),
                (OPC_FORMAT_NVM, _, None) => {
                    if let Some(status) = self.format_status {
                        return Err(NvmeError::Status { opcode: cmd.opcode, status });
                    }
                }
                other => panic!("unexpected command {other:?}"),
            }
            Ok(0)
        }
    }

    fn fake(fna: u8, oacs: u16) -> FakeController {
        FakeController {
            controller: controller_page(oacs, fna, 0),
            namespace: namespace_page(3, 0x02, 0),
            nsid: 2,
            format_status: None,
            seen: Vec::new(),
        }
    }

    #[test]
    fn secure_format_keeps_the_format_and_picks_crypto_when_supported() {
        let mut ctrl = fake(0x04, 0x02);
        assert_eq!(secure_format(&mut ctrl).unwrap(), SecureErase::Crypto);
        let last = ctrl.seen.last().unwrap();
        assert_eq!(last.opcode, OPC_FORMAT_NVM);
        assert_eq!(last.nsid, 2);
        assert_eq!(last.cdw10, 0x0402, "LBAF 2 kept, SES crypto");

        let mut ctrl = fake(0x00, 0x02);
        assert_eq!(secure_format(&mut ctrl).unwrap(), SecureErase::UserData);
        assert_eq!(ctrl.seen.last().unwrap().cdw10, 0x0202);
    }

    #[test]
    fn secure_format_refuses_without_format_support_and_reports_status() {
        let mut ctrl = fake(0x04, 0x00);
        assert!(matches!(secure_format(&mut ctrl), Err(NvmeError::FormatUnsupported)));
        assert!(ctrl.seen.iter().all(|c| c.opcode != OPC_FORMAT_NVM));

        let mut ctrl = fake(0x04, 0x02);
        ctrl.format_status = Some(0x410a);
        let err = secure_format(&mut ctrl).unwrap_err();
        assert_eq!(err.to_string(), "admin command 0x80 completed with status 0x410a");
    }
}
