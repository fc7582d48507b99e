//! Push-based streaming decompression of gzip, xz and zstd raw images.
//!
//! The caller pushes compressed bytes in as they arrive ([`Decompressor::feed`]) and gets
//! the decompressed bytes back through a callback, in pieces of at most
//! [`OUTPUT_CHUNK`] bytes, so memory stays bounded whatever the compression ratio.
//! [`Decompressor::finish`] tells a complete stream from a truncated one.
//!
//! gzip framing is parsed here (members, optional header fields, CRC-32 and length
//! trailer) around a raw-deflate inflater, because the push interface has to report a
//! truncated or corrupt member precisely rather than stop early.

use std::fmt;

use flate2::{Crc, Decompress, FlushDecompress};

/// The largest piece of output handed to the callback at once.
pub const OUTPUT_CHUNK: usize = 1024 * 1024;

/// The most memory an xz stream may need to decode (its dictionary, mainly). `xz -9`
/// needs 65 MiB; anything beyond this bound is refused rather than risk the ramdisk.
pub const XZ_MEMORY_LIMIT: u64 = 128 * 1024 * 1024;

/// A gzip header (with its optional name, comment and extra field) longer than this is
/// treated as corrupt.
const GZIP_MAX_HEADER: usize = 1024 * 1024;

/// The compressed-stream formats the agent decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionKind {
    Gzip,
    Xz,
    Zstd,
}

impl fmt::Display for CompressionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
        })
    }
}

/// Why a compressed stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("{kind} stream is corrupt near compressed byte {offset}: {detail}")]
    Corrupt { kind: CompressionKind, offset: u64, detail: String },
    #[error(
        "{kind} stream is truncated: it ends after {consumed} compressed bytes, before its end"
    )]
    Truncated { kind: CompressionKind, consumed: u64 },
    #[error(
        "{kind} stream is followed by data that is not part of it, at compressed byte {offset}"
    )]
    TrailingData { kind: CompressionKind, offset: u64 },
    #[error("{kind} stream needs more than {limit} bytes of memory to decode")]
    MemoryLimit { kind: CompressionKind, limit: u64 },
    #[error("the {kind} decoder could not be set up: {detail}")]
    Setup { kind: CompressionKind, detail: String },
}

/// A streaming decompressor; one per image.
pub struct Decompressor {
    kind: CompressionKind,
    engine: Engine,
    /// Whether a zstd frame's content checksum is computed and checked.
    frame_checksum: bool,
    out_buf: Vec<u8>,
    total_in: u64,
    total_out: u64,
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor")
            .field("kind", &self.kind)
            .field("total_in", &self.total_in)
            .field("total_out", &self.total_out)
            .finish_non_exhaustive()
    }
}

enum Engine {
    Gzip(GzipState),
    Xz(Box<liblzma::stream::Stream>),
    Zstd { decoder: Box<zstd::stream::raw::Decoder<'static>>, frame_open: bool },
}

impl Decompressor {
    pub fn new(kind: CompressionKind) -> Result<Self, DecompressError> {
        Self::with_frame_checksum(kind, true)
    }

    /// With `frame_checksum` false, a zstd frame's own content checksum (XXH64 over every
    /// decompressed byte, about half the cost of decompressing a sparse image) is not
    /// computed. Only for streams whose digest is verified anyway: that digest covers
    /// every compressed byte, and decompressing authentic bytes cannot go wrong silently.
    pub fn with_frame_checksum(
        kind: CompressionKind,
        frame_checksum: bool,
    ) -> Result<Self, DecompressError> {
        let engine = match kind {
            CompressionKind::Gzip => Engine::Gzip(GzipState::new()),
            CompressionKind::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMORY_LIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(|e| DecompressError::Setup { kind, detail: format!("{e:?}") })?;
                Engine::Xz(Box::new(stream))
            }
            CompressionKind::Zstd => {
                let mut decoder = zstd::stream::raw::Decoder::new()
                    .map_err(|e| DecompressError::Setup { kind, detail: e.to_string() })?;
                if !frame_checksum {
                    decoder
                        .set_parameter(zstd::zstd_safe::DParameter::ForceIgnoreChecksum(true))
                        .map_err(|e| DecompressError::Setup { kind, detail: e.to_string() })?;
                }
                Engine::Zstd { decoder: Box::new(decoder), frame_open: false }
            }
        };
        Ok(Self {
            kind,
            engine,
            frame_checksum,
            out_buf: vec![0; OUTPUT_CHUNK],
            total_in: 0,
            total_out: 0,
        })
    }

