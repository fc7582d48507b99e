//! `bmc_address`, `bmc_v6address` and `bmc_mac` over in-band IPMI.
//!
//! IPA asks ipmitool for `lan print <channel>` on channels 1 to 11; we send the same
//! "Get LAN Configuration Parameters" requests through a narrow [`IpmiTransport`], so
//! the Linux driver ([`LinuxIpmi`]) and a simulated BMC are interchangeable.
//!
//! Rules: the first channel with a non-zero IPv4 address gives `bmc_address`, and that
//! same channel's MAC gives `bmc_mac` (IPA reports the MAC of the addressed channel
//! only). The first active, non-zero IPv6 address (static ones, then dynamic ones,
//! channel by channel) gives `bmc_v6address`, without prefix length. A device that
//! answers nothing useful yields `"0.0.0.0"` / `"::/0"` and no MAC; no device at all
//! yields `null` / `null` and no MAC.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::host::HostRoot;

/// Sends one IPMI request to the BMC and returns the response data, whose first byte
/// is the completion code.
pub trait IpmiTransport: Send + Sync {
    fn request(&self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Vec<u8>, IpmiError>;
}

/// Why an IPMI exchange failed (as opposed to the BMC answering with an error code).
#[derive(Debug, thiserror::Error)]
pub enum IpmiError {
    #[error("opening IPMI device {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("sending IPMI request netfn {netfn:#04x} cmd {cmd:#04x}")]
    Send {
        netfn: u8,
        cmd: u8,
        #[source]
        source: io::Error,
    },
    #[error("receiving IPMI response")]
    Receive(#[source] io::Error),
    #[error("no IPMI response within {0:?}")]
    Timeout(Duration),
    #[error("IPMI request data is {0} bytes, more than a message can carry")]
    TooLong(usize),
}

/// IPMI network function "Transport" (requests).
pub const NETFN_TRANSPORT: u8 = 0x0C;
/// "Get LAN Configuration Parameters".
pub const CMD_GET_LAN_CONFIG: u8 = 0x02;
/// LAN configuration parameter selectors used here (IPMI 2.0, table 23-4).
pub mod lan_param {
    pub const IP_ADDRESS: u8 = 3;
    pub const MAC_ADDRESS: u8 = 5;
    /// Static and dynamic address slot counts.
    pub const IPV6_STATUS: u8 = 0x37;
    pub const IPV6_STATIC_ADDRESS: u8 = 0x38;
    pub const IPV6_DYNAMIC_ADDRESS: u8 = 0x3B;
}
/// Completion code "success".
pub const CC_OK: u8 = 0x00;
/// LAN channels IPA probes.
pub const LAN_CHANNELS: std::ops::RangeInclusive<u8> = 1..=11;
/// IPv6 address status "active".
const IPV6_ACTIVE: u8 = 0;
/// No BMC exposes more address slots than this; bounds the requests a confused BMC
/// could make us send.
const MAX_IPV6_SLOTS: u8 = 16;

/// The three inventory fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BmcInfo {
    pub address: Option<String>,
    pub v6address: Option<String>,
    pub mac: Option<String>,
}

/// A parameter's data (after the completion code and parameter revision), or `None`
/// when the request failed or the BMC answered with an error code.
fn lan_param(t: &dyn IpmiTransport, channel: u8, param: u8, set: u8) -> Option<Vec<u8>> {
    let resp = t.request(NETFN_TRANSPORT, CMD_GET_LAN_CONFIG, &[channel & 0x0F, param, set, 0]);
    match resp {
        Ok(r) => match r.as_slice() {
            [CC_OK, _revision, data @ ..] => Some(data.to_vec()),
            _ => None,
        },
        Err(e) => {
            tracing::debug!(error = %e, channel, param, "IPMI LAN parameter query failed");
            None
        }
    }
}

fn ipv4(t: &dyn IpmiTransport, channel: u8) -> Option<Ipv4Addr> {
    let d = lan_param(t, channel, lan_param::IP_ADDRESS, 0)?;
    let b: [u8; 4] = d.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b)).filter(|a| !a.is_unspecified())
}

