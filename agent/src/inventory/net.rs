//! `interfaces` from `/sys/class/net`, with addresses from procfs.
//!
//! Only physical interfaces are reported: those with a `device` link. A bond master is
//! virtual (no `device` link) and so is not listed, while each bond member is, under its
//! permanent MAC (`bonding_slave/perm_hwaddr`): while enslaved its `address` shows the
//! bond's MAC, and Ironic ports are registered with the NIC's own MAC.
//!
//! Addresses: IPv4 comes from the kernel's local-address table (`/proc/net/fib_trie`),
//! each address assigned to the interface whose connected route (`/proc/net/route`,
//! longest prefix) covers it. IPv6 comes from `/proc/net/if_inet6`, preferring a
//! global-scope address over a link-local one, first in file order within a scope.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ferric_shared::inventory::NetworkInterface;

use super::{attr, link_basename, list_dir_or_empty, read_text, InventoryError};
use crate::host::HostRoot;

const CLASS_NET: &str = "/sys/class/net";
const FIB_TRIE: &str = "/proc/net/fib_trie";
const ROUTE: &str = "/proc/net/route";
const IF_INET6: &str = "/proc/net/if_inet6";
/// `ARPHRD_INFINIBAND`, the `type` of an IPoIB interface.
const ARPHRD_INFINIBAND: &str = "32";

/// Addresses marked `/32 host LOCAL` in `/proc/net/fib_trie`: the addresses assigned to
/// this host, loopback excluded, each once, in file order.
pub fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if line.starts_with('/') {
            let mut words = line.split_whitespace();
            let is_local_host = words.next() == Some("/32")
                && words.next() == Some("host")
                && words.next() == Some("LOCAL");
            if let Some(addr) = leaf.filter(|a| is_local_host && !a.is_loopback()) {
                if !out.contains(&addr) {
                    out.push(addr);
                }
            }
        } else {
            leaf = None;
        }
    }
    out
}

/// One row of `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub destination: Ipv4Addr,
    pub mask: Ipv4Addr,
}

/// The kernel prints addresses as the in-memory (network byte order) word in hex, so on
/// the little-endian hosts we run on the octets come out reversed.
fn route_addr(hex: &str) -> Option<Ipv4Addr> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(v.to_le_bytes()))
}

pub fn parse_route(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dest, mask) = (f.first()?, f.get(1)?, f.get(7)?);
            Some(Route {
                iface: (*iface).to_owned(),
                destination: route_addr(dest)?,
                mask: route_addr(mask)?,
            })
        })
        .collect()
}

/// The interface whose most specific non-default route covers `addr`.
pub fn route_interface(routes: &[Route], addr: Ipv4Addr) -> Option<&str> {
    let a = u32::from(addr);
    routes
        .iter()
        .filter(|r| {
            let m = u32::from(r.mask);
            m != 0 && a & m == u32::from(r.destination) & m
        })
        .max_by_key(|r| u32::from(r.mask).count_ones())
        .map(|r| r.iface.as_str())
}

/// IPv4 address per interface name (the first local address mapped to it).
pub fn ipv4_by_interface(fib_trie: &str, route: &str) -> BTreeMap<String, Ipv4Addr> {
    let routes = parse_route(route);
    let mut out = BTreeMap::new();
    for addr in parse_fib_trie_local(fib_trie) {
        if let Some(iface) = route_interface(&routes, addr) {
            out.entry(iface.to_owned()).or_insert(addr);
        }
    }
    out
}

const SCOPE_GLOBAL: u8 = 0x00;
const SCOPE_LINK: u8 = 0x20;

/// IPv6 address per interface from `/proc/net/if_inet6`: global scope preferred, else
/// link-local; other scopes (host, site) ignored.
pub fn parse_if_inet6(text: &str) -> BTreeMap<String, Ipv6Addr> {
    let mut best: BTreeMap<String, (u8, Ipv6Addr)> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(hex), Some(scope), Some(name)) = (f.first(), f.get(3), f.get(5)) else {
            continue;
        };
        let Some(addr) = (hex.len() == 32).then(|| u128::from_str_radix(hex, 16).ok()).flatten()
        else {
            continue;
        };
        let rank = match u8::from_str_radix(scope, 16) {
            Ok(SCOPE_GLOBAL) => 0,
            Ok(SCOPE_LINK) => 1,
            _ => continue,
        };
        let entry = best.entry((*name).to_owned()).or_insert((rank, Ipv6Addr::from(addr)));
        if rank < entry.0 {
            *entry = (rank, Ipv6Addr::from(addr));
        }
    }
    best.into_iter().map(|(k, (_, a))| (k, a)).collect()
}

