//! The response headers a resumable download depends on, parsed without trusting them.

use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, LAST_MODIFIED};

/// A parsed `Content-Range: bytes first-last/total` of a 206 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub first: u64,
    pub last: u64,
    /// `None` when the server wrote `*` (length unknown).
    pub total: Option<u64>,
}

impl ContentRange {
    /// Parses the value of a 206 reply's `Content-Range`; `None` when it is malformed,
    /// inverted, or ends past the stated total.
    pub fn parse(value: &str) -> Option<Self> {
        let rest = value.trim().strip_prefix("bytes")?;
        let rest = rest.strip_prefix(|c: char| c.is_ascii_whitespace())?.trim_start();
        let (range, total) = rest.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let first = parse_u64(first)?;
        let last = parse_u64(last)?;
        let total = match total.trim() {
            "*" => None,
            t => Some(parse_u64(t)?),
        };
        if last < first || total.is_some_and(|t| last >= t) {
            return None;
        }
        Some(Self { first, last, total })
    }

    /// How many bytes the range covers.
    pub fn len(&self) -> u64 {
        (self.last - self.first).saturating_add(1)
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What identifies one version of a resource: a resumed stream must come from the same
/// version as the bytes already received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Self { etag: text(ETAG), last_modified: text(LAST_MODIFIED) }
    }

    /// Whether `other` may be the same version: every validator both sides carry agrees.
    pub fn compatible(&self, other: &Self) -> bool {
        fn agree(a: &Option<String>, b: &Option<String>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        }
        agree(&self.etag, &other.etag) && agree(&self.last_modified, &other.last_modified)
    }

    /// The `If-Range` value to send with a resume: a strong ETag, else the
    /// Last-Modified date (weak ETags are not allowed there).
    pub fn if_range(&self) -> Option<&str> {
        match &self.etag {
            Some(tag) if !tag.starts_with("W/") => Some(tag),
            _ => self.last_modified.as_deref(),
        }
    }
}

/// The `Content-Range` header of a reply, if it is present and text.
pub(crate) fn content_range_text(headers: &HeaderMap) -> Option<&str> {
    headers.get(CONTENT_RANGE).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_table() {
        let cr = |first, last, total| Some(ContentRange { first, last, total });
        let table: &[(&str, Option<ContentRange>)] = &[
            ("bytes 0-99/100", cr(0, 99, Some(100))),
            ("bytes 10-10/11", cr(10, 10, Some(11))),
            ("bytes 5-9/*", cr(5, 9, None)),
            ("  bytes   7-8/20 ", cr(7, 8, Some(20))),
            (
                "bytes 0-18446744073709551614/18446744073709551615",
                cr(0, u64::MAX - 1, Some(u64::MAX)),
            ),
            ("bytes 0-99/99", None),
            ("bytes 9-5/100", None),
            ("bytes */100", None),
            ("bytes -5/100", None),
            ("bytes 1-2", None),
            ("items 0-1/2", None),
            ("bytes0-1/2", None),
            ("bytes +1-2/3", None),
            ("bytes 0-1/18446744073709551616", None),
            ("", None),
        ];
        for (value, want) in table {
            assert_eq!(ContentRange::parse(value), *want, "{value:?}");
        }
        assert_eq!(ContentRange::parse("bytes 10-19/100").unwrap().len(), 10);
        let whole = ContentRange::parse("bytes 0-18446744073709551615/*").unwrap();
        assert_eq!(whole.len(), u64::MAX);
    }

    #[test]
    fn validators_agree_only_where_both_sides_speak() {
        let v = |etag: Option<&str>, lm: Option<&str>| Validators {
            etag: etag.map(str::to_owned),
            last_modified: lm.map(str::to_owned),
        };
        let table = [
            (v(Some("\"a\""), None), v(Some("\"a\""), None), true),
            (v(Some("\"a\""), None), v(Some("\"b\""), None), false),
            (v(Some("\"a\""), Some("x")), v(None, Some("y")), false),
            (v(None, None), v(Some("\"b\""), Some("y")), true),
            (v(Some("\"a\""), Some("x")), v(Some("\"a\""), Some("x")), true),
        ];
        for (a, b, want) in table {
            assert_eq!(a.compatible(&b), want, "{a:?} vs {b:?}");
        }
        assert_eq!(v(Some("\"a\""), Some("d")).if_range(), Some("\"a\""));
        assert_eq!(v(Some("W/\"a\""), Some("d")).if_range(), Some("d"));
        assert_eq!(v(Some("W/\"a\""), None).if_range(), None);
    }
}
