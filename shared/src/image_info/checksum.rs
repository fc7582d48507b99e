//! Hash algorithms and checksum files (`sha256sum` / BSD `shasum --tag` output).
//!
//! A checksum file comes from an arbitrary web server, so everything here treats it as
//! hostile text: no indexing, no panics, and errors that say which rule was broken
//! without echoing the (possibly huge) content back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Digest algorithms an image may be verified with (`os_hash_algo` names, lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    pub const ALL: [HashAlgorithm; 6] = [
        HashAlgorithm::Md5,
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha224,
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
    ];

    /// The name as `os_hash_algo` spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Md5 => "md5",
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha224 => "sha224",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// Length of the digest in hex characters.
    pub const fn hex_len(self) -> usize {
        match self {
            HashAlgorithm::Md5 => 32,
            HashAlgorithm::Sha1 => 40,
            HashAlgorithm::Sha224 => 56,
            HashAlgorithm::Sha256 => 64,
            HashAlgorithm::Sha384 => 96,
            HashAlgorithm::Sha512 => 128,
        }
    }

    /// The algorithm of a bare digest, from its length alone: 32 is MD5 (only when MD5 is
    /// allowed), 64 SHA-256, 128 SHA-512. Other lengths are ambiguous or unknown.
    pub fn from_digest_len(
        len: usize,
        md5_allowed: bool,
    ) -> Result<HashAlgorithm, DigestLengthError> {
        match len {
            32 if md5_allowed => Ok(HashAlgorithm::Md5),
            32 => Err(DigestLengthError::Md5NotAllowed),
            64 => Ok(HashAlgorithm::Sha256),
            128 => Ok(HashAlgorithm::Sha512),
            other => Err(DigestLengthError::UnknownLength(other)),
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the supported algorithms (names are lowercase).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported hash algorithm {0:?}")]
pub struct UnknownHashAlgorithm(pub String);

impl FromStr for HashAlgorithm {
    type Err = UnknownHashAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownHashAlgorithm(s.to_owned()))
    }
}

/// Why a digest's length does not identify its algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DigestLengthError {
    #[error("a 32-character digest means MD5, which is not allowed")]
    Md5NotAllowed,
    #[error("a {0}-character digest is not MD5 (32), SHA-256 (64) or SHA-512 (128)")]
    UnknownLength(usize),
}

/// What is wrong with a checksum file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumFileError {
    #[error("checksum file is empty")]
    Empty,
    #[error("checksum file holds a single value that is not a 32, 64 or 128 digit hex digest")]
    InvalidSingleValue,
    #[error("checksum file does not list {file:?}")]
    FileNotListed { file: String },
    #[error("checksum file line {line} names {file:?} but has no 32, 64 or 128 digit hex digest")]
    InvalidDigest { line: usize, file: String },
}

/// Digest lengths a checksum file may carry (MD5, SHA-256, SHA-512).
const FILE_DIGEST_LENGTHS: [usize; 3] = [32, 64, 128];

/// Finds the digest for `image_file_name` in a checksum file and returns it in lowercase.
///
/// - A file whose only line has no space is the digest itself.
/// - Otherwise the line naming the file is used, in GNU style (`<hex>  <name>`, with `*`
///   before the name for binary mode) or BSD style (`SHA256 (<name>) = <hex>`). A line
///   whose name matches and whose first or last token is the digest is also accepted.
/// - Blank lines and lines starting with `#` are skipped; CRLF line ends are fine.
/// - A listed name matches when it equals `image_file_name` or ends in `/<image_file_name>`
///   (files produced as `sha256sum ./dir/image`).
pub fn parse_checksum_file(text: &str, image_file_name: &str) -> Result<String, ChecksumFileError> {
    parse_checksum_file_with_lengths(text, image_file_name, &FILE_DIGEST_LENGTHS)
}

/// [`parse_checksum_file`] accepting digests of the given hex lengths.
pub fn parse_checksum_file_with_lengths(
    text: &str,
    image_file_name: &str,
    lengths: &[usize],
) -> Result<String, ChecksumFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match lines.as_slice() {
        [] => return Err(ChecksumFileError::Empty),
        [only] if !only.contains(char::is_whitespace) => {
            return if is_digest(only, lengths) {
                Ok(only.to_ascii_lowercase())
            } else {
                Err(ChecksumFileError::InvalidSingleValue)
            };
        }
        _ => {}
    }

    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(found) = digest_for(line, image_file_name, lengths) else {
            continue;
        };
        return found.map(|hex| hex.to_ascii_lowercase()).ok_or_else(|| {
            ChecksumFileError::InvalidDigest { line: index + 1, file: image_file_name.to_owned() }
        });
    }
    Err(ChecksumFileError::FileNotListed { file: image_file_name.to_owned() })
}

