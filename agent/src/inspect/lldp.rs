//! LLDP capture: listen on each NIC for the link-layer discovery frames switches send,
//! and report each NIC's first frame as `[[tlv_type, "hex value"], ...]`, the shape
//! ironic-python-agent reports in `lldp_raw` and in the inventory's `interfaces[].lldp`.
//!
//! One `AF_PACKET` raw socket per NIC, bound to that NIC and to the LLDP ethertype, joined
//! to the nearest-bridge multicast group (instead of switching the NIC to promiscuous
//! mode, which would change what the whole host receives). Switches send LLDP every 30 s
//! by default, so listening stops at the timeout or as soon as every NIC has answered.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The LLDP ethertype.
pub const LLDP_ETHERTYPE: u16 = 0x88cc;
/// The nearest-bridge group address LLDP frames are sent to.
pub const LLDP_MULTICAST: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
/// 802.1Q tag ethertype: a tagged frame carries the real ethertype 4 bytes later.
const VLAN_ETHERTYPE: u16 = 0x8100;
/// Large enough for a jumbo frame; LLDPDUs are at most 1500 bytes.
const FRAME_BUFFER: usize = 9216;

/// One NIC's TLVs: `(type, lowercase hex of the value)`, in frame order.
pub type Tlvs = Vec<(u8, String)>;

/// Why a NIC could not be listened on.
#[derive(Debug, thiserror::Error)]
pub enum LldpError {
    #[error("interface name {0:?} contains a NUL byte")]
    BadName(String),
    #[error("no interface named {0:?}")]
    NoSuchInterface(String),
    #[error("opening a raw packet socket on {interface}")]
    Socket {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("joining the LLDP multicast group on {interface}")]
    Membership {
        interface: String,
        #[source]
        source: io::Error,
    },
}

/// What a capture produced: the NICs that answered, and the ones that could not be
/// listened on (the others simply heard nothing before the timeout).
#[derive(Debug, Default)]
pub struct LldpCapture {
    pub frames: BTreeMap<String, Tlvs>,
    pub failures: Vec<LldpError>,
}

/// The TLVs of an Ethernet frame carrying an LLDPDU; `None` when it is not one.
pub fn parse_frame(frame: &[u8]) -> Option<Tlvs> {
    let ethertype_at = |offset: usize| -> Option<u16> {
        let bytes = frame.get(offset..offset + 2)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let mut offset = 12;
    if ethertype_at(offset)? == VLAN_ETHERTYPE {
        offset += 4;
    }
    if ethertype_at(offset)? != LLDP_ETHERTYPE {
        return None;
    }
    Some(parse_tlvs(frame.get(offset + 2..)?))
}

/// The TLVs of an LLDPDU, up to the End TLV (type 0, left out) or the first TLV whose
/// length runs past the data (a truncated frame keeps what came before it).
pub fn parse_tlvs(data: &[u8]) -> Tlvs {
    let mut tlvs = Vec::new();
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let header = u16::from_be_bytes([*hi, *lo]);
        let tlv_type = (header >> 9) as u8;
        let len = usize::from(header & 0x01ff);
        if tlv_type == 0 {
            break;
        }
        let Some(value) = tail.get(..len) else {
            break;
        };
        tlvs.push((tlv_type, hex(value)));
        rest = &tail[len..];
    }
    tlvs
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Listens on `interfaces` for up to `timeout` and returns the first LLDP frame each one
/// received. Blocking; run it on a thread where blocking is allowed.
pub fn capture(interfaces: &[String], timeout: Duration) -> LldpCapture {
    let mut out = LldpCapture::default();
    let mut listening: Vec<(String, OwnedFd)> = Vec::new();
    for name in interfaces {
        match open_socket(name) {
            Ok(fd) => listening.push((name.clone(), fd)),
            Err(e) => out.failures.push(e),
        }
    }
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0u8; FRAME_BUFFER];
    while !listening.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut polls: Vec<libc::pollfd> = listening
            .iter()
            .map(|(_, fd)| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        // Round up so a sub-millisecond remainder still waits rather than spinning.
        let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `polls` is a valid array of `polls.len()` pollfd structures.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, millis) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(error = %e, "waiting for LLDP frames failed; stopping early");
            break;
        }
        let mut answered = Vec::new();
        for (index, poll) in polls.iter().enumerate() {
            if poll.revents == 0 {
                continue;
            }
            let Some((name, fd)) = listening.get(index) else { continue };
            if let Some(tlvs) = drain(fd.as_raw_fd(), &mut buffer) {
                tracing::debug!(interface = %name, tlvs = tlvs.len(), "LLDP frame received");
                out.frames.insert(name.clone(), tlvs);
                answered.push(index);
            } else if poll.revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0 {
                tracing::warn!(interface = %name, "LLDP socket failed; no longer listening");
                answered.push(index);
            }
        }
        for index in answered.into_iter().rev() {
            listening.remove(index);
        }
    }
    out
}

