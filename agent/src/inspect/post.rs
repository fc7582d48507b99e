//! Posting the inspection report to `ipa-inspection-callback-url`, retried the way
//! ironic-python-agent retries it: connection failures, `5xx` and `409` replies are tried
//! again after an exponential pause (5 attempts, 5 to 30 s apart); any other `4xx` is
//! final. No microversion header is sent, so Ironic answers `{"uuid": …}` as
//! ironic-inspector does; a lookup-shaped reply (`{"node": {...}, "config": {...}}`, from
//! an explicitly versioned endpoint) is understood too.

use std::sync::Arc;
use std::time::Duration;

use ferric_shared::lookup::TokenOffer;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::config::AgentConfig;
use crate::executor::error_chain;
use crate::ironic::client::REQUEST_ID_HEADER;

/// Longest part of an error reply kept for the log.
const MAX_ERROR_TEXT: usize = 512;

/// When to try again. The defaults are ironic-python-agent's; tests shrink them.
#[derive(Debug, Clone, PartialEq)]
pub struct PostRetry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The pause after attempt `n` is `multiplier × 2^(n-1)` seconds, kept within
    /// `[min_wait, max_wait]`.
    pub multiplier: f64,
    pub min_wait: Duration,
    pub max_wait: Duration,
}

impl Default for PostRetry {
    fn default() -> Self {
        Self {
            attempts: 5,
            multiplier: 1.5,
            min_wait: Duration::from_secs(5),
            max_wait: Duration::from_secs(30),
        }
    }
}

impl PostRetry {
    /// The pause after failed attempt number `attempt` (counting from 1).
    pub fn wait_after(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(62) as i32;
        let secs = self.multiplier * 2f64.powi(exponent);
        let secs = secs.min(self.max_wait.as_secs_f64()).max(self.min_wait.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_wait)
    }
}

/// The conductor's answer to an accepted report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectionReply {
    pub status: u16,
    /// `uuid`, or `node.uuid` of a lookup-shaped reply.
    pub node_uuid: Option<String>,
    /// A real agent token from a lookup-shaped reply's `config.agent_token`.
    pub agent_token: Option<String>,
}

/// Why the report was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("no inspection callback URL is configured")]
    NoUrl,
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("setting up TLS for the inspection callback")]
    Tls(#[source] rustls::Error),
    #[error("global request id is not a valid HTTP header value")]
    InvalidRequestId,
    #[error("encoding the inspection report")]
    Encode(#[source] serde_json::Error),
    #[error("{url} refused the inspection report with HTTP {status}: {message}")]
    Refused { url: Url, status: u16, message: String },
    #[error("the inspection report was not accepted after {attempts} attempts; last: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("{url} accepted the inspection report but its reply is not a JSON object")]
    BadReply { url: Url },
}

/// The HTTP client inspection posts with: JSON headers, the request id, the request
/// timeout, and the conductor TLS settings (no trust roots at all without them, which
/// leaves plain HTTP working).
pub fn http_client(
    config: &AgentConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<reqwest::Client, PostError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(id) = &config.global_request_id {
        let value = HeaderValue::from_str(id).map_err(|_| PostError::InvalidRequestId)?;
        headers.insert(REQUEST_ID_HEADER, value);
    }
    let tls = match tls {
        Some(shared) => (*shared).clone(),
        None => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(PostError::Tls)?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(config.http_request_timeout)
        .use_preconfigured_tls(tls)
        .build()
        .map_err(PostError::Client)
}

enum Attempt {
    Accepted(Url, StatusCode, Vec<u8>),
    Final(PostError),
    Retry(String),
}

/// Posts `body`, trying `urls` in order on connection failures within each attempt.
pub async fn post_report(
    http: &reqwest::Client,
    urls: &[Url],
    body: &Value,
    retry: &PostRetry,
) -> Result<InspectionReply, PostError> {
    if urls.is_empty() {
        return Err(PostError::NoUrl);
    }
    let encoded = serde_json::to_vec(body).map_err(PostError::Encode)?;
    let attempts = retry.attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        match attempt_once(http, urls, &encoded).await {
            Attempt::Accepted(url, status, reply) => return parse_reply(url, status, &reply),
            Attempt::Final(e) => return Err(e),
            Attempt::Retry(why) => {
                tracing::warn!(attempt, of = attempts, %why, "inspection report not accepted");
                last = why;
            }
        }
        if attempt < attempts {
            tokio::time::sleep(retry.wait_after(attempt)).await;
        }
    }
    Err(PostError::GaveUp { attempts, last })
}

async fn attempt_once(http: &reqwest::Client, urls: &[Url], body: &[u8]) -> Attempt {
    let mut refused = Vec::new();
    for url in urls {
        tracing::info!(%url, "posting inspection data");
        let resp = match http.post(url.clone()).body(body.to_vec()).send().await {
            Ok(resp) => resp,
            Err(e) if e.is_connect() => {
                refused.push(format!("{url}: {}", error_chain(&e)));
                continue;
            }
            Err(e) if e.is_timeout() => return Attempt::Retry(format!("{url}: timed out")),
            Err(e) => return Attempt::Retry(format!("{url}: {}", error_chain(&e))),
        };
        let status = resp.status();
        let reply = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return Attempt::Retry(format!("{url}: reading the reply: {e}")),
        };
        if status.is_server_error() || status == StatusCode::CONFLICT {
            return Attempt::Retry(format!(
                "{url}: HTTP {}: {}",
                status.as_u16(),
                reply_text(&reply)
            ));
        }
        if status.is_client_error() || !status.is_success() {
            return Attempt::Final(PostError::Refused {
                url: url.clone(),
                status: status.as_u16(),
                message: reply_text(&reply),
            });
        }
        return Attempt::Accepted(url.clone(), status, reply);
    }
    Attempt::Retry(refused.join("; "))
}

