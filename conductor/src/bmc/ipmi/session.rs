//! One RMCP+ session per BMC, owned by one tokio task.
//!
//! The task owns the UDP socket and the session keys and runs one request at a time, so
//! at most one request is in flight per BMC and no locking is needed around sequence
//! numbers. Callers hold a [`SessionHandle`] (a channel sender); thousands of BMCs cost
//! thousands of idle tasks and sockets, not threads. The session is opened on the first
//! request, reused while requests keep coming, re-opened after a transport failure, and
//! closed (Close Session) when the task has been idle for a while.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::commands::{self, CompletionClass, PrivilegeLevel};
use super::crypto::{self, codes_equal, CipherSuite, RakpExchange};
use super::packet::{self, IpmiRequest, IpmiResponse, PayloadType, SessionKeys};
use crate::bmc::limit::RequestLimiter;
use crate::bmc::BmcError;

/// A BMC password: compared and hashed like bytes, never printed.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn new(secret: impl Into<Vec<u8>>) -> Password {
        Password(secret.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

/// Which cipher suites to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherChoice {
    /// Suite 17, then suite 3 when the BMC refuses 17.
    Auto,
    Fixed(u8),
}

impl CipherChoice {
    fn suites(self) -> Vec<CipherSuite> {
        match self {
            CipherChoice::Auto => vec![CipherSuite::SUITE_17, CipherSuite::SUITE_3],
            CipherChoice::Fixed(id) => CipherSuite::from_id(id).into_iter().collect(),
        }
    }
}

/// How long to wait and how often to retransmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Wait for one answer before retransmitting.
    pub request_timeout: Duration,
    /// Retransmissions after the first attempt.
    pub retries: u32,
    /// Close the session after this long without requests.
    pub idle_close: Duration,
}

impl Timing {
    /// The longest one request can take before it fails as unreachable.
    pub fn bound(&self) -> Duration {
        self.request_timeout * (self.retries + 1)
    }
}

/// Everything needed to open a session with one BMC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionParams {
    pub address: String,
    pub port: u16,
    pub username: String,
    pub password: Password,
    pub privilege: PrivilegeLevel,
    pub cipher: CipherChoice,
    pub timing: Timing,
}

impl SessionParams {
    fn display_address(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// What a session learned while opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// The LAN channel the session runs on.
    pub channel: u8,
    /// The cipher suite in use.
    pub cipher_suite: u8,
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<(IpmiResponse, SessionInfo), BmcError>>,
}

/// A command to send in the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Names the command in errors.
    pub name: &'static str,
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
}

/// The sending side of a BMC's session task.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    tx: mpsc::Sender<Job>,
}

impl SessionHandle {
    /// Starts the task for one BMC. Must be called inside a tokio runtime.
    pub fn spawn(params: SessionParams) -> SessionHandle {
        SessionHandle::spawn_limited(params, RequestLimiter::unbounded())
    }

    /// Like [`SessionHandle::spawn`]; each exchange with the BMC first takes a permit of
    /// `limiter`, which other BMCs' sessions share.
    pub fn spawn_limited(params: SessionParams, limiter: RequestLimiter) -> SessionHandle {
        // Requests queue here while the one in flight runs.
        let (tx, rx) = mpsc::channel(64);
        let span = tracing::debug_span!("ipmi session", bmc = %params.display_address());
        let worker = Worker::new(params, limiter, rx);
        tokio::spawn(tracing::Instrument::instrument(worker.run(), span));
        SessionHandle { tx }
    }

    /// Whether the task still takes requests.
    pub fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Sends `request` and returns the response data of a successful completion. `Err(None)`
    /// means the task is gone and a new one must be spawned.
    pub async fn call(&self, request: Request) -> Result<(Vec<u8>, SessionInfo), Option<BmcError>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { request, reply }).await.map_err(|_| None)?;
        match answer.await {
            Ok(Ok((response, info))) => Ok((response.data, info)),
            Ok(Err(error)) => Err(Some(error)),
            Err(_) => Err(None),
        }
    }

    /// Closes the session (Close Session) once the requests queued before are done, and
    /// ends the task; returns when it has. Later calls find the task gone.
    pub async fn close(&self) {
        let _ = self.call(own_close_request()).await;
    }
}

