//! HTTP client for the conductor (or Ironic) API: the headers every call carries, failover
//! across several API URLs, and microversion detection.

use std::sync::{Arc, Mutex};

use ferric_shared::api_version::{ApiVersion, VERSION_HEADER};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::config::AgentConfig;

/// Carries `ipa-global-request-id` so conductor logs can be correlated with the agent's.
pub const REQUEST_ID_HEADER: &str = "X-OpenStack-Request-ID";

/// Longest error text kept from a reply body; HTML error pages can be large.
const MAX_ERROR_TEXT: usize = 512;

/// Client for the conductor API, shared by lookup and heartbeat.
#[derive(Debug)]
pub struct ConductorClient {
    http: reqwest::Client,
    /// API base URLs in the order they are tried; the last one that answered is first.
    urls: Mutex<Vec<Url>>,
    configured_version: Option<ApiVersion>,
    detected_version: OnceCell<ApiVersion>,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConductorClientError {
    #[error("no conductor API URL is configured (ipa-api-url)")]
    NoApiUrl,
    #[error("global request id is not a valid HTTP header value")]
    InvalidRequestId,
    #[error("setting up TLS for the conductor API")]
    Tls(#[source] rustls::Error),
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Why a request got no HTTP reply.
#[derive(Debug, thiserror::Error)]
pub enum ConductorRequestError {
    #[error("no conductor API URL accepted a connection (tried {tried})")]
    Unreachable {
        tried: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {url} failed")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("API URL {url} cannot take a path")]
    NotABaseUrl { url: String },
    #[error("no conductor API URL is configured")]
    NoApiUrl,
    #[error("reply from {url} is larger than {limit} bytes")]
    ReplyTooLarge { url: String, limit: usize },
}

/// An HTTP reply, whatever its status.
#[derive(Debug, Clone)]
pub struct ConductorReply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// The URL the request was sent to.
    pub url: Url,
}

impl ConductorReply {
    /// The human-readable message of an Ironic error reply.
    pub fn error_message(&self) -> String {
        ironic_error_message(&self.body)
    }
}

impl ConductorClient {
    /// Builds the client from the agent's configuration. `tls` is the verified client
    /// configuration for `https` API URLs (built from `ipa-ca-file` / `ipa-insecure`); without
    /// it only plain `http` URLs work, because no trust roots are loaded.
    pub fn new(
        config: &AgentConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, ConductorClientError> {
        if config.api_urls.is_empty() {
            return Err(ConductorClientError::NoApiUrl);
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(id) = &config.global_request_id {
            let value =
                HeaderValue::from_str(id).map_err(|_| ConductorClientError::InvalidRequestId)?;
            headers.insert(REQUEST_ID_HEADER, value);
        }
        let tls = match tls {
            Some(shared) => (*shared).clone(),
            None => no_roots_tls().map_err(ConductorClientError::Tls)?,
        };
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.http_request_timeout)
            .use_preconfigured_tls(tls)
            .build()
            .map_err(ConductorClientError::Build)?;
        Ok(Self {
            http,
            urls: Mutex::new(config.api_urls.clone()),
            configured_version: config.ironic_api_version,
            detected_version: OnceCell::new(),
        })
    }

    /// The API URLs in the order the next request will try them.
    pub fn api_urls(&self) -> Vec<Url> {
        self.urls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The API version to negotiate from: `ipa-ironic-api-version` if configured, else
    /// `default_version.version` of the API root. Any detection failure gives 1.31 (the
    /// oldest Ironic the agent supports); only a successful detection is cached, so a
    /// conductor that was not up yet is asked again next time.
    pub async fn api_version(&self) -> ApiVersion {
        self.detected_api_version().await.unwrap_or(ApiVersion::AGENT_FLOOR)
    }

    /// The configured or detected version, or `None` when detection failed this time
    /// (nothing is cached then, so a later call asks again).
    pub async fn detected_api_version(&self) -> Option<ApiVersion> {
        if let Some(v) = self.configured_version.or_else(|| self.detected_version.get().copied()) {
            return Some(v);
        }
        match self.detect_version().await {
            Ok(v) => {
                tracing::info!(version = %v, "detected conductor API version");
                Some(*self.detected_version.get_or_init(|| async { v }).await)
            }
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "could not detect the conductor API version yet"
                );
                None
            }
        }
    }

    async fn detect_version(&self) -> Result<ApiVersion, VersionDetectError> {
        let reply = self.request::<()>(Method::GET, &[""], &[], None, None).await?;
        if reply.status != StatusCode::OK {
            return Err(VersionDetectError::Status {
                status: reply.status.as_u16(),
                message: reply.error_message(),
            });
        }
        let root: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(VersionDetectError::Json)?;
        let text = root
            .get("default_version")
            .and_then(|d| d.get("version"))
            .and_then(serde_json::Value::as_str)
            .ok_or(VersionDetectError::NoDefaultVersion)?;
        text.parse().map_err(VersionDetectError::Version)
    }

    /// Sends one request. `segments` are appended to each API URL's path (so a URL with
    /// a path prefix keeps it); an empty last segment gives a trailing slash. Connection
    /// failures move on to the next URL, and the URL that answers becomes the first.
    pub async fn request<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        version: Option<ApiVersion>,
        body: Option<&B>,
    ) -> Result<ConductorReply, ConductorRequestError> {
        let urls = self.api_urls();
        let mut last_refusal = None;
        for (index, base) in urls.iter().enumerate() {
            let url = endpoint(base, segments)?;
            let mut req = self.http.request(method.clone(), url.clone());
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(v) = version {
                req = req.header(VERSION_HEADER, v.to_string());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(resp) => {
                    if index > 0 {
                        self.promote(base);
                    }
                    let status = resp.status();
                    let url = resp.url().clone();
                    let body = read_limited(resp, &url).await?;
                    return Ok(ConductorReply { status, body, url });
                }
                Err(source) if source.is_connect() => {
                    tracing::warn!(
                        url = %base,
                        error = &source as &dyn std::error::Error,
                        "cannot connect to conductor API URL"
                    );
                    last_refusal = Some(source);
                }
                Err(source) => {
                    return Err(ConductorRequestError::Transport { url: url.to_string(), source })
                }
            }
        }
        match last_refusal {
            Some(source) => Err(ConductorRequestError::Unreachable {
                tried: urls.iter().map(Url::as_str).collect::<Vec<_>>().join(", "),
                source,
            }),
            None => Err(ConductorRequestError::NoApiUrl),
        }
    }

    fn promote(&self, working: &Url) {
        let mut urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = urls.iter().position(|u| u == working) {
            urls[..=pos].rotate_right(1);
        }
    }
}

/// Why version detection failed (always answered by falling back to 1.31).
#[derive(Debug, thiserror::Error)]
enum VersionDetectError {
    #[error("API root unreachable")]
    Request(#[from] ConductorRequestError),
    #[error("API root answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("API root is not JSON")]
    Json(#[source] serde_json::Error),
    #[error("API root has no default_version.version")]
    NoDefaultVersion,
    #[error("API root default_version.version is unusable")]
    Version(#[source] ferric_shared::api_version::ApiVersionParseError),
}

fn endpoint(base: &Url, segments: &[&str]) -> Result<Url, ConductorRequestError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| ConductorRequestError::NotABaseUrl { url: base.to_string() })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A TLS configuration that trusts nothing: plain-HTTP URLs work, HTTPS ones fail
/// verification instead of silently trusting whatever answers.
fn no_roots_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// The message of an Ironic error reply. Ironic wraps errors as
/// `{"error_message": "<JSON string>"}` (older releases: a JSON object) whose inner object
/// carries `faultstring`; some middleware uses `title`. Anything else is returned as text.
pub(crate) fn ironic_error_message(body: &[u8]) -> String {
    let raw = || truncate(String::from_utf8_lossy(body).trim());
    let Ok(outer) = serde_json::from_slice::<serde_json::Value>(body) else {
        return raw();
    };
    let inner = match outer.get("error_message") {
        Some(serde_json::Value::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.clone()))
        }
        Some(other) => other.clone(),
        None => outer,
    };
    match &inner {
        serde_json::Value::String(s) => truncate(s),
        serde_json::Value::Object(map) => map
            .get("faultstring")
            .and_then(serde_json::Value::as_str)
            .or_else(|| map.get("title").and_then(serde_json::Value::as_str))
            .map(truncate)
            .unwrap_or_else(raw),
        _ => raw(),
    }
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Conductor replies are small JSON documents; a bigger one is a misbehaving server or
/// proxy, and must not exhaust the ramdisk's memory.
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

async fn read_limited(
    mut resp: reqwest::Response,
    url: &Url,
) -> Result<Vec<u8>, ConductorRequestError> {
    let mut body = Vec::new();
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|source| ConductorRequestError::Transport { url: url.to_string(), source })?;
        let Some(chunk) = chunk else { return Ok(body) };
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(ConductorRequestError::ReplyTooLarge {
                url: url.to_string(),
                limit: MAX_REPLY_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_replies_are_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let len = MAX_REPLY_BYTES + 1;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
            sock.write_all(head.as_bytes()).await.unwrap();
            let block = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent < len {
                let n = block.len().min(len - sent);
                if sock.write_all(&block[..n]).await.is_err() {
                    return; // the client gave up, as it should
                }
                sent += n;
            }
        });
        let config = AgentConfig {
            api_urls: vec![format!("http://{addr}").parse().unwrap()],
            ironic_api_version: Some(ApiVersion::new(1, 68)),
            ..AgentConfig::default()
        };
        let client = ConductorClient::new(&config, None).unwrap();
        let err = client.request::<()>(Method::GET, &["v1"], &[], None, None).await.unwrap_err();
        assert!(matches!(err, ConductorRequestError::ReplyTooLarge { .. }), "{err:?}");
    }

    #[test]
    fn error_messages_in_every_shape() {
        let inner = r#"{"faultcode": "Client", "faultstring": "Node abc could not be found.", "debuginfo": null}"#;
        let wrapped = serde_json::json!({ "error_message": inner }).to_string();
        let table: &[(&str, &str)] = &[
            (&wrapped, "Node abc could not be found."),
            (r#"{"error_message": {"faultcode": "Client", "faultstring": "locked"}}"#, "locked"),
            (r#"{"error_message": {"title": "Conflict"}}"#, "Conflict"),
            (r#"{"title": "Forbidden", "description": "x"}"#, "Forbidden"),
            (r#"{"error_message": "plain words"}"#, "plain words"),
            ("<html>Bad Gateway</html>\n", "<html>Bad Gateway</html>"),
            ("", ""),
            (r#"{"other": 1}"#, r#"{"other": 1}"#),
        ];
        for (body, want) in table {
            assert_eq!(ironic_error_message(body.as_bytes()), *want, "{body}");
        }
        let long = "é".repeat(2000);
        let got = ironic_error_message(long.as_bytes());
        assert_eq!(got.chars().count(), MAX_ERROR_TEXT + 1);
        assert!(ironic_error_message(&[0xff, 0xfe]).contains('\u{fffd}'));
    }

    #[test]
    fn endpoints_keep_the_base_path() {
        let table: &[(&str, &[&str], &str)] = &[
            ("http://10.0.0.1:6385", &["v1", "lookup"], "http://10.0.0.1:6385/v1/lookup"),
            ("http://10.0.0.1:6385/", &["v1", "lookup"], "http://10.0.0.1:6385/v1/lookup"),
            (
                "https://h/baremetal/",
                &["v1", "heartbeat", "n1"],
                "https://h/baremetal/v1/heartbeat/n1",
            ),
            ("https://h/baremetal", &[""], "https://h/baremetal/"),
            ("http://h:1", &[""], "http://h:1/"),
            ("http://h:1?x=1#f", &["v1", "a/b"], "http://h:1/v1/a%2Fb"),
        ];
        for (base, segments, want) in table {
            let got = endpoint(&base.parse().unwrap(), segments).unwrap();
            assert_eq!(got.as_str(), *want, "{base} + {segments:?}");
        }
        assert!(endpoint(&"mailto:a@b".parse().unwrap(), &["v1"]).is_err());
    }
}
