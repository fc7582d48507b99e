//! The conductor's client for the agent's command API (ironic-python-agent's REST API,
//! spoken by `ferric-agent`), driven the way Ironic drives it.
//!
//! One [`AgentClient`] is built per node from its `driver_internal_info`: `agent_url`, the
//! agent token (`agent_secret_token`, sent as the `agent_token` query parameter on every
//! command call, never as a header) and `agent_verify_ca`, the PEM certificate the agent
//! sent with its heartbeat. Over HTTPS exactly that certificate is trusted, and the
//! address in the URL must match its subjectAltName.
//!
//! Transport failures are retried, and a command POST whose reply was lost is checked
//! against the agent's command list first: if the last command has the same name and is
//! still running, the agent did accept it, and sending it again would only get "busy".
//!
//! The pure pieces the orchestrator needs beside the client live in [`progress`]
//! (deciding a step's fate from the command list) and [`image`] (the `image_info` of
//! the `write_image` step).

pub mod image;
pub mod progress;

use std::time::Duration;

use ferric_shared::command::{CommandError, CommandRequest, CommandResult, CommandStatus};
use ferric_shared::error_body::error_message_from_reply;
use ferric_shared::inventory::Inventory;
use ferric_shared::steps::{GetStepsResult, HardwareManagerVersions, NodeStep, StepKind};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde_json::{Map, Value};

pub use image::{build_image_info, write_image_step, ImageInfoBuildError, ImageInfoConfig};
pub use progress::{command_error_message, running_step_progress, step_progress, StepProgress};

/// `driver_internal_info` key of the agent's callback URL.
pub const AGENT_URL_KEY: &str = "agent_url";
/// `driver_internal_info` key of the agent token issued at lookup.
pub const AGENT_TOKEN_KEY: &str = "agent_secret_token";
/// `driver_internal_info` key of the agent's certificate (PEM) from its heartbeat.
pub const AGENT_VERIFY_CA_KEY: &str = "agent_verify_ca";

/// How hard the client tries. The defaults are Ironic's `[agent]` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentClientConfig {
    /// Per-request limit, reply body included (`[agent]command_timeout`).
    pub command_timeout: Duration,
    /// Attempts for a request that gets no reply (`[agent]max_command_attempts`).
    pub max_command_attempts: u32,
    /// Pause between such attempts.
    pub retry_interval: Duration,
    /// Checks, after `system.lockdown`, that the agent has stopped answering
    /// (`[agent]post_deploy_get_power_state_retries`).
    pub lockdown_checks: u32,
    /// Pause between those checks (`[agent]post_deploy_get_power_state_retry_interval`).
    pub lockdown_check_interval: Duration,
    /// Largest reply body read; collected logs are the largest legitimate replies.
    pub max_reply_bytes: usize,
}