/// Close Session without a session ID: what [`SessionHandle::close`] sends to ask the task
/// to close its own session (whose ID only the task knows) and end.
fn own_close_request() -> Request {
    Request {
        name: "Close Session",
        netfn: commands::NETFN_APP,
        cmd: commands::CMD_CLOSE_SESSION,
        data: Vec::new(),
    }
}

/// An open session's state.
struct Established {
    keys: SessionKeys,
    console_session_id: u32,
    bmc_session_id: u32,
    info: SessionInfo,
}

struct Worker {
    params: SessionParams,
    address: String,
    rx: mpsc::Receiver<Job>,
    /// The conductor-wide cap on requests in flight.
    limiter: RequestLimiter,
    socket: Option<UdpSocket>,
    session: Option<Established>,
    /// Outbound session sequence number of the last packet (0 is never sent in-session).
    out_seq: u32,
    /// Request sequence of the last IPMI message (six bits).
    rq_seq: u8,
    /// Message tag of the last session setup payload.
    tag: u8,
}

/// An error during one exchange, and whether the session survived it.
struct Failure {
    error: BmcError,
    /// The transport or the session is broken: start over next time.
    reset: bool,
}

impl From<BmcError> for Failure {
    fn from(error: BmcError) -> Self {
        Failure { error, reset: true }
    }
}

impl Worker {
    fn new(params: SessionParams, limiter: RequestLimiter, rx: mpsc::Receiver<Job>) -> Worker {
        let address = params.display_address();
        Worker {
            params,
            address,
            rx,
            limiter,
            socket: None,
            session: None,
            out_seq: 0,
            rq_seq: 0,
            tag: 0,
        }
    }

    async fn run(mut self) {
        loop {
            let job =
                match tokio::time::timeout(self.params.timing.idle_close, self.rx.recv()).await {
                    Ok(Some(job)) if job.request == own_close_request() => {
                        self.rx.close();
                        while let Ok(queued) = self.rx.try_recv() {
                            self.serve(queued).await;
                        }
                        self.close().await;
                        // Dropping the reply tells the caller the session is closed.
                        drop(job);
                        break;
                    }
                    Ok(Some(job)) => job,
                    Ok(None) => break,
                    Err(_idle) => {
                        // Refuse new jobs, finish those already queued, then leave.
                        self.rx.close();
                        while let Ok(job) = self.rx.try_recv() {
                            self.serve(job).await;
                        }
                        break;
                    }
                };
            self.serve(job).await;
        }
        self.close().await;
    }

    async fn serve(&mut self, job: Job) {
        let result = self.execute(&job.request).await.map_err(|failure| {
            if failure.reset {
                self.session = None;
                self.socket = None;
            }
            failure.error
        });
        // The caller may have given up waiting; nothing to do then.
        let _ = job.reply.send(result);
    }

    async fn execute(&mut self, request: &Request) -> Result<(IpmiResponse, SessionInfo), Failure> {
        if self.session.is_none() {
            self.open().await?;
        }
        let response = self.session_request(request).await?;
        let info = self.session.as_ref().map(|s| s.info).ok_or_else(|| self.gone())?;
        check_completion(&self.address, request.name, &response)
            .map_err(|error| Failure { error, reset: false })?;
        Ok((response, info))
    }

    fn gone(&self) -> Failure {
        Failure::from(BmcError::Protocol {
            address: self.address.clone(),
            detail: "session state lost".to_owned(),
        })
    }

    async fn close(&mut self) {
        let Some(session) = &self.session else { return };
        let request = Request {
            name: "Close Session",
            netfn: commands::NETFN_APP,
            cmd: commands::CMD_CLOSE_SESSION,
            data: commands::close_session_request(session.bmc_session_id),
        };
        match self.session_request(&request).await {
            Ok(_) => tracing::debug!("session closed"),
            Err(failure) => tracing::debug!(error = %failure.error, "close session failed"),
        }
        self.session = None;
    }

