//! ATA Security Erase through SCSI generic I/O (`SG_IO`) and the SAT ATA PASS-THROUGH
//! (16) command, as `hdparm --security-erase` does it.
//!
//! The CDBs, the 512-byte password sector and the `sg_io_hdr` are built by pure
//! functions; IDENTIFY DEVICE data and the completion are parsed from byte slices. The
//! security sequence itself runs over [`AtaChannel`], so a fake drive in the tests
//! checks the password handling (set, erase, and the clean-up when anything fails).
//!
//! The temporary user password is [`TEMP_PASSWORD`], a fixed, published value: if the
//! machine dies between SECURITY SET PASSWORD and the end of the erase, the next run
//! (or an operator with `hdparm --security-unlock`) can still unlock the drive.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::time::Duration;

/// `SG_IO` from `<scsi/sg.h>`.
pub const SG_IO: u64 = 0x2285;
pub const SG_DXFER_NONE: i32 = -1;
pub const SG_DXFER_TO_DEV: i32 = -2;
pub const SG_DXFER_FROM_DEV: i32 = -3;

/// ATA PASS-THROUGH (16) operation code (SAT-4).
pub const ATA_PASS_THROUGH_16: u8 = 0x85;

/// ATA command codes (ACS-4).
pub const ATA_IDENTIFY_DEVICE: u8 = 0xec;
pub const ATA_SECURITY_SET_PASSWORD: u8 = 0xf1;
pub const ATA_SECURITY_UNLOCK: u8 = 0xf2;
pub const ATA_SECURITY_ERASE_PREPARE: u8 = 0xf3;
pub const ATA_SECURITY_ERASE_UNIT: u8 = 0xf4;
pub const ATA_SECURITY_DISABLE_PASSWORD: u8 = 0xf6;

/// The temporary user password set for the erase (zero-padded to 32 bytes).
pub const TEMP_PASSWORD: &[u8] = b"ferric-erase";

/// One ATA sector, the size of IDENTIFY data and of the security password sector.
pub const SECTOR: usize = 512;

/// SAT PROTOCOL field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    NonData = 3,
    PioDataIn = 4,
    PioDataOut = 5,
}

/// An ATA command as the pass-through carries it (28-bit form: only the low bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtaCommand {
    pub command: u8,
    pub protocol: Protocol,
    pub features: u8,
    pub count: u8,
    pub lba: u32,
    pub device: u8,
}

impl AtaCommand {
    fn new(command: u8, protocol: Protocol) -> Self {
        let count = if protocol == Protocol::NonData { 0 } else { 1 };
        AtaCommand { command, protocol, features: 0, count, lba: 0, device: 0 }
    }

    pub fn identify() -> Self {
        Self::new(ATA_IDENTIFY_DEVICE, Protocol::PioDataIn)
    }
    pub fn set_password() -> Self {
        Self::new(ATA_SECURITY_SET_PASSWORD, Protocol::PioDataOut)
    }
    pub fn unlock() -> Self {
        Self::new(ATA_SECURITY_UNLOCK, Protocol::PioDataOut)
    }
    pub fn erase_prepare() -> Self {
        Self::new(ATA_SECURITY_ERASE_PREPARE, Protocol::NonData)
    }
    pub fn erase_unit() -> Self {
        Self::new(ATA_SECURITY_ERASE_UNIT, Protocol::PioDataOut)
    }
    pub fn disable_password() -> Self {
        Self::new(ATA_SECURITY_DISABLE_PASSWORD, Protocol::PioDataOut)
    }

    /// The ATA PASS-THROUGH (16) CDB.
    ///
    /// Byte 1: PROTOCOL << 1, EXTEND 0. Byte 2: T_DIR (bit 3, 1 = from the device),
    /// BYTE_BLOCK (bit 2, 1 = blocks) and T_LENGTH (bits 1:0, 10b = the count is in
    /// SECTOR COUNT) when data moves; zero for non-data commands.
    pub fn cdb(&self) -> [u8; 16] {
        let flags = match self.protocol {
            Protocol::NonData => 0x00,
            Protocol::PioDataIn => 0x08 | 0x04 | 0x02,
            Protocol::PioDataOut => 0x04 | 0x02,
        };
        let lba = self.lba.to_le_bytes();
        [
            ATA_PASS_THROUGH_16,
            (self.protocol as u8) << 1,
            flags,
            0,
            self.features,
            0,
            self.count,
            0,
            lba[0],
            0,
            lba[1],
            0,
            lba[2],
            self.device | (lba[3] & 0x0f),
            self.command,
            0,
        ]
    }

