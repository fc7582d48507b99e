//! One BMC's HTTP endpoint: authentication (basic or a reused session), one request in
//! flight at a time, bounded backoff on transient failures, and the mapping of HTTP
//! outcomes to [`BmcError`].

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, IF_MATCH, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::settings::{AuthType, RedfishSettings};
use super::tls::{self, RedfishTlsError};
use super::wire;
use crate::bmc::limit::RequestLimiter;
use crate::bmc::BmcError;

/// Where the session collection is when the service root does not say otherwise.
const SESSIONS_PATH: &str = "/redfish/v1/SessionService/Sessions";
const ROOT_PATH: &str = "/redfish/v1/";
const AUTH_TOKEN: &str = "X-Auth-Token";

/// Timing of the driver's calls. The defaults suit real BMCs; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedfishOptions {
    /// One HTTP request, connection included.
    pub request_timeout: Duration,
    /// Establishing the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long a hard power change may take to show in `PowerState` (Ironic's
    /// `[conductor]power_state_change_timeout`).
    pub power_timeout: Duration,
    /// The wait for a soft power off when the caller gives none.
    pub soft_power_off_timeout: Duration,
    /// Between two reads while waiting for a power state or a task.
    pub poll_interval: Duration,
    /// How long a task monitor (202 + `Location`) may run.
    pub task_timeout: Duration,
    /// Extra attempts after a busy (503/429) or unreachable BMC.
    pub transient_retries: u32,
    /// The first backoff; it doubles per attempt unless the BMC sent `Retry-After`.
    pub backoff: Duration,
    /// The longest `Retry-After` honoured; a longer one ends the call as busy.
    pub max_retry_after: Duration,
}

impl Default for RedfishOptions {
    fn default() -> Self {
        RedfishOptions {
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            power_timeout: Duration::from_secs(60),
            soft_power_off_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
            task_timeout: Duration::from_secs(600),
            transient_retries: 2,
            backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// An HTTP reply whose status the caller decides on.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }

    pub fn json<T: DeserializeOwned>(&self, address: &str, what: &str) -> Result<T, BmcError> {
        serde_json::from_slice(&self.body).map_err(|e| BmcError::Protocol {
            address: address.to_owned(),
            detail: format!("{what}: the reply is not the expected JSON ({e})"),
        })
    }
}

struct Session {
    token: String,
    /// The session resource, deleted at logout.
    location: Option<String>,
}

#[derive(Default)]
struct AuthState {
    session: Option<Session>,
    /// `auto` found no session service: basic from now on.
    basic_only: bool,
}

/// One BMC endpoint, shared by every handle the driver gives out for it.
pub struct Endpoint {
    address: String,
    base: Url,
    http: reqwest::Client,
    username: Option<String>,
    password: Option<String>,
    auth_type: AuthType,
    options: RedfishOptions,
    /// The conductor-wide cap on requests in flight: one permit per HTTP request.
    limiter: RequestLimiter,
    /// Held for the whole of each request (re-login and backoff included), so a BMC
    /// never sees two requests from this conductor at once.
    state: tokio::sync::Mutex<AuthState>,
    /// The system found when `redfish_system_id` was not given.
    default_system: std::sync::Mutex<Option<String>>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("auth_type", &self.auth_type)
            .finish_non_exhaustive()
    }
}

/// The text of an error and its sources, for error details that are not sources.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn is_tls_error(err: &reqwest::Error) -> bool {
    /// Whether `err` is a rustls error, possibly inside (nested) io::Errors, which hide
    /// what they wrap from `source()`.
    fn rustls_inside(err: &(dyn std::error::Error + 'static)) -> bool {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        match err.downcast_ref::<std::io::Error>().and_then(|e| e.get_ref()) {
            Some(inner) => rustls_inside(inner),
            None => false,
        }
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(s) = source {
        if rustls_inside(s) {
            return true;
        }
        source = s.source();
    }
    false
}

impl Endpoint {
    pub fn new(
        settings: &RedfishSettings,
        options: RedfishOptions,
    ) -> Result<Self, RedfishTlsError> {
        let tls = tls::client_config(&settings.verify_ca)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert("OData-Version", HeaderValue::from_static("4.0"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .use_preconfigured_tls(tls)
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            // BMCs handle few connections; one kept-alive connection is plenty.
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                RedfishTlsError::Config(rustls::Error::General(format!("HTTP client: {e}")))
            })?;
        Ok(Endpoint {
            address: settings.address(),
            base: settings.base.clone(),
            http,
            username: settings.username.clone(),
            password: settings.password.clone(),
            auth_type: settings.auth_type,
            options,
            limiter: RequestLimiter::unbounded(),
            state: tokio::sync::Mutex::new(AuthState::default()),
            default_system: std::sync::Mutex::new(None),
        })
    }

