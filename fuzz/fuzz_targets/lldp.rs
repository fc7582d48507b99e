//! LLDP TLVs are whatever a switch (or anything on the wire) sent: the parser must turn
//! any bytes into a result or an error, never panic.
#![no_main]

use ferric_conductor::inspection::lldp::{self, LldpInfo, MAX_TLV_VALUE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The bytes as a whole LLDPDU.
    if let Ok(tlvs) = lldp::split_lldpdu(data) {
        for (tlv_type, value) in &tlvs {
            // A 7-bit type and a 9-bit length.
            assert!(*tlv_type <= 127 && value.len() <= MAX_TLV_VALUE_LEN);
        }
    }
    if let Ok(info) = lldp::parse_lldpdu(data) {
        let _ = info.to_json();
    }

    // The bytes as one TLV of the type the first byte names, as the agent reports it.
    if let Some((&tlv_type, value)) = data.split_first() {
        let mut info = LldpInfo::default();
        let _ = info.add_tlv(tlv_type & 0x7f, value);
        let _ = info.to_json();
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(lldp::decode_hex(&hex).as_deref(), Ok(value));
        let reported = serde_json::json!([[tlv_type, hex]]);
        if let Some(list) = reported.as_array() {
            let _ = lldp::parse_reported(list);
        }
    }

    // The bytes as text in place of the hex string.
    let text = String::from_utf8_lossy(data);
    let _ = lldp::parse_reported(&[serde_json::json!([1, text])]);
});