    /// A new decompressor of the same kind and settings, for a stream that starts over.
    pub fn fresh(&self) -> Result<Self, DecompressError> {
        Self::with_frame_checksum(self.kind, self.frame_checksum)
    }

    pub fn kind(&self) -> CompressionKind {
        self.kind
    }

    /// Compressed bytes consumed so far.
    pub fn total_in(&self) -> u64 {
        self.total_in
    }

    /// Decompressed bytes produced so far.
    pub fn total_out(&self) -> u64 {
        self.total_out
    }

    /// Decodes `input`, the next compressed bytes, handing decompressed bytes to `out` in
    /// pieces of at most [`OUTPUT_CHUNK`].
    pub fn feed<E: From<DecompressError>>(
        &mut self,
        input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let kind = self.kind;
        let base_in = self.total_in;
        let mut emit = |bytes: &[u8], total_out: &mut u64| -> Result<(), E> {
            *total_out += bytes.len() as u64;
            out(bytes)
        };
        match &mut self.engine {
            Engine::Gzip(state) => {
                state.feed(input, base_in, &mut self.out_buf, &mut |b| {
                    emit(b, &mut self.total_out)
                })?;
            }
            Engine::Xz(stream) => {
                let mut pos = 0;
                loop {
                    let (in0, out0) = (stream.total_in(), stream.total_out());
                    let status = stream
                        .process(&input[pos..], &mut self.out_buf, liblzma::stream::Action::Run)
                        .map_err(|e| xz_error(e, base_in + pos as u64))?;
                    let consumed = (stream.total_in() - in0) as usize;
                    let produced = (stream.total_out() - out0) as usize;
                    pos += consumed;
                    if produced > 0 {
                        emit(&self.out_buf[..produced], &mut self.total_out)?;
                    }
                    if status == liblzma::stream::Status::StreamEnd && pos < input.len() {
                        return Err(DecompressError::TrailingData {
                            kind,
                            offset: base_in + pos as u64,
                        }
                        .into());
                    }
                    // Done with this input once it is consumed and the output did not fill
                    // (a full buffer may mean more output is pending).
                    if pos >= input.len() && produced < self.out_buf.len() {
                        break;
                    }
                    if consumed == 0 && produced == 0 {
                        return Err(DecompressError::Corrupt {
                            kind,
                            offset: base_in + pos as u64,
                            detail: "the decoder made no progress".into(),
                        }
                        .into());
                    }
                }
            }
            Engine::Zstd { decoder, frame_open } => {
                use zstd::stream::raw::Operation;
                let mut pos = 0;
                loop {
                    let status = decoder
                        .run_on_buffers(&input[pos..], &mut self.out_buf)
                        .map_err(|e| zstd_error(&e, base_in + pos as u64))?;
                    pos += status.bytes_read;
                    if status.bytes_read > 0 || status.bytes_written > 0 {
                        *frame_open = status.remaining != 0;
                    }
                    if status.bytes_written > 0 {
                        emit(&self.out_buf[..status.bytes_written], &mut self.total_out)?;
                    }
                    if pos >= input.len() && status.bytes_written < self.out_buf.len() {
                        break;
                    }
                    if status.bytes_read == 0 && status.bytes_written == 0 {
                        return Err(DecompressError::Corrupt {
                            kind,
                            offset: base_in + pos as u64,
                            detail: "the decoder made no progress".into(),
                        }
                        .into());
                    }
                }
            }
        }
        self.total_in += input.len() as u64;
        Ok(())
    }

    /// Ends the stream: flushes what the decoder still holds and fails if the stream
    /// stopped short of its end (or never started).
    pub fn finish<E: From<DecompressError>>(
        &mut self,
        out: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let kind = self.kind;
        let truncated = DecompressError::Truncated { kind, consumed: self.total_in };
        match &mut self.engine {
            Engine::Gzip(state) => {
                if !state.is_complete() {
                    return Err(truncated.into());
                }
            }
            Engine::Xz(stream) => loop {
                let out0 = stream.total_out();
                let status = stream
                    .process(&[], &mut self.out_buf, liblzma::stream::Action::Finish)
                    .map_err(|e| xz_error(e, self.total_in))?;
                let produced = (stream.total_out() - out0) as usize;
                if produced > 0 {
                    self.total_out += produced as u64;
                    out(&self.out_buf[..produced])?;
                }
                match status {
                    liblzma::stream::Status::StreamEnd => break,
                    _ if produced == 0 => return Err(truncated.into()),
                    _ => {}
                }
            },
            Engine::Zstd { decoder, frame_open } => {
                use zstd::stream::raw::Operation;
                loop {
                    let status = decoder
                        .run_on_buffers(&[], &mut self.out_buf)
                        .map_err(|e| zstd_error(&e, self.total_in))?;
                    if status.bytes_written == 0 {
                        break;
                    }
                    *frame_open = status.remaining != 0;
                    self.total_out += status.bytes_written as u64;
                    out(&self.out_buf[..status.bytes_written])?;
                }
                if *frame_open || self.total_in == 0 {
                    return Err(truncated.into());
                }
            }
        }
        Ok(())
    }
}