    /// Each HTTP request first takes a permit of `limiter`.
    pub fn with_limiter(mut self, limiter: RequestLimiter) -> Self {
        self.limiter = limiter;
        self
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn options(&self) -> &RedfishOptions {
        &self.options
    }

    pub fn cached_default_system(&self) -> Option<String> {
        self.default_system.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn cache_default_system(&self, path: &str) {
        *self.default_system.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_owned());
    }

    /// The URL of `target`: a path on this BMC, or an absolute URL that must point at
    /// this BMC (a `Location` header may be absolute; nothing else is ever contacted).
    pub fn url(&self, target: &str) -> Result<Url, BmcError> {
        let url = self.base.join(target).map_err(|e| BmcError::Protocol {
            address: self.address.clone(),
            detail: format!("unusable resource path {target:?} ({e})"),
        })?;
        if url.origin() != self.base.origin() {
            return Err(BmcError::Protocol {
                address: self.address.clone(),
                detail: format!("the BMC pointed at another host: {url}"),
            });
        }
        Ok(url)
    }

    fn has_credentials(&self) -> bool {
        self.username.is_some()
    }

    fn wants_session(&self, state: &AuthState) -> bool {
        self.has_credentials()
            && match self.auth_type {
                AuthType::Basic => false,
                AuthType::Session => true,
                AuthType::Auto => !state.basic_only,
            }
    }

    fn transport_error(&self, err: &reqwest::Error, operation: &str) -> BmcError {
        if is_tls_error(err) {
            BmcError::Protocol {
                address: self.address.clone(),
                detail: format!("TLS handshake failed: {}", chain(err)),
            }
        } else if err.is_timeout() {
            BmcError::Timeout {
                address: self.address.clone(),
                operation: operation.to_owned(),
                timeout: self.options.request_timeout,
            }
        } else {
            BmcError::Unreachable { address: self.address.clone(), detail: chain(err) }
        }
    }

    async fn raw(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        headers: HeaderMap,
        auth: Option<&str>,
        basic: bool,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut request = self.http.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").json(body);
        }
        if let Some(token) = auth {
            request = request.header(AUTH_TOKEN, token);
        } else if basic {
            if let Some(user) = &self.username {
                request = request.basic_auth(user, self.password.as_deref());
            }
        }
        request.send().await
    }

    /// One HTTP request and its whole reply, under a permit of the limiter (released
    /// before any backoff or polling wait).
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        headers: HeaderMap,
        auth: Option<&str>,
        basic: bool,
    ) -> Result<Reply, reqwest::Error> {
        let _permit = self.limiter.acquire().await;
        let response = self.raw(method, url, body, headers, auth, basic).await?;
        Self::read(response).await
    }