/// `None` if `line` is not about `wanted`; `Some(None)` if it names it without a usable
/// digest; `Some(Some(hex))` otherwise. A line in BSD form, or in GNU form with a valid
/// digest, is about exactly the file it names and nothing else.
fn digest_for<'a>(line: &'a str, wanted: &str, lengths: &[usize]) -> Option<Option<&'a str>> {
    if let Some((name, hex)) = split_bsd(line) {
        return names_match(name, wanted).then_some(is_digest(hex, lengths).then_some(hex));
    }
    if let Some((hex, name)) = split_gnu(line) {
        if is_digest(hex, lengths) {
            return names_match(name, wanted).then_some(Some(hex));
        }
    }
    // Any other layout (`<name> <hex>`, or a broken digest): the name as one of the
    // tokens, the digest as the last one.
    let named = line.split_whitespace().any(|t| names_match(t.trim_start_matches('*'), wanted));
    if !named {
        return None;
    }
    Some(line.split_whitespace().next_back().filter(|t| is_digest(t, lengths)))
}

/// `ALGO (<name>) = <hex>`: returns the name and the text after `=`.
fn split_bsd(line: &str) -> Option<(&str, &str)> {
    let (head, hex) = line.rsplit_once('=')?;
    let head = head.trim_end().strip_suffix(')')?;
    let (algo, name) = head.split_once('(')?;
    if algo.trim().is_empty() {
        return None;
    }
    Some((name, hex.trim()))
}

/// `<hex> <sp> [*| ]<name>`: returns the hex and the name. A leading `\` marks a GNU line
/// whose name has `\\` and `\n` escapes; such names are compared unescaped.
fn split_gnu(line: &str) -> Option<(&str, &str)> {
    let line = line.strip_prefix('\\').unwrap_or(line);
    let (hex, rest) = line.split_once(char::is_whitespace)?;
    let name = rest.trim_start();
    let name = name.strip_prefix('*').unwrap_or(name);
    Some((hex, name))
}

fn names_match(listed: &str, wanted: &str) -> bool {
    if wanted.is_empty() {
        return false;
    }
    let unescaped;
    let listed = if listed.contains('\\') {
        unescaped = listed.replace("\\\\", "\u{0}").replace("\\n", "\n").replace('\u{0}', "\\");
        unescaped.as_str()
    } else {
        listed
    };
    listed == wanted || listed.strip_suffix(wanted).is_some_and(|dir| dir.ends_with('/'))
}