    fn unreachable(&self, detail: impl Into<String>) -> BmcError {
        BmcError::Unreachable { address: self.address.clone(), detail: detail.into() }
    }

    fn protocol(&self, detail: impl Into<String>) -> BmcError {
        BmcError::Protocol { address: self.address.clone(), detail: detail.into() }
    }

    fn next_rq_seq(&mut self) -> u8 {
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        self.rq_seq
    }

    fn next_tag(&mut self) -> u8 {
        self.tag = self.tag.wrapping_add(1);
        self.tag
    }

    fn next_out_seq(&mut self) -> u32 {
        self.out_seq = self.out_seq.wrapping_add(1).max(1);
        self.out_seq
    }

    async fn socket(&mut self) -> Result<&UdpSocket, BmcError> {
        if self.socket.is_none() {
            let target = self.resolve().await?;
            let local: SocketAddr = if target.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            let socket = UdpSocket::bind(local)
                .await
                .map_err(|e| self.unreachable(format!("cannot open a UDP socket: {e}")))?;
            // Connected, so ICMP "port unreachable" surfaces as an error on receive.
            socket
                .connect(target)
                .await
                .map_err(|e| self.unreachable(format!("cannot reach {target}: {e}")))?;
            self.socket = Some(socket);
        }
        self.socket.as_ref().ok_or_else(|| self.unreachable("no socket"))
    }

    async fn resolve(&self) -> Result<SocketAddr, BmcError> {
        let mut addrs = tokio::net::lookup_host((self.params.address.as_str(), self.params.port))
            .await
            .map_err(|e| self.unreachable(format!("cannot resolve the address: {e}")))?;
        addrs.next().ok_or_else(|| self.unreachable("the address resolves to nothing"))
    }

