//! Tokenizer for the kernel command line (`/proc/cmdline`), read the way
//! ironic-python-agent reads it.
//!
//! The rules are deliberately naive because they must match what Ironic and operators
//! expect from IPA: split on whitespace, keep only `key=value` tokens (split at the first
//! `=`), no quoting of any kind, and a later duplicate replaces an earlier one. Boot
//! loaders and firmware occasionally leave stray bytes on the line, so input that is not
//! UTF-8 is converted lossily instead of being rejected.

use std::collections::BTreeMap;

/// Kernel parameters by name. Keys are unique (later duplicates won) and iterate in
/// name order, so anything printed from the map is deterministic.
pub type KernelParams = BTreeMap<String, String>;

/// Splits a raw kernel command line into its `key=value` parameters.
///
/// Tokens without `=` (`quiet`, `ro`) carry no value and are ignored, as are tokens
/// with an empty key (`=x`), which no parameter could ever be looked up by.
pub fn parse_cmdline(raw: &[u8]) -> KernelParams {
    let text = String::from_utf8_lossy(raw);
    let mut params = KernelParams::new();
    for token in text.split_whitespace() {
        if let Some((key, value)) = token.split_once('=') {
            if !key.is_empty() {
                params.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> KernelParams {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A raw command line and the parameters it must yield.
    type Case<'a> = (&'a [u8], &'a [(&'a str, &'a str)]);

    #[test]
    fn tokenizes_like_ipa() {
        let cases: &[Case] = &[
            (b"", &[]),
            (b"   \n", &[]),
            (b"quiet ro", &[]),
            (b"a=1", &[("a", "1")]),
            (b"a=1 quiet b=2\n", &[("a", "1"), ("b", "2")]),
            // Split at the first `=` only.
            (b"ipa-api-url=http://h/?x=y", &[("ipa-api-url", "http://h/?x=y")]),
            (b"a=b=c", &[("a", "b=c")]),
            // Empty values are kept: `ipa-agent-token=` is a parameter with no value.
            (b"a=", &[("a", "")]),
            (b"=orphan", &[]),
            // Later duplicates win.
            (b"a=1 a=2 a=3", &[("a", "3")]),
            // No quoting: quotes are ordinary characters and spaces always split.
            (b"a=\"x y\"", &[("a", "\"x")]),
            // Any whitespace separates tokens.
            (b"a=1\tb=2\r\nc=3  d=4", &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]),
            (b"BOOTIF=01-52-54-00-12-34-56", &[("BOOTIF", "01-52-54-00-12-34-56")]),
        ];
        for (raw, want) in cases {
            assert_eq!(
                parse_cmdline(raw),
                params(want),
                "input {:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn non_utf8_is_converted_lossily() {
        let got = parse_cmdline(b"a=\xff\xfe b=ok \xc3=v");
        assert_eq!(got.get("a").map(String::as_str), Some("\u{fffd}\u{fffd}"));
        assert_eq!(got.get("b").map(String::as_str), Some("ok"));
        assert_eq!(got.get("\u{fffd}").map(String::as_str), Some("v"));
    }

    #[test]
    fn iterates_in_name_order() {
        let got = parse_cmdline(b"z=1 a=2 m=3");
        let keys: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "m", "z"]);
    }

    #[test]
    fn random_bytes_never_panic_and_yield_clean_tokens() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let len = (round % 97) as usize;
            let raw: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Bias towards `=` and spaces so that many tokens form.
                    match state % 8 {
                        0 => b'=',
                        1 => b' ',
                        _ => (state >> 8) as u8,
                    }
                })
                .collect();
            for (k, v) in parse_cmdline(&raw) {
                assert!(!k.is_empty());
                assert!(!k.contains('=') && !k.chars().any(char::is_whitespace), "key {k:?}");
                assert!(!v.chars().any(char::is_whitespace), "value {v:?}");
            }
        }
    }
}