    async fn read(response: reqwest::Response) -> Result<Reply, reqwest::Error> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply { status, headers, body })
    }

    /// Creates a session. `Ok(None)`: `auto` and the BMC has no session service.
    async fn login(&self, state: &mut AuthState) -> Result<Option<Session>, BmcError> {
        let sessions_path = match self.sessions_path().await? {
            Some(path) => path,
            None if self.auth_type == AuthType::Auto => {
                tracing::info!(bmc = %self.address,
                    "the BMC offers no Redfish session service; using basic authentication");
                state.basic_only = true;
                return Ok(None);
            }
            None => SESSIONS_PATH.to_owned(),
        };
        let url = self.url(&sessions_path)?;
        let body = serde_json::json!({
            "UserName": self.username.as_deref().unwrap_or_default(),
            "Password": self.password.as_deref().unwrap_or_default(),
        });
        let reply = self
            .exchange(Method::POST, url, Some(&body), HeaderMap::new(), None, false)
            .await
            .map_err(|e| self.transport_error(&e, "session login"))?;
        let token = reply.header(AUTH_TOKEN).map(str::to_owned);
        match (reply.status, token) {
            (status, Some(token)) if status.is_success() => {
                let location = reply.header(LOCATION.as_str()).map(str::to_owned);
                tracing::debug!(bmc = %self.address, "Redfish session created");
                Ok(Some(Session { token, location }))
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
                Err(BmcError::AuthFailed { address: self.address.clone() })
            }
            (status, _) if self.auth_type == AuthType::Auto => {
                tracing::info!(bmc = %self.address, %status,
                    "Redfish session login failed; using basic authentication");
                state.basic_only = true;
                Ok(None)
            }
            (status, _) => Err(self.status_error(&reply, status, "session login")),
        }
    }

    /// The session collection the service root names, `None` when it names none. The
    /// root needs no authentication by the standard, but some BMCs want it anyway: then
    /// it is read with basic authentication (and rejected credentials end the login).
    async fn sessions_path(&self) -> Result<Option<String>, BmcError> {
        let mut reply = None;
        for basic in [false, true] {
            let url = self.url(ROOT_PATH)?;
            let response = self
                .exchange(Method::GET, url, None, HeaderMap::new(), None, basic)
                .await
                .map_err(|e| self.transport_error(&e, "read the service root"))?;
            if response.status != StatusCode::UNAUTHORIZED {
                reply = Some(response);
                break;
            }
        }
        let Some(reply) = reply else {
            return Err(BmcError::AuthFailed { address: self.address.clone() });
        };
        if !reply.status.is_success() {
            return Ok(None);
        }
        let root: wire::ServiceRoot = serde_json::from_slice(&reply.body).unwrap_or_default();
        Ok(match (root.links.sessions, root.session_service) {
            (Some(sessions), _) => Some(sessions.odata_id),
            (None, Some(_)) => Some(SESSIONS_PATH.to_owned()),
            (None, None) => None,
        })
    }

    /// Sends one request and returns whatever status came back, after authentication
    /// (a rejected session is renewed once) and bounded retries of busy or unreachable
    /// BMCs. Auth failures and transport errors are errors; other statuses are not.
    pub async fn send(
        &self,
        method: Method,
        target: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        operation: &str,
    ) -> Result<Reply, BmcError> {
        let url = self.url(target)?;
        let mut headers = HeaderMap::new();
        if let Some(etag) = if_match {
            let value = HeaderValue::from_str(etag).map_err(|_| BmcError::Protocol {
                address: self.address.clone(),
                detail: format!("unusable ETag {etag:?}"),
            })?;
            headers.insert(IF_MATCH, value);
        }
        let mut state = self.state.lock().await;
        let mut relogged = false;
        let mut attempt = 0u32;
        loop {
            if self.wants_session(&state) && state.session.is_none() {
                match self.login(&mut state).await {
                    Ok(session) => state.session = session,
                    Err(BmcError::Unreachable { .. })
                        if attempt < self.options.transient_retries =>
                    {
                        let wait = self.backoff(attempt);
                        attempt += 1;
                        tracing::debug!(bmc = %self.address, attempt, ?wait,
                            "Redfish BMC unreachable at login; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let token = state.session.as_ref().map(|s| s.token.clone());
            let result = self
                .exchange(
                    method.clone(),
                    url.clone(),
                    body,
                    headers.clone(),
                    token.as_deref(),
                    true,
                )
                .await;
            let wait = match result {
                Ok(reply) if reply.status == StatusCode::UNAUTHORIZED => {
                    if token.is_some() && !relogged {
                        // The BMC expired or dropped the session: log in again once.
                        tracing::debug!(bmc = %self.address, "Redfish session rejected; renewing");
                        state.session = None;
                        relogged = true;
                        continue;
                    }
                    return Err(BmcError::AuthFailed { address: self.address.clone() });
                }
                Ok(reply)
                    if reply.status == StatusCode::SERVICE_UNAVAILABLE
                        || reply.status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    let retry_after = reply
                        .header("retry-after")
                        .and_then(wire::retry_after_secs)
                        .map(Duration::from_secs);
                    let busy = BmcError::Busy {
                        address: self.address.clone(),
                        detail: format!("HTTP {}", reply.status.as_u16()),
                        retry_after,
                    };
                    match retry_after {
                        Some(after) if after > self.options.max_retry_after => return Err(busy),
                        _ if attempt >= self.options.transient_retries => return Err(busy),
                        Some(after) => after,
                        None => self.backoff(attempt),
                    }
                }
                Ok(reply) => return Ok(reply),
                Err(e) => {
                    let error = self.transport_error(&e, operation);
                    // Repeating is safe when nothing reached the BMC, or for a read; an
                    // action that may have arrived (e.g. a reset) must not run twice.
                    let repeatable = e.is_connect() || method == Method::GET;
                    if !matches!(error, BmcError::Unreachable { .. })
                        || !repeatable
                        || attempt >= self.options.transient_retries
                    {
                        return Err(error);
                    }
                    self.backoff(attempt)
                }
            };
            attempt += 1;
            tracing::debug!(bmc = %self.address, operation, attempt, ?wait,
                "Redfish BMC busy or unreachable; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.options.backoff.saturating_mul(1u32 << attempt.min(16))
    }

    /// The error for a non-success status.
    pub fn status_error(&self, reply: &Reply, status: StatusCode, operation: &str) -> BmcError {
        let message = wire::error_message(&reply.body)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned());
        let address = self.address.clone();
        match status {
            StatusCode::UNAUTHORIZED => BmcError::AuthFailed { address },
            StatusCode::FORBIDDEN => BmcError::InsufficientPrivilege {
                address,
                operation: operation.to_owned(),
                detail: message,
            },
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => BmcError::Unsupported {
                what: format!("{operation} on {address} (HTTP {}: {message})", status.as_u16()),
            },
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => BmcError::Busy {
                address,
                detail: format!("{operation}: HTTP {}: {message}", status.as_u16()),
                retry_after: None,
            },
            _ => BmcError::Protocol {
                address,
                detail: format!("{operation} failed with HTTP {}: {message}", status.as_u16()),
            },
        }
    }

    /// [`Self::send`], with any non-success status as an error.
    pub async fn call(
        &self,
        method: Method,
        target: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        operation: &str,
    ) -> Result<Reply, BmcError> {
        let reply = self.send(method, target, body, if_match, operation).await?;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(self.status_error(&reply, reply.status, operation))
        }
    }

    /// GETs a resource as `T`, with its ETag.
    pub async fn get<T: DeserializeOwned>(
        &self,
        target: &str,
        operation: &str,
    ) -> Result<(T, Option<String>), BmcError> {
        let reply = self.call(Method::GET, target, None, None, operation).await?;
        let value = reply.json(&self.address, operation)?;
        Ok((value, reply.etag().map(str::to_owned)))
    }

    /// Deletes the session, if any (logout). Failures are logged: the BMC expires
    /// abandoned sessions itself.
    pub async fn logout(&self) {
        let mut state = self.state.lock().await;
        let Some(session) = state.session.take() else { return };
        let Some(location) = session.location else { return };
        let Ok(url) = self.url(&location) else { return };
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&session.token) {
            headers.insert(AUTH_TOKEN, value);
        }
        let permit = self.limiter.acquire().await;
        let result = self.http.delete(url).headers(headers).send().await;
        drop(permit);
        match result {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {
                tracing::debug!(bmc = %self.address, "Redfish session closed");
            }
            Ok(r) => {
                tracing::info!(bmc = %self.address, status = %r.status(), "Redfish logout refused")
            }
            Err(e) => {
                tracing::info!(bmc = %self.address, error = %chain(&e), "Redfish logout failed")
            }
        }
    }

    /// Whether a session is open (for tests and diagnostics).
    pub async fn has_session(&self) -> bool {
        self.state.lock().await.session.is_some()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Best effort: a session left open costs the BMC one of its few session slots
        // until it times out, so log out in the background when a runtime is there.
        let Some(session) = self.state.get_mut().session.take() else { return };
        let Some(location) = session.location else { return };
        let Ok(url) = self.url(&location) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let http = self.http.clone();
        runtime.spawn(async move {
            let _ = http.delete(url).header(AUTH_TOKEN, session.token).send().await;
        });
    }
}