impl Default for AgentClientConfig {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(60),
            max_command_attempts: 3,
            retry_interval: Duration::from_secs(2),
            lockdown_checks: 6,
            lockdown_check_interval: Duration::from_secs(5),
            max_reply_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a call to the agent did not give the expected answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentClientError {
    #[error("driver_internal_info has no agent_url")]
    NoAgentUrl,
    #[error("driver_internal_info field {0} is not a string")]
    NotAString(&'static str),
    #[error("agent URL {url:?} is not an http(s) URL")]
    InvalidAgentUrl { url: String },
    #[error("agent URL {url} uses https but no agent certificate (agent_verify_ca) is recorded")]
    NoAgentCertificate { url: String },
    #[error("the recorded agent certificate (agent_verify_ca) holds no PEM certificate")]
    EmptyAgentCertificate,
    #[error("the recorded agent certificate (agent_verify_ca) is not valid PEM")]
    UnreadableAgentCertificate(#[source] std::io::Error),
    #[error("the recorded agent certificate (agent_verify_ca) cannot be trusted")]
    UnusableAgentCertificate(#[source] rustls::Error),
    #[error("setting up TLS for the agent")]
    TlsSetup(#[source] rustls::Error),
    #[error("building the HTTP client for the agent")]
    ClientSetup(#[source] reqwest::Error),
    #[error("cannot encode the parameters of {command}")]
    Params {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    /// HTTP 409, or a fault saying the agent is busy: another command is still running.
    /// Ironic retries later (AgentInProgress).
    #[error("agent is busy and refused {command}: {faultstring}")]
    Busy { command: String, faultstring: String },
    /// HTTP 401: the agent holds no token or another one.
    #[error("agent refused the agent token for {command}: {faultstring}")]
    Unauthorized { command: String, faultstring: String },
    /// The command ran and reported `FAILED`.
    #[error("agent command {command} failed: {}", command_error_message(Some(command_error)))]
    CommandFailed { command: String, command_error: CommandError },
    /// No connection, or the connection broke, on every attempt.
    #[error("agent at {url} unreachable after {attempts} attempt(s)")]
    Unreachable {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// No reply within the command timeout on the last attempt.
    #[error("agent at {url} gave no reply within {timeout:?} ({attempts} attempt(s))")]
    Timeout {
        url: String,
        attempts: u32,
        timeout: Duration,
        #[source]
        source: reqwest::Error,
    },
    /// The TLS handshake failed: typically the agent shows another certificate than the
    /// pinned one, or one that does not name the address in `agent_url`.
    #[error("TLS handshake with the agent at {url} failed")]
    Tls {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("agent reply to {what} is unusable: {problem}")]
    BadReply { what: String, problem: String },
    /// Any other error status, with the agent's `faultstring`.
    #[error("agent answered {command} with HTTP {status}: {faultstring}")]
    Http { command: String, status: u16, faultstring: String },
    #[error("agent still answers after system.lockdown")]
    StillAnswering,
}

impl AgentClientError {
    /// Whether the agent could not be reached at all (the orchestrator waits for the
    /// next heartbeat rather than failing the node on a single such error).
    pub fn is_connection_failure(&self) -> bool {
        matches!(self, AgentClientError::Unreachable { .. } | AgentClientError::Timeout { .. })
    }
}

/// `get_partition_uuids` result (the wire type lives in `ferric-shared`, shared with the
/// agent).
pub use ferric_shared::partition_uuids::PartitionUuids;

/// A transport failure of one request: no HTTP reply came back.
#[derive(Debug)]
enum Failure {
    /// Refused, reset, closed early: worth another attempt.
    Connection(reqwest::Error),
    Timeout(reqwest::Error),
    /// Retrying cannot help: the certificate will not change between attempts.
    Tls(reqwest::Error),
    /// The reply was larger than allowed.
    TooLarge,
}

/// An HTTP reply, whatever its status.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

/// Client for one node's agent.
pub struct AgentClient {
    http: reqwest::Client,
    /// `agent_url` without a trailing slash, for messages.
    base: String,
    /// `<agent_url>/v1/commands/`, without query.
    commands_url: Url,
    token: Option<String>,
    config: AgentClientConfig,
}

/// Keeps the token out of logs.
impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("commands_url", &self.commands_url.as_str())
            .field("token", &self.token.as_ref().map(|_| "******"))
            .field("config", &self.config)
            .finish()
    }
}

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding only the certificate(s) in `pem`.
fn pinned_roots(pem: &str) -> Result<rustls::RootCertStore, AgentClientError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentClientError::UnreadableAgentCertificate)?;
    if certs.is_empty() {
        return Err(AgentClientError::EmptyAgentCertificate);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(AgentClientError::UnusableAgentCertificate)?;
    }
    Ok(roots)
}

/// The rustls error somewhere in `err`'s chain. `io::Error` hides the error it wraps
/// from `source()`, so those are opened explicitly.
fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            let inner: &(dyn std::error::Error + 'static) = inner;
            if let Some(tls) = find_tls_error(inner) {
                return Some(tls);
            }
        }
        next = e.source();
    }
    None
}

fn classify(err: reqwest::Error) -> Failure {
    // The URL carries the token; errors are kept without it.
    let err = err.without_url();
    if find_tls_error(&err).is_some() {
        Failure::Tls(err)
    } else if err.is_timeout() {
        Failure::Timeout(err)
    } else {
        Failure::Connection(err)
    }
}

/// The command part of `<extension>.<command>`, as the agent reports it.
fn short_name(name: &str) -> &str {
    name.split_once('.').map_or(name, |(_, command)| command)
}

/// Parses one `CommandResult`, tolerating a `command_error` that is not the usual
/// `{type, code, message, details}` object (older agents send `{"error": "<text>"}`
/// or a bare string): it is kept as text in `details`.
fn parse_command_result(value: Value) -> Result<CommandResult, String> {
    let Value::Object(mut map) = value else {
        return Err("a command result is not a JSON object".to_owned());
    };
    let raw_error = map.insert("command_error".to_owned(), Value::Null);
    let mut result: CommandResult =
        serde_json::from_value(Value::Object(map)).map_err(|e| e.to_string())?;
    result.command_error = raw_error.and_then(normalize_command_error);
    Ok(result)
}

fn normalize_command_error(raw: Value) -> Option<CommandError> {
    if raw.is_null() {
        return None;
    }
    if let Ok(error) = serde_json::from_value::<CommandError>(raw.clone()) {
        return Some(error);
    }
    let text = |key: &str| raw.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let code = raw.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    let message = text("message");
    let mut details = text("details");
    if details.is_empty() && message.is_empty() {
        details = match &raw {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    }
    Some(CommandError { kind: text("type"), code: code.unwrap_or(500), message, details })
}

fn parse_command_list(body: &[u8]) -> Result<Vec<CommandResult>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(Value::Array(entries)) = value.get("commands") else {
        return Err("no \"commands\" list".to_owned());
    };
    entries.iter().cloned().map(parse_command_result).collect()
}

impl AgentClient {
    /// A client for the agent at `agent_url`. `verify_ca` is the agent's certificate
    /// (PEM) and is required for `https`; it is the only certificate trusted.
    pub fn new(
        agent_url: &str,
        token: Option<&str>,
        verify_ca: Option<&str>,
        config: AgentClientConfig,
    ) -> Result<Self, AgentClientError> {
        let invalid = || AgentClientError::InvalidAgentUrl { url: agent_url.to_owned() };
        let base = Url::parse(agent_url).map_err(|_| invalid())?;
        if base.host_str().is_none_or(str::is_empty)
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(invalid());
        }
        // As Ironic: `<agent_url>/v1/commands/`, keeping any path the URL has.
        let commands_url =
            Url::parse(&format!("{}/v1/commands/", base.as_str().trim_end_matches('/')))
                .map_err(|_| invalid())?;
        let roots = match commands_url.scheme() {
            "https" => match verify_ca {
                Some(pem) => pinned_roots(pem)?,
                None => {
                    return Err(AgentClientError::NoAgentCertificate { url: agent_url.to_owned() })
                }
            },
            // Plain HTTP needs no roots, but the client is always built with an explicit
            // TLS configuration so that no process-wide crypto provider is assumed.
            "http" => rustls::RootCertStore::empty(),
            _ => return Err(invalid()),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(AgentClientError::TlsSetup)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.command_timeout)
            // The token rides in the query string; it must not follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(AgentClientError::ClientSetup)?;
        let base = base.as_str().trim_end_matches('/').to_owned();
        Ok(Self { http, base, commands_url, token: token.map(str::to_owned), config })
    }

    /// A client from a node's `driver_internal_info` (`agent_url`, `agent_secret_token`,
    /// `agent_verify_ca`).
    pub fn from_driver_internal_info(
        info: &Map<String, Value>,
        config: AgentClientConfig,
    ) -> Result<Self, AgentClientError> {
        let text = |key: &'static str| match info.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(AgentClientError::NotAString(key)),
        };
        let url = text(AGENT_URL_KEY)?.ok_or(AgentClientError::NoAgentUrl)?;
        Self::new(url, text(AGENT_TOKEN_KEY)?, text(AGENT_VERIFY_CA_KEY)?, config)
    }

