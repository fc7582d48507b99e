//! Worked values for the RAKP computations.
//!
//! The expected bytes were computed independently of this code, with Python's `hmac` and
//! `hashlib` modules applying the IPMI 2.0 formulas (§13.31–13.32) to the inputs of
//! [`exchange`]: e.g. `hmac.new(b"password", sid_m + sid_c + r_m + r_c + guid + bytes([0x14,
//! 5]) + b"admin", hashlib.sha256).digest()` for RAKP 2, with the session ids packed
//! little-endian (`struct.pack("<I", …)`). The AES vector came from
//! `openssl enc -aes-128-cbc -nopad -K … -iv …` over the padded plaintext.

use super::*;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

fn seq16(start: u8) -> [u8; 16] {
    std::array::from_fn(|i| start + i as u8)
}

fn exchange() -> RakpExchange {
    RakpExchange {
        console_session_id: 0x0A0B_0C0D,
        bmc_session_id: 0x1122_3344,
        console_random: seq16(0x00),
        bmc_random: seq16(0x10),
        bmc_guid: seq16(0x20),
        role: 0x14,
        username: b"admin".to_vec(),
    }
}

const KUID: &[u8] = b"password";

/// Everything a session derives, per suite: RAKP 2, RAKP 3, SIK, RAKP 4, K1, K2 and the
/// AuthCode of [`integrity_input`].
struct Worked {
    suite: CipherSuite,
    rakp2: &'static str,
    rakp3: &'static str,
    sik: &'static str,
    rakp4: &'static str,
    k1: &'static str,
    k2: &'static str,
    auth_code: &'static str,
}

const WORKED: [Worked; 2] = [
    Worked {
        suite: CipherSuite::SUITE_17,
        rakp2: "8b2daeca888b6b76c21b556e5ba80167cc0e05a2e022f95d1f0f0c5d66cd787a",
        rakp3: "f692d9350f377f6cecb3256331025972cb433cebf70d55d1638cd82048bd4bdc",
        sik: "e5935f7199865ad961063477b0662684e2ce9b1da8f2b8d41c5ce127d37e9bcf",
        rakp4: "91a53fdab337c174a7f2329dda8d4286",
        k1: "dc4fe73d075306f6897115dd63257385e845c10404fa1d73991790c6a101bec2",
        k2: "2a4f969ea6dfa83066f36674fdc2fea289fa1a21da90303e9b5269b54ec5adb5",
        auth_code: "c38a761276df3500b2f17024f52b5248",
    },
    Worked {
        suite: CipherSuite::SUITE_3,
        rakp2: "50efc181f6351c517429bc0e851ec02f3ae7d73d",
        rakp3: "d0bab55d3abbc6253ec0fa57495068c8e8b2609a",
        sik: "122c77c4b11ccd93251cbae6c34a9cb6310da154",
        rakp4: "d9e15b7475416719001dc211",
        k1: "e4472be78f9a81fa68297aab696a7be8c97fc9f8",
        k2: "2b6552012a2517cb3b5713901d757a6efc7d8301",
        auth_code: "c8671ca5f1cf32e20137e979",
    },
];

/// An authenticated packet from the auth type byte to the next-header byte: header with
/// session id 0x11223344 and sequence 1, a 32-byte payload 0x40..0x5f, pad 0xFF 0xFF, pad
/// length 2, next header 7.
fn integrity_input() -> Vec<u8> {
    let mut data = vec![0x06, 0xC0, 0x44, 0x33, 0x22, 0x11, 0x01, 0, 0, 0, 0x20, 0x00];
    data.extend(0x40u8..0x60);
    data.extend_from_slice(&[0xFF, 0xFF, 0x02, 0x07]);
    data
}