/// Parses a colon-separated hardware address into lowercase octets.
fn octets(addr: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = addr.split(':').map(str::to_ascii_lowercase).collect();
    let ok = parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then_some(parts)
}

/// The (MAC, DHCP client id) an interface is known by.
///
/// Ethernet: the 6-octet address itself. IPoIB has a 20-octet address; like IPA we
/// derive a MAC from the port GUID (octets 12–14 and 17–19) and report the client id
/// InfiniBand DHCP uses (a fixed prefix plus the GUID octets 12–19).
pub fn mac_and_client_id(
    address: &str,
    arp_type: Option<&str>,
) -> Option<(String, Option<String>)> {
    let o = octets(address)?;
    if o.iter().all(|b| b == "00") {
        return None;
    }
    match o.len() {
        6 => Some((o.join(":"), None)),
        20 if arp_type == Some(ARPHRD_INFINIBAND) => {
            let mac = [&o[12..15], &o[17..20]].concat().join(":");
            let client_id = format!("ff:00:00:00:00:00:02:00:00:02:c9:00:{}", o[12..20].join(":"));
            Some((mac, Some(client_id)))
        }
        _ => None,
    }
}

/// `dddd:bb:dd.f`, the form sysfs names PCI functions.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    let hex =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_hexdigit));
    b.len() == 12
        && b.get(4) == Some(&b':')
        && b.get(7) == Some(&b':')
        && b.get(10) == Some(&b'.')
        && hex(0..4)
        && hex(5..7)
        && hex(8..10)
        && hex(11..12)
}

fn hw_address(host: &HostRoot, dir: &str) -> Option<String> {
    attr(host, &format!("{dir}/bonding_slave/perm_hwaddr"))
        .or_else(|| attr(host, &format!("{dir}/address")))
}

/// The PCI function behind a `device` link: the link's own target, or for devices that
/// hang below a PCI function (virtio) the function they hang from.
fn pci_address(host: &HostRoot, dir: &str) -> Option<String> {
    let device = format!("{dir}/device");
    if let Some(base) = link_basename(host, &device).filter(|b| is_pci_address(b)) {
        return Some(base);
    }
    let resolved = std::fs::canonicalize(host.path(&device)).ok()?;
    let parent = resolved.parent()?.file_name()?.to_string_lossy().into_owned();
    is_pci_address(&parent).then_some(parent)
}

fn ipv4_table(host: &HostRoot) -> BTreeMap<String, Ipv4Addr> {
    let fib = read_text(host, FIB_TRIE).unwrap_or_default();
    let route = read_text(host, ROUTE).unwrap_or_default();
    ipv4_by_interface(&fib, &route)
}

/// The IPv4 address assigned to `ifname`, if any.
pub fn interface_ipv4(host: &HostRoot, ifname: &str) -> Option<Ipv4Addr> {
    ipv4_table(host).remove(ifname)
}