    /// The agent's base URL as given (scheme, host, port), for logs.
    pub fn agent_url(&self) -> &str {
        &self.base
    }

    pub fn config(&self) -> &AgentClientConfig {
        &self.config
    }

    fn url(&self, id: Option<&str>, wait: Option<bool>) -> Url {
        let mut url = self.commands_url.clone();
        if let Some(id) = id {
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.pop_if_empty().push(id);
            }
        }
        let wait = wait.map(|w| ("wait", if w { "true" } else { "false" }));
        let token = self.token.as_deref().map(|t| ("agent_token", t));
        let pairs: Vec<(&str, &str)> = wait.into_iter().chain(token).collect();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url
    }

    /// One request, one attempt.
    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: Option<&CommandRequest>,
    ) -> Result<Reply, Failure> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if bytes.len() + chunk.len() > self.config.max_reply_bytes {
                return Err(Failure::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Reply { status, body: bytes })
    }

    fn final_error(&self, failure: Failure, attempts: u32, what: &str) -> AgentClientError {
        let url = self.agent_url().to_owned();
        match failure {
            Failure::Connection(source) => AgentClientError::Unreachable { url, attempts, source },
            Failure::Timeout(source) => AgentClientError::Timeout {
                url,
                attempts,
                timeout: self.config.command_timeout,
                source,
            },
            Failure::Tls(source) => AgentClientError::Tls { url, source },
            Failure::TooLarge => AgentClientError::BadReply {
                what: what.to_owned(),
                problem: format!("larger than {} bytes", self.config.max_reply_bytes),
            },
        }
    }

    /// Sends a GET with retries on connection failures and timeouts.
    async fn get_with_retries(&self, url: Url, what: &str) -> Result<Reply, AgentClientError> {
        let attempts = self.config.max_command_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.send_once(Method::GET, url.clone(), None).await {
                Ok(reply) => return Ok(reply),
                Err(failure @ (Failure::Connection(_) | Failure::Timeout(_)))
                    if attempt < attempts =>
                {
                    tracing::warn!(what, attempt, error = ?failure, "agent request failed, retrying");
                    tokio::time::sleep(self.config.retry_interval).await;
                    attempt += 1;
                }
                Err(failure) => return Err(self.final_error(failure, attempt, what)),
            }
        }
    }

    /// `GET /v1/commands/`: every command the agent ran since it started, in order.
    pub async fn commands(&self) -> Result<Vec<CommandResult>, AgentClientError> {
        const WHAT: &str = "the command list";
        let reply = self.get_with_retries(self.url(None, None), WHAT).await?;
        if !reply.status.is_success() {
            return Err(error_reply(WHAT, &reply));
        }
        parse_command_list(&reply.body)
            .map_err(|problem| AgentClientError::BadReply { what: WHAT.to_owned(), problem })
    }

    /// `GET /v1/commands/{id}?wait=true`: blocks (within the command timeout) until the
    /// command is done.
    pub async fn wait_for_command(&self, id: &str) -> Result<CommandResult, AgentClientError> {
        let what = format!("command {id}");
        let reply = self.get_with_retries(self.url(Some(id), Some(true)), &what).await?;
        if !reply.status.is_success() {
            return Err(error_reply(&what, &reply));
        }
        serde_json::from_slice::<Value>(&reply.body)
            .map_err(|e| e.to_string())
            .and_then(parse_command_result)
            .map_err(|problem| AgentClientError::BadReply { what, problem })
    }

    /// The last command, if it is `name` and still running: proof that a POST whose
    /// reply was lost reached the agent. Any failure to tell counts as "no".
    async fn running_duplicate(&self, name: &str) -> Option<CommandResult> {
        let reply = self.send_once(Method::GET, self.url(None, None), None).await.ok()?;
        if !reply.status.is_success() {
            return None;
        }
        let last = parse_command_list(&reply.body).ok()?.pop()?;
        (last.command_name == short_name(name) && last.command_status == CommandStatus::Running)
            .then_some(last)
    }

    /// `POST /v1/commands/` with `{"name": name, "params": params}`. With `wait`, the
    /// agent replies once the command is done. A `FAILED` result is returned as
    /// [`AgentClientError::CommandFailed`]; anything else (also `RUNNING` and
    /// `CLEAN_VERSION_MISMATCH`) as the result.
    #[tracing::instrument(level = "debug", skip_all, fields(command = name, agent = %self.base))]
    pub async fn execute(
        &self,
        name: &str,
        params: Map<String, Value>,
        wait: bool,
    ) -> Result<CommandResult, AgentClientError> {
        let request = CommandRequest { name: name.to_owned(), params };
        let url = self.url(None, Some(wait));
        let attempts = self.config.max_command_attempts.max(1);
        let mut attempt = 1;
        loop {
            let failure = match self.send_once(Method::POST, url.clone(), Some(&request)).await {
                Ok(reply) => return command_reply(name, &reply),
                Err(failure @ (Failure::Connection(_) | Failure::Timeout(_))) => failure,
                Err(failure) => return Err(self.final_error(failure, attempt, name)),
            };
            if let Some(accepted) = self.running_duplicate(name).await {
                tracing::info!(
                    command = name,
                    id = %accepted.id,
                    "reply lost, but the agent is running the command"
                );
                if !wait {
                    return Ok(accepted);
                }
                let done = self.wait_for_command(&accepted.id).await?;
                return finished(name, done);
            }
            if attempt >= attempts {
                return Err(self.final_error(failure, attempt, name));
            }
            tracing::warn!(command = name, attempt, error = ?failure, "agent command got no reply, retrying");
            tokio::time::sleep(self.config.retry_interval).await;
            attempt += 1;
        }
    }

    async fn execute_with<T: Serialize>(
        &self,
        name: &str,
        params: &T,
        wait: bool,
    ) -> Result<CommandResult, AgentClientError> {
        let params = match serde_json::to_value(params) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                let source = <serde_json::Error as serde::ser::Error>::custom(
                    "command parameters must be a JSON object",
                );
                return Err(AgentClientError::Params { command: name.to_owned(), source });
            }
            Err(source) => {
                return Err(AgentClientError::Params { command: name.to_owned(), source })
            }
        };
        self.execute(name, params, wait).await
    }

    /// `<kind>.get_<kind>_steps` with the node and its ports (sent as Ironic sends
    /// them: secrets already masked by the caller).
    pub async fn get_steps<N: Serialize, P: Serialize>(
        &self,
        kind: StepKind,
        node: &N,
        ports: &[P],
    ) -> Result<GetStepsResult, AgentClientError> {
        #[derive(Serialize)]
        struct Params<'a, N, P> {
            node: &'a N,
            ports: &'a [P],
        }
        let name = kind.get_command_name();
        let result = self.execute_with(&name, &Params { node, ports }, true).await?;
        let value = result.command_result.unwrap_or(Value::Null);
        let steps = serde_json::from_value::<GetStepsResult>(value)
            .map_err(|e| bad_reply(&name, e.to_string()))?;
        if steps.kind != kind {
            return Err(bad_reply(&name, format!("carries {}", steps.kind.steps_key())));
        }
        Ok(steps)
    }

    pub async fn get_clean_steps<N: Serialize, P: Serialize>(
        &self,
        node: &N,
        ports: &[P],
    ) -> Result<GetStepsResult, AgentClientError> {
        self.get_steps(StepKind::Clean, node, ports).await
    }

    pub async fn get_deploy_steps<N: Serialize, P: Serialize>(
        &self,
        node: &N,
        ports: &[P],
    ) -> Result<GetStepsResult, AgentClientError> {
        self.get_steps(StepKind::Deploy, node, ports).await
    }

    /// `<kind>.execute_<kind>_step`, asynchronous: returns the `RUNNING` result; the
    /// outcome is read later from the command list (see [`step_progress`]). `version` is
    /// the `hardware_manager_version` saved from `get_<kind>_steps` (`null` skips the
    /// agent's check).
    pub async fn execute_step<N: Serialize, P: Serialize>(
        &self,
        kind: StepKind,
        step: &NodeStep,
        node: &N,
        ports: &[P],
        version: Option<&HardwareManagerVersions>,
    ) -> Result<CommandResult, AgentClientError> {
        let name = kind.execute_command_name();
        let mut params = Map::new();
        let mut put = |key: &str, value: Result<Value, serde_json::Error>| {
            value.map(|v| {
                params.insert(key.to_owned(), v);
            })
        };
        put("step", serde_json::to_value(step))
            .and_then(|()| put("node", serde_json::to_value(node)))
            .and_then(|()| put("ports", serde_json::to_value(ports)))
            .and_then(|()| put(kind.version_key(), serde_json::to_value(version)))
            .map_err(|source| AgentClientError::Params { command: name.clone(), source })?;
        self.execute(&name, params, false).await
    }

    pub async fn execute_clean_step<N: Serialize, P: Serialize>(
        &self,
        step: &NodeStep,
        node: &N,
        ports: &[P],
        clean_version: Option<&HardwareManagerVersions>,
    ) -> Result<CommandResult, AgentClientError> {
        self.execute_step(StepKind::Clean, step, node, ports, clean_version).await
    }

    pub async fn execute_deploy_step<N: Serialize, P: Serialize>(
        &self,
        step: &NodeStep,
        node: &N,
        ports: &[P],
        deploy_version: Option<&HardwareManagerVersions>,
    ) -> Result<CommandResult, AgentClientError> {
        self.execute_step(StepKind::Deploy, step, node, ports, deploy_version).await
    }

    /// `standby.get_partition_uuids`.
    pub async fn get_partition_uuids(&self) -> Result<PartitionUuids, AgentClientError> {
        const NAME: &str = "standby.get_partition_uuids";
        let result = self.execute(NAME, Map::new(), true).await?;
        match result.command_result {
            None | Some(Value::Null) => Ok(PartitionUuids::default()),
            Some(value) => {
                serde_json::from_value(value).map_err(|e| bad_reply(NAME, e.to_string()))
            }
        }
    }

    /// `standby.power_off`, asynchronous: the agent powers the machine off after
    /// answering. The caller confirms through the BMC.
    pub async fn power_off(&self) -> Result<CommandResult, AgentClientError> {
        self.execute("standby.power_off", Map::new(), false).await
    }

    /// `standby.sync`: flush the node's disks.
    pub async fn sync(&self) -> Result<(), AgentClientError> {
        self.execute("standby.sync", Map::new(), true).await.map(drop)
    }

    /// `poll.get_hardware_info`: the hardware inventory.
    pub async fn get_hardware_info(&self) -> Result<Inventory, AgentClientError> {
        const NAME: &str = "poll.get_hardware_info";
        let result = self.execute(NAME, Map::new(), true).await?;
        serde_json::from_value(result.command_result.unwrap_or(Value::Null))
            .map_err(|e| bad_reply(NAME, e.to_string()))
    }

    /// `log.collect_system_logs`: base64 of a gzipped tar of the node's logs.
    pub async fn collect_system_logs(&self) -> Result<String, AgentClientError> {
        const NAME: &str = "log.collect_system_logs";
        let result = self.execute(NAME, Map::new(), true).await?;
        result
            .command_result
            .as_ref()
            .and_then(|r| r.get("system_logs"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad_reply(NAME, "no system_logs string".to_owned()))
    }

    /// Flushes the disks, sends `system.lockdown`, then checks that the agent stops
    /// answering, as Ironic does before powering off a node it must not power off
    /// through the agent. A sync that times out does not prevent the lockdown.
    pub async fn lockdown(&self) -> Result<(), AgentClientError> {
        match self.sync().await {
            Err(e @ AgentClientError::Timeout { .. }) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "sync before lockdown");
            }
            other => other?,
        }
        self.execute("system.lockdown", Map::new(), false).await?;
        for check in 0..self.config.lockdown_checks.max(1) {
            if check > 0 {
                tokio::time::sleep(self.config.lockdown_check_interval).await;
            }
            if self.send_once(Method::GET, self.url(None, None), None).await.is_err() {
                return Ok(());
            }
        }
        Err(AgentClientError::StillAnswering)
    }
}