#[test]
fn rakp_codes_and_keys_match_the_worked_values() {
    let exchange = exchange();
    for worked in WORKED {
        let suite = worked.suite;
        let id = suite.id;
        assert_eq!(exchange.rakp2_auth_code(suite.auth, KUID), hex(worked.rakp2), "suite {id}");
        assert_eq!(exchange.rakp3_auth_code(suite.auth, KUID), hex(worked.rakp3), "suite {id}");
        let sik = exchange.sik(suite.auth, KUID);
        assert_eq!(sik, hex(worked.sik), "suite {id}");
        assert_eq!(exchange.rakp4_check_value(suite.auth, &sik), hex(worked.rakp4), "suite {id}");
        let k1 = derive_key(suite.auth, &sik, 1);
        assert_eq!(k1, hex(worked.k1), "suite {id}");
        assert_eq!(derive_key(suite.auth, &sik, 2), hex(worked.k2), "suite {id}");
        assert_eq!(
            suite.integrity.auth_code(&k1, &integrity_input()),
            hex(worked.auth_code),
            "suite {id}"
        );
    }
}

#[test]
fn lengths_follow_the_algorithms() {
    assert_eq!(CipherSuite::SUITE_17.auth.digest_len(), 32);
    assert_eq!(CipherSuite::SUITE_17.integrity.auth_code_len(), 16);
    assert_eq!(CipherSuite::SUITE_3.auth.digest_len(), 20);
    assert_eq!(CipherSuite::SUITE_3.integrity.auth_code_len(), 12);
    assert_eq!(CipherSuite::from_id(17), Some(CipherSuite::SUITE_17));
    assert_eq!(CipherSuite::from_id(3), Some(CipherSuite::SUITE_3));
    assert_eq!(CipherSuite::from_id(1), None);
}

#[test]
fn a_different_password_or_role_changes_every_code() {
    let base = exchange();
    let mut other_role = exchange();
    other_role.role = 0x04;
    for suite in [CipherSuite::SUITE_3, CipherSuite::SUITE_17] {
        let code = base.rakp2_auth_code(suite.auth, KUID);
        assert_ne!(code, base.rakp2_auth_code(suite.auth, b"passwore"));
        assert_ne!(code, other_role.rakp2_auth_code(suite.auth, KUID));
        assert_ne!(base.sik(suite.auth, KUID), other_role.sik(suite.auth, KUID));
    }
}

#[test]
fn aes_cbc_matches_openssl_and_round_trips() {
    let key: [u8; 16] = seq16(0x00);
    let iv: [u8; 16] = seq16(0xF0);
    let plaintext: Vec<u8> = (1..=10).collect();
    let sealed = encrypt_payload(&key, &iv, &plaintext);
    assert_eq!(&sealed[..16], &iv);
    assert_eq!(&sealed[16..], hex("12020c421efb8057eac68158fc2bddd7").as_slice());
    assert_eq!(decrypt_payload(&key, &sealed).unwrap(), plaintext);
}

#[test]
fn padding_always_fills_whole_blocks() {
    let key = seq16(7);
    let iv = seq16(9);
    for len in 0..=48 {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5A).collect();
        let sealed = encrypt_payload(&key, &iv, &plaintext);
        assert_eq!(sealed.len() % 16, 0, "{len}");
        assert!(sealed.len() > 16 + len, "{len}");
        assert!(sealed.len() < 16 + len + 1 + 16, "{len}");
        assert_eq!(decrypt_payload(&key, &sealed).unwrap(), plaintext, "{len}");
    }
}

#[test]
fn bad_ciphertexts_are_errors() {
    let key = seq16(1);
    assert_eq!(decrypt_payload(&key, &[0; 16]), Err(DecryptError::Length(16)));
    assert_eq!(decrypt_payload(&key, &[0; 40]), Err(DecryptError::Length(40)));
    // A well-formed block whose padding is wrong under another key.
    let sealed = encrypt_payload(&seq16(2), &seq16(3), b"abc");
    let mut failures = 0;
    for other in 0..=255u8 {
        if decrypt_payload(&[other; 16], &sealed).is_err() {
            failures += 1;
        }
    }
    // Nearly every wrong key leaves malformed padding.
    assert!(failures > 200, "{failures}");
}

#[test]
fn codes_compare_by_value_and_length() {
    assert!(codes_equal(b"abc", b"abc"));
    assert!(!codes_equal(b"abc", b"abd"));
    assert!(!codes_equal(b"abc", b"ab"));
}