    fn direction(&self) -> i32 {
        match self.protocol {
            Protocol::NonData => SG_DXFER_NONE,
            Protocol::PioDataIn => SG_DXFER_FROM_DEV,
            Protocol::PioDataOut => SG_DXFER_TO_DEV,
        }
    }
}

/// Which password a security command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordKind {
    User,
    Master,
}

/// The 512-byte data sector of SECURITY SET PASSWORD / UNLOCK / ERASE UNIT / DISABLE
/// PASSWORD (ACS-4): word 0 bit 0 = identifier (1 = master), bit 1 = enhanced erase
/// (ERASE UNIT only), bit 8 = security level maximum (SET PASSWORD only, left at high);
/// words 1..=16 the password bytes as given, zero-padded (as hdparm sends them).
pub fn password_sector(kind: PasswordKind, password: &[u8], enhanced: bool) -> [u8; SECTOR] {
    let mut sector = [0u8; SECTOR];
    let mut word0: u16 = 0;
    if kind == PasswordKind::Master {
        word0 |= 1;
    }
    if enhanced {
        word0 |= 1 << 1;
    }
    sector[0..2].copy_from_slice(&word0.to_le_bytes());
    let n = password.len().min(32);
    sector[2..2 + n].copy_from_slice(&password[..n]);
    sector
}

/// `struct sg_io_hdr` from `<scsi/sg.h>` (88 bytes on 64-bit Linux).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SgIoHdr {
    pub interface_id: i32,
    pub dxfer_direction: i32,
    pub cmd_len: u8,
    pub mx_sb_len: u8,
    pub iovec_count: u16,
    pub dxfer_len: u32,
    pub dxferp: *mut libc::c_void,
    pub cmdp: *const u8,
    pub sbp: *mut u8,
    pub timeout: u32,
    pub flags: u32,
    pub pack_id: i32,
    pub usr_ptr: *mut libc::c_void,
    pub status: u8,
    pub masked_status: u8,
    pub msg_status: u8,
    pub sb_len_wr: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub resid: i32,
    pub duration: u32,
    pub info: u32,
}

/// The header for one pass-through command: `cdb` (16 bytes), an optional data buffer,
/// and a sense buffer of `sense_len` bytes.
pub fn sg_io_hdr(
    cmd: &AtaCommand,
    cdb: *const u8,
    data: *mut u8,
    data_len: u32,
    sense: *mut u8,
    sense_len: u8,
    timeout: Duration,
) -> SgIoHdr {
    SgIoHdr {
        interface_id: i32::from(b'S'),
        dxfer_direction: cmd.direction(),
        cmd_len: 16,
        mx_sb_len: sense_len,
        iovec_count: 0,
        dxfer_len: data_len,
        dxferp: data.cast(),
        cmdp: cdb,
        sbp: sense,
        timeout: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    }
}