fn xz_error(e: liblzma::stream::Error, offset: u64) -> DecompressError {
    use liblzma::stream::Error as X;
    let kind = CompressionKind::Xz;
    let detail = match e {
        X::MemLimit | X::Mem => {
            return DecompressError::MemoryLimit { kind, limit: XZ_MEMORY_LIMIT }
        }
        X::Format => "not an xz stream",
        X::Data => "compressed data is invalid",
        X::Options => "the stream uses unsupported options",
        X::UnsupportedCheck => "the stream uses an unsupported integrity check",
        X::NoCheck | X::Program => "the decoder reported an internal error",
    };
    DecompressError::Corrupt { kind, offset, detail: detail.into() }
}

fn zstd_error(e: &std::io::Error, offset: u64) -> DecompressError {
    DecompressError::Corrupt { kind: CompressionKind::Zstd, offset, detail: e.to_string() }
}

/// gzip member framing around a raw-deflate inflater.
enum GzipState {
    /// Collecting a member header (the bytes so far).
    Header(Vec<u8>),
    Body {
        inflate: Box<Decompress>,
        crc: Crc,
    },
    /// Collecting the 8-byte trailer.
    Trailer {
        crc: Crc,
        bytes: Vec<u8>,
    },
    /// Between members: another member or zero padding may follow.
    AfterMember,
    /// Zero padding after the last member.
    Padding,
}

const GZIP_FHCRC: u8 = 0x02;
const GZIP_FEXTRA: u8 = 0x04;
const GZIP_FNAME: u8 = 0x08;
const GZIP_FCOMMENT: u8 = 0x10;
const GZIP_RESERVED: u8 = 0xe0;