fn mac(t: &dyn IpmiTransport, channel: u8) -> Option<String> {
    let d = lan_param(t, channel, lan_param::MAC_ADDRESS, 0)?;
    let b = d.get(..6)?;
    if b.iter().all(|x| *x == 0) {
        return None;
    }
    Some(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"))
}

/// Address slot data: set selector, source/type, 16 address bytes, prefix, status.
fn ipv6_slot(t: &dyn IpmiTransport, channel: u8, param: u8, set: u8) -> Option<Ipv6Addr> {
    let d = lan_param(t, channel, param, set)?;
    let b: [u8; 16] = d.get(2..18)?.try_into().ok()?;
    let addr = Ipv6Addr::from(b);
    let active = d.get(19).is_none_or(|s| *s == IPV6_ACTIVE);
    (active && !addr.is_unspecified()).then_some(addr)
}

fn ipv6(t: &dyn IpmiTransport, channel: u8) -> Option<Ipv6Addr> {
    let status = lan_param(t, channel, lan_param::IPV6_STATUS, 0)?;
    let slots = [
        (lan_param::IPV6_STATIC_ADDRESS, status.first().copied().unwrap_or(0)),
        (lan_param::IPV6_DYNAMIC_ADDRESS, status.get(1).copied().unwrap_or(0)),
    ];
    slots.into_iter().find_map(|(param, count)| {
        (0..count.min(MAX_IPV6_SLOTS)).find_map(|set| ipv6_slot(t, channel, param, set))
    })
}

/// Stops asking once the BMC has failed to answer at all: a BMC that times out on one
/// channel times out on all of them, and each timeout costs seconds of boot time.
struct GiveUpOnTimeout<'a> {
    inner: &'a dyn IpmiTransport,
    dead: AtomicBool,
}

impl IpmiTransport for GiveUpOnTimeout<'_> {
    fn request(&self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Vec<u8>, IpmiError> {
        if self.dead.load(Ordering::Relaxed) {
            return Err(IpmiError::Timeout(Duration::ZERO));
        }
        let r = self.inner.request(netfn, cmd, data);
        if let Err(IpmiError::Timeout(_)) = &r {
            self.dead.store(true, Ordering::Relaxed);
        }
        r
    }
}

/// Asks the BMC for its addresses.
pub fn query(t: &dyn IpmiTransport) -> BmcInfo {
    let t = &GiveUpOnTimeout { inner: t, dead: AtomicBool::new(false) };
    let v4 = LAN_CHANNELS.clone().find_map(|ch| ipv4(t, ch).map(|a| (ch, a)));
    let v6 = LAN_CHANNELS.clone().find_map(|ch| ipv6(t, ch));
    BmcInfo {
        address: Some(v4.map_or_else(|| "0.0.0.0".to_owned(), |(_, a)| a.to_string())),
        v6address: Some(v6.map_or_else(|| "::/0".to_owned(), |a| a.to_string())),
        mac: v4.and_then(|(ch, _)| mac(t, ch)),
    }
}

// The Linux IPMI character-device interface (include/uapi/linux/ipmi.h).

#[repr(C)]
struct IpmiMsg {
    netfn: u8,
    cmd: u8,
    data_len: u16,
    data: *mut u8,
}

#[repr(C)]
struct IpmiReq {
    addr: *mut u8,
    addr_len: libc::c_uint,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

#[repr(C)]
struct IpmiRecv {
    recv_type: libc::c_int,
    addr: *mut u8,
    addr_len: libc::c_uint,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

#[repr(C)]
struct IpmiSystemInterfaceAddr {
    addr_type: libc::c_int,
    channel: libc::c_short,
    lun: libc::c_uchar,
}

const IPMI_SYSTEM_INTERFACE_ADDR_TYPE: libc::c_int = 0x0c;
const IPMI_BMC_CHANNEL: libc::c_short = 0xf;
const IPMI_RESPONSE_RECV_TYPE: libc::c_int = 1;
/// `IPMI_MAX_MSG_LENGTH`.
const MAX_MSG: usize = 272;
/// Room for any `struct ipmi_addr` variant.
const MAX_ADDR: usize = 64;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'i' as u32) << 8) | nr
}
/// `_IOR('i', 13, struct ipmi_req)`.
const IPMICTL_SEND_COMMAND: u32 = ioc(2, 13, std::mem::size_of::<IpmiReq>());
/// `_IOWR('i', 11, struct ipmi_recv)`.
const IPMICTL_RECEIVE_MSG_TRUNC: u32 = ioc(3, 11, std::mem::size_of::<IpmiRecv>());

/// The kernel's in-band IPMI driver, through `/dev/ipmi0`.
#[derive(Debug)]
pub struct LinuxIpmi {
    /// One exchange at a time: responses are matched to requests by id, and a second
    /// caller must not consume the first caller's response.
    file: Mutex<File>,
    next_id: AtomicI64,
    timeout: Duration,
}

impl LinuxIpmi {
    pub const DEVICE: &'static str = "/dev/ipmi0";