/// Why an ATA command or the security erase failed.
#[derive(Debug, thiserror::Error)]
pub enum AtaError {
    #[error("SG_IO is not available on this device")]
    NoPassThrough(#[source] io::Error),
    #[error("SG_IO for ATA command {command:#04x} failed")]
    Submit {
        command: u8,
        #[source]
        source: io::Error,
    },
    #[error(
        "ATA command {command:#04x} failed: SCSI status {status:#04x}, host {host:#06x}, \
         driver {driver:#06x}, sense key {sense_key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}, \
         ATA error {ata_error:#04x}"
    )]
    Command {
        command: u8,
        status: u8,
        host: u16,
        driver: u16,
        sense_key: u8,
        asc: u8,
        ascq: u8,
        ata_error: u8,
    },
    #[error("IDENTIFY DEVICE data is {0} bytes, expected 512")]
    IdentifyLength(usize),
    #[error("the device is not an ATA disk (IDENTIFY word 0 bit 15 set)")]
    NotAta,
    #[error("the drive does not support the ATA Security feature set")]
    Unsupported,
    #[error("the drive's security is frozen (the firmware froze it at boot; a suspend/resume or hot-plug may unfreeze it)")]
    Frozen,
    #[error("the drive is locked with a password that is not Ferric's temporary one")]
    Locked(#[source] Box<AtaError>),
    #[error("the drive has a user password that is not Ferric's temporary one")]
    ForeignPassword(#[source] Box<AtaError>),
    #[error("the drive's password attempt counter has expired; power-cycle it first")]
    AttemptsExpired,
    #[error("security erase failed; the temporary password was {}", if *.password_cleared { "removed again" } else { "NOT removed (unlock with hdparm and the password \"ferric-erase\")" })]
    EraseFailed {
        password_cleared: bool,
        #[source]
        source: Box<AtaError>,
    },
    #[error("security erase finished but the drive still has a password, and removing it failed")]
    PasswordLeft(#[source] Box<AtaError>),
}

/// The fields of a SCSI sense buffer a pass-through result needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
    /// The ATA Status and Error registers, when the sense carries them.
    pub ata_status: Option<u8>,
    pub ata_error: u8,
}

/// Parses fixed (70h/71h) or descriptor (72h/73h) sense data; the ATA Status Return
/// descriptor (09h) gives the ATA registers. Short or unknown data yields what it can.
pub fn parse_sense(sense: &[u8]) -> Sense {
    let byte = |at: usize| sense.get(at).copied().unwrap_or(0);
    match byte(0) & 0x7f {
        0x72 | 0x73 => {
            let mut out =
                Sense { key: byte(1) & 0x0f, asc: byte(2), ascq: byte(3), ..Sense::default() };
            let end = (8 + usize::from(byte(7))).min(sense.len());
            let mut at = 8;
            while at + 1 < end {
                let code = byte(at);
                let len = usize::from(byte(at + 1));
                if code == 0x09 && len >= 12 {
                    out.ata_error = byte(at + 3);
                    out.ata_status = Some(byte(at + 13));
                }
                at += 2 + len;
            }
            out
        }
        0x70 | 0x71 => Sense {
            key: byte(2) & 0x0f,
            asc: byte(12),
            ascq: byte(13),
            // SAT puts ERROR and STATUS in the INFORMATION field.
            ata_error: byte(3),
            ata_status: (byte(12) == 0 && byte(13) == 0x1d).then(|| byte(4)),
        },
        _ => Sense::default(),
    }
}

/// Decides whether a pass-through command succeeded from the `sg_io_hdr` status fields
/// and the sense data. A CHECK CONDITION that only says "ATA pass-through information
/// available" (00h/1Dh) with the ATA ERR bit clear is a success.
pub fn check_completion(
    command: u8,
    status: u8,
    host: u16,
    driver: u16,
    sense: &[u8],
) -> Result<(), AtaError> {
    const CHECK_CONDITION: u8 = 0x02;
    // DRIVER_SENSE only says sense data is present.
    const DRIVER_SENSE: u16 = 0x08;
    let s = parse_sense(sense);
    let fail = || AtaError::Command {
        command,
        status,
        host,
        driver,
        sense_key: s.key,
        asc: s.asc,
        ascq: s.ascq,
        ata_error: s.ata_error,
    };
    if host != 0 || (driver & !DRIVER_SENSE) != 0 {
        return Err(fail());
    }
    match status {
        0 => Ok(()),
        CHECK_CONDITION => {
            let info_only = matches!(s.key, 0x00 | 0x01) && s.asc == 0x00 && s.ascq == 0x1d;
            let ata_ok = s.ata_status.is_some_and(|st| st & 0x01 == 0 && st & 0x20 == 0);
            if info_only && ata_ok {
                Ok(())
            } else {
                Err(fail())
            }
        }
        _ => Err(fail()),
    }
}

/// What IDENTIFY DEVICE says about the drive and its security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtaIdentity {
    pub model: String,
    pub serial: String,
    /// Word 82 bit 1 or word 128 bit 0.
    pub security_supported: bool,
    /// Word 128 bit 1: a user password is set.
    pub security_enabled: bool,
    /// Word 128 bit 2.
    pub locked: bool,
    /// Word 128 bit 3.
    pub frozen: bool,
    /// Word 128 bit 4.
    pub count_expired: bool,
    /// Word 128 bit 5.
    pub enhanced_erase_supported: bool,
    /// Words 89 / 90: the drive's estimate for normal / enhanced erase, in minutes.
    pub normal_erase_minutes: Option<u32>,
    pub enhanced_erase_minutes: Option<u32>,
}