/// The length of the complete gzip member header at the start of `h`, `Ok(None)` if more
/// bytes are needed, or why it is not a gzip header.
fn gzip_header_len(h: &[u8]) -> Result<Option<usize>, &'static str> {
    let fixed = match h.get(..10) {
        Some(f) => f,
        None => {
            if h.first().is_some_and(|&b| b != 0x1f) || h.get(1).is_some_and(|&b| b != 0x8b) {
                return Err("not a gzip member (bad magic)");
            }
            return Ok(None);
        }
    };
    if fixed[0] != 0x1f || fixed[1] != 0x8b {
        return Err("not a gzip member (bad magic)");
    }
    if fixed[2] != 8 {
        return Err("unknown compression method (only deflate exists)");
    }
    let flags = fixed[3];
    if flags & GZIP_RESERVED != 0 {
        return Err("reserved header flags are set");
    }
    let mut pos = 10usize;
    if flags & GZIP_FEXTRA != 0 {
        let Some(len) = h.get(pos..pos + 2) else { return Ok(None) };
        pos += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
        if h.len() < pos {
            return Ok(None);
        }
    }
    for flag in [GZIP_FNAME, GZIP_FCOMMENT] {
        if flags & flag != 0 {
            match h.get(pos..).and_then(|rest| rest.iter().position(|&b| b == 0)) {
                Some(nul) => pos += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & GZIP_FHCRC != 0 {
        pos += 2;
    }
    Ok((h.len() >= pos).then_some(pos))
}

impl GzipState {
    fn new() -> Self {
        Self::Header(Vec::new())
    }

    fn is_complete(&self) -> bool {
        matches!(self, Self::AfterMember | Self::Padding)
    }

    fn feed<E: From<DecompressError>>(
        &mut self,
        input: &[u8],
        base_in: u64,
        out_buf: &mut [u8],
        emit: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let kind = CompressionKind::Gzip;
        let corrupt = |pos: usize, detail: &str| DecompressError::Corrupt {
            kind,
            offset: base_in + pos as u64,
            detail: detail.to_owned(),
        };
        let mut pos = 0usize;
        while pos < input.len() {
            match self {
                Self::Header(bytes) => {
                    let before = bytes.len();
                    let take = (input.len() - pos).min(GZIP_MAX_HEADER + 1 - before);
                    bytes.extend_from_slice(&input[pos..pos + take]);
                    match gzip_header_len(bytes) {
                        Err(detail) => return Err(corrupt(pos, detail).into()),
                        Ok(None) if bytes.len() > GZIP_MAX_HEADER => {
                            return Err(corrupt(pos, "member header is implausibly long").into())
                        }
                        Ok(None) => pos += take,
                        Ok(Some(len)) => {
                            // Only the header's bytes are consumed; the rest is body.
                            pos += len - before;
                            *self = Self::Body {
                                inflate: Box::new(Decompress::new(false)),
                                crc: Crc::new(),
                            };
                        }
                    }
                }
                Self::Body { inflate, crc } => {
                    let (in0, out0) = (inflate.total_in(), inflate.total_out());
                    let status = inflate
                        .decompress(&input[pos..], out_buf, FlushDecompress::None)
                        .map_err(|e| corrupt(pos, &e.to_string()))?;
                    let consumed = (inflate.total_in() - in0) as usize;
                    let produced = (inflate.total_out() - out0) as usize;
                    pos += consumed;
                    if produced > 0 {
                        crc.update(&out_buf[..produced]);
                        emit(&out_buf[..produced])?;
                    }
                    match status {
                        flate2::Status::StreamEnd => {
                            let crc = std::mem::replace(crc, Crc::new());
                            *self = Self::Trailer { crc, bytes: Vec::with_capacity(8) };
                        }
                        _ if consumed == 0 && produced == 0 => {
                            return Err(corrupt(pos, "the inflater made no progress").into())
                        }
                        _ => {}
                    }
                }
                Self::Trailer { crc, bytes } => {
                    let take = (8 - bytes.len()).min(input.len() - pos);
                    bytes.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    if bytes.len() == 8 {
                        let want_crc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                        let want_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                        if want_crc != crc.sum() {
                            return Err(corrupt(
                                pos,
                                "CRC-32 of the decompressed data does not match",
                            )
                            .into());
                        }
                        if want_len != crc.amount() {
                            return Err(corrupt(
                                pos,
                                "length of the decompressed data does not match",
                            )
                            .into());
                        }
                        *self = Self::AfterMember;
                    }
                }
                Self::AfterMember => match input[pos] {
                    0x1f => *self = Self::Header(Vec::new()),
                    0 => *self = Self::Padding,
                    _ => {
                        return Err(DecompressError::TrailingData {
                            kind,
                            offset: base_in + pos as u64,
                        }
                        .into())
                    }
                },
                Self::Padding => match input[pos..].iter().position(|&b| b != 0) {
                    Some(at) => {
                        return Err(DecompressError::TrailingData {
                            kind,
                            offset: base_in + (pos + at) as u64,
                        }
                        .into())
                    }
                    None => pos = input.len(),
                },
            }
        }
        // The inflater may hold decoded bytes it could not hand over in a full buffer.
        if let Self::Body { inflate, crc } = self {
            loop {
                let out0 = inflate.total_out();
                let status = inflate
                    .decompress(&[], out_buf, FlushDecompress::None)
                    .map_err(|e| corrupt(pos, &e.to_string()))?;
                let produced = (inflate.total_out() - out0) as usize;
                if produced > 0 {
                    crc.update(&out_buf[..produced]);
                    emit(&out_buf[..produced])?;
                }
                if status == flate2::Status::StreamEnd {
                    let crc = std::mem::replace(crc, Crc::new());
                    *self = Self::Trailer { crc, bytes: Vec::with_capacity(8) };
                    break;
                }
                if produced == 0 {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Test data with some structure and some randomness, so compressors have work to do.
    fn sample(len: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            match rng.u8(..4) {
                0 => v.extend(std::iter::repeat_n(0u8, rng.usize(1..5000))),
                1 => v.extend((0..rng.usize(1..3000)).map(|_| rng.u8(..))),
                _ => v.extend_from_slice(b"ferric writes images; "),
            }
        }
        v.truncate(len);
        v
    }

    fn compress_with(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
        let mut child = Command::new(tool)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success(), "{tool} failed");
        output.stdout
    }

    fn compressed(kind: CompressionKind, data: &[u8]) -> Vec<u8> {
        match kind {
            CompressionKind::Gzip => compress_with("gzip", &["-c", "-n"], data),
            CompressionKind::Xz => compress_with("xz", &["-c", "-T1"], data),
            CompressionKind::Zstd => compress_with("zstd", &["-c", "-q"], data),
        }
    }

    fn decode_in_pieces(
        kind: CompressionKind,
        input: &[u8],
        seed: u64,
    ) -> Result<Vec<u8>, DecompressError> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut d = Decompressor::new(kind)?;
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| -> Result<(), DecompressError> {
            assert!(b.len() <= OUTPUT_CHUNK);
            out.extend_from_slice(b);
            Ok(())
        };
        let mut rest = input;
        while !rest.is_empty() {
            let n = match rng.u8(..3) {
                0 => rng.usize(1..16),
                1 => rng.usize(1..5000),
                _ => rng.usize(1..200_000),
            }
            .min(rest.len());
            d.feed(&rest[..n], &mut sink)?;
            rest = &rest[n..];
        }
        d.finish(&mut sink)?;
        assert_eq!(d.total_in(), input.len() as u64);
        Ok(out)
    }

    const KINDS: [CompressionKind; 3] =
        [CompressionKind::Gzip, CompressionKind::Xz, CompressionKind::Zstd];

    #[test]
    fn round_trips_cli_output_in_random_pieces() {
        let data = sample(3 << 20);
        for kind in KINDS {
            let input = compressed(kind, &data);
            for seed in 0..3 {
                let out = decode_in_pieces(kind, &input, seed).unwrap();
                assert!(out == data, "{kind} seed {seed}: output differs");
            }
            // One piece.
            let mut d = Decompressor::new(kind).unwrap();
            let mut out = Vec::new();
            d.feed(&input, &mut |b: &[u8]| -> Result<(), DecompressError> {
                out.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            d.finish(&mut |b: &[u8]| -> Result<(), DecompressError> {
                out.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            assert!(out == data, "{kind} in one piece");
            assert_eq!(d.total_out(), data.len() as u64);
        }
    }

    #[test]
    fn highly_compressible_input_comes_out_in_bounded_pieces() {
        let data = vec![0u8; 64 << 20];
        for kind in KINDS {
            let input = compressed(kind, &data);
            let mut d = Decompressor::new(kind).unwrap();
            let mut total = 0u64;
            let mut max = 0usize;
            let mut sink = |b: &[u8]| -> Result<(), DecompressError> {
                assert!(b.iter().all(|&x| x == 0));
                total += b.len() as u64;
                max = max.max(b.len());
                Ok(())
            };
            d.feed(&input, &mut sink).unwrap();
            d.finish(&mut sink).unwrap();
            assert_eq!(total, data.len() as u64, "{kind}");
            assert!(max <= OUTPUT_CHUNK, "{kind}: piece of {max}");
        }
    }

    #[test]
    fn concatenated_streams_decode_as_one() {
        let (a, b) = (sample(100_000), sample(70_000));
        for kind in KINDS {
            let mut input = compressed(kind, &a);
            input.extend(compressed(kind, &b));
            let out = decode_in_pieces(kind, &input, 9).unwrap();
            assert_eq!(out.len(), a.len() + b.len(), "{kind}");
            assert!(out[..a.len()] == a[..] && out[a.len()..] == b[..], "{kind}");
        }
    }

    #[test]
    fn truncated_streams_are_reported_as_truncated() {
        let data = sample(500_000);
        for kind in KINDS {
            let input = compressed(kind, &data);
            for cut in [1, input.len() / 2, input.len() - 1] {
                let err = decode_in_pieces(kind, &input[..cut], 1).unwrap_err();
                assert!(
                    matches!(
                        err,
                        DecompressError::Truncated { .. } | DecompressError::Corrupt { .. }
                    ),
                    "{kind} cut at {cut}: {err:?}"
                );
                // Cutting a valid stream short is never reported as trailing garbage.
                if cut == input.len() - 1 {
                    assert!(matches!(err, DecompressError::Truncated { .. }), "{kind}: {err}");
                }
            }
            let err = decode_in_pieces(kind, &[], 1).unwrap_err();
            assert_eq!(err, DecompressError::Truncated { kind, consumed: 0 });
        }
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let data = sample(500_000);
        for kind in KINDS {
            let mut input = compressed(kind, &data);
            let mid = input.len() / 2;
            for b in &mut input[mid..mid + 64] {
                *b ^= 0x5a;
            }
            let err = decode_in_pieces(kind, &input, 2).unwrap_err();
            assert!(matches!(err, DecompressError::Corrupt { .. }), "{kind}: {err:?}");
            assert!(err.to_string().starts_with(&kind.to_string()), "{err}");
        }
        // Not a stream of that kind at all.
        for kind in KINDS {
            let err = decode_in_pieces(kind, b"this is plain text, not compressed", 3).unwrap_err();
            assert!(matches!(err, DecompressError::Corrupt { .. }), "{kind}: {err:?}");
        }
    }

    #[test]
    fn gzip_checks_trailer_and_trailing_bytes() {
        let data = sample(50_000);
        let good = compressed(CompressionKind::Gzip, &data);

        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let err = decode_in_pieces(CompressionKind::Gzip, &bad_crc, 4).unwrap_err();
        assert!(err.to_string().contains("CRC-32"), "{err}");

        let mut bad_len = good.clone();
        bad_len[n - 1] ^= 1;
        let err = decode_in_pieces(CompressionKind::Gzip, &bad_len, 4).unwrap_err();
        assert!(err.to_string().contains("length"), "{err}");

        let mut padded = good.clone();
        padded.extend([0u8; 512]);
        assert_eq!(decode_in_pieces(CompressionKind::Gzip, &padded, 5).unwrap(), data);

        let mut garbage = good.clone();
        garbage.extend(b"garbage");
        let err = decode_in_pieces(CompressionKind::Gzip, &garbage, 6).unwrap_err();
        assert_eq!(
            err,
            DecompressError::TrailingData { kind: CompressionKind::Gzip, offset: n as u64 }
        );
    }

    #[test]
    fn gzip_optional_header_fields_are_skipped() {
        let data = sample(10_000);
        let plain = compressed(CompressionKind::Gzip, &data);
        // Rebuild the member with FEXTRA, FNAME, FCOMMENT and FHCRC set.
        let mut member = vec![0x1f, 0x8b, 8, GZIP_FEXTRA | GZIP_FNAME | GZIP_FCOMMENT | GZIP_FHCRC];
        member.extend_from_slice(&plain[4..10]);
        member.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        member.extend_from_slice(b"disk.img\0");
        member.extend_from_slice(b"a comment\0");
        member.extend_from_slice(&[0xaa, 0xbb]);
        member.extend_from_slice(&plain[10..]);
        assert_eq!(decode_in_pieces(CompressionKind::Gzip, &member, 8).unwrap(), data);

        let mut reserved = plain.clone();
        reserved[3] |= 0x80;
        assert!(decode_in_pieces(CompressionKind::Gzip, &reserved, 8).is_err());
    }

    #[test]
    fn sink_errors_stop_decoding_and_come_back_unchanged() {
        #[derive(Debug, PartialEq)]
        enum SinkError {
            Full,
            Decode(DecompressError),
        }
        impl From<DecompressError> for SinkError {
            fn from(e: DecompressError) -> Self {
                Self::Decode(e)
            }
        }
        let input = compressed(CompressionKind::Zstd, &sample(1 << 20));
        let mut d = Decompressor::new(CompressionKind::Zstd).unwrap();
        let err = d.feed(&input, &mut |_b: &[u8]| Err(SinkError::Full)).unwrap_err();
        assert_eq!(err, SinkError::Full);
    }

    #[test]
    fn the_zstd_frame_checksum_is_checked_unless_the_digest_covers_it() {
        let data = sample(300_000);
        let mut input = compressed(CompressionKind::Zstd, &data);
        // `zstd` writes a content checksum (XXH64) as the frame's last four bytes.
        let last = input.len() - 1;
        input[last] ^= 0xff;
        let decode = |frame_checksum: bool| {
            let mut d =
                Decompressor::with_frame_checksum(CompressionKind::Zstd, frame_checksum).unwrap();
            let mut out = Vec::new();
            d.feed(&input, &mut |b: &[u8]| -> Result<(), DecompressError> {
                out.extend_from_slice(b);
                Ok(())
            })?;
            d.finish(&mut |b: &[u8]| -> Result<(), DecompressError> {
                out.extend_from_slice(b);
                Ok(())
            })?;
            Ok::<_, DecompressError>((out, d))
        };
        let err = decode(true).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
        let (out, d) = decode(false).unwrap();
        assert!(out == data, "content differs");
        // A fresh decompressor for a restarted stream keeps the setting.
        assert!(!d.fresh().unwrap().frame_checksum);
    }
}