/// Reads every queued frame; the first LLDPDU among them, if any.
fn drain(fd: RawFd, buffer: &mut [u8]) -> Option<Tlvs> {
    loop {
        // SAFETY: `buffer` is valid for writes of `buffer.len()` bytes.
        let n = unsafe { libc::recv(fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        let Ok(len) = usize::try_from(n) else {
            // EAGAIN (nothing left) or an error: either way nothing more to read now.
            return None;
        };
        if let Some(tlvs) = buffer.get(..len).and_then(parse_frame) {
            return Some(tlvs);
        }
    }
}

/// The kernel's index of `name`.
pub fn interface_index(name: &str) -> Result<u32, LldpError> {
    let c_name = CString::new(name).map_err(|_| LldpError::BadName(name.to_owned()))?;
    // SAFETY: `c_name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(LldpError::NoSuchInterface(name.to_owned()));
    }
    Ok(index)
}

/// A raw packet socket bound to `ifindex` and `ethertype`, non-blocking, close-on-exec.
pub fn packet_socket(ifindex: u32, ethertype: u16) -> io::Result<OwnedFd> {
    let protocol = i32::from(ethertype.to_be());
    // SAFETY: plain system call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let address = link_address(ifindex, ethertype, &[0; 6]);
    // SAFETY: `address` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&address as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A `sockaddr_ll` for `ifindex`, `ethertype` and (for sending) destination `mac`.
pub fn link_address(ifindex: u32, ethertype: u16, mac: &[u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = ethertype.to_be();
    address.sll_ifindex = ifindex as i32;
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(mac);
    address
}

fn open_socket(name: &str) -> Result<OwnedFd, LldpError> {
    let ifindex = interface_index(name)?;
    let fd = packet_socket(ifindex, LLDP_ETHERTYPE)
        .map_err(|source| LldpError::Socket { interface: name.to_owned(), source })?;
    let mut request = libc::packet_mreq {
        mr_ifindex: ifindex as i32,
        mr_type: libc::PACKET_MR_MULTICAST as u16,
        mr_alen: 6,
        mr_address: [0; 8],
    };
    request.mr_address[..6].copy_from_slice(&LLDP_MULTICAST);
    // SAFETY: `request` is a valid packet_mreq of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&request as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        let source = io::Error::last_os_error();
        return Err(LldpError::Membership { interface: name.to_owned(), source });
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One TLV: 7-bit type, 9-bit length, value.
    fn tlv(tlv_type: u8, value: &[u8]) -> Vec<u8> {
        let header = (u16::from(tlv_type) << 9) | value.len() as u16;
        let mut out = header.to_be_bytes().to_vec();
        out.extend_from_slice(value);
        out
    }

    /// An Ethernet frame to the LLDP group from `src`, padded to the 60-byte minimum.
    pub(super) fn lldp_frame(src: [u8; 6], tlvs: &[Vec<u8>]) -> Vec<u8> {
        let mut frame = LLDP_MULTICAST.to_vec();
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&LLDP_ETHERTYPE.to_be_bytes());
        for t in tlvs {
            frame.extend_from_slice(t);
        }
        frame.extend_from_slice(&[0, 0]);
        frame.resize(frame.len().max(60), 0);
        frame
    }

    fn switch_tlvs() -> Vec<Vec<u8>> {
        vec![
            // Chassis ID, subtype 4 (MAC address).
            tlv(1, &[4, 0x00, 0x1c, 0x73, 0xaa, 0xbb, 0xcc]),
            // Port ID, subtype 5 (interface name) "Ethernet1".
            tlv(2, b"\x05Ethernet1"),
            // TTL 120 s.
            tlv(3, &[0, 120]),
            // System name "sw-07".
            tlv(5, b"sw-07"),
        ]
    }

    fn switch_expected() -> Tlvs {
        vec![
            (1, "04001c73aabbcc".to_owned()),
            (2, "0545746865726e657431".to_owned()),
            (3, "0078".to_owned()),
            (5, "73772d3037".to_owned()),
        ]
    }

    #[test]
    fn frames_parse_to_type_and_hex_pairs() {
        let src = [2, 0, 0, 0, 0, 1];
        let plain = lldp_frame(src, &switch_tlvs());
        let mut tagged = plain[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&plain[12..]);
        let mut ipv4 = plain.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        let table: &[(&str, &[u8], Option<Tlvs>)] = &[
            ("untagged", &plain, Some(switch_expected())),
            ("802.1Q tagged", &tagged, Some(switch_expected())),
            ("another ethertype", &ipv4, None),
            ("shorter than a header", &plain[..13], None),
            ("header only", &plain[..14], Some(vec![])),
        ];
        for (what, frame, want) in table {
            assert_eq!(parse_frame(frame), *want, "{what}");
        }
    }

    #[test]
    fn tlv_parsing_stops_at_the_end_tlv_and_at_truncation() {
        let mut data = tlv(1, &[4, 1, 2, 3, 4, 5, 6]);
        data.extend(tlv(0, &[]));
        data.extend(tlv(5, b"after-end"));
        assert_eq!(parse_tlvs(&data), [(1, "04010203040506".to_owned())]);

        let mut truncated = tlv(3, &[0, 120]);
        truncated.extend(&tlv(5, b"sw-07")[..4]);
        assert_eq!(parse_tlvs(&truncated), [(3, "0078".to_owned())]);

        // The 9-bit length reaches 511 bytes; the type keeps its 7 bits.
        let long = vec![0xab; 511];
        let parsed = parse_tlvs(&tlv(127, &long));
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, 127);
        assert_eq!(parsed[0].1, "ab".repeat(511));
        assert_eq!(parse_tlvs(&[0x02]), []);
    }

    #[test]
    fn garbage_frames_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let len = (next() % 200) as usize;
            let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 14 && next() % 2 == 0 {
                frame[12..14].copy_from_slice(&LLDP_ETHERTYPE.to_be_bytes());
            }
            if let Some(tlvs) = parse_frame(&frame) {
                let body: usize = tlvs.iter().map(|(_, h)| 2 + h.len() / 2).sum();
                assert!(body <= len.saturating_sub(14), "{frame:?}");
            }
        }
    }

    #[test]
    fn unknown_interfaces_are_failures_not_waits() {
        let started = Instant::now();
        let got = capture(&["ferric-no-such-nic0".to_owned()], Duration::from_secs(20));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(got.frames.is_empty());
        assert!(
            matches!(got.failures.as_slice(), [LldpError::NoSuchInterface(n)] if n == "ferric-no-such-nic0"),
            "{:?}",
            got.failures
        );
    }

    /// A network namespace of the test's own, deleted (with its interfaces) on drop.
    struct Namespace {
        name: String,
    }

    impl Namespace {
        fn create() -> Result<Self, String> {
            let name = format!("ferric-lldp-{:08x}", fastrand::u32(..));
            ip(&["netns", "add", &name])?;
            Ok(Self { name })
        }

        fn ip(&self, args: &[&str]) -> Result<(), String> {
            let mut all = vec!["-n", self.name.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        }

        /// Runs `f` on a thread that has entered the namespace; threads it spawns are in
        /// the namespace too.
        fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            let path = format!("/run/netns/{}", self.name);
            std::thread::spawn(move || {
                let file = std::fs::File::open(&path).unwrap();
                // SAFETY: `file` is an open namespace file; this affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        }
    }

    impl Drop for Namespace {
        fn drop(&mut self) {
            if let Err(e) = ip(&["netns", "del", &self.name]) {
                eprintln!("cannot delete network namespace {}: {e}", self.name);
            }
        }
    }

    fn ip(args: &[&str]) -> Result<(), String> {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("running ip {args:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Sends `frame` on `interface` every 100 ms until `stop` is set (at most 20 s).
    fn keep_sending(
        interface: &str,
        frame: Vec<u8>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<usize> {
        let ifindex = interface_index(interface).unwrap();
        std::thread::spawn(move || {
            let fd = packet_socket(ifindex, LLDP_ETHERTYPE).unwrap();
            let to = link_address(ifindex, LLDP_ETHERTYPE, &LLDP_MULTICAST);
            let mut sent = 0;
            for _ in 0..200 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // SAFETY: `frame` and `to` are valid for the sizes passed.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&to as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        })
    }

    #[test]
    fn capture_in_a_namespace_returns_the_frame_sent_by_the_peer() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: LLDP capture needs root (raw sockets, network namespaces)");
            return;
        }
        if std::process::Command::new("ip").arg("-V").output().is_err() {
            println!("skipped: the `ip` tool (iproute2) is not installed");
            return;
        }
        let ns = match Namespace::create() {
            Ok(ns) => ns,
            Err(e) => {
                println!("skipped: cannot create a network namespace: {e}");
                return;
            }
        };
        // va-vb carries LLDP; vc-vd stays silent.
        for (a, b) in [("va", "vb"), ("vc", "vd")] {
            ns.ip(&["link", "add", a, "type", "veth", "peer", "name", b]).unwrap();
            ns.ip(&["link", "set", a, "up"]).unwrap();
            ns.ip(&["link", "set", b, "up"]).unwrap();
        }
        let frame = lldp_frame([2, 0, 0, 0, 0, 7], &switch_tlvs());
        let (fast, fast_took, partial, partial_took, sent) = ns.run(move || {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sender = keep_sending("va", frame, stop.clone());
            let started = Instant::now();
            let fast = capture(&["vb".to_owned()], Duration::from_secs(30));
            let fast_took = started.elapsed();
            let started = Instant::now();
            let partial = capture(&["vb".to_owned(), "vd".to_owned()], Duration::from_millis(1500));
            let partial_took = started.elapsed();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (fast, fast_took, partial, partial_took, sender.join().unwrap())
        });
        assert!(sent > 0);
        assert!(fast.failures.is_empty(), "{:?}", fast.failures);
        assert_eq!(fast.frames, BTreeMap::from([("vb".to_owned(), switch_expected())]));
        assert!(fast_took < Duration::from_secs(10), "did not stop early: {fast_took:?}");

        assert!(partial.failures.is_empty(), "{:?}", partial.failures);
        assert_eq!(partial.frames, BTreeMap::from([("vb".to_owned(), switch_expected())]));
        assert!(partial_took >= Duration::from_millis(1400), "stopped early: {partial_took:?}");
        assert!(partial_took < Duration::from_secs(10), "overran: {partial_took:?}");
    }
}
