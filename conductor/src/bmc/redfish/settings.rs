//! The `redfish` hardware type's `driver_info`, parsed and checked as Ironic does (and in
//! its words, since operators and the `baremetal` CLI show these messages as they are).

use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde_json::{Map, Value};

use crate::bmc::DriverInfoError;

/// How the driver authenticates (`redfish_auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// HTTP basic authentication on every request.
    Basic,
    /// A Redfish session (`X-Auth-Token`), created once and reused.
    Session,
    /// A session when the BMC offers a session service, else basic.
    Auto,
}

impl AuthType {
    pub const ALL: [AuthType; 3] = [AuthType::Basic, AuthType::Session, AuthType::Auto];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Basic => "basic",
            AuthType::Session => "session",
            AuthType::Auto => "auto",
        }
    }
}

/// How the BMC's TLS certificate is checked (`redfish_verify_ca`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VerifyCa {
    /// Against the system's CA bundle.
    System,
    /// Not at all (the handshake signature is still checked).
    Insecure,
    /// Against the certificates in this file (or every `.pem`/`.crt` file of this
    /// directory); a certificate in it also pins the BMC's own certificate.
    Path(PathBuf),
}

/// A node's parsed `driver_info`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedfishSettings {
    /// `scheme://host[:port]`.
    pub base: Url,
    /// `redfish_system_id`, as a path (`/redfish/v1/Systems/…`); `None`: the only system.
    pub system_path: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub verify_ca: VerifyCa,
    pub auth_type: AuthType,
}

impl fmt::Debug for RedfishSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishSettings")
            .field("base", &self.base.as_str())
            .field("system_path", &self.system_path)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("verify_ca", &self.verify_ca)
            .field("auth_type", &self.auth_type)
            .finish()
    }
}

impl RedfishSettings {
    /// The address as errors and logs name it.
    pub fn address(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }
}

/// Where Redfish collections of systems live when the service root is not consulted.
pub const SYSTEMS_PATH: &str = "/redfish/v1/Systems";

fn string_value<'a>(
    driver_info: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, DriverInfoError> {
    match driver_info.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(DriverInfoError(format!(
            "Invalid value type set in driver_info/{key}. The value should be a string, \
             not \"{other}\""
        ))),
    }
}

fn parse_address(raw: &str) -> Result<Url, DriverInfoError> {
    let raw = raw.trim();
    let invalid = || {
        DriverInfoError(format!("Invalid Redfish address {raw} set in driver_info/redfish_address"))
    };
    let with_scheme = if raw.contains("://") { raw.to_owned() } else { format!("https://{raw}") };
    let url = Url::parse(&with_scheme).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || !(url.path().is_empty() || url.path() == "/")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(invalid());
    }
    Ok(url)
}

fn parse_system_id(raw: &str) -> Result<String, DriverInfoError> {
    let raw = raw.trim();
    if raw.starts_with('/') {
        return Ok(raw.trim_end_matches('/').to_owned());
    }
    if raw.contains('/') || raw.contains('?') || raw.contains('#') {
        return Err(DriverInfoError(format!(
            "Invalid value {raw:?} set in driver_info/redfish_system_id: give the system's Id \
             or its path (/redfish/v1/Systems/<Id>)"
        )));
    }
    Ok(format!("{SYSTEMS_PATH}/{raw}"))
}

/// oslo's `bool_from_string(strict=True)` spellings.
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

fn parse_verify_ca(value: Option<&Value>) -> Result<VerifyCa, DriverInfoError> {
    let invalid = |value: &Value| {
        let shown = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        DriverInfoError(format!(
            "Invalid value type set in driver_info/redfish_verify_ca. The value should be a \
             Boolean or the path to a file/directory, not \"{shown}\""
        ))
    };
    match value {
        None | Some(Value::Null) => Ok(VerifyCa::System),
        Some(Value::Bool(true)) => Ok(VerifyCa::System),
        Some(Value::Bool(false)) => Ok(VerifyCa::Insecure),
        Some(Value::String(s)) => match parse_bool(s) {
            Some(true) => Ok(VerifyCa::System),
            Some(false) => Ok(VerifyCa::Insecure),
            None if Path::new(s).is_file() || Path::new(s).is_dir() => {
                Ok(VerifyCa::Path(PathBuf::from(s)))
            }
            None => Err(invalid(value.unwrap_or(&Value::Null))),
        },
        Some(other) => Err(invalid(other)),
    }
}

fn parse_auth_type(value: Option<&str>) -> Result<AuthType, DriverInfoError> {
    let Some(text) = value else { return Ok(AuthType::Auto) };
    AuthType::ALL.into_iter().find(|a| a.as_str() == text.trim()).ok_or_else(|| {
        DriverInfoError(format!(
            "Invalid value \"{text}\" set in driver_info/redfish_auth_type. The value should \
             be one of \"{}\"",
            AuthType::ALL.map(AuthType::as_str).join(", ")
        ))
    })
}

