//! An IPMI 2.0 (RMCP+) responder simulating many BMCs, one UDP socket each on
//! `127.0.0.1`.
//!
//! Per BMC: Get Channel Authentication Capabilities (IPMI 1.5 wrapper), Open Session,
//! RAKP 1–4 with cipher suites 3 (HMAC-SHA1, HMAC-SHA1-96) and 17 (HMAC-SHA256,
//! HMAC-SHA256-128), both with AES-CBC-128; then, inside an authenticated and encrypted
//! session: Set Session Privilege Level, Get Chassis Status, Chassis Control, Get Device
//! ID and Close Session. Each BMC keeps its own power state and its own sessions. The
//! framing and key derivation are the conductor's (`ferric_conductor::bmc::ipmi`), used
//! from the BMC's side; everything a BMC decides is here.
//!
//! Every BMC is a tokio task that answers its datagrams one batch at a time, like the
//! single-threaded firmware of a real BMC: it takes one datagram, waits the configured
//! service latency, then takes every datagram that arrived meanwhile. All of those were
//! in flight at once (received, not answered), which is what the in-flight counters
//! record.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferric_conductor::bmc::ipmi::crypto::{CipherSuite, RakpExchange};
use ferric_conductor::bmc::ipmi::packet::{
    self, checksum, decode_v15, decode_v2, encode_v15, encode_v2, PayloadType, SessionKeys,
};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use super::{Counter, Gauge, SimStats};

/// Privilege levels (IPMI 2.0 table 6-1).
const PRIV_USER: u8 = 2;
const PRIV_OPERATOR: u8 = 3;
const PRIV_ADMIN: u8 = 4;

/// RMCP+ status codes the simulator answers with.
const STATUS_NO_RESOURCES: u8 = 0x01;
const STATUS_INVALID_SESSION: u8 = 0x02;
const STATUS_UNAUTHORIZED_ROLE: u8 = 0x0A;
const STATUS_UNAUTHORIZED_NAME: u8 = 0x0D;
const STATUS_INVALID_ICV: u8 = 0x0F;
const STATUS_NO_SUITE: u8 = 0x11;

/// Completion codes.
const CC_OK: u8 = 0x00;
const CC_INVALID_COMMAND: u8 = 0xC1;
const CC_REQUEST_TOO_SHORT: u8 = 0xC7;
const CC_INVALID_FIELD: u8 = 0xCC;
const CC_EXCEEDS_PRIVILEGE: u8 = 0x81;
const CC_INVALID_SESSION_ID: u8 = 0x87;
const CC_INSUFFICIENT_PRIVILEGE: u8 = 0xD4;

/// How the simulated BMCs behave.
#[derive(Debug, Clone)]
pub struct IpmiSimOptions {
    /// How many BMCs (UDP sockets).
    pub bmcs: usize,
    /// The one user every BMC knows, with administrator rights.
    pub username: String,
    pub password: String,
    /// The cipher suites the BMCs accept (3 and/or 17).
    pub suites: Vec<u8>,
    /// How long a BMC takes to answer one batch of datagrams.
    pub latency: Duration,
    /// Sessions one BMC holds at once; the oldest goes when another opens.
    pub max_sessions: usize,
}

impl Default for IpmiSimOptions {
    fn default() -> Self {
        IpmiSimOptions {
            bmcs: 1,
            username: "admin".to_owned(),
            password: "password".to_owned(),
            suites: vec![3, 17],
            latency: Duration::ZERO,
            max_sessions: 8,
        }
    }
}

/// A session as the BMC sees it, from Open Session on.
struct SimSession {
    console_id: u32,
    suite: CipherSuite,
    /// The most the console asked for in Open Session (0: the user's maximum).
    max_privilege: u8,
    /// After RAKP 1.
    exchange: Option<RakpExchange>,
    /// After RAKP 3 checked out.
    keys: Option<SessionKeys>,
    privilege: u8,
    out_seq: u32,
}

/// One BMC's state.
#[derive(Default)]
struct BmcState {
    power_on: bool,
    sessions: HashMap<u32, SimSession>,
    /// Session ids in the order they were opened, for eviction.
    order: VecDeque<u32>,
    next_session_id: u32,
}

struct SimBmc {
    state: Mutex<BmcState>,
    in_flight: Gauge,
}