fn is_digest(token: &str, lengths: &[usize]) -> bool {
    lengths.contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The file name an image URL points at: the last segment of its path, without query or
/// fragment. Empty when the URL has no path.
pub fn image_file_name(url: &str) -> &str {
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    let url = url.split_once('?').map_or(url, |(u, _)| u);
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
        None => url,
    };
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
    const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const SHA512: &str = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
                          47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

    #[test]
    fn algorithm_names_and_lengths() {
        let table = [
            ("md5", 32),
            ("sha1", 40),
            ("sha224", 56),
            ("sha256", 64),
            ("sha384", 96),
            ("sha512", 128),
        ];
        for (name, len) in table {
            let algo: HashAlgorithm = name.parse().unwrap();
            assert_eq!(algo.hex_len(), len);
            assert_eq!(serde_json::to_value(algo).unwrap(), serde_json::json!(name));
        }
        for bad in ["SHA256", "sha-256", "sha3_256", "blake2b", ""] {
            assert!(bad.parse::<HashAlgorithm>().is_err(), "{bad}");
        }
    }

    #[test]
    fn algorithm_by_digest_length() {
        use DigestLengthError::*;
        let table = [
            (32, true, Ok(HashAlgorithm::Md5)),
            (32, false, Err(Md5NotAllowed)),
            (64, false, Ok(HashAlgorithm::Sha256)),
            (128, true, Ok(HashAlgorithm::Sha512)),
            (40, true, Err(UnknownLength(40))),
            (0, true, Err(UnknownLength(0))),
        ];
        for (len, md5, expected) in table {
            assert_eq!(HashAlgorithm::from_digest_len(len, md5), expected, "{len} {md5}");
        }
    }

    #[test]
    fn single_value_files() {
        assert_eq!(parse_checksum_file(SHA256, "img.raw").unwrap(), SHA256);
        assert_eq!(parse_checksum_file(&format!("  {MD5}\r\n\n"), "x").unwrap(), MD5);
        let upper = SHA512.to_ascii_uppercase();
        assert_eq!(parse_checksum_file(&upper, "x").unwrap(), SHA512);
        assert_eq!(
            parse_checksum_file("not-a-digest", "x"),
            Err(ChecksumFileError::InvalidSingleValue)
        );
        assert_eq!(
            parse_checksum_file(&SHA256[..63], "x"),
            Err(ChecksumFileError::InvalidSingleValue)
        );
    }

    #[test]
    fn listed_files() {
        let other = "0".repeat(64);
        let cases: Vec<(String, &str, &str)> = vec![
            (format!("{SHA256}  img.qcow2\n"), "img.qcow2", SHA256),
            (format!("{SHA256} *img.qcow2\n"), "img.qcow2", SHA256),
            (format!("SHA256 (img.qcow2) = {SHA256}\n"), "img.qcow2", SHA256),
            (format!("SHA512 (img.qcow2)= {SHA512}"), "img.qcow2", SHA512),
            (format!("MD5 (img.qcow2) = {MD5}"), "img.qcow2", MD5),
            (
                format!("# made by sha256sum\n{other}  a.img\r\n{SHA256}  img.qcow2\r\n"),
                "img.qcow2",
                SHA256,
            ),
            (
                format!("{other}  img.qcow2.sig\n{other}  big-img.qcow2\n{SHA256}  img.qcow2\n"),
                "img.qcow2",
                SHA256,
            ),
            (format!("# {other}  img.qcow2\n{SHA256}  img.qcow2\n"), "img.qcow2", SHA256),
            (format!("{SHA256}  ./images/img.qcow2\n{other} x\n"), "img.qcow2", SHA256),
            (format!("img.qcow2  {SHA256}\n{other} x\n"), "img.qcow2", SHA256),
            (format!("{}  img.qcow2\n{other} x", SHA256.to_uppercase()), "img.qcow2", SHA256),
            (format!("{SHA256}  my image.raw\n{other} x"), "my image.raw", SHA256),
            (format!("\\{SHA256}  back\\\\slash.raw\n{other} x"), "back\\slash.raw", SHA256),
        ];
        for (text, name, expected) in cases {
            assert_eq!(parse_checksum_file(&text, name).as_deref(), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn file_errors() {
        let missing = format!("{SHA256}  a.img\n{SHA256}  b.img\n");
        assert_eq!(
            parse_checksum_file(&missing, "c.img"),
            Err(ChecksumFileError::FileNotListed { file: "c.img".into() })
        );
        assert_eq!(parse_checksum_file("", "c.img"), Err(ChecksumFileError::Empty));
        assert_eq!(parse_checksum_file(" \r\n\n\t", "c.img"), Err(ChecksumFileError::Empty));
        let bad = format!("{SHA256}  a.img\nxyz  c.img\n");
        assert_eq!(
            parse_checksum_file(&bad, "c.img"),
            Err(ChecksumFileError::InvalidDigest { line: 2, file: "c.img".into() })
        );
        let short = "SHA1 (c.img) = da39a3ee5e6b4b0d3255bfef95601890afd80709\nx y";
        assert_eq!(
            parse_checksum_file(short, "c.img"),
            Err(ChecksumFileError::InvalidDigest { line: 1, file: "c.img".into() })
        );
        assert_eq!(
            parse_checksum_file_with_lengths(short, "c.img", &[40]).unwrap(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            parse_checksum_file("<html>not found</html>\n<p>404</p>", "c.img"),
            Err(ChecksumFileError::FileNotListed { file: "c.img".into() })
        );
        let listed = format!("{SHA256}  a.img\n{SHA256}  b.img\n");
        assert!(parse_checksum_file(&listed, "").is_err());
    }

    #[test]
    fn file_names_from_urls() {
        let table = [
            ("http://h/images/img.qcow2", "img.qcow2"),
            ("https://h:8080/a/b/img.raw?token=x/y#frag", "img.raw"),
            ("http://h/img.raw#x?y", "img.raw"),
            ("http://h/dir/", ""),
            ("http://h", ""),
            ("http://h?x=/y", ""),
            ("file:///var/lib/img.raw", "img.raw"),
            ("img.raw", "img.raw"),
            ("", ""),
        ];
        for (url, name) in table {
            assert_eq!(image_file_name(url), name, "{url}");
        }
    }

    /// xorshift64: a deterministic source of garbage without a dependency.
    struct Garbage(u64);

    impl Garbage {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn text(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a",
                "f",
                "0",
                "9",
                " ",
                "  ",
                "*",
                "(",
                ")",
                "=",
                "#",
                "\r",
                "\n",
                "\\",
                "/",
                "é",
                "€",
                "\u{feff}",
                "\t",
                "img.raw",
                "SHA256 ",
                MD5,
                SHA256,
                "\\n",
                "\\\\",
                "  img.raw\n",
                " (img.raw) = ",
                "\n",
                SHA512,
            ];
            let len = self.next() % 40;
            (0..len).map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize]).collect()
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut g = Garbage(0x9e37_79b9_7f4a_7c15);
        let mut found = 0;
        for _ in 0..20_000 {
            let text = g.text();
            let name = if g.next() % 4 == 0 { g.text() } else { "img.raw".to_owned() };
            if let Ok(hex) = parse_checksum_file(&text, &name) {
                assert!(FILE_DIGEST_LENGTHS.contains(&hex.len()), "{text:?} -> {hex}");
                assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                found += 1;
            }
            let _ = image_file_name(&text);
        }
        // The generator must actually reach the success paths, or the loop proves little.
        assert!(found > 100, "only {found} garbage inputs parsed");
    }
}