    /// Opens `<root>/dev/ipmi0`; `Ok(None)` when it is absent or not a character device.
    pub fn open(host: &HostRoot) -> Result<Option<Self>, IpmiError> {
        let path = host.path(Self::DEVICE);
        match std::fs::metadata(&path) {
            Ok(m) if m.file_type().is_char_device() => {}
            _ => return Ok(None),
        }
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|source| {
            IpmiError::Open { path: path.to_string_lossy().into_owned(), source }
        })?;
        Ok(Some(Self {
            file: Mutex::new(file),
            next_id: AtomicI64::new(1),
            timeout: Duration::from_secs(5),
        }))
    }

    fn send(
        &self,
        fd: libc::c_int,
        msgid: libc::c_long,
        netfn: u8,
        cmd: u8,
        data: &[u8],
    ) -> io::Result<()> {
        let mut addr = IpmiSystemInterfaceAddr {
            addr_type: IPMI_SYSTEM_INTERFACE_ADDR_TYPE,
            channel: IPMI_BMC_CHANNEL,
            lun: 0,
        };
        let mut body = data.to_vec();
        let mut req = IpmiReq {
            addr: (&mut addr as *mut IpmiSystemInterfaceAddr).cast(),
            addr_len: std::mem::size_of::<IpmiSystemInterfaceAddr>() as libc::c_uint,
            msgid,
            msg: IpmiMsg { netfn, cmd, data_len: body.len() as u16, data: body.as_mut_ptr() },
        };
        // SAFETY: `req` and the buffers it points to outlive the call; the kernel copies
        // the request before returning.
        let rc = unsafe { libc::ioctl(fd, IPMICTL_SEND_COMMAND as _, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn receive(&self, fd: libc::c_int, msgid: libc::c_long) -> Result<Vec<u8>, IpmiError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IpmiError::Timeout(self.timeout));
            }
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX).max(1);
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(IpmiError::Receive(e));
            }
            if rc == 0 {
                continue;
            }
            let mut addr = [0u8; MAX_ADDR];
            let mut data = [0u8; MAX_MSG];
            let mut recv = IpmiRecv {
                recv_type: 0,
                addr: addr.as_mut_ptr(),
                addr_len: MAX_ADDR as libc::c_uint,
                msgid: 0,
                msg: IpmiMsg {
                    netfn: 0,
                    cmd: 0,
                    data_len: MAX_MSG as u16,
                    data: data.as_mut_ptr(),
                },
            };
            // SAFETY: `recv` points at buffers of the sizes it declares, alive for the call.
            let rc = unsafe { libc::ioctl(fd, IPMICTL_RECEIVE_MSG_TRUNC as _, &mut recv) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                // EMSGSIZE: the response was truncated to our buffer, which is still
                // the full IPMI maximum; use what arrived.
                if e.raw_os_error() != Some(libc::EMSGSIZE) {
                    return Err(IpmiError::Receive(e));
                }
            }
            if recv.recv_type == IPMI_RESPONSE_RECV_TYPE && recv.msgid == msgid {
                let len = usize::from(recv.msg.data_len).min(MAX_MSG);
                return Ok(data[..len].to_vec());
            }
        }
    }
}

impl IpmiTransport for LinuxIpmi {
    fn request(&self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Vec<u8>, IpmiError> {
        if data.len() > MAX_MSG {
            return Err(IpmiError::TooLong(data.len()));
        }
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let fd = file.as_raw_fd();
        let msgid = self.next_id.fetch_add(1, Ordering::Relaxed) as libc::c_long;
        self.send(fd, msgid, netfn, cmd, data).map_err(|source| IpmiError::Send {
            netfn,
            cmd,
            source,
        })?;
        self.receive(fd, msgid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        if cfg!(target_pointer_width = "64") {
            // sizeof(struct ipmi_req) = 40 and sizeof(struct ipmi_recv) = 48 on LP64.
            assert_eq!(IPMICTL_SEND_COMMAND, 0x8028_690d);
            assert_eq!(IPMICTL_RECEIVE_MSG_TRUNC, 0xc030_690b);
        }
    }

    #[test]
    fn no_device_or_not_a_char_device_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        assert!(LinuxIpmi::open(&host).unwrap().is_none());
        std::fs::create_dir_all(host.path("/dev")).unwrap();
        std::fs::write(host.path(LinuxIpmi::DEVICE), b"").unwrap();
        assert!(LinuxIpmi::open(&host).unwrap().is_none());
    }

    /// A BMC that never answers, counting how often it was asked.
    #[derive(Default)]
    struct Broken(std::sync::atomic::AtomicUsize);
    impl IpmiTransport for Broken {
        fn request(&self, _: u8, _: u8, _: &[u8]) -> Result<Vec<u8>, IpmiError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(IpmiError::Timeout(Duration::from_secs(1)))
        }
    }

    /// A BMC answering with malformed (short) success responses.
    struct Short;
    impl IpmiTransport for Short {
        fn request(&self, _: u8, _: u8, _: &[u8]) -> Result<Vec<u8>, IpmiError> {
            Ok(vec![CC_OK, 0x11, 10])
        }
    }

    #[test]
    fn unusable_bmc_reports_placeholders_without_mac() {
        let broken = Broken::default();
        for t in [&broken as &dyn IpmiTransport, &Short] {
            let info = query(t);
            assert_eq!(info.address.as_deref(), Some("0.0.0.0"));
            assert_eq!(info.v6address.as_deref(), Some("::/0"));
            assert_eq!(info.mac, None);
        }
        assert_eq!(broken.0.load(Ordering::Relaxed), 1, "a silent BMC is asked only once");
    }
}