fn bad_reply(what: &str, problem: String) -> AgentClientError {
    AgentClientError::BadReply { what: what.to_owned(), problem }
}

/// Maps an error status to its typed error, reading the agent's `faultstring`.
fn error_reply(command: &str, reply: &Reply) -> AgentClientError {
    let faultstring = error_message_from_reply(&String::from_utf8_lossy(&reply.body));
    let status = reply.status.as_u16();
    let command = command.to_owned();
    // Ironic's AgentInProgress test: 409, or older agents' other codes with this text.
    if status == 409 || faultstring.to_lowercase().contains("agent is busy") {
        AgentClientError::Busy { command, faultstring }
    } else if status == 401 {
        AgentClientError::Unauthorized { command, faultstring }
    } else {
        AgentClientError::Http { command, status, faultstring }
    }
}

/// Interprets the reply to a command POST.
fn command_reply(name: &str, reply: &Reply) -> Result<CommandResult, AgentClientError> {
    if !reply.status.is_success() {
        return Err(error_reply(name, reply));
    }
    let value: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| bad_reply(name, format!("not JSON: {e}")))?;
    let result = parse_command_result(value).map_err(|problem| bad_reply(name, problem))?;
    finished(name, result)
}

fn finished(name: &str, result: CommandResult) -> Result<CommandResult, AgentClientError> {
    if result.command_status != CommandStatus::Failed {
        return Ok(result);
    }
    let command_error = result.command_error.unwrap_or_else(|| CommandError {
        kind: String::new(),
        code: 500,
        message: String::new(),
        details: "the agent reported a failure without command_error".to_owned(),
    });
    Err(AgentClientError::CommandFailed { command: name.to_owned(), command_error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn command_errors_are_normalized() {
        let table = [
            (
                json!({"type": "CommandExecutionError", "code": 500,
                    "message": "Command execution failed", "details": "disk gone"}),
                ("CommandExecutionError", 500, "Command execution failed", "disk gone"),
            ),
            (
                json!({"type": "X", "code": 404, "message": "not found"}),
                ("X", 404, "not found", ""),
            ),
            (json!({"error": "boom"}), ("", 500, "", r#"{"error":"boom"}"#)),
            (json!("plain text"), ("", 500, "", "plain text")),
        ];
        for (raw, (kind, code, message, details)) in table {
            let wire = json!({"id": "1", "command_name": "sync", "command_status": "FAILED",
                "command_error": raw.clone(), "command_result": null});
            let parsed = parse_command_result(wire).unwrap();
            let e = parsed.command_error.unwrap();
            assert_eq!(
                (e.kind.as_str(), e.code, e.message.as_str(), e.details.as_str()),
                (kind, code, message, details),
                "{raw}"
            );
        }
        let ok = json!({"id": "1", "command_name": "sync", "command_status": "SUCCEEDED",
            "command_error": null, "command_result": null});
        assert_eq!(parse_command_result(ok).unwrap().command_error, None);
        assert!(parse_command_result(json!([1])).is_err());
        assert!(parse_command_result(json!({"id": "1"})).is_err());
    }

    #[test]
    fn command_list_bodies() {
        assert!(parse_command_list(br#"{"commands": []}"#).unwrap().is_empty());
        for bad in [&b"nope"[..], br#"{"commands": {}}"#, br#"{}"#, br#"{"commands": [1]}"#] {
            assert!(parse_command_list(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn error_replies_map_to_typed_errors() {
        let fault = |s: &str| format!(r#"{{"faultcode": "Client", "faultstring": "{s}"}}"#);
        let reply = |status: u16, body: String| Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.into_bytes(),
        };
        let busy = error_reply("x", &reply(409, fault("Agent is busy: executing command y")));
        assert!(matches!(busy, AgentClientError::Busy { ref faultstring, .. }
            if faultstring == "Agent is busy: executing command y"));
        let old_busy = error_reply("x", &reply(500, fault("agent is BUSY")));
        assert!(matches!(old_busy, AgentClientError::Busy { .. }), "{old_busy:?}");
        let unauthorized = error_reply("x", &reply(401, fault("401 Unauthorized: Token invalid.")));
        assert!(matches!(unauthorized, AgentClientError::Unauthorized { .. }));
        let other = error_reply("x", &reply(502, "<html>bad gateway</html>".to_owned()));
        assert!(matches!(other, AgentClientError::Http { status: 502, ref faultstring, .. }
            if faultstring == "<html>bad gateway</html>"));
    }

    #[test]
    fn command_urls_carry_wait_and_token_as_query() {
        let client = AgentClient::new(
            "http://10.0.0.5:9999/",
            Some("s3cr3t"),
            None,
            AgentClientConfig::default(),
        )
        .unwrap();
        assert_eq!(
            client.url(None, Some(false)).as_str(),
            "http://10.0.0.5:9999/v1/commands/?wait=false&agent_token=s3cr3t"
        );
        assert_eq!(
            client.url(Some("abc"), Some(true)).as_str(),
            "http://10.0.0.5:9999/v1/commands/abc?wait=true&agent_token=s3cr3t"
        );
        assert_eq!(client.agent_url(), "http://10.0.0.5:9999");
        let debug = format!("{client:?}");
        assert!(debug.contains("******") && !debug.contains("s3cr3t"), "{debug}");
        let prefixed =
            AgentClient::new("http://h:9999/agent/", None, None, AgentClientConfig::default())
                .unwrap();
        assert_eq!(prefixed.url(None, None).as_str(), "http://h:9999/agent/v1/commands/");
    }

    #[test]
    fn bad_agent_urls_and_certificates_are_refused() {
        let cfg = AgentClientConfig::default;
        for url in ["", "10.0.0.5:9999", "ftp://10.0.0.5", "http://", "https://h:9999/?x=1"] {
            let err = AgentClient::new(url, None, Some("x"), cfg()).unwrap_err();
            assert!(matches!(err, AgentClientError::InvalidAgentUrl { .. }), "{url}: {err:?}");
        }
        let err = AgentClient::new("https://10.0.0.5:9999", None, None, cfg()).unwrap_err();
        assert!(matches!(err, AgentClientError::NoAgentCertificate { .. }));
        let err =
            AgentClient::new("https://10.0.0.5:9999", None, Some("garbage"), cfg()).unwrap_err();
        assert!(matches!(err, AgentClientError::EmptyAgentCertificate), "{err:?}");
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = AgentClient::new("https://10.0.0.5:9999", None, Some(broken), cfg()).unwrap_err();
        assert!(
            matches!(
                err,
                AgentClientError::UnusableAgentCertificate(_)
                    | AgentClientError::UnreadableAgentCertificate(_)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn driver_internal_info_fields() {
        let cfg = AgentClientConfig::default;
        let map = |v: Value| v.as_object().unwrap().clone();
        let err = AgentClient::from_driver_internal_info(&map(json!({})), cfg()).unwrap_err();
        assert!(matches!(err, AgentClientError::NoAgentUrl));
        let err = AgentClient::from_driver_internal_info(&map(json!({"agent_url": 5})), cfg())
            .unwrap_err();
        assert!(matches!(err, AgentClientError::NotAString("agent_url")));
        let client = AgentClient::from_driver_internal_info(
            &map(json!({"agent_url": "http://10.0.0.7:9999", "agent_secret_token": "s3"})),
            cfg(),
        )
        .unwrap();
        assert!(client.url(None, None).as_str().ends_with("?agent_token=s3"));
    }

    #[test]
    fn partition_uuid_keys_have_spaces() {
        let table = [
            (json!({}), PartitionUuids::default()),
            (
                json!({"root uuid": "0x1234abcd"}),
                PartitionUuids { root_uuid: Some("0x1234abcd".into()), ..Default::default() },
            ),
            (
                json!({"partitions": {"root": "/dev/sda2"}, "root uuid": "r",
                    "efi system partition uuid": "e", "PReP Boot partition uuid": null}),
                PartitionUuids {
                    root_uuid: Some("r".into()),
                    efi_system_partition_uuid: Some("e".into()),
                    prep_boot_partition_uuid: None,
                    partitions: Some(json!({"root": "/dev/sda2"})),
                },
            ),
        ];
        for (wire, expected) in table {
            assert_eq!(serde_json::from_value::<PartitionUuids>(wire.clone()).unwrap(), expected);
        }
        assert!(serde_json::from_value::<PartitionUuids>(json!({"root uuid": 5})).is_err());
    }

    #[test]
    fn short_names() {
        for (full, short) in
            [("clean.execute_clean_step", "execute_clean_step"), ("sync", "sync"), ("a.b.c", "b.c")]
        {
            assert_eq!(short_name(full), short);
        }
    }
}
