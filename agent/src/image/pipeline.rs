//! Connects source, decoder, verifier and writer into one pass.
//!
//! ```text
//!  source thread ──bytes──▶ hash thread (digest of the image as downloaded)
//!        │
//!        └──bytes──▶ this thread: decode → zero detection → aligned buffers
//!                                   └──▶ writer thread ──▶ target
//! ```
//!
//! Every queue is bounded, so memory stays a few dozen MiB whatever the image size. The
//! target is not touched until the source is open, the expected digest known and the
//! format accepted; from then on the sink guarantees that a failure leaves the
//! partition-table areas wiped, and the first MiB is written only once the digest matched.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferric_shared::image_info::{
    image_file_name, ChecksumSelectionError, ChecksumSource, ExpectedDigest, HashAlgorithm,
    ImageInfo,
};

use super::decompress::{CompressionKind, DecompressError, Decompressor};
use super::extent::Extent;
use super::file_source::{self, FileSource, FileSourceError};
use super::format::{self, DetectedFormat, FormatCheckError};
use super::progress::Progress;
use super::qcow2::{self, Qcow2Decoder, Qcow2Error};
use super::sink::{Sink, SinkError, SinkOptions, Target};
use super::source::{HttpOptions, ImageSource, SourceError, SourceEvent, SourceStats};
use super::verify::{Verified, Verifier, VerifyError};

/// The image format asked for; `Auto` detects it from the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    #[default]
    Auto,
    Raw,
    Qcow2,
    Gzip,
    Xz,
    Zstd,
}

/// What a `write_image` run is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// Image URLs (`http://`, `https://`, `file://` or a path), tried in order.
    pub urls: Vec<String>,
    /// The block device or regular file written.
    pub target: PathBuf,
    /// How the image is verified; `None` only for an explicitly unverified standalone run.
    pub checksum: Option<ChecksumSource>,
    /// Whether an MD5 digest is acceptable (lookup's `agent_md5_checksum_enable`).
    pub md5_allowed: bool,
    pub format: FormatChoice,
    /// `image_info.disk_format`, which the detected format must agree with.
    pub declared_disk_format: Option<String>,
    /// Lookup's `permitted_image_formats`; `None` permits every supported format.
    pub permitted_formats: Option<Vec<String>>,
    /// base64(gzip(ISO 9660)) or an http(s) URL.
    pub configdrive: Option<String>,
    pub http: HttpOptions,
}

/// Why an `image_info` cannot become a [`WriteRequest`].
#[derive(Debug, thiserror::Error)]
pub enum ImageRequestError {
    #[error("partition images are not supported by this agent yet")]
    PartitionImage,
    #[error("no usable checksum for the image")]
    Checksum(#[from] ChecksumSelectionError),
    #[error("the image's download settings are unusable")]
    Download(#[from] SourceError),
}

impl WriteRequest {
    /// The request for a whole-disk `image_info` written to `target`. `http` carries the
    /// agent-wide download settings (CA, retries, timeouts); the image's own
    /// authorization, basic-auth credentials and proxies are added to it. The step's
    /// `configdrive` argument, when given, should replace `configdrive` afterwards.
    pub fn from_image_info(
        info: &ImageInfo,
        target: PathBuf,
        md5_allowed: bool,
        permitted_formats: Option<Vec<String>>,
        http: HttpOptions,
    ) -> Result<WriteRequest, ImageRequestError> {
        if !info.is_whole_disk() {
            return Err(ImageRequestError::PartitionImage);
        }
        let checksum = info.checksum_source(md5_allowed)?;
        let http = http.with_image_info(info)?;
        Ok(WriteRequest {
            urls: info.urls.clone(),
            target,
            checksum: Some(checksum),
            md5_allowed,
            format: FormatChoice::Auto,
            declared_disk_format: info.disk_format.clone(),
            permitted_formats,
            configdrive: info.configdrive.clone(),
            http,
        })
    }
}

/// How the stages are tuned; [`write_image`] uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    pub sink: SinkOptions,
    /// How often a progress line is logged.
    pub log_interval: Duration,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self { sink: SinkOptions::default(), log_interval: Duration::from_secs(5) }
    }
}

/// An image format recognised from the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
    Gzip,
    Xz,
    Zstd,
}

