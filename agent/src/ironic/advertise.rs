//! The address the agent advertises in `callback_url`: where the conductor reaches the
//! agent's API.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use reqwest::Url;

use crate::config::AgentConfig;

/// Retries of address discovery; the network may still be coming up when the agent
/// starts. Defaults: `ipa-ip-lookup-attempts` 6, `ipa-ip-lookup-timeout` 10 s between
/// attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct AddressRetry {
    pub attempts: u32,
    pub pause: Duration,
}

impl Default for AddressRetry {
    fn default() -> Self {
        Self { attempts: 6, pause: Duration::from_secs(10) }
    }
}

/// Why no address could be advertised.
#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    #[error("interface {interface} has no IPv4 address")]
    NoInterfaceAddress { interface: String },
    #[error("no conductor API URL to find a route towards")]
    NoApiUrl,
    #[error("API URL {url} names no host")]
    NoHost { url: String },
    #[error("resolving {host}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{host} resolved to no address")]
    Unresolved { host: String },
    #[error("finding the route towards {target}")]
    Route {
        target: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A link-local source needs a scope that a URL cannot carry to the conductor.
    #[error("the route towards {target} leaves from {local}, which is not routable")]
    Unroutable { target: SocketAddr, local: IpAddr },
}

impl AdvertiseError {
    /// Errors that waiting cannot fix.
    fn is_permanent(&self) -> bool {
        matches!(self, AdvertiseError::NoApiUrl | AdvertiseError::NoHost { .. })
    }
}

/// The IP address to advertise: `ipa-advertise-host` if set; else, if
/// `ipa-network-interface` is set, that interface's IPv4 address (from `interface_ipv4`);
/// else the source address of the route towards the first API URL's host.
pub async fn advertise_address(
    config: &AgentConfig,
    interface_ipv4: impl Fn(&str) -> Option<IpAddr>,
    retry: &AddressRetry,
) -> Result<IpAddr, AdvertiseError> {
    if let Some(ip) = config.advertise_host {
        return Ok(ip);
    }
    let attempts = retry.attempts.max(1);
    let mut attempt = 1;
    loop {
        let found = match &config.network_interface {
            Some(interface) => interface_ipv4(interface)
                .filter(IpAddr::is_ipv4)
                .ok_or_else(|| AdvertiseError::NoInterfaceAddress { interface: interface.clone() }),
            None => match config.api_urls.first() {
                Some(url) => route_source(url).await,
                None => Err(AdvertiseError::NoApiUrl),
            },
        };
        match found {
            Ok(ip) => return Ok(ip),
            Err(e) if e.is_permanent() || attempt >= attempts => return Err(e),
            Err(e) => {
                tracing::warn!(
                    attempt,
                    error = &e as &dyn std::error::Error,
                    "no address to advertise yet"
                );
                tokio::time::sleep(retry.pause).await;
                attempt += 1;
            }
        }
    }
}

/// The local address the kernel would send from towards `url`'s host (resolving a host
/// name first).
pub async fn route_source(url: &Url) -> Result<IpAddr, AdvertiseError> {
    let host = url.host_str().ok_or_else(|| AdvertiseError::NoHost { url: url.to_string() })?;
    let port = url.port_or_known_default().unwrap_or(80);
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let target = match literal.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((literal, port))
            .await
            .map_err(|source| AdvertiseError::Resolve { host: host.to_owned(), source })?
            .next()
            .ok_or_else(|| AdvertiseError::Unresolved { host: host.to_owned() })?,
    };
    route_source_towards(target)
}

/// Connecting a UDP socket only selects a route and a source address; no packet is sent.
fn route_source_towards(target: SocketAddr) -> Result<IpAddr, AdvertiseError> {
    let route_err = |source| AdvertiseError::Route { target, source };
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).map_err(route_err)?;
    socket.connect(target).map_err(route_err)?;
    let local = socket.local_addr().map_err(route_err)?.ip();
    if !routable_source(local) {
        return Err(AdvertiseError::Unroutable { target, local });
    }
    Ok(local)
}