/// MACs of every interface that has one (loopback excluded), physical or not, each
/// once, in interface-name order: the `addresses` of a lookup. Bond members count with
/// their permanent MAC.
pub fn lookup_macs(host: &HostRoot) -> Vec<String> {
    let mut macs: Vec<String> = Vec::new();
    for name in host.list_dir(CLASS_NET).unwrap_or_default() {
        if name == "lo" {
            continue;
        }
        let dir = format!("{CLASS_NET}/{name}");
        let arp_type = attr(host, &format!("{dir}/type"));
        let Some((mac, _)) =
            hw_address(host, &dir).and_then(|a| mac_and_client_id(&a, arp_type.as_deref()))
        else {
            continue;
        };
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    macs
}

pub fn collect(host: &HostRoot) -> Result<Vec<NetworkInterface>, InventoryError> {
    let ipv4 = ipv4_table(host);
    let ipv6 = parse_if_inet6(&read_text(host, IF_INET6).unwrap_or_default());
    let mut out = Vec::new();
    for name in list_dir_or_empty(host, CLASS_NET)? {
        let dir = format!("{CLASS_NET}/{name}");
        if name == "lo" || host.read_link(format!("{dir}/device")).is_err() {
            continue;
        }
        let arp_type = attr(host, &format!("{dir}/type"));
        let Some((mac, client_id)) =
            hw_address(host, &dir).and_then(|a| mac_and_client_id(&a, arp_type.as_deref()))
        else {
            continue;
        };
        let speed = attr(host, &format!("{dir}/speed"))
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| u32::try_from(s).ok())
            .filter(|s| *s > 0);
        out.push(NetworkInterface {
            ipv4_address: ipv4.get(&name).map(ToString::to_string),
            ipv6_address: ipv6.get(&name).map(ToString::to_string),
            mac_address: mac,
            has_carrier: attr(host, &format!("{dir}/carrier")).as_deref() == Some("1"),
            lldp: None,
            vendor: attr(host, &format!("{dir}/device/vendor")),
            product: attr(host, &format!("{dir}/device/device")),
            client_id,
            biosdevname: None,
            speed_mbps: speed,
            pci_address: pci_address(host, &dir),
            driver: link_basename(host, &format!("{dir}/device/driver")),
            name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.0.0/24 2 0 2
        |-- 10.0.0.0
           /24 link UNICAST
        |-- 10.0.0.5
           /32 host LOCAL
        |-- 10.0.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
     |-- 192.168.7.20
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.0.0.5
        /32 host LOCAL
     |-- 172.16.0.9
        /32 host LOCAL
";

    // 10.0.0.0/24 on eth0, 192.168.0.0/16 on bond0, 192.168.7.0/24 on eth2 (more
    // specific), default via eth0.
    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
bond0\t0000A8C0\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth2\t0007A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
garbage
";

    #[test]
    fn fib_trie_local_addresses() {
        let want: Vec<Ipv4Addr> =
            ["10.0.0.5", "192.168.7.20", "172.16.0.9"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(parse_fib_trie_local(FIB_TRIE), want);
    }

    #[test]
    fn route_table_and_longest_prefix() {
        let routes = parse_route(ROUTE);
        assert_eq!(routes.len(), 4); // header and garbage rows do not parse
        assert_eq!(routes[1].destination, Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(routes[1].mask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(route_interface(&routes, Ipv4Addr::new(192, 168, 7, 20)), Some("eth2"));
        assert_eq!(route_interface(&routes, Ipv4Addr::new(192, 168, 9, 1)), Some("bond0"));
        // Only the default route covers it: not a connected address of any interface.
        assert_eq!(route_interface(&routes, Ipv4Addr::new(8, 8, 8, 8)), None);
        let map = ipv4_by_interface(FIB_TRIE, ROUTE);
        assert_eq!(map.len(), 2);
        assert_eq!(map["eth0"], Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(map["eth2"], Ipv4Addr::new(192, 168, 7, 20));
    }

    #[test]
    fn if_inet6_prefers_global() {
        let text = "\
fe800000000000000202b3fffe1e8329 02 40 20 80     eth0
20010db8000000000000000000000010 02 40 00 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000202b3fffe1e8330 03 40 20 80     eth1
fec00000000000000000000000000001 04 40 40 80     eth2
zz800000000000000202b3fffe1e8330 05 40 20 80     eth3
fe80 06 40 20 80 eth4
";
        let map = parse_if_inet6(text);
        assert_eq!(map.len(), 2);
        assert_eq!(map["eth0"].to_string(), "2001:db8::10");
        assert_eq!(map["eth1"].to_string(), "fe80::202:b3ff:fe1e:8330");
    }

    #[test]
    fn hardware_addresses() {
        let ib = "a0:00:02:20:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de";
        type Case<'a> = (&'a str, Option<&'a str>, Option<(&'a str, Option<&'a str>)>);
        let cases: [Case; 6] = [
            ("AA:BB:cc:dd:ee:ff", Some("1"), Some(("aa:bb:cc:dd:ee:ff", None))),
            ("00:00:00:00:00:00", Some("1"), None),
            ("aa:bb:cc:dd:ee", None, None),
            ("aa:bb:cc:dd:ee:fg", None, None),
            (
                ib,
                Some("32"),
                Some((
                    "00:02:c9:0a:bc:de",
                    Some("ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03:00:0a:bc:de"),
                )),
            ),
            (ib, Some("1"), None),
        ];
        for (addr, ty, want) in cases {
            let got = mac_and_client_id(addr, ty);
            let got = got.as_ref().map(|(m, c)| (m.as_str(), c.as_deref()));
            assert_eq!(got, want, "{addr}");
        }
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:01:00.0"));
        assert!(is_pci_address("0000:af:1f.7"));
        for s in ["virtio0", "0000:01:00", "0000-01:00.0", "000g:01:00.0", "0000:01:00.0x", ""] {
            assert!(!is_pci_address(s), "{s}");
        }
    }
}
