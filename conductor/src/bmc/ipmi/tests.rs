//! The driver's `driver_info` rules, and its session layer against a small simulated
//! RMCP+ BMC on `127.0.0.1` that speaks suite 17 (no emulator here does), loses packets
//! and answers "busy" on demand, and records what it received.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::net::UdpSocket;

use super::crypto::{CipherSuite, RakpExchange};
use super::packet::{checksum, decode_v15, decode_v2, encode_v2, PayloadType, SessionKeys};
use super::*;

fn info(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn driver_info_defaults_and_ironic_wording() {
    let parsed = IpmiDriverInfo::parse(&info(json!({"ipmi_address": "10.0.0.5"}))).unwrap();
    assert_eq!(parsed.port, 623);
    assert_eq!(parsed.priv_level, PrivilegeLevel::Administrator);
    assert_eq!(parsed.cipher, CipherChoice::Auto);
    assert_eq!(parsed.username, "");

    let parsed = IpmiDriverInfo::parse(&info(json!({
        "ipmi_address": "bmc.example", "ipmi_port": "6230", "ipmi_username": "root",
        "ipmi_password": "calvin", "ipmi_priv_level": "OPERATOR", "ipmi_cipher_suite": 17,
        "ipmi_protocol_version": "2.0", "deploy_kernel": "ignored"
    })))
    .unwrap();
    assert_eq!(parsed.port, 6230);
    assert_eq!(parsed.priv_level, PrivilegeLevel::Operator);
    assert_eq!(parsed.cipher, CipherChoice::Fixed(17));
    assert_eq!(format!("{parsed:?}").matches("calvin").count(), 0);

    // (driver_info, the words the error must contain)
    let table = [
        (json!({}), "Missing 'ipmi_address' parameter in node's driver_info"),
        (json!({"ipmi_address": " "}), "Missing 'ipmi_address' parameter in node's driver_info"),
        (json!({"ipmi_address": null}), "Missing 'ipmi_address' parameter"),
        (json!({"ipmi_address": "h", "ipmi_port": 70000}), "Invalid port 70000"),
        (json!({"ipmi_address": "h", "ipmi_port": "x"}), "ipmi_port"),
        (
            json!({"ipmi_address": "h", "ipmi_priv_level": "ROOT"}),
            "Invalid privilege level value:ROOT, the valid value can be one of",
        ),
        (json!({"ipmi_address": "h", "ipmi_cipher_suite": 1}), "ipmi_cipher_suite"),
        (
            json!({"ipmi_address": "h", "ipmi_protocol_version": "1.5"}),
            "Invalid IPMI protocol version value 1.5",
        ),
        (json!({"ipmi_address": "h", "ipmi_username": "x".repeat(17)}), "ipmi_username"),
        (json!({"ipmi_address": "h", "ipmi_password": "x".repeat(21)}), "ipmi_password"),
        (json!({"ipmi_address": ["h"]}), "ipmi_address"),
    ];
    let driver = IpmiDriver::new();
    for (value, words) in table {
        let text = value.to_string();
        let error = driver.validate(&info(value)).unwrap_err();
        assert!(error.0.contains(words), "{text}: {error}");
    }
}

/// What the simulated BMC does and saw.
#[derive(Debug, Default)]
struct SimState {
    /// Authentication algorithms it accepts (1 = SHA1, 3 = SHA256).
    auth_algorithms: Vec<u8>,
    password: Vec<u8>,
    /// Datagrams to ignore before answering again.
    drop_next: u32,
    /// Requests to answer with "node busy".
    busy_next: u32,
    power_on: bool,
    /// The privilege level the session was raised to.
    privilege: u8,
    /// Session sequence numbers of the in-session packets received, in order.
    sequences: Vec<u32>,
    /// Commands received in the session, in order.
    commands: Vec<u8>,
    /// Sessions opened (RAKP 4 sent).
    sessions: u32,
    /// The five bytes of boot flags (parameter 5) last set.
    boot_flags: [u8; 5],
}

struct SimSession {
    console_id: u32,
    suite: CipherSuite,
    exchange: Option<RakpExchange>,
    keys: Option<SessionKeys>,
    out_seq: u32,
}

const BMC_SESSION_ID: u32 = 0x5151_5151;

fn response(request: &[u8], completion: u8, data: &[u8]) -> Option<Vec<u8>> {
    // rsAddr, netFn/LUN, chk, rqAddr, rqSeq/LUN, cmd, data…, chk
    if request.len() < 7 {
        return None;
    }
    let header = [0x81, request[1].wrapping_add(4)];
    let mut out = header.to_vec();
    out.push(checksum(&header));
    out.extend_from_slice(&[0x20, request[4], request[5], completion]);
    out.extend_from_slice(data);
    let sum = checksum(&out[3..]);
    out.push(sum);
    Some(out)
}

async fn simulated_bmc(state: Arc<Mutex<SimState>>) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut session: Option<SimSession> = None;
        let mut buf = [0u8; 1024];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
            let datagram = &buf[..n];
            let reply = answer(&state, &mut session, datagram);
            if let Some(reply) = reply {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    port
}

fn answer(
    state: &Mutex<SimState>,
    session: &mut Option<SimSession>,
    datagram: &[u8],
) -> Option<Vec<u8>> {
    let mut state = state.lock().unwrap();
    if datagram.get(4) == Some(&0x00) {
        // Get Channel Authentication Capabilities: channel 1, IPMI 2.0 extended data.
        let message = decode_v15(datagram).ok()?;
        let reply = response(message, 0, &[1, 0x80, 0x04, 0x02, 0, 0, 0, 0])?;
        return Some(super::packet::encode_v15(&reply));
    }
    let protected = datagram.get(5).is_some_and(|b| b & 0xC0 != 0);
    let keys = session.as_ref().and_then(|s| s.keys.clone());
    let packet = decode_v2(datagram, if protected { keys.as_ref() } else { None }).ok()?;
    if packet.payload_type == PayloadType::Ipmi {
        state.sequences.push(packet.sequence);
    }
    if state.drop_next > 0 {
        state.drop_next -= 1;
        return None;
    }
    let p = &packet.payload;
    match packet.payload_type {
        PayloadType::OpenSessionRequest => {
            let console_id = u32::from_le_bytes(p.get(4..8)?.try_into().ok()?);
            let auth = *p.get(12)?;
            if !state.auth_algorithms.contains(&auth) {
                return Some(encode_v2(
                    PayloadType::OpenSessionResponse,
                    0,
                    0,
                    &[p[0], 0x04],
                    None,
                ));
            }
            let suite = if auth == 3 { CipherSuite::SUITE_17 } else { CipherSuite::SUITE_3 };
            *session =
                Some(SimSession { console_id, suite, exchange: None, keys: None, out_seq: 0 });
            let mut body = vec![p[0], 0, 4, 0];
            body.extend_from_slice(&console_id.to_le_bytes());
            body.extend_from_slice(&BMC_SESSION_ID.to_le_bytes());
            body.extend_from_slice(p.get(8..32)?);
            Some(encode_v2(PayloadType::OpenSessionResponse, 0, 0, &body, None))
        }
        PayloadType::Rakp1 => {
            let s = session.as_mut()?;
            let len = usize::from(*p.get(27)?);
            let exchange = RakpExchange {
                console_session_id: s.console_id,
                bmc_session_id: BMC_SESSION_ID,
                console_random: p.get(8..24)?.try_into().ok()?,
                bmc_random: [0x42; 16],
                bmc_guid: [0x17; 16],
                role: *p.get(24)?,
                username: p.get(28..28 + len)?.to_vec(),
            };
            let code = exchange.rakp2_auth_code(s.suite.auth, &state.password);
            let mut body = vec![p[0], 0, 0, 0];
            body.extend_from_slice(&s.console_id.to_le_bytes());
            body.extend_from_slice(&exchange.bmc_random);
            body.extend_from_slice(&exchange.bmc_guid);
            body.extend_from_slice(&code);
            s.exchange = Some(exchange);
            Some(encode_v2(PayloadType::Rakp2, 0, 0, &body, None))
        }
        PayloadType::Rakp3 => {
            let s = session.as_mut()?;
            let exchange = s.exchange.as_ref()?;
            let expected = exchange.rakp3_auth_code(s.suite.auth, &state.password);
            if p.get(8..)? != expected.as_slice() {
                return Some(encode_v2(PayloadType::Rakp4, 0, 0, &[p[0], 0x0F], None));
            }
            let sik = exchange.sik(s.suite.auth, &state.password);
            let mut body = vec![p[0], 0, 0, 0];
            body.extend_from_slice(&s.console_id.to_le_bytes());
            body.extend_from_slice(&exchange.rakp4_check_value(s.suite.auth, &sik));
            s.keys = Some(SessionKeys::from_sik(s.suite, &sik));
            state.sessions += 1;
            Some(encode_v2(PayloadType::Rakp4, 0, 0, &body, None))
        }
        PayloadType::Ipmi => {
            let s = session.as_mut()?;
            let keys = s.keys.clone()?;
            let netfn = p.get(1)? >> 2;
            let cmd = *p.get(5)?;
            let data = p.get(6..p.len().checked_sub(1)?)?;
            state.commands.push(cmd);
            let (cc, out): (u8, Vec<u8>) = if state.busy_next > 0 {
                state.busy_next -= 1;
                (0xC0, vec![])
            } else {
                match (netfn, cmd) {
                    (0x06, 0x3B) => {
                        state.privilege = *data.first()?;
                        (0, vec![state.privilege])
                    }
                    (0x00, 0x01) => (0, vec![u8::from(state.power_on), 0, 0, 0]),
                    (0x00, 0x02) if state.privilege < 3 => (0xD4, vec![]),
                    (0x00, 0x02) => {
                        state.power_on = *data.first()? == 1;
                        (0, vec![])
                    }
                    (0x06, 0x3C) => (0, vec![]),
                    (0x00, 0x08) if data.first() == Some(&5) => {
                        state.boot_flags = data.get(1..6)?.try_into().ok()?;
                        (0, vec![])
                    }
                    (0x00, 0x09) => {
                        let mut out = vec![1, 5];
                        out.extend_from_slice(&state.boot_flags);
                        (0, out)
                    }
                    (0x06, 0x01) => (0, vec![0x20, 1, 1, 0, 0x02, 0, 0x91, 0x12, 0, 0x02, 0x0F]),
                    _ => (0xC1, vec![]),
                }
            };
            let reply = response(p, cc, &out)?;
            s.out_seq += 1;
            Some(encode_v2(
                PayloadType::Ipmi,
                s.console_id,
                s.out_seq,
                &reply,
                Some((&keys, &[9; 16])),
            ))
        }
        _ => None,
    }
}

fn fast_options() -> IpmiOptions {
    IpmiOptions {
        request_timeout: Duration::from_millis(200),
        retries: 2,
        idle_close: Duration::from_secs(5),
        power_poll_interval: Duration::from_millis(20),
        power_timeout: Duration::from_secs(2),
    }
}

fn sim_state(auth_algorithms: &[u8]) -> Arc<Mutex<SimState>> {
    Arc::new(Mutex::new(SimState {
        auth_algorithms: auth_algorithms.to_vec(),
        password: b"password".to_vec(),
        ..SimState::default()
    }))
}

fn sim_info(port: u16, extra: Value) -> Map<String, Value> {
    let mut map = info(json!({
        "ipmi_address": "127.0.0.1", "ipmi_port": port,
        "ipmi_username": "admin", "ipmi_password": "password",
    }));
    map.extend(info(extra));
    map
}

#[tokio::test]
async fn suite_17_session_raises_privilege_before_chassis_control() {
    let state = sim_state(&[1, 3]);
    let port = simulated_bmc(state.clone()).await;
    let driver = IpmiDriver::with_options(fast_options());
    let bmc = driver.connect_ipmi("n", &sim_info(port, json!({}))).unwrap();
    assert_eq!(bmc.cipher_suite().await.unwrap(), 17);
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    let state = state.lock().unwrap();
    assert!(state.power_on);
    assert_eq!(state.privilege, 4);
    // Set Session Privilege Level came first, then everything else in the one session.
    assert_eq!(state.commands.first(), Some(&0x3B));
    assert_eq!(state.sessions, 1);
    // Sequence numbers start at 1 and only grow.
    assert_eq!(state.sequences.first(), Some(&1));
    assert!(state.sequences.windows(2).all(|w| w[1] > w[0]), "{:?}", state.sequences);
}

#[tokio::test]
async fn auto_falls_back_to_suite_3_when_17_is_refused() {
    let state = sim_state(&[1]);
    let port = simulated_bmc(state.clone()).await;
    let driver = IpmiDriver::with_options(fast_options());
    let bmc = driver.connect_ipmi("n", &sim_info(port, json!({}))).unwrap();
    assert_eq!(bmc.cipher_suite().await.unwrap(), 3);
    let fixed =
        driver.connect_ipmi("n", &sim_info(port, json!({"ipmi_cipher_suite": 17}))).unwrap();
    let error = fixed.power_state().await.unwrap_err();
    assert!(matches!(error, BmcError::Unsupported { .. }), "{error:?}");
}

#[tokio::test]
async fn lost_packets_are_retransmitted_with_new_sequence_numbers() {
    let state = sim_state(&[3]);
    let port = simulated_bmc(state.clone()).await;
    let driver = IpmiDriver::with_options(fast_options());
    let bmc = driver.connect_ipmi("n", &sim_info(port, json!({}))).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    let before = state.lock().unwrap().sequences.len();
    state.lock().unwrap().drop_next = 2;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    let state = state.lock().unwrap();
    let sent = &state.sequences[before..];
    assert_eq!(sent.len(), 3, "two lost, the third answered: {sent:?}");
    assert!(sent.windows(2).all(|w| w[1] > w[0]), "{sent:?}");
    assert_eq!(state.sessions, 1, "loss inside the bound keeps the session");
}

#[tokio::test]
async fn busy_and_privilege_completion_codes_are_typed() {
    let state = sim_state(&[3]);
    let port = simulated_bmc(state.clone()).await;
    let driver = IpmiDriver::with_options(fast_options());
    let bmc = driver.connect_ipmi("n", &sim_info(port, json!({}))).unwrap();
    bmc.power_state().await.unwrap();
    state.lock().unwrap().busy_next = 1;
    let error = bmc.power_state().await.unwrap_err();
    assert!(matches!(error, BmcError::Busy { .. }), "{error:?}");
    assert!(error.is_transient());
    assert!(error.to_string().contains("node busy"), "{error}");
    // The session survives a busy answer.
    bmc.power_state().await.unwrap();
    assert_eq!(state.lock().unwrap().sessions, 1);

    let user =
        driver.connect_ipmi("n", &sim_info(port, json!({"ipmi_priv_level": "USER"}))).unwrap();
    let error = user.set_power(PowerAction::On, None).await.unwrap_err();
    assert!(matches!(error, BmcError::InsufficientPrivilege { .. }), "{error:?}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_wrong_password_fails_rakp_2_verification() {
    let state = sim_state(&[3]);
    state.lock().unwrap().password = b"other".to_vec();
    let port = simulated_bmc(state.clone()).await;
    let driver = IpmiDriver::with_options(fast_options());
    let bmc = driver.connect_ipmi("n", &sim_info(port, json!({}))).unwrap();
    let error = bmc.power_state().await.unwrap_err();
    assert!(matches!(error, BmcError::AuthFailed { .. }), "{error:?}");
    assert_eq!(state.lock().unwrap().sessions, 0);
}

#[tokio::test]
async fn the_registered_driver_is_ipmi() {
    let drivers = crate::service::default_drivers();
    let driver = drivers.get(IPMI_DRIVER_NAME).expect("ipmi registered");
    assert_eq!(driver.name(), "ipmi");
}

#[tokio::test]
async fn boot_mode_sets_or_clears_the_efi_bit_and_none_keeps_it() {
    let state = sim_state(&[3]);
    let port = simulated_bmc(state.clone()).await;
    let driver = IpmiDriver::with_options(fast_options());
    let bmc = driver.connect_ipmi("n", &sim_info(port, json!({}))).unwrap();
    // (mode, device, persistent, byte 1 of the flags, byte 2)
    let table = [
        (Some(BootMode::Uefi), BootDevice::Pxe, false, 0x80 | 0x20, 0x04),
        (Some(BootMode::Bios), BootDevice::Pxe, false, 0x80, 0x04),
        (Some(BootMode::Uefi), BootDevice::Disk, true, 0x80 | 0x40 | 0x20, 0x08),
        (None, BootDevice::Cdrom, false, 0x80 | 0x20, 0x14),
        (Some(BootMode::Bios), BootDevice::Disk, true, 0x80 | 0x40, 0x08),
        (None, BootDevice::Pxe, true, 0x80 | 0x40, 0x04),
    ];
    for (mode, device, persistent, byte1, byte2) in table {
        bmc.set_boot_device(device, persistent, mode).await.unwrap();
        let flags = state.lock().unwrap().boot_flags;
        assert_eq!((flags[0], flags[1]), (byte1, byte2), "{mode:?} {device:?} {persistent}");
        assert_eq!(bmc.boot_device().await.unwrap().device, Some(device));
    }
}

#[tokio::test]
async fn close_all_sends_close_session_and_forgets_the_session() {
    let state = sim_state(&[3]);
    let port = simulated_bmc(state.clone()).await;
    let driver = IpmiDriver::with_options(fast_options());
    let bmc = driver.connect_ipmi("n", &sim_info(port, json!({}))).unwrap();
    bmc.power_state().await.unwrap();
    assert_eq!(driver.session_count(), 1);
    driver.close_all().await;
    assert_eq!(state.lock().unwrap().commands.last(), Some(&0x3C), "Close Session sent");
    assert_eq!(driver.session_count(), 0);
    // Closing again has nothing to do; the BMC is still usable in a new session.
    driver.close_all().await;
    bmc.power_state().await.unwrap();
    assert_eq!(state.lock().unwrap().sessions, 2);
}