fn routable_source(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified(),
        // fe80::/10
        IpAddr::V6(v6) => !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// `http(s)://<ip>:<port>`, IPv6 in brackets, no path: the form Ironic stores as
/// `agent_url`.
pub fn callback_url(https: bool, ip: IpAddr, port: u16) -> String {
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn config(urls: &[&str]) -> AgentConfig {
        AgentConfig {
            api_urls: urls.iter().map(|u| u.parse().unwrap()).collect(),
            inspection_callback_urls: vec![],
            bootif: None,
            insecure: false,
            lookup_timeout: Duration::from_secs(600),
            lookup_interval: Duration::from_secs(1),
            listen_host: Ipv6Addr::UNSPECIFIED.into(),
            listen_port: 9999,
            advertise_host: None,
            advertise_port: 9999,
            network_interface: None,
            agent_token: None,
            ironic_api_version: None,
            global_request_id: None,
            debug: false,
            http_request_timeout: Duration::from_secs(30),
            enable_auto_tls: true,
            ca_file: None,
            host_root: PathBuf::from("/nonexistent"),
            ..AgentConfig::default()
        }
    }

    const QUICK: AddressRetry = AddressRetry { attempts: 3, pause: Duration::from_millis(1) };

    #[test]
    fn callback_urls() {
        let table: &[(bool, &str, u16, &str)] = &[
            (false, "192.0.2.7", 9999, "http://192.0.2.7:9999"),
            (true, "192.0.2.7", 443, "https://192.0.2.7:443"),
            (true, "2001:db8::1", 9999, "https://[2001:db8::1]:9999"),
            (false, "::ffff:192.0.2.1", 1, "http://[::ffff:192.0.2.1]:1"),
        ];
        for &(https, ip, port, want) in table {
            assert_eq!(callback_url(https, ip.parse().unwrap(), port), want);
        }
    }

    #[tokio::test]
    async fn advertise_host_wins() {
        let mut c = config(&["http://127.0.0.1:6385"]);
        c.advertise_host = Some("198.51.100.4".parse().unwrap());
        c.network_interface = Some("eth0".into());
        let ip = advertise_address(&c, |_| panic!("interface consulted"), &QUICK).await.unwrap();
        assert_eq!(ip, "198.51.100.4".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn network_interface_gives_its_ipv4() {
        let mut c = config(&["http://127.0.0.1:6385"]);
        c.network_interface = Some("eth1".into());
        let lookup = |name: &str| (name == "eth1").then(|| "10.1.2.3".parse().unwrap());
        assert_eq!(advertise_address(&c, lookup, &QUICK).await.unwrap().to_string(), "10.1.2.3");

        // An interface with only IPv6, or none at all, is retried then reported.
        let calls = std::cell::Cell::new(0);
        let v6_only = |_: &str| {
            calls.set(calls.get() + 1);
            Some("2001:db8::9".parse().unwrap())
        };
        let err = advertise_address(&c, v6_only, &QUICK).await.unwrap_err();
        assert!(
            matches!(err, AdvertiseError::NoInterfaceAddress { ref interface } if interface == "eth1")
        );
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn route_source_towards_loopback_and_names() {
        let c = config(&["http://127.0.0.1:6385", "http://192.0.2.1"]);
        assert_eq!(advertise_address(&c, |_| None, &QUICK).await.unwrap(), Ipv4Addr::LOCALHOST);
        let by_name = route_source(&"http://localhost:6385/".parse().unwrap()).await.unwrap();
        assert!(by_name.is_loopback(), "{by_name}");
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let c = config(&[]);
        let started = std::time::Instant::now();
        let slow = AddressRetry { attempts: 6, pause: Duration::from_secs(10) };
        assert!(matches!(
            advertise_address(&c, |_| None, &slow).await,
            Err(AdvertiseError::NoApiUrl)
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn link_local_sources_are_not_routable() {
        let table = [
            ("fe80::1", false),
            ("febf::1", false),
            ("fec0::1", true),
            ("2001:db8::1", true),
            ("::", false),
            ("0.0.0.0", false),
            ("10.0.0.1", true),
            ("127.0.0.1", true),
        ];
        for (ip, want) in table {
            assert_eq!(routable_source(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
