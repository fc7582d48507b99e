//! Ironic API microversions (`X-OpenStack-Ironic-API-Version: 1.NN`).

use std::fmt;
use std::str::FromStr;

/// The request header naming the microversion a client wants.
pub const VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Version";
/// Response header: the oldest microversion the server speaks.
pub const MIN_VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Minimum-Version";
/// Response header: the newest microversion the server speaks.
pub const MAX_VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Maximum-Version";

/// An Ironic API microversion, `major.minor` (always `1.x` today).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// What Ironic assumes when a request carries no version header.
    pub const MINIMUM: ApiVersion = ApiVersion::new(1, 1);
    /// `/v1/lookup` and `/v1/heartbeat` exist from this version on.
    pub const RAMDISK_ENDPOINTS: ApiVersion = ApiVersion::new(1, 22);
    /// What ironic-python-agent assumes when version detection fails.
    pub const AGENT_FLOOR: ApiVersion = ApiVersion::new(1, 31);
    /// `agent_version` is accepted in heartbeats.
    pub const AGENT_VERSION: ApiVersion = ApiVersion::new(1, 36);
    /// Lookup issues an agent token; heartbeats carry `agent_token`.
    pub const AGENT_TOKEN: ApiVersion = ApiVersion::new(1, 62);
    /// `agent_verify_ca` is accepted in heartbeats (enables auto-TLS).
    pub const AGENT_VERIFY_CA: ApiVersion = ApiVersion::new(1, 68);
    /// `agent_status` / `agent_status_message` are accepted in heartbeats.
    pub const AGENT_STATUS: ApiVersion = ApiVersion::new(1, 72);
    /// The highest version the agent sends on lookup.
    pub const LOOKUP_CAP: ApiVersion = ApiVersion::new(1, 62);
    /// The highest version the agent sends on heartbeat.
    pub const HEARTBEAT_CAP: ApiVersion = ApiVersion::new(1, 68);
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a string is not a microversion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid API version {0:?}: expected MAJOR.MINOR, e.g. 1.68")]
pub struct ApiVersionParseError(pub String);

impl FromStr for ApiVersion {
    type Err = ApiVersionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ApiVersionParseError(s.to_owned());
        let (major, minor) = s.trim().split_once('.').ok_or_else(err)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(err());
        }
        Ok(ApiVersion::new(major.parse().map_err(|_| err())?, minor.parse().map_err(|_| err())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let v: ApiVersion = "1.68".parse().unwrap();
        assert_eq!(v, ApiVersion::new(1, 68));
        assert!(v > ApiVersion::AGENT_TOKEN);
        assert!("1.9".parse::<ApiVersion>().unwrap() < "1.10".parse().unwrap());
        assert_eq!(v.to_string(), "1.68");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "1", "1.", ".1", "a.b", "1.2.3", "1.-2", "+1.2", "99999999999.1", "latest"]
        {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad:?} parsed");
        }
    }
}