/// ATA strings are big-endian per word.
fn ata_string(words: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(words.len());
    for pair in words.chunks_exact(2) {
        bytes.push(pair[1]);
        bytes.push(pair[0]);
    }
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

/// Words 89/90: bit 15 selects the extended format (bits 14:0) over bits 7:0; the unit
/// is two minutes; zero means "not reported".
fn erase_minutes(word: u16) -> Option<u32> {
    let units = if word & 0x8000 != 0 { word & 0x7fff } else { word & 0x00ff };
    (units != 0).then_some(u32::from(units) * 2)
}

/// Parses the 512 bytes of IDENTIFY DEVICE.
pub fn parse_identify(data: &[u8]) -> Result<AtaIdentity, AtaError> {
    if data.len() != SECTOR {
        return Err(AtaError::IdentifyLength(data.len()));
    }
    let word = |n: usize| {
        let at = n * 2;
        u16::from_le_bytes([
            data.get(at).copied().unwrap_or(0),
            data.get(at + 1).copied().unwrap_or(0),
        ])
    };
    if word(0) & 0x8000 != 0 {
        return Err(AtaError::NotAta);
    }
    let sec = word(128);
    let w82 = word(82);
    // 0xFFFF in a command-set word means the word is not implemented.
    let w82_supported = w82 != 0xffff && w82 & 0b10 != 0;
    Ok(AtaIdentity {
        model: ata_string(data.get(54..94).unwrap_or_default()),
        serial: ata_string(data.get(20..40).unwrap_or_default()),
        security_supported: w82_supported || sec & 0x1 != 0,
        security_enabled: sec & 0x2 != 0,
        locked: sec & 0x4 != 0,
        frozen: sec & 0x8 != 0,
        count_expired: sec & 0x10 != 0,
        enhanced_erase_supported: sec & 0x20 != 0,
        normal_erase_minutes: erase_minutes(word(89)),
        enhanced_erase_minutes: erase_minutes(word(90)),
    })
}

/// How long to let ERASE UNIT run: twice the drive's estimate, at least an hour; half a
/// day when the drive gives none.
pub fn erase_timeout(estimate_minutes: Option<u32>) -> Duration {
    match estimate_minutes {
        Some(m) => Duration::from_secs(u64::from(m) * 2 * 60).max(Duration::from_secs(3600)),
        None => Duration::from_secs(12 * 3600),
    }
}

/// Timeout of every other command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where ATA commands go: the kernel through `SG_IO`, or a fake drive in tests.
pub trait AtaChannel {
    /// Runs `cmd`; PIO Data-In fills `data`, PIO Data-Out sends it.
    fn execute(
        &mut self,
        cmd: &AtaCommand,
        data: Option<&mut [u8; SECTOR]>,
        timeout: Duration,
    ) -> Result<(), AtaError>;
}

/// `SG_IO` on an open disk (`/dev/sdX`).
#[derive(Debug)]
pub struct SgIoChannel<'a> {
    file: &'a File,
}

impl<'a> SgIoChannel<'a> {
    pub fn new(file: &'a File) -> Self {
        Self { file }
    }
}

impl AtaChannel for SgIoChannel<'_> {
    fn execute(
        &mut self,
        cmd: &AtaCommand,
        data: Option<&mut [u8; SECTOR]>,
        timeout: Duration,
    ) -> Result<(), AtaError> {
        let cdb = cmd.cdb();
        let mut sense = [0u8; 64];
        let (ptr, len) = match data {
            Some(buf) => (buf.as_mut_ptr(), SECTOR as u32),
            None => (std::ptr::null_mut(), 0),
        };
        let mut hdr =
            sg_io_hdr(cmd, cdb.as_ptr(), ptr, len, sense.as_mut_ptr(), sense.len() as u8, timeout);
        // SAFETY: `hdr` points at `cdb`, `sense` and the caller's sector, all alive and of
        // the lengths the header states for the whole synchronous ioctl.
        let rc = unsafe {
            libc::ioctl(self.file.as_raw_fd(), SG_IO as libc::Ioctl, &mut hdr as *mut SgIoHdr)
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                    AtaError::NoPassThrough(err)
                }
                _ => AtaError::Submit { command: cmd.command, source: err },
            });
        }
        let sense_len = usize::from(hdr.sb_len_wr).min(sense.len());
        check_completion(
            cmd.command,
            hdr.status,
            hdr.host_status,
            hdr.driver_status,
            &sense[..sense_len],
        )
    }
}

/// Reads IDENTIFY DEVICE.
pub fn identify(ch: &mut dyn AtaChannel) -> Result<AtaIdentity, AtaError> {
    let mut buf = [0u8; SECTOR];
    ch.execute(&AtaCommand::identify(), Some(&mut buf), COMMAND_TIMEOUT)?;
    parse_identify(&buf)
}

fn with_password(
    ch: &mut dyn AtaChannel,
    cmd: AtaCommand,
    enhanced: bool,
    timeout: Duration,
) -> Result<(), AtaError> {
    let mut sector = password_sector(PasswordKind::User, TEMP_PASSWORD, enhanced);
    ch.execute(&cmd, Some(&mut sector), timeout)
}

/// Removes the temporary password, unlocking first when the drive is locked.
fn clear_password(ch: &mut dyn AtaChannel) -> Result<(), AtaError> {
    let id = identify(ch)?;
    if id.locked {
        with_password(ch, AtaCommand::unlock(), false, COMMAND_TIMEOUT)?;
    }
    if id.security_enabled {
        with_password(ch, AtaCommand::disable_password(), false, COMMAND_TIMEOUT)?;
    }
    Ok(())
}