struct Shared {
    options: IpmiSimOptions,
    guid: [u8; 16],
    total: Gauge,
    requests: Counter,
    sessions_opened: Counter,
    auth_failures: Counter,
}

/// The running simulator; its sockets close when it is dropped.
pub struct IpmiSim {
    ports: Vec<u16>,
    bmcs: Vec<Arc<SimBmc>>,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for IpmiSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiSim").field("bmcs", &self.ports.len()).finish_non_exhaustive()
    }
}

impl IpmiSim {
    /// Binds one UDP socket per BMC on `127.0.0.1` (ports picked by the kernel) and starts
    /// answering. Must be called inside a tokio runtime.
    pub async fn start(options: IpmiSimOptions) -> std::io::Result<IpmiSim> {
        let shared = Arc::new(Shared {
            guid: *b"ferric-bmc-sim-1",
            options,
            total: Gauge::default(),
            requests: Counter::default(),
            sessions_opened: Counter::default(),
            auth_failures: Counter::default(),
        });
        let mut ports = Vec::with_capacity(shared.options.bmcs);
        let mut bmcs = Vec::with_capacity(shared.options.bmcs);
        let mut tasks = JoinSet::new();
        for index in 0..shared.options.bmcs {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            ports.push(socket.local_addr()?.port());
            let bmc = Arc::new(SimBmc {
                state: Mutex::new(BmcState {
                    // Distinct per BMC so sessions of different BMCs never share ids.
                    next_session_id: (index as u32).wrapping_mul(0x0101_0000) | 1,
                    ..BmcState::default()
                }),
                in_flight: Gauge::default(),
            });
            bmcs.push(Arc::clone(&bmc));
            tasks.spawn(serve(socket, bmc, Arc::clone(&shared)));
        }
        Ok(IpmiSim { ports, bmcs, shared, tasks })
    }

    /// The UDP port of each BMC, in BMC order.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Whether BMC `index` has its chassis powered on (`None`: no such BMC).
    pub fn power(&self, index: usize) -> Option<bool> {
        let bmc = self.bmcs.get(index)?;
        Some(lock(&bmc.state).power_on)
    }

    /// Sets BMC `index`'s chassis power (as if someone pressed the button).
    pub fn set_power(&self, index: usize, on: bool) {
        if let Some(bmc) = self.bmcs.get(index) {
            lock(&bmc.state).power_on = on;
        }
    }

    /// Established sessions held by BMC `index`.
    pub fn open_sessions(&self, index: usize) -> usize {
        self.bmcs.get(index).map_or(0, |bmc| {
            lock(&bmc.state).sessions.values().filter(|s| s.keys.is_some()).count()
        })
    }

    /// Established sessions held by all BMCs together.
    pub fn open_sessions_total(&self) -> usize {
        (0..self.bmcs.len()).map(|index| self.open_sessions(index)).sum()
    }

    /// What the BMCs saw since the last reset.
    pub fn stats(&self) -> SimStats {
        SimStats {
            requests: self.shared.requests.get(),
            sessions_opened: self.shared.sessions_opened.get(),
            auth_failures: self.shared.auth_failures.get(),
            max_in_flight_per_bmc: self.bmcs.iter().map(|b| b.in_flight.max()).max().unwrap_or(0),
            max_in_flight_total: self.shared.total.max(),
        }
    }

    /// Starts counting afresh.
    pub fn reset_stats(&self) {
        self.shared.requests.reset();
        self.shared.sessions_opened.reset();
        self.shared.auth_failures.reset();
        self.shared.total.reset();
        for bmc in &self.bmcs {
            bmc.in_flight.reset();
        }
    }

    /// Stops answering and closes the sockets.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn serve(socket: UdpSocket, bmc: Arc<SimBmc>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
        let mut batch: Vec<(Vec<u8>, SocketAddr)> = vec![(buf[..n].to_vec(), peer)];
        bmc.in_flight.enter(1);
        shared.total.enter(1);
        if shared.options.latency.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(shared.options.latency).await;
        }
        // Whatever arrived while the first was being worked on was in flight with it.
        while let Ok((n, peer)) = socket.try_recv_from(&mut buf) {
            batch.push((buf[..n].to_vec(), peer));
            bmc.in_flight.enter(1);
            shared.total.enter(1);
        }
        for (datagram, peer) in batch {
            let reply = answer(&bmc, &shared, &datagram);
            shared.requests.add(1);
            // Done before the reply leaves: the client may send its next request (to
            // another BMC) the moment it has the reply, and that one must not overlap.
            bmc.in_flight.leave(1);
            shared.total.leave(1);
            if let Some(reply) = reply {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    }
}

