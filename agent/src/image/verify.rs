//! Hashing the image as downloaded (before decoding) on its own thread, so that a slow
//! digest never holds up the network or the disk, and comparing it with the expected one.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use ferric_shared::image_info::{ExpectedDigest, HashAlgorithm};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// Chunks waiting for the hash thread; each is one source read (256 KiB to a few MiB),
/// so this bounds the memory the hasher can hold back.
const QUEUE_DEPTH: usize = 16;

/// A running digest of one algorithm.
#[derive(Debug, Clone)]
pub enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: HashAlgorithm) -> Hasher {
        match algorithm {
            HashAlgorithm::Md5 => Hasher::Md5(Md5::new()),
            HashAlgorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            HashAlgorithm::Sha224 => Hasher::Sha224(Sha224::new()),
            HashAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            HashAlgorithm::Sha384 => Hasher::Sha384(Sha384::new()),
            HashAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> HashAlgorithm {
        match self {
            Hasher::Md5(_) => HashAlgorithm::Md5,
            Hasher::Sha1(_) => HashAlgorithm::Sha1,
            Hasher::Sha224(_) => HashAlgorithm::Sha224,
            Hasher::Sha256(_) => HashAlgorithm::Sha256,
            Hasher::Sha384(_) => HashAlgorithm::Sha384,
            Hasher::Sha512(_) => HashAlgorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha224(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest as lowercase hex.
    pub fn finalize_hex(self) -> String {
        match self {
            Hasher::Md5(h) => hex(&h.finalize()),
            Hasher::Sha1(h) => hex(&h.finalize()),
            Hasher::Sha224(h) => hex(&h.finalize()),
            Hasher::Sha256(h) => hex(&h.finalize()),
            Hasher::Sha384(h) => hex(&h.finalize()),
            Hasher::Sha512(h) => hex(&h.finalize()),
        }
    }
}

/// The lowercase hex digest of `bytes`.
pub fn hex_digest(algorithm: HashAlgorithm, bytes: &[u8]) -> String {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(bytes);
    hasher.finalize_hex()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Why an image failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("image {algorithm} digest mismatch: expected {expected}, got {actual}")]
    Mismatch { algorithm: HashAlgorithm, expected: String, actual: String },
    #[error("the hash thread stopped unexpectedly")]
    HasherStopped,
}

/// A digest that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub algorithm: HashAlgorithm,
    pub hex: String,
    /// Bytes hashed since the last restart.
    pub bytes: u64,
}

enum Message {
    Data(Arc<Vec<u8>>),
    /// That many zero bytes (a hole the source did not transfer).
    Zeros(u64),
    Restart,
}

/// Feeds a hash thread and checks its result against the expected digest.
#[derive(Debug)]
pub struct Verifier {
    expected: ExpectedDigest,
    queue: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<(String, u64)>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Data(d) => write!(f, "Data({} bytes)", d.len()),
            Message::Zeros(n) => write!(f, "Zeros({n} bytes)"),
            Message::Restart => f.write_str("Restart"),
        }
    }
}

impl Verifier {
    /// Starts the hash thread for `expected`'s algorithm.
    pub fn spawn(expected: ExpectedDigest) -> Result<Verifier, VerifyError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        let algorithm = expected.algorithm;
        let thread = std::thread::Builder::new()
            .name("image-hash".into())
            .spawn(move || hash_loop(algorithm, rx))
            .map_err(|_| VerifyError::HasherStopped)?;
        Ok(Verifier { expected, queue: Some(tx), thread: Some(thread) })
    }

    pub fn algorithm(&self) -> HashAlgorithm {
        self.expected.algorithm
    }

    /// Hands the next source bytes to the hash thread; blocks while its queue is full.
    pub fn update(&self, bytes: Arc<Vec<u8>>) -> Result<(), VerifyError> {
        self.send(Message::Data(bytes))
    }

    /// Hashes `len` zero bytes: a hole of the image the source did not transfer.
    pub fn update_zeros(&self, len: u64) -> Result<(), VerifyError> {
        self.send(Message::Zeros(len))
    }

    /// The source started over from byte 0: forget everything hashed so far.
    pub fn restart(&self) -> Result<(), VerifyError> {
        self.send(Message::Restart)
    }

    fn send(&self, message: Message) -> Result<(), VerifyError> {
        match &self.queue {
            Some(queue) => queue.send(message).map_err(|_| VerifyError::HasherStopped),
            None => Err(VerifyError::HasherStopped),
        }
    }

    /// Waits for the hash thread to finish and compares (case-insensitively).
    pub fn finish(mut self) -> Result<Verified, VerifyError> {
        self.queue = None;
        let thread = self.thread.take().ok_or(VerifyError::HasherStopped)?;
        let (actual, bytes) = thread.join().map_err(|_| VerifyError::HasherStopped)?;
        let expected = self.expected.hex.trim().to_ascii_lowercase();
        if actual == expected {
            Ok(Verified { algorithm: self.expected.algorithm, hex: actual, bytes })
        } else {
            Err(VerifyError::Mismatch { algorithm: self.expected.algorithm, expected, actual })
        }
    }
}