/// Which ERASE UNIT ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtaErase {
    Normal,
    Enhanced,
}

/// SECURITY ERASE UNIT with a temporary password: enhanced when the drive supports it.
/// Refuses a frozen drive and one with a password of someone else's; removes the
/// password again when anything fails after it was set.
pub fn security_erase(ch: &mut dyn AtaChannel) -> Result<AtaErase, AtaError> {
    let mut id = identify(ch)?;
    if !id.security_supported {
        return Err(AtaError::Unsupported);
    }
    if id.frozen {
        return Err(AtaError::Frozen);
    }
    if id.count_expired {
        return Err(AtaError::AttemptsExpired);
    }
    if id.security_enabled {
        // Possibly left by an interrupted erase of ours: try the temporary password.
        if id.locked {
            with_password(ch, AtaCommand::unlock(), false, COMMAND_TIMEOUT)
                .map_err(|e| AtaError::Locked(Box::new(e)))?;
        }
        with_password(ch, AtaCommand::disable_password(), false, COMMAND_TIMEOUT)
            .map_err(|e| AtaError::ForeignPassword(Box::new(e)))?;
        id = identify(ch)?;
    }
    let enhanced = id.enhanced_erase_supported;
    let (kind, estimate) = if enhanced {
        (AtaErase::Enhanced, id.enhanced_erase_minutes)
    } else {
        (AtaErase::Normal, id.normal_erase_minutes)
    };
    with_password(ch, AtaCommand::set_password(), false, COMMAND_TIMEOUT)?;
    let erased = ch.execute(&AtaCommand::erase_prepare(), None, COMMAND_TIMEOUT).and_then(|()| {
        with_password(ch, AtaCommand::erase_unit(), enhanced, erase_timeout(estimate))
    });
    if let Err(e) = erased {
        let password_cleared = clear_password(ch).is_ok();
        return Err(AtaError::EraseFailed { password_cleared, source: Box::new(e) });
    }
    // A successful ERASE UNIT disables security; make sure nothing is left behind.
    if identify(ch)?.security_enabled {
        clear_password(ch).map_err(|e| AtaError::PasswordLeft(Box::new(e)))?;
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_cdb_bytes() {
        #[rustfmt::skip]
        let expected: [u8; 16] = [
            0x85,       // ATA PASS-THROUGH (16)
            0x08,       // PROTOCOL 4 (PIO Data-In) << 1, EXTEND 0
            0x0e,       // T_DIR=1 (from device), BYTE_BLOCK=1, T_LENGTH=10b (SECTOR COUNT)
            0x00, 0x00, // FEATURES 15:8, 7:0
            0x00, 0x01, // SECTOR COUNT 15:8, 7:0: one sector
            0x00, 0x00, // LBA 31:24, 7:0
            0x00, 0x00, // LBA 39:32, 15:8
            0x00, 0x00, // LBA 47:40, 23:16
            0x00,       // DEVICE
            0xec,       // COMMAND: IDENTIFY DEVICE
            0x00,       // CONTROL
        ];
        assert_eq!(AtaCommand::identify().cdb(), expected);
    }

    #[test]
    fn security_cdb_table() {
        // (command, byte 1, byte 2, sector count, opcode)
        let table: &[(AtaCommand, u8, u8, u8, u8)] = &[
            // PIO Data-Out: PROTOCOL 5 << 1 = 0x0a; T_DIR 0, BYTE_BLOCK 1, T_LENGTH 10b.
            (AtaCommand::set_password(), 0x0a, 0x06, 1, 0xf1),
            (AtaCommand::unlock(), 0x0a, 0x06, 1, 0xf2),
            // Non-data: PROTOCOL 3 << 1 = 0x06, no transfer fields.
            (AtaCommand::erase_prepare(), 0x06, 0x00, 0, 0xf3),
            (AtaCommand::erase_unit(), 0x0a, 0x06, 1, 0xf4),
            (AtaCommand::disable_password(), 0x0a, 0x06, 1, 0xf6),
        ];
        for (cmd, b1, b2, count, opcode) in table {
            let expected = [0x85, *b1, *b2, 0, 0, 0, *count, 0, 0, 0, 0, 0, 0, 0, *opcode, 0];
            assert_eq!(cmd.cdb(), expected, "{cmd:?}");
        }
    }

    #[test]
    fn password_sectors() {
        let set = password_sector(PasswordKind::User, TEMP_PASSWORD, false);
        let mut expected = [0u8; 512];
        // Word 0: identifier 0 (user), security level 0 (high).
        expected[0] = 0x00;
        expected[1] = 0x00;
        // Words 1..=16: "ferric-erase", zero-padded to 32 bytes.
        expected[2..14].copy_from_slice(b"ferric-erase");
        assert_eq!(set, expected);

        let erase = password_sector(PasswordKind::User, TEMP_PASSWORD, true);
        // Word 0 bit 1: enhanced erase.
        expected[0] = 0x02;
        assert_eq!(erase, expected);

        let master = password_sector(PasswordKind::Master, &[0x41; 40], false);
        assert_eq!(master[0..2], [0x01, 0x00], "word 0 bit 0: master");
        assert_eq!(master[2..34], [0x41; 32], "truncated at 32 bytes");
        assert!(master[34..].iter().all(|b| *b == 0));
    }

    #[test]
    fn sg_io_hdr_layout_and_fields() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<SgIoHdr>(), 88);
        assert_eq!(offset_of!(SgIoHdr, dxfer_len), 12);
        assert_eq!(offset_of!(SgIoHdr, dxferp), 16);
        assert_eq!(offset_of!(SgIoHdr, cmdp), 24);
        assert_eq!(offset_of!(SgIoHdr, sbp), 32);
        assert_eq!(offset_of!(SgIoHdr, timeout), 40);
        assert_eq!(offset_of!(SgIoHdr, usr_ptr), 56);
        assert_eq!(offset_of!(SgIoHdr, status), 64);
        assert_eq!(offset_of!(SgIoHdr, host_status), 68);
        assert_eq!(offset_of!(SgIoHdr, driver_status), 70);
        assert_eq!(offset_of!(SgIoHdr, resid), 72);

        let cdb = AtaCommand::erase_unit().cdb();
        let mut data = [0u8; 512];
        let mut sense = [0u8; 32];
        let hdr = sg_io_hdr(
            &AtaCommand::erase_unit(),
            cdb.as_ptr(),
            data.as_mut_ptr(),
            512,
            sense.as_mut_ptr(),
            32,
            Duration::from_secs(7200),
        );
        assert_eq!(hdr.interface_id, 0x53, "'S'");
        assert_eq!(hdr.dxfer_direction, -2, "SG_DXFER_TO_DEV");
        assert_eq!((hdr.cmd_len, hdr.mx_sb_len, hdr.dxfer_len), (16, 32, 512));
        assert_eq!(hdr.timeout, 7_200_000);
        assert_eq!(hdr.cmdp, cdb.as_ptr());
        let hdr = sg_io_hdr(
            &AtaCommand::erase_prepare(),
            cdb.as_ptr(),
            std::ptr::null_mut(),
            0,
            sense.as_mut_ptr(),
            32,
            COMMAND_TIMEOUT,
        );
        assert_eq!(hdr.dxfer_direction, -1, "SG_DXFER_NONE");
        let hdr = sg_io_hdr(
            &AtaCommand::identify(),
            cdb.as_ptr(),
            data.as_mut_ptr(),
            512,
            sense.as_mut_ptr(),
            32,
            COMMAND_TIMEOUT,
        );
        assert_eq!(hdr.dxfer_direction, -3, "SG_DXFER_FROM_DEV");
    }

    /// IDENTIFY DEVICE data with the words this module reads.
    fn identify_page(word82: u16, word128: u16, w89: u16, w90: u16) -> [u8; 512] {
        let mut page = [0u8; 512];
        let mut put =
            |word: usize, v: u16| page[word * 2..word * 2 + 2].copy_from_slice(&v.to_le_bytes());
        put(0, 0x0040);
        put(82, word82);
        put(89, w89);
        put(90, w90);
        put(128, word128);
        // Model "INTEL SSDSC2KB48" byte-swapped per word, space padded to 40 bytes.
        let model = format!("{:<40}", "INTEL SSDSC2KB48");
        for (i, pair) in model.as_bytes().chunks(2).enumerate() {
            page[54 + 2 * i] = pair[1];
            page[54 + 2 * i + 1] = pair[0];
        }
        page
    }

    #[test]
    fn parses_identify_security_word() {
        let id = parse_identify(&identify_page(0x0002, 0x0021, 0x0005, 0x8010)).unwrap();
        assert_eq!(id.model, "INTEL SSDSC2KB48");
        assert!(id.security_supported);
        assert!(!id.security_enabled && !id.locked && !id.frozen && !id.count_expired);
        assert!(id.enhanced_erase_supported);
        assert_eq!(id.normal_erase_minutes, Some(10));
        assert_eq!(id.enhanced_erase_minutes, Some(32));

        // Word 128 = 0x000f: supported, enabled, locked, frozen.
        let id = parse_identify(&identify_page(0x0002, 0x000f, 0, 0)).unwrap();
        assert!(id.security_enabled && id.locked && id.frozen);
        assert_eq!(id.normal_erase_minutes, None);

        // Word 82 = 0xFFFF is "not implemented", not "everything supported".
        let id = parse_identify(&identify_page(0xffff, 0x0000, 0, 0)).unwrap();
        assert!(!id.security_supported);

        let mut atapi = identify_page(0, 0, 0, 0);
        atapi[1] = 0x85;
        assert!(matches!(parse_identify(&atapi), Err(AtaError::NotAta)));
        for len in [0, 1, 256, 511, 513] {
            assert!(matches!(parse_identify(&vec![0u8; len]), Err(AtaError::IdentifyLength(_))));
        }
    }

    #[test]
    fn completion_table() {
        // Descriptor sense: RECOVERED ERROR, 00h/1Dh, ATA Status Return with status 0x50.
        let mut info = [0u8; 22];
        info[..8].copy_from_slice(&[0x72, 0x01, 0x00, 0x1d, 0, 0, 0, 14]);
        info[8..10].copy_from_slice(&[0x09, 0x0c]);
        info[8 + 13] = 0x50;
        let mut aborted = info;
        aborted[1] = 0x0b; // ABORTED COMMAND
        aborted[3] = 0x00;
        aborted[8 + 3] = 0x04; // ATA error ABRT
        aborted[8 + 13] = 0x51; // ERR set
        let mut err_bit = info;
        err_bit[8 + 13] = 0x51;
        let table: &[(u8, u16, u16, &[u8], bool)] = &[
            (0x00, 0, 0, &[], true),
            (0x02, 0, 0x08, &info, true),
            (0x02, 0, 0x08, &err_bit, false),
            (0x02, 0, 0x08, &aborted, false),
            (0x02, 0, 0x08, &[], false),
            (0x00, 0x07, 0, &[], false),
            (0x00, 0, 0x06, &[], false),
            (0x18, 0, 0, &[], false),
        ];
        for (status, host, driver, sense, ok) in table {
            let r = check_completion(0xf4, *status, *host, *driver, sense);
            assert_eq!(r.is_ok(), *ok, "{status:#x} {host:#x} {driver:#x} {sense:?}");
        }
        let err = check_completion(0xf4, 0x02, 0, 0x08, &aborted).unwrap_err().to_string();
        assert!(err.contains("sense key 0xb") && err.contains("ATA error 0x04"), "{err}");
    }

    #[test]
    fn sense_parser_survives_garbage() {
        for data in [&[][..], &[0x72], &[0x72, 0, 0, 0, 0, 0, 0, 0xff, 0x09, 0xff], &[0x70; 3]] {
            let _ = parse_sense(data);
        }
        let fixed = parse_sense(&[0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00]);
        assert_eq!((fixed.key, fixed.asc, fixed.ascq), (5, 0x20, 0));
    }

    /// A drive with the ATA security state machine (ACS-4 Security feature set).
    struct FakeDrive {
        supported: bool,
        enhanced: bool,
        frozen: bool,
        password: Option<Vec<u8>>,
        locked: bool,
        prepared: bool,
        fail_erase: bool,
        log: Vec<u8>,
        erased: Option<AtaErase>,
    }

    impl FakeDrive {
        fn new() -> Self {
            FakeDrive {
                supported: true,
                enhanced: true,
                frozen: false,
                password: None,
                locked: false,
                prepared: false,
                fail_erase: false,
                log: Vec::new(),
                erased: None,
            }
        }

        fn abort(command: u8) -> AtaError {
            AtaError::Command {
                command,
                status: 2,
                host: 0,
                driver: 8,
                sense_key: 0xb,
                asc: 0,
                ascq: 0,
                ata_error: 0x04,
            }
        }
    }

    impl AtaChannel for FakeDrive {
        fn execute(
            &mut self,
            cmd: &AtaCommand,
            data: Option<&mut [u8; SECTOR]>,
            _timeout: Duration,
        ) -> Result<(), AtaError> {
            self.log.push(cmd.command);
            let prepared = std::mem::take(&mut self.prepared);
            let pw = |d: &Option<&mut [u8; SECTOR]>| {
                d.as_ref().map(|s| {
                    let mut p = s[2..34].to_vec();
                    while p.last() == Some(&0) {
                        p.pop();
                    }
                    p
                })
            };
            let matches = |me: &Self, d: &Option<&mut [u8; SECTOR]>| {
                me.password.is_some() && me.password == pw(d)
            };
            match cmd.command {
                ATA_IDENTIFY_DEVICE => {
                    let buf = data.expect("identify buffer");
                    let word128 = u16::from(self.supported)
                        | u16::from(self.password.is_some()) << 1
                        | u16::from(self.locked) << 2
                        | u16::from(self.frozen) << 3
                        | u16::from(self.enhanced) << 5;
                    *buf = identify_page(u16::from(self.supported) << 1, word128, 1, 1);
                }
                _ if !self.supported || self.frozen => return Err(Self::abort(cmd.command)),
                ATA_SECURITY_SET_PASSWORD => {
                    if self.locked {
                        return Err(Self::abort(cmd.command));
                    }
                    self.password = pw(&data);
                }
                ATA_SECURITY_UNLOCK => {
                    if !matches(self, &data) {
                        return Err(Self::abort(cmd.command));
                    }
                    self.locked = false;
                }
                ATA_SECURITY_DISABLE_PASSWORD => {
                    if self.locked || !matches(self, &data) {
                        return Err(Self::abort(cmd.command));
                    }
                    self.password = None;
                }
                ATA_SECURITY_ERASE_PREPARE => self.prepared = true,
                ATA_SECURITY_ERASE_UNIT => {
                    let enhanced = data.as_ref().is_some_and(|s| s[0] & 2 != 0);
                    if !prepared || self.fail_erase || !matches(self, &data) {
                        return Err(Self::abort(cmd.command));
                    }
                    self.erased =
                        Some(if enhanced { AtaErase::Enhanced } else { AtaErase::Normal });
                    self.password = None;
                    self.locked = false;
                }
                other => panic!("unexpected command {other:#x}"),
            }
            Ok(())
        }
    }

    #[test]
    fn erase_sets_the_password_erases_and_leaves_none() {
        let mut drive = FakeDrive::new();
        assert_eq!(security_erase(&mut drive).unwrap(), AtaErase::Enhanced);
        assert_eq!(drive.erased, Some(AtaErase::Enhanced));
        assert_eq!(drive.password, None);
        assert_eq!(drive.log, [0xec, 0xf1, 0xf3, 0xf4, 0xec]);

        let mut drive = FakeDrive { enhanced: false, ..FakeDrive::new() };
        assert_eq!(security_erase(&mut drive).unwrap(), AtaErase::Normal);
        assert_eq!(drive.erased, Some(AtaErase::Normal));
    }

    #[test]
    fn refuses_frozen_and_unsupported_drives_without_setting_a_password() {
        let mut drive = FakeDrive { frozen: true, ..FakeDrive::new() };
        assert!(matches!(security_erase(&mut drive), Err(AtaError::Frozen)));
        assert_eq!(drive.log, [0xec]);
        let mut drive = FakeDrive { supported: false, ..FakeDrive::new() };
        assert!(matches!(security_erase(&mut drive), Err(AtaError::Unsupported)));
        assert_eq!(drive.password, None);
    }

    #[test]
    fn a_failed_erase_removes_the_temporary_password() {
        let mut drive = FakeDrive { fail_erase: true, ..FakeDrive::new() };
        let err = security_erase(&mut drive).unwrap_err();
        assert!(matches!(err, AtaError::EraseFailed { password_cleared: true, .. }), "{err}");
        assert_eq!(drive.password, None, "the drive is not left with a password");
        assert_eq!(drive.erased, None);
        assert_eq!(drive.log, [0xec, 0xf1, 0xf3, 0xf4, 0xec, 0xf6]);
    }

    #[test]
    fn recovers_its_own_leftover_password_and_refuses_a_foreign_one() {
        let mut drive =
            FakeDrive { password: Some(TEMP_PASSWORD.to_vec()), locked: true, ..FakeDrive::new() };
        assert_eq!(security_erase(&mut drive).unwrap(), AtaErase::Enhanced);
        assert_eq!(drive.password, None);

        let mut drive =
            FakeDrive { password: Some(b"tenant".to_vec()), locked: true, ..FakeDrive::new() };
        assert!(matches!(security_erase(&mut drive), Err(AtaError::Locked(_))));
        assert_eq!(drive.password.as_deref(), Some(&b"tenant"[..]));
        assert_eq!(drive.erased, None);

        let mut drive = FakeDrive { password: Some(b"tenant".to_vec()), ..FakeDrive::new() };
        assert!(matches!(security_erase(&mut drive), Err(AtaError::ForeignPassword(_))));
        assert_eq!(drive.erased, None);
    }

    #[test]
    fn erase_timeouts() {
        assert_eq!(erase_timeout(Some(10)), Duration::from_secs(3600));
        assert_eq!(erase_timeout(Some(120)), Duration::from_secs(4 * 3600));
        assert_eq!(erase_timeout(None), Duration::from_secs(12 * 3600));
    }
}