    /// Sends what `build` makes (rebuilt for each retransmission) until `accept` takes an
    /// answer, or the retries run out. `accept` returns `None` for datagrams that are not
    /// the answer (late replies, other sessions, garbage).
    async fn roundtrip<T>(
        &mut self,
        what: &str,
        mut build: impl FnMut(&mut Self) -> Vec<u8>,
        mut accept: impl FnMut(&Self, &[u8]) -> Option<Result<T, BmcError>>,
    ) -> Result<T, BmcError> {
        let timing = self.params.timing;
        // One permit for the whole exchange, retransmissions included: they are the same
        // request as far as the cap is concerned.
        let _permit = self.limiter.acquire().await;
        let mut buf = vec![0u8; 1024];
        for attempt in 0..=timing.retries {
            let packet = build(self);
            let socket = self.socket().await?;
            if let Err(e) = socket.send(&packet).await {
                return Err(self.unreachable(format!("cannot send {what}: {e}")));
            }
            let deadline = Instant::now() + timing.request_timeout;
            loop {
                let socket = self.socket().await?;
                let received = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await
                {
                    Err(_elapsed) => break,
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        return Err(self.unreachable(format!(
                            "nothing listens there (connection refused on {what})"
                        )));
                    }
                    Ok(Err(e)) => {
                        return Err(self.unreachable(format!("cannot receive {what}: {e}")))
                    }
                };
                let datagram = buf.get(..received).unwrap_or_default();
                if let Some(result) = accept(self, datagram) {
                    return result;
                }
            }
            tracing::debug!(what, attempt, "no answer; retransmitting");
        }
        Err(self.unreachable(format!(
            "no answer to {what} after {} attempts of {:?}",
            timing.retries + 1,
            timing.request_timeout
        )))
    }

    /// Opens a session: channel capabilities, Open Session, RAKP 1–4, privilege level.
    async fn open(&mut self) -> Result<(), Failure> {
        let capabilities = self.channel_capabilities().await?;
        if !capabilities.ipmi_v2 {
            return Err(Failure::from(BmcError::Unsupported {
                what: format!("IPMI 2.0 (RMCP+) sessions on {}", self.address),
            }));
        }
        let suites = self.params.cipher.suites();
        let mut last_refusal = None;
        for suite in suites {
            match self.open_with(suite, capabilities.channel).await {
                Ok(established) => {
                    tracing::debug!(cipher_suite = suite.id, "session open");
                    self.session = Some(established);
                    // Each session numbers its packets from 1.
                    self.out_seq = 0;
                    let privilege = self.set_privilege().await;
                    if privilege.is_err() {
                        self.session = None;
                    }
                    return privilege;
                }
                Err(OpenError::SuiteRefused(status)) => {
                    tracing::debug!(cipher_suite = suite.id, status, "cipher suite refused");
                    last_refusal = Some((suite.id, status));
                }
                Err(OpenError::Failed(error)) => return Err(Failure::from(error)),
            }
        }
        let detail = match last_refusal {
            Some((id, status)) => {
                format!("cipher suite {id} refused: {}", commands::rmcp_plus_status_text(status))
            }
            None => format!("cipher suite {:?} is not implemented", self.params.cipher),
        };
        Err(Failure::from(BmcError::Unsupported { what: format!("{detail} ({})", self.address) }))
    }

    async fn channel_capabilities(
        &mut self,
    ) -> Result<commands::ChannelAuthCapabilities, BmcError> {
        let rq_seq = self.next_rq_seq();
        let request = IpmiRequest {
            netfn: commands::NETFN_APP,
            cmd: commands::CMD_GET_CHANNEL_AUTH_CAPABILITIES,
            rq_seq,
            data: commands::channel_auth_capabilities_request(self.params.privilege),
        };
        let packet = packet::encode_v15(&packet::encode_request(&request));
        let response = self
            .roundtrip(
                "Get Channel Authentication Capabilities",
                |_| packet.clone(),
                |_, datagram| {
                    let message = packet::decode_v15(datagram).ok()?;
                    let response = packet::decode_response(message).ok()?;
                    (response.rq_seq == rq_seq && response.cmd == request.cmd)
                        .then_some(Ok(response))
                },
            )
            .await?;
        check_completion(&self.address, "Get Channel Authentication Capabilities", &response)?;
        commands::parse_channel_auth_capabilities(&response.data)
            .map_err(|e| self.protocol(e.to_string()))
    }

    /// A setup exchange outside the session: sends `payload` as `request_type` and
    /// returns the payload of the first `response_type` answer that `parse` accepts.
    async fn setup_exchange<T>(
        &mut self,
        what: &str,
        request_type: PayloadType,
        payload: Vec<u8>,
        response_type: PayloadType,
        parse: impl Fn(&[u8]) -> Result<T, commands::ReplyError>,
    ) -> Result<T, BmcError> {
        let packet = packet::encode_v2(request_type, 0, 0, &payload, None);
        self.roundtrip(
            what,
            |_| packet.clone(),
            |this, datagram| {
                let reply = packet::decode_v2(datagram, None).ok()?;
                if reply.payload_type != response_type {
                    return None;
                }
                match parse(&reply.payload) {
                    Ok(value) => Some(Ok(value)),
                    // Another exchange's answer (an earlier attempt's tag): keep waiting.
                    Err(commands::ReplyError::Mismatch { .. }) => None,
                    Err(e) => Some(Err(this.protocol(e.to_string()))),
                }
            },
        )
        .await
    }

    async fn open_with(
        &mut self,
        proposed: CipherSuite,
        channel: u8,
    ) -> Result<Established, OpenError> {
        let username = self.params.username.as_bytes().to_vec();
        if username.len() > 16 {
            return Err(OpenError::Failed(BmcError::AuthFailed { address: self.address.clone() }));
        }
        let console_session_id = random_session_id();
        let privilege = self.params.privilege;

        let tag = self.next_tag();
        let opened = self
            .setup_exchange(
                "Open Session Request",
                PayloadType::OpenSessionRequest,
                commands::open_session_request(tag, privilege, console_session_id, proposed),
                PayloadType::OpenSessionResponse,
                |data| commands::parse_open_session_response(data, tag, console_session_id),
            )
            .await?;
        if opened.status != 0 {
            if commands::status_rejects_suite(opened.status) {
                return Err(OpenError::SuiteRefused(opened.status));
            }
            return Err(OpenError::Failed(self.setup_refusal("Open Session", opened.status)));
        }

        // The BMC states the algorithms it chose. Some (pyghmi) answer with suite 3's
        // whatever was proposed: go on with that suite if it is one we may use.
        let chosen = self.params.cipher.suites().into_iter().find(|s| {
            opened.algorithms == [s.auth.number(), s.integrity.number(), crypto::AES_CBC_128]
        });
        let suite = match chosen {
            Some(chosen) => chosen,
            None if opened.algorithms[2] != crypto::AES_CBC_128 => {
                return Err(OpenError::Failed(BmcError::Unsupported {
                    what: format!(
                        "session without AES-CBC-128 confidentiality (algorithms {:?}) on {}",
                        opened.algorithms, self.address
                    ),
                }))
            }
            None => return Err(OpenError::SuiteRefused(0x11)),
        };
        if suite != proposed {
            tracing::debug!(proposed = proposed.id, chosen = suite.id, "BMC chose another suite");
        }

        // Name-only lookup (bit 4), as ipmitool does by default: the BMC looks the user up
        // by name and grants up to the requested level.
        let role = 0x10 | privilege.number();
        let console_random = random_bytes();
        let tag = self.next_tag();
        let rakp2 = self
            .setup_exchange(
                "RAKP 1",
                PayloadType::Rakp1,
                commands::rakp1(tag, opened.bmc_session_id, &console_random, role, &username),
                PayloadType::Rakp2,
                |data| commands::parse_rakp2(data, tag, console_session_id),
            )
            .await?;
        if rakp2.status != 0 {
            return Err(OpenError::Failed(self.setup_refusal("RAKP 2", rakp2.status)));
        }
        let exchange = RakpExchange {
            console_session_id,
            bmc_session_id: opened.bmc_session_id,
            console_random,
            bmc_random: rakp2.bmc_random,
            bmc_guid: rakp2.bmc_guid,
            role,
            username,
        };
        let kuid = self.params.password.as_bytes().to_vec();
        let expected = exchange.rakp2_auth_code(suite.auth, &kuid);
        if !codes_equal(&expected, &rakp2.auth_code) {
            // The BMC keyed its code with another password than ours.
            return Err(OpenError::Failed(BmcError::AuthFailed { address: self.address.clone() }));
        }

        let tag = self.next_tag();
        let rakp3 = commands::rakp3(
            tag,
            opened.bmc_session_id,
            &exchange.rakp3_auth_code(suite.auth, &kuid),
        );
        let rakp4 = self
            .setup_exchange("RAKP 3", PayloadType::Rakp3, rakp3, PayloadType::Rakp4, |data| {
                commands::parse_rakp4(data, tag, console_session_id)
            })
            .await?;
        if rakp4.status != 0 {
            return Err(OpenError::Failed(self.setup_refusal("RAKP 4", rakp4.status)));
        }
        // No BMC key (Kg) is configured, so Kg is Kuid.
        let sik = exchange.sik(suite.auth, &kuid);
        if !codes_equal(&exchange.rakp4_check_value(suite.auth, &sik), &rakp4.check_value) {
            return Err(OpenError::Failed(
                self.protocol("RAKP 4 integrity check value does not match"),
            ));
        }
        Ok(Established {
            keys: SessionKeys::from_sik(suite, &sik),
            console_session_id,
            bmc_session_id: opened.bmc_session_id,
            info: SessionInfo { channel, cipher_suite: suite.id },
        })
    }

    fn setup_refusal(&self, step: &str, status: u8) -> BmcError {
        if commands::status_rejects_credentials(status) {
            return BmcError::AuthFailed { address: self.address.clone() };
        }
        if status == 0x01 || status == 0x0B {
            return BmcError::Busy {
                address: self.address.clone(),
                detail: format!("{step}: {}", commands::rmcp_plus_status_text(status)),
                retry_after: None,
            };
        }
        self.protocol(format!(
            "{step} refused with status {status:#04x}: {}",
            commands::rmcp_plus_status_text(status)
        ))
    }

    /// Raises the session to the configured level: sessions start at User, and without
    /// this Chassis Control answers "insufficient privilege".
    async fn set_privilege(&mut self) -> Result<(), Failure> {
        let request = Request {
            name: "Set Session Privilege Level",
            netfn: commands::NETFN_APP,
            cmd: commands::CMD_SET_SESSION_PRIVILEGE,
            data: vec![self.params.privilege.number()],
        };
        let response = self.session_request(&request).await?;
        match response.completion_code {
            0x00 => Ok(()),
            code @ (0x80 | 0x81 | 0xD4) => Err(Failure::from(BmcError::InsufficientPrivilege {
                address: self.address.clone(),
                operation: request.name.to_owned(),
                detail: format!(
                    "the user may not work at {} level (completion code {code:#04x})",
                    self.params.privilege.as_str()
                ),
            })),
            _ => Err(Failure::from(completion_error(&self.address, request.name, &response))),
        }
    }

    /// One IPMI request inside the open session.
    async fn session_request(&mut self, request: &Request) -> Result<IpmiResponse, Failure> {
        let Some(session) = &self.session else { return Err(self.gone()) };
        let keys = session.keys.clone();
        let bmc_session_id = session.bmc_session_id;
        let console_session_id = session.console_session_id;
        let rq_seq = self.next_rq_seq();
        let message = packet::encode_request(&IpmiRequest {
            netfn: request.netfn,
            cmd: request.cmd,
            rq_seq,
            data: request.data.clone(),
        });
        let response = self
            .roundtrip(
                request.name,
                |this| {
                    // Each retransmission is a new packet with its own sequence number.
                    let sequence = this.next_out_seq();
                    let iv = random_bytes();
                    packet::encode_v2(
                        PayloadType::Ipmi,
                        bmc_session_id,
                        sequence,
                        &message,
                        Some((&keys, &iv)),
                    )
                },
                |_, datagram| {
                    let reply = packet::decode_v2(datagram, Some(&keys)).ok()?;
                    if reply.payload_type != PayloadType::Ipmi
                        || reply.session_id != console_session_id
                    {
                        return None;
                    }
                    let response = packet::decode_response(&reply.payload).ok()?;
                    (response.rq_seq == rq_seq && response.cmd == request.cmd)
                        .then_some(Ok(response))
                },
            )
            .await?;
        Ok(response)
    }
}

