//! The CLI's HTTP client for the Ironic-compatible API: microversion header on every
//! request, one retry at the server's maximum after a 406, error replies turned into the
//! server's faultstring.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferric_shared::api_version::{ApiVersion, MAX_VERSION_HEADER, VERSION_HEADER};
use ferric_shared::error_body::error_message_from_reply;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// Why a call to the API did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    /// The URL does not parse; `reason` is the parser's explanation.
    #[error("invalid API URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("API URL {url} cannot take a path")]
    NotABaseUrl { url: String },
    #[error("cannot read CA certificates from {path}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no certificate found in {path}")]
    NoCertificates { path: String },
    #[error("TLS setup failed")]
    Tls(#[source] rustls::Error),
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("{method} {url} failed")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error; `message` is its faultstring.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error(
        "the API at {url} speaks microversions up to {max}; this command needs at least {needed}"
    )]
    VersionTooOld { url: String, needed: ApiVersion, max: ApiVersion },
    #[error("{method} {url} answered something that is not the expected JSON")]
    BadReply {
        method: Method,
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The microversions an operation asks for: it sends `preferred` and, after a 406, falls
/// back to the server's maximum as long as that is at least `minimum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub preferred: ApiVersion,
    pub minimum: ApiVersion,
}

impl Need {
    pub const fn new(preferred: ApiVersion, minimum: ApiVersion) -> Self {
        Self { preferred, minimum }
    }

    /// The version to send when the server's maximum is known (or not).
    pub fn to_send(self, server_max: Option<ApiVersion>) -> ApiVersion {
        match server_max {
            Some(max) if max < self.preferred => max,
            _ => self.preferred,
        }
    }
}

/// A successful reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: Vec<u8>,
    pub version_sent: ApiVersion,
}

/// Client for one API endpoint.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    server_max: Arc<Mutex<Option<ApiVersion>>>,
}

impl ApiClient {
    /// `base` is the API root (`http://127.0.0.1:6385`); `ca_file` adds trusted roots for
    /// `https` endpoints (none are trusted otherwise).
    pub fn new(base: &str, ca_file: Option<&Path>) -> Result<Self, ApiClientError> {
        let base = Url::parse(base)
            .map_err(|e| ApiClientError::BadUrl { url: base.to_owned(), reason: e.to_string() })?;
        if base.cannot_be_a_base() {
            return Err(ApiClientError::NotABaseUrl { url: base.to_string() });
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(60))
            .use_preconfigured_tls(tls_config(ca_file)?)
            .build()
            .map_err(ApiClientError::Build)?;
        Ok(Self { http, base, server_max: Arc::new(Mutex::new(None)) })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The API URL of `segments` under the base (each segment percent-encoded).
    pub fn url(&self, segments: &[&str]) -> Result<Url, ApiClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ApiClientError::NotABaseUrl { url: self.base.to_string() })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn known_max(&self) -> Option<ApiVersion> {
        *self.server_max.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember_max(&self, max: ApiVersion) {
        *self.server_max.lock().unwrap_or_else(|e| e.into_inner()) = Some(max);
    }

    /// Sends one request; on 406 learns the server's maximum from
    /// `X-OpenStack-Ironic-API-Maximum-Version` and retries once if that is enough.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        need: Need,
    ) -> Result<Reply, ApiClientError> {
        let mut version = need.to_send(self.known_max());
        if version < need.minimum {
            return Err(self.too_old(need, version));
        }
        let mut retried = false;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(VERSION_HEADER, version.to_string());
            if let Some(body) = body {
                request = request.header(CONTENT_TYPE, "application/json").body(body.to_string());
            }
            let response = request.send().await.map_err(|source| ApiClientError::Transport {
                method: method.clone(),
                url: url.to_string(),
                source: source.without_url(),
            })?;
            let status = response.status();
            let header = |name: &str| {
                response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
            };
            let max = header(MAX_VERSION_HEADER).and_then(|v| v.parse::<ApiVersion>().ok());
            let location = header(LOCATION.as_str());
            let bytes = response.bytes().await.map_err(|source| ApiClientError::Transport {
                method: method.clone(),
                url: url.to_string(),
                source: source.without_url(),
            })?;
            if let Some(max) = max {
                self.remember_max(max);
            }
            if status == StatusCode::NOT_ACCEPTABLE && !retried {
                if let Some(max) = max {
                    if max < version {
                        if max < need.minimum {
                            return Err(self.too_old(need, max));
                        }
                        version = max;
                        retried = true;
                        continue;
                    }
                }
            }
            if !status.is_success() {
                let message = error_message_from_reply(&String::from_utf8_lossy(&bytes));
                let message = if message.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    message
                };
                return Err(ApiClientError::Api { status: status.as_u16(), message });
            }
            return Ok(Reply { status, location, body: bytes.to_vec(), version_sent: version });
        }
    }

    fn too_old(&self, need: Need, max: ApiVersion) -> ApiClientError {
        ApiClientError::VersionTooOld { url: self.base.to_string(), needed: need.minimum, max }
    }

    /// Sends a request and decodes the JSON reply.
    pub async fn json(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        need: Need,
    ) -> Result<Value, ApiClientError> {
        let reply = self.send(method.clone(), url.clone(), body, need).await?;
        serde_json::from_slice(&reply.body).map_err(|source| ApiClientError::BadReply {
            method,
            url: url.to_string(),
            source,
        })
    }
}

/// TLS for `https` endpoints: the ring provider and only the roots of `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ApiClientError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path)
            .map_err(|source| ApiClientError::CaFile { path: shown.clone(), source })?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|source| ApiClientError::CaFile { path: shown.clone(), source })?;
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(ApiClientError::NoCertificates { path: shown });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ApiClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_to_send() {
        let need = Need::new(ApiVersion::new(1, 78), ApiVersion::new(1, 4));
        assert_eq!(need.to_send(None), ApiVersion::new(1, 78));
        assert_eq!(need.to_send(Some(ApiVersion::new(1, 115))), ApiVersion::new(1, 78));
        assert_eq!(need.to_send(Some(ApiVersion::new(1, 60))), ApiVersion::new(1, 60));
    }

    #[test]
    fn urls_encode_segments() {
        let client = ApiClient::new("http://127.0.0.1:6385/", None).unwrap();
        let url = client.url(&["v1", "nodes", "rack 1/u7", "states"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:6385/v1/nodes/rack%201%2Fu7/states");
        let prefixed = ApiClient::new("http://h/baremetal", None).unwrap();
        assert_eq!(prefixed.url(&["v1"]).unwrap().as_str(), "http://h/baremetal/v1");
        assert!(matches!(
            ApiClient::new("not a url", None).unwrap_err(),
            ApiClientError::BadUrl { .. }
        ));
        assert!(matches!(
            ApiClient::new("mailto:x@y", None).unwrap_err(),
            ApiClientError::NotABaseUrl { .. }
        ));
    }
}