/// Parses and checks the `redfish_*` keys; other keys belong to other interfaces.
pub fn parse(driver_info: &Map<String, Value>) -> Result<RedfishSettings, DriverInfoError> {
    let Some(address) = string_value(driver_info, "redfish_address")? else {
        return Err(DriverInfoError(
            "Missing 'redfish_address' parameter in node's driver_info".to_owned(),
        ));
    };
    let base = parse_address(address)?;
    let system_path = string_value(driver_info, "redfish_system_id")?.map(parse_system_id);
    Ok(RedfishSettings {
        base,
        system_path: system_path.transpose()?,
        username: string_value(driver_info, "redfish_username")?.map(str::to_owned),
        password: match driver_info.get("redfish_password") {
            // An empty password is a password.
            Some(Value::String(s)) => Some(s.clone()),
            _ => string_value(driver_info, "redfish_password")?.map(str::to_owned),
        },
        verify_ca: parse_verify_ca(driver_info.get("redfish_verify_ca"))?,
        auth_type: parse_auth_type(string_value(driver_info, "redfish_auth_type")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn addresses() {
        let cases = [
            ("bmc.example.com", Some("https://bmc.example.com/")),
            ("10.0.0.5:8443", Some("https://10.0.0.5:8443/")),
            ("https://10.0.0.5", Some("https://10.0.0.5/")),
            ("http://127.0.0.1:8000/", Some("http://127.0.0.1:8000/")),
            ("[fd00::1]:443", Some("https://[fd00::1]/")),
            ("ftp://bmc", None),
            ("https://", None),
            ("https://bmc/redfish/v1", None),
            ("https://user@bmc", None),
            ("bmc with spaces", None),
        ];
        for (raw, want) in cases {
            let got = parse(&info(json!({ "redfish_address": raw })));
            match want {
                Some(url) => assert_eq!(got.unwrap().base.as_str(), url, "{raw}"),
                None => assert_eq!(
                    got.unwrap_err().0,
                    format!("Invalid Redfish address {raw} set in driver_info/redfish_address"),
                ),
            }
        }
    }

    #[test]
    fn missing_address_in_ironic_words() {
        for value in [json!({}), json!({"redfish_address": ""}), json!({"redfish_address": null})] {
            let err = parse(&info(value)).unwrap_err();
            assert_eq!(err.0, "Missing 'redfish_address' parameter in node's driver_info");
        }
    }

    #[test]
    fn defaults() {
        let s = parse(&info(json!({"redfish_address": "bmc", "ipmi_address": "x"}))).unwrap();
        assert_eq!(s.system_path, None);
        assert_eq!(s.username, None);
        assert_eq!(s.password, None);
        assert_eq!(s.verify_ca, VerifyCa::System);
        assert_eq!(s.auth_type, AuthType::Auto);
        assert_eq!(s.address(), "https://bmc");
    }

    #[test]
    fn system_ids() {
        let cases = [
            ("1", Some("/redfish/v1/Systems/1")),
            ("/redfish/v1/Systems/abc/", Some("/redfish/v1/Systems/abc")),
            ("System.Embedded.1", Some("/redfish/v1/Systems/System.Embedded.1")),
            ("a/b", None),
        ];
        for (raw, want) in cases {
            let got = parse(&info(json!({"redfish_address": "bmc", "redfish_system_id": raw})));
            match want {
                Some(path) => assert_eq!(got.unwrap().system_path.as_deref(), Some(path)),
                None => assert!(got.unwrap_err().0.contains("redfish_system_id"), "{raw}"),
            }
        }
    }

    #[test]
    fn verify_ca_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "x").unwrap();
        let file_str = file.to_str().unwrap();
        let cases = [
            (json!(true), Some(VerifyCa::System)),
            (json!(false), Some(VerifyCa::Insecure)),
            (json!("True"), Some(VerifyCa::System)),
            (json!("no"), Some(VerifyCa::Insecure)),
            (json!("0"), Some(VerifyCa::Insecure)),
            (json!(file_str), Some(VerifyCa::Path(file.clone()))),
            (json!(dir.path().to_str().unwrap()), Some(VerifyCa::Path(dir.path().to_owned()))),
            (json!("/no/such/ca.pem"), None),
            (json!("maybe"), None),
            (json!(3), None),
        ];
        for (value, want) in cases {
            let got =
                parse(&info(json!({"redfish_address": "bmc", "redfish_verify_ca": value.clone()})));
            match want {
                Some(v) => assert_eq!(got.unwrap().verify_ca, v, "{value}"),
                None => {
                    let err = got.unwrap_err().0;
                    assert!(
                        err.starts_with(
                            "Invalid value type set in driver_info/redfish_verify_ca. The value \
                             should be a Boolean or the path to a file/directory, not \""
                        ),
                        "{err}"
                    );
                }
            }
        }
    }

    #[test]
    fn auth_types() {
        for (raw, want) in [
            ("basic", Some(AuthType::Basic)),
            ("session", Some(AuthType::Session)),
            ("auto", Some(AuthType::Auto)),
            ("digest", None),
        ] {
            let got = parse(&info(json!({"redfish_address": "bmc", "redfish_auth_type": raw})));
            match want {
                Some(a) => assert_eq!(got.unwrap().auth_type, a),
                None => assert_eq!(
                    got.unwrap_err().0,
                    "Invalid value \"digest\" set in driver_info/redfish_auth_type. The value \
                     should be one of \"basic, session, auto\""
                ),
            }
        }
    }

    #[test]
    fn credentials_and_redacted_debug() {
        let s = parse(&info(json!({"redfish_address": "bmc", "redfish_username": "admin",
            "redfish_password": "s3cret"})))
        .unwrap();
        assert_eq!(s.username.as_deref(), Some("admin"));
        assert_eq!(s.password.as_deref(), Some("s3cret"));
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        let err =
            parse(&info(json!({"redfish_address": "bmc", "redfish_username": 5}))).unwrap_err();
        assert!(err.0.contains("driver_info/redfish_username"), "{}", err.0);
    }
}