/// The response message to an IPMI request message, or `None` if it is too short.
fn response(request: &[u8], completion: u8, data: &[u8]) -> Option<Vec<u8>> {
    // Request: rsAddr, netFn/LUN, chk1, rqAddr, rqSeq/LUN, cmd, data…, chk2.
    if request.len() < 7 {
        return None;
    }
    let rq_addr = request[3];
    let header = [rq_addr, (request[1] & 0xFC).wrapping_add(4) | (request[4] & 0x03)];
    let mut out = header.to_vec();
    out.push(checksum(&header));
    out.extend_from_slice(&[packet::BMC_ADDRESS, request[4], request[5], completion]);
    out.extend_from_slice(data);
    let sum = checksum(&out[3..]);
    out.push(sum);
    Some(out)
}

/// A request message whose checksums hold: (netfn, cmd, data).
fn parse_request(message: &[u8]) -> Option<(u8, u8, &[u8])> {
    if message.len() < 7 || checksum(&message[..3]) != 0 || checksum(&message[3..]) != 0 {
        return None;
    }
    Some((message[1] >> 2, message[5], &message[6..message.len() - 1]))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn random16() -> [u8; 16] {
    let mut out = [0u8; 16];
    out.iter_mut().for_each(|b| *b = fastrand::u8(..));
    out
}

fn answer(bmc: &SimBmc, shared: &Shared, datagram: &[u8]) -> Option<Vec<u8>> {
    // RMCP header, then the auth type: 0x00 is the IPMI 1.5 wrapper, 0x06 RMCP+.
    match datagram.get(4)? {
        0x00 => channel_capabilities(datagram),
        0x06 => {
            let mut state = lock(&bmc.state);
            rmcp_plus(&mut state, shared, datagram)
        }
        _ => None,
    }
}

/// Get Channel Authentication Capabilities, the only command served outside a session.
fn channel_capabilities(datagram: &[u8]) -> Option<Vec<u8>> {
    let message = decode_v15(datagram).ok()?;
    let (netfn, cmd, _) = parse_request(message)?;
    if (netfn, cmd) != (0x06, 0x38) {
        return None;
    }
    // Channel 1; IPMI 2.0 extended data present, RMCP+ only (no 1.5 auth types);
    // per-message authentication; IPMI 2.0 supported; no OEM data.
    let reply = response(message, CC_OK, &[0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0])?;
    Some(encode_v15(&reply))
}

fn setup_reply(payload_type: PayloadType, body: &[u8]) -> Option<Vec<u8>> {
    Some(encode_v2(payload_type, 0, 0, body, None))
}

fn rmcp_plus(state: &mut BmcState, shared: &Shared, datagram: &[u8]) -> Option<Vec<u8>> {
    let protected = datagram.get(5).is_some_and(|b| b & 0xC0 != 0);
    if protected {
        // The session id in the header picks the keys.
        let session_id = le32(datagram, 6)?;
        let keys = state.sessions.get(&session_id)?.keys.clone()?;
        let packet = decode_v2(datagram, Some(&keys)).ok()?;
        if packet.payload_type != PayloadType::Ipmi || !packet.encrypted {
            return None;
        }
        return in_session(state, session_id, &keys, &packet.payload);
    }
    let packet = decode_v2(datagram, None).ok()?;
    let p = packet.payload.as_slice();
    match packet.payload_type {
        PayloadType::OpenSessionRequest => open_session(state, shared, p),
        PayloadType::Rakp1 => rakp1(state, shared, p),
        PayloadType::Rakp3 => rakp3(state, shared, p),
        // Unauthenticated IPMI messages in RMCP+ format are not served.
        _ => None,
    }
}

fn open_session(state: &mut BmcState, shared: &Shared, p: &[u8]) -> Option<Vec<u8>> {
    let tag = *p.first()?;
    let requested = *p.get(1)? & 0x0F;
    let console_id = le32(p, 4)?;
    // Three 8-byte algorithm records: type, reserved ×2, length 8, algorithm, reserved ×3.
    let algorithms = [*p.get(12)? & 0x3F, *p.get(20)? & 0x3F, *p.get(28)? & 0x3F];
    let suite = shared
        .options
        .suites
        .iter()
        .filter_map(|id| CipherSuite::from_id(*id))
        .find(|s| algorithms == [s.auth.number(), s.integrity.number(), 0x01]);
    let refuse = |status: u8| {
        let mut body = vec![tag, status, 0, 0];
        body.extend_from_slice(&console_id.to_le_bytes());
        setup_reply(PayloadType::OpenSessionResponse, &body)
    };
    let Some(suite) = suite else { return refuse(STATUS_NO_SUITE) };
    if requested > PRIV_ADMIN {
        return refuse(STATUS_UNAUTHORIZED_ROLE);
    }
    while state.sessions.len() >= shared.options.max_sessions.max(1) {
        let Some(oldest) = state.order.pop_front() else { return refuse(STATUS_NO_RESOURCES) };
        state.sessions.remove(&oldest);
    }
    let session_id = loop {
        let id = state.next_session_id;
        state.next_session_id = id.wrapping_add(1).max(1);
        if !state.sessions.contains_key(&id) {
            break id;
        }
    };
    state.sessions.insert(
        session_id,
        SimSession {
            console_id,
            suite,
            max_privilege: if requested == 0 { PRIV_ADMIN } else { requested },
            exchange: None,
            keys: None,
            privilege: PRIV_USER,
            out_seq: 0,
        },
    );
    state.order.push_back(session_id);
    let granted = if requested == 0 { PRIV_ADMIN } else { requested };
    let mut body = vec![tag, 0, granted, 0];
    body.extend_from_slice(&console_id.to_le_bytes());
    body.extend_from_slice(&session_id.to_le_bytes());
    body.extend_from_slice(p.get(8..32)?);
    setup_reply(PayloadType::OpenSessionResponse, &body)
}

fn rakp1(state: &mut BmcState, shared: &Shared, p: &[u8]) -> Option<Vec<u8>> {
    let tag = *p.first()?;
    let session_id = le32(p, 4)?;
    let refuse = |status: u8, console_id: u32| {
        let mut body = vec![tag, status, 0, 0];
        body.extend_from_slice(&console_id.to_le_bytes());
        setup_reply(PayloadType::Rakp2, &body)
    };
    let Some(session) = state.sessions.get_mut(&session_id) else {
        return refuse(STATUS_INVALID_SESSION, 0);
    };
    let role = *p.get(24)?;
    let name_len = usize::from(*p.get(27)?);
    let username = p.get(28..28 + name_len)?.to_vec();
    if username != shared.options.username.as_bytes() {
        shared.auth_failures.add(1);
        return refuse(STATUS_UNAUTHORIZED_NAME, session.console_id);
    }
    let requested = role & 0x0F;
    if requested > PRIV_ADMIN || requested > session.max_privilege {
        return refuse(STATUS_UNAUTHORIZED_ROLE, session.console_id);
    }
    let exchange = RakpExchange {
        console_session_id: session.console_id,
        bmc_session_id: session_id,
        console_random: p.get(8..24)?.try_into().ok()?,
        bmc_random: random16(),
        bmc_guid: shared.guid,
        role,
        username,
    };
    let code = exchange.rakp2_auth_code(session.suite.auth, shared.options.password.as_bytes());
    let mut body = vec![tag, 0, 0, 0];
    body.extend_from_slice(&session.console_id.to_le_bytes());
    body.extend_from_slice(&exchange.bmc_random);
    body.extend_from_slice(&exchange.bmc_guid);
    body.extend_from_slice(&code);
    session.exchange = Some(exchange);
    setup_reply(PayloadType::Rakp2, &body)
}

fn rakp3(state: &mut BmcState, shared: &Shared, p: &[u8]) -> Option<Vec<u8>> {
    let tag = *p.first()?;
    let session_id = le32(p, 4)?;
    let refuse = |status: u8, console_id: u32| {
        let mut body = vec![tag, status, 0, 0];
        body.extend_from_slice(&console_id.to_le_bytes());
        setup_reply(PayloadType::Rakp4, &body)
    };
    let Some(session) = state.sessions.get_mut(&session_id) else {
        return refuse(STATUS_INVALID_SESSION, 0);
    };
    let console_id = session.console_id;
    let Some(exchange) = session.exchange.as_ref() else {
        return refuse(STATUS_INVALID_SESSION, console_id);
    };
    let password = shared.options.password.as_bytes();
    let expected = exchange.rakp3_auth_code(session.suite.auth, password);
    if *p.get(1)? != 0 || p.get(8..)? != expected.as_slice() {
        // A console that could not check RAKP 2 (wrong password) says so with a
        // status, or sends a code keyed with its own password: either way no session.
        shared.auth_failures.add(1);
        state.sessions.remove(&session_id);
        state.order.retain(|id| *id != session_id);
        return refuse(STATUS_INVALID_ICV, console_id);
    }
    let sik = exchange.sik(session.suite.auth, password);
    let check = exchange.rakp4_check_value(session.suite.auth, &sik);
    session.keys = Some(SessionKeys::from_sik(session.suite, &sik));
    // Sessions start at User level until Set Session Privilege Level.
    session.privilege = PRIV_USER;
    shared.sessions_opened.add(1);
    let mut body = vec![tag, 0, 0, 0];
    body.extend_from_slice(&console_id.to_le_bytes());
    body.extend_from_slice(&check);
    setup_reply(PayloadType::Rakp4, &body)
}

fn in_session(
    state: &mut BmcState,
    session_id: u32,
    keys: &SessionKeys,
    message: &[u8],
) -> Option<Vec<u8>> {
    let (netfn, cmd, data) = parse_request(message)?;
    let power_on = state.power_on;
    let session = state.sessions.get_mut(&session_id)?;
    let (completion, out, close, power): (u8, Vec<u8>, bool, Option<bool>) = match (netfn, cmd) {
        // Set Session Privilege Level: 0 reads the current level.
        (0x06, 0x3B) => match data.first().map(|b| b & 0x0F) {
            None => (CC_REQUEST_TOO_SHORT, vec![], false, None),
            Some(0) => (CC_OK, vec![session.privilege], false, None),
            Some(level) if !(PRIV_USER..=PRIV_ADMIN).contains(&level) => {
                (CC_INVALID_FIELD, vec![], false, None)
            }
            Some(level) if level > session.max_privilege => {
                (CC_EXCEEDS_PRIVILEGE, vec![], false, None)
            }
            Some(level) => {
                session.privilege = level;
                (CC_OK, vec![level], false, None)
            }
        },
        // Close Session.
        (0x06, 0x3C) => match le32(data, 0) {
            Some(id) if id == session_id => (CC_OK, vec![], true, None),
            _ => (CC_INVALID_SESSION_ID, vec![], false, None),
        },
        // Get Device ID: an IPMI 2.0 BMC with an OEM manufacturer id.
        (0x06, 0x01) => (
            CC_OK,
            vec![0x20, 0x81, 0x01, 0x00, 0x02, 0x9F, 0x91, 0x12, 0x00, 0x02, 0x0F],
            false,
            None,
        ),
        // Get Chassis Status: current power state, last event, misc state, front panel.
        (0x00, 0x01) => (CC_OK, vec![u8::from(power_on), 0x00, 0x40, 0x00], false, None),
        // Chassis Control needs Operator.
        (0x00, 0x02) if session.privilege < PRIV_OPERATOR => {
            (CC_INSUFFICIENT_PRIVILEGE, vec![], false, None)
        }
        (0x00, 0x02) => match data.first().map(|b| b & 0x0F) {
            None => (CC_REQUEST_TOO_SHORT, vec![], false, None),
            // Off, soft off (the simulated OS obeys at once).
            Some(0x00 | 0x05) => (CC_OK, vec![], false, Some(false)),
            // On; cycle and hard reset leave the machine on.
            Some(0x01..=0x03) => (CC_OK, vec![], false, Some(true)),
            Some(_) => (CC_INVALID_FIELD, vec![], false, None),
        },
        _ => (CC_INVALID_COMMAND, vec![], false, None),
    };
    session.out_seq = session.out_seq.wrapping_add(1).max(1);
    let reply = response(message, completion, &out)?;
    let packet = encode_v2(
        PayloadType::Ipmi,
        session.console_id,
        session.out_seq,
        &reply,
        Some((keys, &random16())),
    );
    if let Some(on) = power {
        state.power_on = on;
    }
    if close {
        state.sessions.remove(&session_id);
        state.order.retain(|id| *id != session_id);
    }
    Some(packet)
}
