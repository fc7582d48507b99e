use super::*;

fn keys(suite: CipherSuite) -> SessionKeys {
    SessionKeys::from_sik(suite, &[0x33; 32][..suite.auth.digest_len()])
}

#[test]
fn request_messages_carry_addresses_sequence_and_checksums() {
    // Get Device ID (netFn App, cmd 0x01), rqSeq 1, no data.
    let request = IpmiRequest { netfn: 0x06, cmd: 0x01, rq_seq: 1, data: vec![] };
    // rsAddr 0x20, netFn 6 << 2, 0x100 - (0x20 + 0x18); rqAddr 0x81, rqSeq 1 << 2, cmd,
    // 0x100 - (0x81 + 0x04 + 0x01).
    assert_eq!(encode_request(&request), vec![0x20, 0x18, 0xC8, 0x81, 0x04, 0x01, 0x7A]);
    let with_data = IpmiRequest { netfn: 0x00, cmd: 0x02, rq_seq: 63, data: vec![0x01] };
    let bytes = encode_request(&with_data);
    assert_eq!(&bytes[..6], &[0x20, 0x00, 0xE0, 0x81, 0xFC, 0x02]);
    assert_eq!(checksum(&bytes[..3]), 0);
    assert_eq!(checksum(&bytes[3..]), 0);
}

#[test]
fn responses_are_decoded_and_checksums_enforced() {
    // rqAddr 0x81, netFn 7 << 2, chk, rsAddr 0x20, rqSeq 5 << 2, cmd 1, cc 0, data, chk.
    let mut msg = vec![0x81, 0x1C, 0x63, 0x20, 0x14, 0x01, 0x00, 0xAA, 0xBB];
    msg.push(checksum(&msg[3..]));
    let response = decode_response(&msg).unwrap();
    assert_eq!(
        response,
        IpmiResponse { netfn: 7, cmd: 1, rq_seq: 5, completion_code: 0, data: vec![0xAA, 0xBB] }
    );
    let mut bad_header = msg.clone();
    bad_header[2] ^= 1;
    assert_eq!(decode_response(&bad_header), Err(PacketError::HeaderChecksum));
    let mut bad_data = msg.clone();
    bad_data[7] ^= 1;
    assert_eq!(decode_response(&bad_data), Err(PacketError::DataChecksum));
    for len in 0..8 {
        assert!(matches!(decode_response(&msg[..len]), Err(PacketError::Truncated { .. })));
    }
}

#[test]
fn ipmi_15_wrapper_layout() {
    let packet = encode_v15(&[1, 2, 3]);
    assert_eq!(packet, vec![6, 0, 0xFF, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]);
    assert_eq!(decode_v15(&packet).unwrap(), &[1, 2, 3]);
    let mut md5 = packet.clone();
    md5[4] = 2;
    assert_eq!(decode_v15(&md5), Err(PacketError::AuthType(2)));
    assert!(matches!(decode_v15(&packet[..15]), Err(PacketError::Truncated { .. })));
    let mut not_rmcp = packet;
    not_rmcp[3] = 6;
    assert!(matches!(decode_v15(&not_rmcp), Err(PacketError::NotRmcp(_))));
}

#[test]
fn setup_packets_go_in_clear() {
    let packet = encode_v2(PayloadType::Rakp1, 0, 0, &[9; 5], None);
    assert_eq!(&packet[..6], &[6, 0, 0xFF, 7, 0x06, 0x12]);
    assert_eq!(&packet[14..16], &[5, 0]);
    assert_eq!(packet.len(), 16 + 5);
    let parsed = decode_v2(&packet, None).unwrap();
    assert_eq!(parsed.payload_type, PayloadType::Rakp1);
    assert!(!parsed.encrypted && !parsed.authenticated);
    assert_eq!(parsed.payload, vec![9; 5]);
}

#[test]
fn session_packets_are_encrypted_padded_and_authenticated() {
    for suite in [CipherSuite::SUITE_3, CipherSuite::SUITE_17] {
        let keys = keys(suite);
        for len in 0..40 {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let iv = [len as u8; 16];
            let packet = encode_v2(PayloadType::Ipmi, 0xDEAD_BEEF, 7, &payload, Some((&keys, &iv)));
            assert_eq!(packet[5], 0xC0, "encrypted and authenticated");
            // From the auth type to the next header: a multiple of four.
            let covered = packet.len() - 4 - suite.integrity.auth_code_len();
            assert_eq!(covered % 4, 0, "suite {} len {len}", suite.id);
            assert_eq!(packet[4 + covered - 1], 0x07);
            let parsed = decode_v2(&packet, Some(&keys)).unwrap();
            assert_eq!(parsed.session_id, 0xDEAD_BEEF);
            assert_eq!(parsed.sequence, 7);
            assert_eq!(parsed.payload, payload, "suite {} len {len}", suite.id);
            // The payload does not travel in clear.
            if len >= 8 {
                assert!(!packet.windows(len).any(|w| w == payload.as_slice()));
            }
        }
    }
}

#[test]
fn any_changed_byte_or_length_is_refused_without_panicking() {
    let keys = keys(CipherSuite::SUITE_17);
    let packet = encode_v2(PayloadType::Ipmi, 1, 2, b"chassis status", Some((&keys, &[5; 16])));
    for i in 0..packet.len() {
        for flip in [0x01, 0x80] {
            let mut bad = packet.clone();
            bad[i] ^= flip;
            assert!(decode_v2(&bad, Some(&keys)).is_err(), "byte {i} ^ {flip:#x} accepted");
        }
    }
    for len in 0..packet.len() {
        assert!(decode_v2(&packet[..len], Some(&keys)).is_err(), "{len}");
        let _ = decode_v2(&packet[..len], None);
        let _ = decode_v15(&packet[..len]);
    }
    // Keys of another session do not verify.
    let other = SessionKeys::from_sik(CipherSuite::SUITE_17, &[0x34; 32]);
    assert_eq!(decode_v2(&packet, Some(&other)), Err(PacketError::Integrity));
}

#[test]
fn protection_cannot_be_stripped_or_added() {
    let keys = keys(CipherSuite::SUITE_3);
    let clear = encode_v2(PayloadType::Ipmi, 1, 2, b"x", None);
    assert_eq!(decode_v2(&clear, Some(&keys)), Err(PacketError::Unprotected));
    let sealed = encode_v2(PayloadType::Ipmi, 1, 2, b"x", Some((&keys, &[0; 16])));
    assert_eq!(decode_v2(&sealed, None), Err(PacketError::UnexpectedProtection));
}

#[test]
fn unknown_payload_types_are_named() {
    let mut packet = encode_v2(PayloadType::Ipmi, 0, 0, b"", None);
    packet[5] = 0x02; // SOL
    assert_eq!(decode_v2(&packet, None), Err(PacketError::PayloadType(0x02)));
}