fn parse_reply(url: Url, status: StatusCode, body: &[u8]) -> Result<InspectionReply, PostError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        // Nothing to learn from an empty 2xx body, but the report was accepted.
        Err(_) if body.iter().all(u8::is_ascii_whitespace) => Value::Object(Default::default()),
        _ => return Err(PostError::BadReply { url }),
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let node_uuid = text(value.get("uuid")).or_else(|| text(value.pointer("/node/uuid")));
    let token = value.pointer("/config/agent_token").and_then(Value::as_str);
    let agent_token = match TokenOffer::classify(token) {
        TokenOffer::Issued(t) => Some(t.to_owned()),
        _ => None,
    };
    Ok(InspectionReply { status: status.as_u16(), node_uuid, agent_token })
}

/// An error reply's message: Ironic's `faultstring`, inspector's `error.message`, or the
/// text itself, shortened.
fn reply_text(body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let inner = match v.get("error_message") {
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
            Some(other) => Some(other.clone()),
            None => None,
        };
        inner
            .as_ref()
            .and_then(|i| i.get("faultstring"))
            .or_else(|| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let text = message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::StatusCode as AxumStatus;
    use axum::response::IntoResponse;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Script {
        replies: Mutex<VecDeque<(u16, String)>>,
        bodies: Mutex<Vec<Value>>,
    }

    async fn handler(State(script): State<Arc<Script>>, body: Bytes) -> axum::response::Response {
        if let Ok(v) = serde_json::from_slice(&body) {
            script.bodies.lock().unwrap().push(v);
        }
        let (status, text) = script.replies.lock().unwrap().pop_front().unwrap_or((500, "".into()));
        (AxumStatus::from_u16(status).unwrap(), text).into_response()
    }

    /// A server answering with `replies` in order (500 once they run out).
    async fn server(replies: &[(u16, &str)]) -> (Url, Arc<Script>) {
        let script = Arc::new(Script::default());
        script.replies.lock().unwrap().extend(replies.iter().map(|(s, t)| (*s, t.to_string())));
        let app = axum::Router::new()
            .route("/v1/continue_inspection", axum::routing::post(handler))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/v1/continue_inspection").parse().unwrap(), script)
    }

    fn quick() -> PostRetry {
        PostRetry {
            attempts: 5,
            multiplier: 0.01,
            min_wait: Duration::from_millis(10),
            max_wait: Duration::from_millis(40),
        }
    }

    fn client() -> reqwest::Client {
        http_client(&AgentConfig::default(), None).unwrap()
    }

    /// A URL on a port nothing listens on.
    fn dead_url() -> Url {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/v1/continue_inspection").parse().unwrap()
    }

    #[test]
    fn default_waits_follow_ipa() {
        let r = PostRetry::default();
        let waits: Vec<f64> = (1..=6).map(|n| r.wait_after(n).as_secs_f64()).collect();
        // 1.5 × 2^(n-1) within [5, 30]: 1.5, 3, 6, 12, 24, 48.
        assert_eq!(waits, [5.0, 5.0, 6.0, 12.0, 24.0, 30.0]);
        assert_eq!(r.attempts, 5);
    }

    #[tokio::test]
    async fn inspect_post_retries_5xx_and_409_then_reads_the_uuid() {
        let (url, script) = server(&[
            (503, "{\"error_message\": \"{\\\"faultstring\\\": \\\"busy\\\"}\"}"),
            (409, "locked"),
            (202, "{\"uuid\": \"1be26c0b-03f2-4d2e-ae87-c02d7f33c123\"}"),
        ])
        .await;
        let body = serde_json::json!({"inventory": {"interfaces": []}, "error": null});
        let reply = post_report(&client(), &[url], &body, &quick()).await.unwrap();
        assert_eq!(reply.status, 202);
        assert_eq!(reply.node_uuid.as_deref(), Some("1be26c0b-03f2-4d2e-ae87-c02d7f33c123"));
        assert_eq!(reply.agent_token, None);
        let bodies = script.bodies.lock().unwrap();
        assert_eq!(bodies.len(), 3);
        assert!(bodies.iter().all(|b| *b == body));
    }

    #[tokio::test]
    async fn inspect_post_4xx_is_final_and_names_the_message() {
        let (url, script) = server(&[(
            400,
            "{\"error_message\": \"{\\\"faultstring\\\": \\\"No lookup attributes\\\"}\"}",
        )])
        .await;
        let err =
            post_report(&client(), &[url], &serde_json::json!({}), &quick()).await.unwrap_err();
        match err {
            PostError::Refused { status, message, .. } => {
                assert_eq!((status, message.as_str()), (400, "No lookup attributes"));
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        assert_eq!(script.bodies.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn inspect_post_gives_up_after_the_attempts() {
        let (url, script) = server(&[]).await;
        let err =
            post_report(&client(), &[url], &serde_json::json!({}), &quick()).await.unwrap_err();
        assert!(matches!(err, PostError::GaveUp { attempts: 5, ref last } if last.contains("500")));
        assert_eq!(script.bodies.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn inspect_post_moves_past_unreachable_urls_and_reads_lookup_shaped_replies() {
        let token = "t".repeat(43);
        let lookup_shaped = serde_json::json!({
            "node": {"uuid": "5f0a8c1e-9d7b-4c39-8a57-1e2f3a4b5c6d"},
            "config": {"agent_token": token, "heartbeat_timeout": 300},
        })
        .to_string();
        let (url, script) = server(&[(202, &lookup_shaped)]).await;
        let reply = post_report(&client(), &[dead_url(), url], &serde_json::json!({}), &quick())
            .await
            .unwrap();
        assert_eq!(reply.node_uuid.as_deref(), Some("5f0a8c1e-9d7b-4c39-8a57-1e2f3a4b5c6d"));
        assert_eq!(reply.agent_token, Some(token));
        assert_eq!(script.bodies.lock().unwrap().len(), 1);

        // A masked token is not a token.
        let masked =
            serde_json::json!({"node": {"uuid": "u"}, "config": {"agent_token": "******"}});
        let (url, _) = server(&[(202, &masked.to_string())]).await;
        let reply = post_report(&client(), &[url], &serde_json::json!({}), &quick()).await.unwrap();
        assert_eq!((reply.node_uuid.as_deref(), reply.agent_token), (Some("u"), None));
    }

    #[tokio::test]
    async fn inspect_post_unreachable_everywhere_is_retried_then_given_up() {
        let err = post_report(&client(), &[dead_url()], &serde_json::json!({}), &quick())
            .await
            .unwrap_err();
        assert!(matches!(err, PostError::GaveUp { attempts: 5, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn inspect_post_rejects_non_object_success_replies() {
        let (url, _) = server(&[(200, "[1, 2]")]).await;
        let err =
            post_report(&client(), &[url], &serde_json::json!({}), &quick()).await.unwrap_err();
        assert!(matches!(err, PostError::BadReply { .. }), "{err:?}");
        let (url, _) = server(&[(202, "")]).await;
        let reply = post_report(&client(), &[url], &serde_json::json!({}), &quick()).await.unwrap();
        assert_eq!(reply.node_uuid, None);
    }
}