impl ImageFormat {
    pub const fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Gzip => "gzip",
            ImageFormat::Xz => "xz",
            ImageFormat::Zstd => "zstd",
        }
    }

    /// The disk format of what is written: compressed streams carry raw disks.
    pub const fn disk_format(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw | ImageFormat::Gzip | ImageFormat::Xz | ImageFormat::Zstd => "raw",
        }
    }

    /// The detected format this one is written as; `None` for formats never written.
    fn from_detected(detected: DetectedFormat) -> Option<ImageFormat> {
        match detected {
            DetectedFormat::Raw | DetectedFormat::Iso => Some(ImageFormat::Raw),
            DetectedFormat::Qcow2 => Some(ImageFormat::Qcow2),
            DetectedFormat::Gzip => Some(ImageFormat::Gzip),
            DetectedFormat::Xz => Some(ImageFormat::Xz),
            DetectedFormat::Zstd => Some(ImageFormat::Zstd),
            DetectedFormat::Vmdk
            | DetectedFormat::Vhdx
            | DetectedFormat::Vhd
            | DetectedFormat::Vdi
            | DetectedFormat::Qed => None,
        }
    }

    fn as_detected(self) -> DetectedFormat {
        match self {
            ImageFormat::Raw => DetectedFormat::Raw,
            ImageFormat::Qcow2 => DetectedFormat::Qcow2,
            ImageFormat::Gzip => DetectedFormat::Gzip,
            ImageFormat::Xz => DetectedFormat::Xz,
            ImageFormat::Zstd => DetectedFormat::Zstd,
        }
    }

    fn from_choice(choice: FormatChoice) -> Option<ImageFormat> {
        match choice {
            FormatChoice::Auto => None,
            FormatChoice::Raw => Some(ImageFormat::Raw),
            FormatChoice::Qcow2 => Some(ImageFormat::Qcow2),
            FormatChoice::Gzip => Some(ImageFormat::Gzip),
            FormatChoice::Xz => Some(ImageFormat::Xz),
            FormatChoice::Zstd => Some(ImageFormat::Zstd),
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an image was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no image URL was given")]
    NoUrls,
    #[error("cannot open image source {url}")]
    OpenSource {
        url: String,
        #[source]
        source: SourceError,
    },
    #[error("cannot read local file")]
    LocalFile(#[from] FileSourceError),
    #[error("reading the image failed")]
    Source(#[source] SourceError),
    #[error("the image source thread stopped unexpectedly")]
    SourceStopped,
    #[error("the image is empty")]
    EmptyImage,
    #[error("the image ended after {received} of its {expected} bytes")]
    ShortImage { expected: u64, received: u64 },
    #[error("no digest for the image from checksum file {url}")]
    ChecksumFile {
        url: String,
        #[source]
        source: ChecksumSelectionError,
    },
    #[error("the image's checksum is an MD5 digest, which is not allowed")]
    Md5NotAllowed,
    #[error("the image's format is refused")]
    Format(#[from] FormatCheckError),
    #[error("the qcow2 image is unusable")]
    Qcow2(#[from] Qcow2Error),
    #[error("the compressed image is unusable")]
    Decompress(#[from] DecompressError),
    #[error("the image ({image_size} bytes) does not fit on the target ({target_size} bytes)")]
    ImageTooLarge { image_size: u64, target_size: u64 },
    #[error("the config drive is unusable")]
    ConfigDrive(#[from] crate::disk::configdrive::ConfigDriveError),
    #[error("{step} failed")]
    Finish {
        step: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("writing the image to the target failed")]
    Sink(#[from] SinkError),
    #[error("the image failed verification")]
    Verify(#[from] VerifyError),
}

/// What a successful run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Bytes of image data written (zero runs not counted).
    pub bytes_written: u64,
    /// The size of the decoded image.
    pub image_size: u64,
    /// Bytes made zero without being written (holes, zeroing calls).
    pub bytes_zeroed: u64,
    pub target_size: u64,
    pub format: ImageFormat,
    /// The URL the image came from.
    pub url: String,
    /// The digest that matched; `None` for an explicitly unverified run.
    pub verified: Option<Verified>,
    pub source_stats: SourceStats,
}

/// Writes the image, reporting into `progress`. Blocking: call it from a thread that may
/// block.
pub fn write_image(request: &WriteRequest, progress: &Progress) -> Result<WriteReport, WriteError> {
    write_image_with(request, progress, &WriteOptions::default())
}

/// [`write_image`] with explicit tuning.
pub fn write_image_with(
    request: &WriteRequest,
    progress: &Progress,
    options: &WriteOptions,
) -> Result<WriteReport, WriteError> {
    let result = run(request, progress, options);
    progress.set_phase(if result.is_ok() { "done" } else { "failed" });
    result
}

fn run(
    request: &WriteRequest,
    progress: &Progress,
    options: &WriteOptions,
) -> Result<WriteReport, WriteError> {
    progress.set_phase("preparing");
    let first_url = request.urls.first().ok_or(WriteError::NoUrls)?;
    let expected = expected_digest(request, first_url)?;
    let configdrive = match &request.configdrive {
        Some(value) => Some(hooks::prepare_configdrive(value, &request.http)?),
        None => None,
    };
    let (url, source) = open_first_source(request)?;
    write_source(request, url, source, expected, configdrive, progress, options)
}

/// The part of a run after the source is open and the expected digest known.
fn write_source(
    request: &WriteRequest,
    url: String,
    mut source: Box<dyn ImageSource>,
    expected: Option<ExpectedDigest>,
    configdrive: Option<hooks::ConfigDrive>,
    progress: &Progress,
    options: &WriteOptions,
) -> Result<WriteReport, WriteError> {
    // The format comes from the content. A server that ignores Range requests still
    // serves raw and compressed images: the first chunk of the stream is looked at then.
    let (head, first) = match source.read_range(0, format::DETECT_LEN) {
        Ok(head) => (head, None),
        Err(SourceError::RangeNotSupported { .. }) => {
            tracing::warn!(
                "the image server ignores Range requests; detecting the format \
                from the start of the stream (qcow2 images need Range requests)"
            );
            match source.next_event().map_err(WriteError::Source)? {
                Some(SourceEvent::Data(bytes)) => (bytes.clone(), Some(SourceEvent::Data(bytes))),
                Some(SourceEvent::Hole(len)) => {
                    let head = usize::try_from(len)
                        .map_or(format::DETECT_LEN, |l| l.min(format::DETECT_LEN));
                    (vec![0; head], Some(SourceEvent::Hole(len)))
                }
                Some(SourceEvent::Restart) | None => (Vec::new(), None),
            }
        }
        Err(e) => return Err(WriteError::Source(e)),
    };
    let detected = format::detect(&head);
    let checked = match ImageFormat::from_choice(request.format) {
        Some(chosen) => {
            if chosen.as_detected() != detected {
                tracing::warn!(%chosen, %detected, "image format given explicitly; content looks different");
            }
            chosen.as_detected()
        }
        None => detected,
    };
    let declared = request.declared_disk_format.as_deref().filter(|d| !d.is_empty());
    format::check_format(checked, declared, request.permitted_formats.as_deref())?;
    let format = ImageFormat::from_detected(checked)
        .ok_or(FormatCheckError::Unsupported { detected: checked })?;
    let mut decoder = Decoder::open(format, source.as_mut(), expected.is_some())?;

    let target_size = Target::open(&request.target).map_err(SinkError::from)?.size();
    if let Some(image_size) = decoder.image_size() {
        if image_size == 0 {
            return Err(WriteError::EmptyImage);
        }
        if image_size > target_size {
            return Err(WriteError::ImageTooLarge { image_size, target_size });
        }
    }
    if let Some(total) = decoder.progress_total() {
        progress.set_total(total);
    }
    tracing::info!(%url, %format, target = %request.target.display(), target_size,
        image_size = ?decoder.image_size(),
        digest = ?expected.as_ref().map(|e| e.algorithm.as_str()), "writing image");

    // From here on the target is being changed: the sink wipes its table areas whenever
    // this function returns without a verified finish.
    let mut sink = Sink::open(&request.target, options.sink)?;
    let verifier = expected.map(Verifier::spawn).transpose()?;
    progress.set_phase("downloading");
    let (verifier, source_stats) =
        stream(source, first, verifier, &mut decoder, &mut sink, progress, options)?;
    let image_size = decoder.finish(&mut sink)?;
    if image_size == 0 {
        return Err(WriteError::EmptyImage);
    }
    progress.set_total(image_size);
    progress.set_done(image_size);

    progress.set_phase("verifying");
    let verified = match verifier.map(Verifier::finish).transpose() {
        Ok(verified) => verified,
        Err(e) => {
            sink.finish(false)?;
            return Err(e.into());
        }
    };
    progress.set_phase("finishing");
    let report = sink.finish(true)?;
    hooks::after_commit(&request.target, configdrive)?;
    tracing::info!(%url, bytes_written = report.bytes_written, bytes_zeroed = report.bytes_zeroed,
        image_size, ?source_stats, "image written");
    Ok(WriteReport {
        bytes_written: report.bytes_written,
        image_size,
        bytes_zeroed: report.bytes_zeroed,
        target_size: report.target_size,
        format,
        url,
        verified,
        source_stats,
    })
}

/// The expected digest, fetching and parsing a checksum file when that is where it is.
fn expected_digest(
    request: &WriteRequest,
    first_url: &str,
) -> Result<Option<ExpectedDigest>, WriteError> {
    let digest = match &request.checksum {
        None => return Ok(None),
        Some(ChecksumSource::Digest(digest)) => digest.clone(),
        Some(checksum @ ChecksumSource::File { url, .. }) => {
            let text = fetch_text(url, &request.http)?;
            checksum
                .resolve(&text, image_file_name(first_url), request.md5_allowed)
                .map_err(|source| WriteError::ChecksumFile { url: url.clone(), source })?
        }
    };
    if digest.algorithm == HashAlgorithm::Md5 && !request.md5_allowed {
        return Err(WriteError::Md5NotAllowed);
    }
    Ok(Some(digest))
}

/// A small remote or local text (a checksum file).
fn fetch_text(url: &str, http: &HttpOptions) -> Result<String, WriteError> {
    let bytes = fetch_bytes(url, http)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn fetch_bytes(url: &str, http: &HttpOptions) -> Result<Vec<u8>, WriteError> {
    if file_source::is_local(url) {
        Ok(file_source::read_local(url)?)
    } else {
        hooks::fetch_http(url, http)
    }
}

/// Opens the first URL that works; the earlier failures are logged.
fn open_first_source(request: &WriteRequest) -> Result<(String, Box<dyn ImageSource>), WriteError> {
    let mut last = WriteError::NoUrls;
    for url in &request.urls {
        let opened: Result<Box<dyn ImageSource>, WriteError> = if file_source::is_local(url) {
            FileSource::open(url).map(|s| Box::new(s) as Box<dyn ImageSource>).map_err(Into::into)
        } else {
            hooks::open_http(url, &request.http)
        };
        match opened {
            Ok(source) => return Ok((url.clone(), source)),
            Err(e) => {
                tracing::warn!(%url, error = %crate::executor::error_chain(&e),
                    "image source unusable; trying the next URL if any");
                last = e;
            }
        }
    }
    Err(last)
}

/// What the source thread passes on.
#[derive(Debug)]
enum Item {
    Data(Arc<Vec<u8>>),
    /// Zeros the source did not transfer.
    Hole(u64),
    Restart,
    End(SourceStats),
    Failed(SourceError),
    HashFailed(VerifyError),
}

/// Source events in flight to the decoding thread (each 256 KiB to a few MiB): enough
/// to ride out a short stall of either side, few enough to bound memory.
const STREAM_DEPTH: usize = 16;

/// Runs the sequential pass: a source thread reads and feeds the hash thread, this thread
/// decodes into the sink. Returns the verifier (to be finished) and the source's counters.
fn stream(
    mut source: Box<dyn ImageSource>,
    first: Option<SourceEvent>,
    verifier: Option<Verifier>,
    decoder: &mut Decoder,
    sink: &mut Sink,
    progress: &Progress,
    options: &WriteOptions,
) -> Result<(Option<Verifier>, SourceStats), WriteError> {
    let (tx, rx) = mpsc::sync_channel(STREAM_DEPTH);
    let reader = std::thread::Builder::new()
        .name("image-source".into())
        .spawn(move || {
            let mut first = first;
            loop {
                // A chunk taken from the stream to detect the format comes first.
                let event = match first.take() {
                    Some(event) => Ok(Some(event)),
                    None => source.next_event(),
                };
                let item = match event {
                    Ok(Some(SourceEvent::Data(bytes))) => {
                        let bytes = Arc::new(bytes);
                        match verifier.as_ref().map(|v| v.update(bytes.clone())) {
                            Some(Err(e)) => Item::HashFailed(e),
                            _ => Item::Data(bytes),
                        }
                    }
                    Ok(Some(SourceEvent::Hole(len))) => {
                        match verifier.as_ref().map(|v| v.update_zeros(len)) {
                            Some(Err(e)) => Item::HashFailed(e),
                            _ => Item::Hole(len),
                        }
                    }
                    Ok(Some(SourceEvent::Restart)) => {
                        match verifier.as_ref().map(Verifier::restart) {
                            Some(Err(e)) => Item::HashFailed(e),
                            _ => Item::Restart,
                        }
                    }
                    Ok(None) => Item::End(source.stats()),
                    Err(e) => Item::Failed(e),
                };
                let last = !matches!(item, Item::Data(_) | Item::Hole(_) | Item::Restart);
                if tx.send(item).is_err() || last {
                    break;
                }
            }
            verifier
        })
        .map_err(|_| WriteError::SourceStopped)?;

    let mut last_log = Instant::now();
    let stats = loop {
        match rx.recv() {
            Ok(Item::Data(bytes)) => {
                decoder.feed(&bytes, sink)?;
                super::buffers::give_shared(bytes);
            }
            Ok(Item::Hole(len)) => decoder.feed_hole(len, sink)?,
            Ok(Item::Restart) => {
                tracing::warn!(at = decoder.position(), "image source restarted from byte 0");
                decoder.restart()?;
            }
            Ok(Item::End(stats)) => break stats,
            Ok(Item::Failed(e)) => return Err(WriteError::Source(e)),
            Ok(Item::HashFailed(e)) => return Err(WriteError::Verify(e)),
            Err(_) => return Err(WriteError::SourceStopped),
        }
        progress.set_done(decoder.position());
        if last_log.elapsed() >= options.log_interval {
            last_log = Instant::now();
            let s = progress.snapshot();
            tracing::info!(bytes_done = s.bytes_done, bytes_total = ?s.bytes_total,
                rate_mib_per_second = format!("{:.1}", s.rate_bytes_per_second / 1048576.0),
                eta_seconds = ?s.eta_seconds.map(|e| e.round()), "writing image");
        }
    };
    let verifier = reader.join().map_err(|_| WriteError::SourceStopped)?;
    Ok((verifier, stats))
}

/// Turns the source's bytes into extents of the target, one arm per format.
#[derive(Debug)]
enum Decoder {
    Raw(RawDecoder),
    /// A compressed raw image: decompressed output goes to consecutive offsets.
    Compressed {
        decompressor: Decompressor,
        position: u64,
    },
    /// Data clusters come in file order (guest offsets jump around); the zero ranges
    /// follow at the end of the pass.
    Qcow2(Box<Qcow2Decoder>),
}

impl Decoder {
    /// Chooses the decoder for `format`. Decoders that need random access (qcow2 tables)
    /// read `source` here, before the sequential pass starts. `digest_verified` says the
    /// downloaded bytes are checked against the image's digest, which makes a compressed
    /// format's own content checksum redundant.
    fn open(
        format: ImageFormat,
        source: &mut dyn ImageSource,
        digest_verified: bool,
    ) -> Result<Decoder, WriteError> {
        let compressed = |kind| -> Result<Decoder, WriteError> {
            let decompressor = Decompressor::with_frame_checksum(kind, !digest_verified)?;
            Ok(Decoder::Compressed { decompressor, position: 0 })
        };
        match format {
            ImageFormat::Raw => Ok(Decoder::Raw(RawDecoder { size: source.size(), position: 0 })),
            ImageFormat::Gzip => compressed(CompressionKind::Gzip),
            ImageFormat::Xz => compressed(CompressionKind::Xz),
            ImageFormat::Zstd => compressed(CompressionKind::Zstd),
            ImageFormat::Qcow2 => {
                let size = source.size();
                let mut read = |offset: u64, len: usize| {
                    source.read_range(offset, len).map_err(WriteError::Source)
                };
                let plan = qcow2::open(&mut read, size)?;
                tracing::info!(
                    virtual_size = plan.virtual_size(),
                    cluster_size = plan.cluster_size(),
                    mapped_bytes = plan.mapped_bytes(),
                    clusters = plan.clusters().len(),
                    "qcow2 image mapped"
                );
                Ok(Decoder::Qcow2(Box::new(Qcow2Decoder::new(plan))))
            }
        }
    }

    /// The decoded image's size, when known before the pass.
    fn image_size(&self) -> Option<u64> {
        match self {
            Decoder::Raw(raw) => raw.size,
            Decoder::Compressed { .. } => None,
            Decoder::Qcow2(q) => Some(q.plan().virtual_size()),
        }
    }

    /// How far into the image the pass has got: decoded bytes for raw and compressed
    /// images, bytes of the qcow2 file for qcow2 (whose output is not in order).
    fn position(&self) -> u64 {
        match self {
            Decoder::Raw(raw) => raw.position,
            Decoder::Compressed { position, .. } => *position,
            Decoder::Qcow2(q) => q.position(),
        }
    }

    /// The total [`Decoder::position`] moves towards, when known.
    fn progress_total(&self) -> Option<u64> {
        match self {
            Decoder::Raw(raw) => raw.size,
            Decoder::Compressed { .. } => None,
            Decoder::Qcow2(q) => Some(q.plan().stream_end()),
        }
    }

    fn feed(&mut self, bytes: &[u8], sink: &mut Sink) -> Result<(), WriteError> {
        match self {
            Decoder::Raw(raw) => {
                sink.submit(Extent::Data { offset: raw.position, bytes })?;
                raw.position += bytes.len() as u64;
                Ok(())
            }
            Decoder::Compressed { decompressor, position } => {
                decompressor.feed(bytes, &mut |out: &[u8]| -> Result<(), WriteError> {
                    sink.submit(Extent::Data { offset: *position, bytes: out })?;
                    *position += out.len() as u64;
                    Ok(())
                })
            }
            Decoder::Qcow2(q) => {
                q.feed(bytes, &mut |extent| -> Result<(), WriteError> { Ok(sink.submit(extent)?) })
            }
        }
    }

    /// `len` zero bytes of the source that were not transferred. A raw image turns them
    /// into a zero extent directly; other formats decode them like received zeros.
    fn feed_hole(&mut self, mut len: u64, sink: &mut Sink) -> Result<(), WriteError> {
        if let Decoder::Raw(raw) = self {
            sink.submit(Extent::Zero { offset: raw.position, len })?;
            raw.position += len;
            return Ok(());
        }
        let zeros = vec![0u8; 1 << 20];
        while len > 0 {
            let n = usize::try_from(len).map_or(zeros.len(), |l| l.min(zeros.len()));
            self.feed(&zeros[..n], sink)?;
            len -= n as u64;
        }
        Ok(())
    }

    /// The source started over: decode from the beginning again (writing the same bytes
    /// to the same places is harmless).
    fn restart(&mut self) -> Result<(), WriteError> {
        match self {
            Decoder::Raw(raw) => raw.position = 0,
            Decoder::Compressed { decompressor, position } => {
                *decompressor = decompressor.fresh()?;
                *position = 0;
            }
            Decoder::Qcow2(q) => q.reset(),
        }
        Ok(())
    }

    /// Ends the pass; returns the decoded image's size.
    fn finish(&mut self, sink: &mut Sink) -> Result<u64, WriteError> {
        match self {
            Decoder::Raw(raw) => match raw.size {
                Some(expected) if expected != raw.position => {
                    Err(WriteError::ShortImage { expected, received: raw.position })
                }
                _ => Ok(raw.position),
            },
            Decoder::Compressed { decompressor, position } => {
                decompressor.finish(&mut |out: &[u8]| -> Result<(), WriteError> {
                    sink.submit(Extent::Data { offset: *position, bytes: out })?;
                    *position += out.len() as u64;
                    Ok(())
                })?;
                Ok(*position)
            }
            Decoder::Qcow2(q) => {
                q.finish(&mut |extent| -> Result<(), WriteError> { Ok(sink.submit(extent)?) })?;
                Ok(q.plan().virtual_size())
            }
        }
    }
}

/// A raw image is its own decoding: byte `n` of the stream goes to byte `n` of the target.
#[derive(Debug)]
struct RawDecoder {
    size: Option<u64>,
    position: u64,
}

/// The HTTP source, the config drive and the partition-table fix-ups.
mod hooks {
    use std::fs::{File, OpenOptions};

    use super::*;
    use crate::disk::{self, configdrive, gpt};
    use crate::image::http::{self, HttpSource};

    /// The largest checksum file fetched: a listing of many images is still small.
    const MAX_CHECKSUM_FILE: u64 = 4 << 20;

    /// An `http(s)://` image source.
    pub(super) fn open_http(
        url: &str,
        options: &HttpOptions,
    ) -> Result<Box<dyn ImageSource>, WriteError> {
        HttpSource::open(url, options)
            .map(|s| Box::new(s) as Box<dyn ImageSource>)
            .map_err(|source| WriteError::OpenSource { url: http::redact(url), source })
    }

    /// A whole small `http(s)://` document (checksum file).
    pub(super) fn fetch_http(url: &str, options: &HttpOptions) -> Result<Vec<u8>, WriteError> {
        http::fetch_bytes(url, options, MAX_CHECKSUM_FILE)
            .map_err(|source| WriteError::OpenSource { url: http::redact(url), source })
    }

    /// The config drive, fetched (when `value` is a URL) and decoded from
    /// base64(gzip(ISO 9660)) before the target is touched, so that a bad one fails the
    /// write early.
    pub(super) fn prepare_configdrive(
        value: &str,
        options: &HttpOptions,
    ) -> Result<ConfigDrive, WriteError> {
        let encoded = if configdrive::is_url(value) {
            http::fetch_bytes(value, options, configdrive::MAX_ENCODED)
                .map_err(|source| WriteError::OpenSource { url: http::redact(value), source })?
        } else {
            value.as_bytes().to_vec()
        };
        Ok(ConfigDrive { iso: configdrive::decode(encoded)? })
    }

    /// A decoded config-drive image, ready for its partition.
    #[derive(Debug)]
    pub(super) struct ConfigDrive {
        pub iso: Vec<u8>,
    }

    /// After the verified image is on the target: move the backup GPT to the target's
    /// end, add the config-drive partition, have the kernel re-read the table. Should any
    /// of it fail, the table areas are wiped: a disk whose deploy failed must not boot.
    pub(super) fn after_commit(
        target: &Path,
        configdrive: Option<ConfigDrive>,
    ) -> Result<(), WriteError> {
        let file = OpenOptions::new().read(true).write(true).open(target).map_err(|source| {
            WriteError::Finish { step: "opening the target", source: source.into() }
        })?;
        let geometry = disk::geometry(&file).map_err(|e| WriteError::Finish {
            step: "reading the target's size",
            source: e.into(),
        })?;
        let result = fix_up(&file, geometry, configdrive);
        if result.is_err() {
            if let Err(e) = disk::wipe_table_areas(&file, geometry.len, geometry.sector) {
                tracing::error!(error = %crate::executor::error_chain(&e),
                    "wiping the partition-table areas after a failed finish failed too");
            }
        }
        result
    }

    fn fix_up(
        file: &File,
        geometry: disk::Geometry,
        configdrive: Option<ConfigDrive>,
    ) -> Result<(), WriteError> {
        let (len, sector) = (geometry.len, geometry.sector);
        let moved = gpt::relocate_backup(file, len, sector).map_err(|e| WriteError::Finish {
            step: "moving the backup GPT to the end of the disk",
            source: e.into(),
        })?;
        if moved {
            tracing::info!("backup GPT moved to the end of the disk");
        }
        match configdrive {
            Some(drive) => {
                let part = configdrive::install(file, len, sector, &drive.iso).map_err(|e| {
                    WriteError::Finish { step: "writing the config drive", source: e.into() }
                })?;
                tracing::info!(partition = part.number, start = part.start, len = part.len,
                    reused = part.reused, label = ?part.label, "config drive written");
            }
            None => {
                file.sync_all().map_err(|e| WriteError::Finish {
                    step: "flushing the partition table",
                    source: e.into(),
                })?;
                let reread =
                    disk::reread_partition_table(file).map_err(|e| WriteError::Finish {
                        step: "asking the kernel to re-read the partition table",
                        source: e.into(),
                    })?;
                tracing::debug!(reread, "partition table re-read");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