enum OpenError {
    SuiteRefused(u8),
    Failed(BmcError),
}

impl From<BmcError> for OpenError {
    fn from(error: BmcError) -> Self {
        OpenError::Failed(error)
    }
}

fn check_completion(address: &str, name: &str, response: &IpmiResponse) -> Result<(), BmcError> {
    if response.completion_code == 0 {
        return Ok(());
    }
    Err(completion_error(address, name, response))
}

/// The typed error for a non-zero completion code.
pub fn completion_error(address: &str, name: &str, response: &IpmiResponse) -> BmcError {
    let code = response.completion_code;
    let detail =
        format!("{name}: completion code {code:#04x} ({})", commands::completion_code_text(code));
    let address = address.to_owned();
    match commands::classify_completion(code) {
        CompletionClass::Privilege => {
            BmcError::InsufficientPrivilege { address, operation: name.to_owned(), detail }
        }
        CompletionClass::Busy => BmcError::Busy { address, detail, retry_after: None },
        CompletionClass::Unsupported => {
            BmcError::Unsupported { what: format!("{detail} ({address})") }
        }
        CompletionClass::Failed => BmcError::Protocol { address, detail },
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::getrandom(&mut bytes).is_err() {
        // The OS source failed (never expected on Linux); fall back to a weaker source
        // rather than sending a predictable all-zero nonce.
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    bytes
}

/// A session id for our side: any value but 0, which means "no session".
fn random_session_id() -> u32 {
    u32::from_le_bytes(random_bytes()).max(1)
}
