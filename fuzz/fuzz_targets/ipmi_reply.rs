//! BMC replies arrive over UDP from whatever answers on the port: every parser of the IPMI
//! driver must refuse garbage with an error, never panic.
#![no_main]

use ferric_conductor::bmc::ipmi::commands;
use ferric_conductor::bmc::ipmi::crypto::CipherSuite;
use ferric_conductor::bmc::ipmi::packet::{self, checksum, SessionKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = packet::decode_v15(data) {
        let _ = packet::decode_response(message);
    }
    if let Ok(response) = packet::decode_response(data) {
        // Accepted messages carry valid checksums over both parts.
        assert_eq!(checksum(&data[..3]), 0);
        assert_eq!(checksum(&data[3..]), 0);
        assert!(response.rq_seq < 64);
    }
    let _ = packet::decode_v2(data, None);
    for suite in [CipherSuite::SUITE_3, CipherSuite::SUITE_17] {
        let keys = SessionKeys::from_sik(suite, &[0x5A; 32][..suite.auth.digest_len()]);
        if let Ok(reply) = packet::decode_v2(data, Some(&keys)) {
            // Only a packet carrying a valid AuthCode gets through.
            assert!(reply.authenticated);
            let _ = packet::decode_response(&reply.payload);
        }
    }
    let tag = data.first().copied().unwrap_or(0);
    let _ = commands::parse_channel_auth_capabilities(data);
    let _ = commands::parse_open_session_response(data, tag, 1);
    let _ = commands::parse_rakp2(data, tag, 1);
    let _ = commands::parse_rakp4(data, tag, 1);
    let _ = commands::parse_chassis_status(data);
    let _ = commands::parse_boot_flags(data);
    let _ = commands::parse_device_id(data);
    let _ = commands::parse_lan_ip(data);
    let _ = commands::parse_lan_mac(data);
});