fn hash_loop(algorithm: HashAlgorithm, queue: Receiver<Message>) -> (String, u64) {
    let mut hasher = Hasher::new(algorithm);
    let mut bytes = 0u64;
    let mut zeros = Vec::new();
    for message in queue {
        match message {
            Message::Zeros(mut len) => {
                if zeros.is_empty() {
                    zeros = vec![0u8; 1 << 20];
                }
                bytes += len;
                while len > 0 {
                    let n = usize::try_from(len).map_or(zeros.len(), |l| l.min(zeros.len()));
                    hasher.update(&zeros[..n]);
                    len -= n as u64;
                }
            }
            Message::Data(data) => {
                hasher.update(&data);
                bytes += data.len() as u64;
                super::buffers::give_shared(data);
            }
            Message::Restart => {
                hasher = Hasher::new(algorithm);
                bytes = 0;
            }
        }
    }
    (hasher.finalize_hex(), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published test vectors (FIPS 180 / RFC 1321) for "abc".
    const ABC: [(HashAlgorithm, &str); 6] = [
        (HashAlgorithm::Md5, "900150983cd24fb0d6963f7d28e17f72"),
        (HashAlgorithm::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (HashAlgorithm::Sha224, "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"),
        (HashAlgorithm::Sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            HashAlgorithm::Sha384,
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
             8086072ba1e7cc2358baeca134c825a7",
        ),
        (
            HashAlgorithm::Sha512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
    ];

    #[test]
    fn known_vectors() {
        for (algorithm, expected) in ABC {
            assert_eq!(hex_digest(algorithm, b"abc"), expected, "{algorithm}");
            assert_eq!(expected.len(), algorithm.hex_len());
        }
    }

    /// Each algorithm against the coreutils tool of the same name, over data bigger than
    /// one queue's worth of chunks.
    #[test]
    fn threaded_digest_matches_coreutils() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> =
            (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        for algorithm in HashAlgorithm::ALL {
            let tool = format!("{}sum", algorithm.as_str());
            let out = std::process::Command::new(&tool).arg(&path).output().unwrap();
            assert!(out.status.success(), "{tool}");
            let text = String::from_utf8(out.stdout).unwrap();
            let expected = text.split_whitespace().next().unwrap().to_owned();
            let verifier =
                Verifier::spawn(ExpectedDigest { algorithm, hex: expected.to_uppercase() })
                    .unwrap();
            for chunk in data.chunks(65_536 + 3) {
                verifier.update(Arc::new(chunk.to_vec())).unwrap();
            }
            let verified = verifier.finish().unwrap();
            assert_eq!((verified.hex, verified.bytes), (expected, data.len() as u64), "{tool}");
        }
    }

    #[test]
    fn restart_forgets_what_was_hashed() {
        let expected = ExpectedDigest {
            algorithm: HashAlgorithm::Sha256,
            hex: hex_digest(HashAlgorithm::Sha256, b"abc"),
        };
        let verifier = Verifier::spawn(expected.clone()).unwrap();
        verifier.update(Arc::new(b"ab".to_vec())).unwrap();
        verifier.update(Arc::new(b"XYZ".to_vec())).unwrap();
        verifier.restart().unwrap();
        verifier.update(Arc::new(b"a".to_vec())).unwrap();
        verifier.update(Arc::new(b"bc".to_vec())).unwrap();
        assert_eq!(verifier.finish().unwrap().bytes, 3);

        // Without the restart the same bytes do not match.
        let verifier = Verifier::spawn(expected).unwrap();
        verifier.update(Arc::new(b"ab".to_vec())).unwrap();
        verifier.update(Arc::new(b"abc".to_vec())).unwrap();
        assert!(verifier.finish().is_err());
    }

    #[test]
    fn mismatch_names_algorithm_expected_and_actual() {
        let wrong = "0".repeat(128);
        let verifier = Verifier::spawn(ExpectedDigest {
            algorithm: HashAlgorithm::Sha512,
            hex: wrong.clone(),
        })
        .unwrap();
        verifier.update(Arc::new(b"abc".to_vec())).unwrap();
        let err = verifier.finish().unwrap_err();
        let actual = hex_digest(HashAlgorithm::Sha512, b"abc");
        assert_eq!(
            err,
            VerifyError::Mismatch {
                algorithm: HashAlgorithm::Sha512,
                expected: wrong.clone(),
                actual: actual.clone()
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("sha512") && message.contains(&wrong) && message.contains(&actual)
        );
    }
}
