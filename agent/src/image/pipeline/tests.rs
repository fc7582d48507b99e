use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;

use ferric_shared::image_info::ChecksumFileError;

use super::*;
use crate::image::verify::hex_digest;

const MIB: u64 = 1 << 20;
const OLD: u8 = 0xaa;

/// A 6 MiB disk image: data at the start (the "partition table"), a long zero run, data
/// in the middle, zeros at the end.
fn image() -> Vec<u8> {
    let mut image: Vec<u8> = (0..6 * MIB).map(|i| ((i * 131 + 17) % 251) as u8 | 1).collect();
    image[MIB as usize + 4096..3 * MIB as usize].fill(0);
    image[5 * MIB as usize..].fill(0);
    image
}

struct Rig {
    dir: tempfile::TempDir,
    image: Vec<u8>,
    image_path: PathBuf,
    target: PathBuf,
}

impl Rig {
    /// The image in a file and a 16 MiB target full of old content.
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let image = image();
        let image_path = dir.path().join("disk image.raw");
        std::fs::write(&image_path, &image).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, vec![OLD; 16 * MIB as usize]).unwrap();
        Rig { dir, image, image_path, target }
    }

    fn url(&self) -> String {
        format!("file://{}", self.image_path.display()).replace(' ', "%20")
    }

    fn request(&self) -> WriteRequest {
        let hex = hex_digest(HashAlgorithm::Sha256, &self.image);
        WriteRequest {
            urls: vec![self.url()],
            target: self.target.clone(),
            checksum: Some(ChecksumSource::Digest(ExpectedDigest {
                algorithm: HashAlgorithm::Sha256,
                hex,
            })),
            md5_allowed: false,
            format: FormatChoice::Auto,
            declared_disk_format: Some("raw".into()),
            permitted_formats: Some(vec!["raw".into(), "qcow2".into()]),
            configdrive: None,
            // Unreachable URLs in these tests fail at once.
            http: HttpOptions {
                retries: 0,
                retry_interval: std::time::Duration::ZERO,
                ..HttpOptions::default()
            },
        }
    }

    fn target_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.target).unwrap()
    }

    fn assert_untouched(&self) {
        assert!(self.target_bytes().iter().all(|&b| b == OLD), "target was changed");
    }

    fn assert_wiped(&self) {
        let back = self.target_bytes();
        let len = back.len();
        assert!(back[..MIB as usize].iter().all(|&b| b == 0), "first MiB not wiped");
        assert_ne!(&back[..MIB as usize], &self.image[..MIB as usize]);
        assert!(back[len - MIB as usize..].iter().all(|&b| b == 0), "last MiB not wiped");
    }
}

fn options() -> WriteOptions {
    WriteOptions {
        sink: SinkOptions { direct: true, buffers: 2, buffer_size: 512 * 1024 },
        log_interval: Duration::from_millis(1),
    }
}

#[test]
fn raw_image_is_written_byte_for_byte_and_zero_runs_cost_no_blocks() {
    let rig = Rig::new();
    // A freshly created sparse target: only data should end up allocated.
    std::fs::remove_file(&rig.target).unwrap();
    std::fs::File::create(&rig.target).unwrap().set_len(16 * MIB).unwrap();
    let progress = Progress::new();
    let report = write_image_with(&rig.request(), &progress, &options()).unwrap();

    let back = rig.target_bytes();
    assert_eq!(&back[..rig.image.len()], &rig.image[..]);
    assert!(back[rig.image.len()..].iter().all(|&b| b == 0));
    assert_eq!(report.image_size, 6 * MIB);
    assert_eq!(report.bytes_written + report.bytes_zeroed, 6 * MIB, "{report:?}");
    assert!(report.bytes_zeroed >= 2 * MIB, "{report:?}");
    assert_eq!(report.format, ImageFormat::Raw);
    assert_eq!(report.url, rig.url());
    let verified = report.verified.unwrap();
    assert_eq!((verified.algorithm, verified.bytes), (HashAlgorithm::Sha256, 6 * MIB));

    let allocated = std::fs::metadata(&rig.target).unwrap().blocks() * 512;
    assert!(allocated <= 4 * MIB + 256 * 1024, "{allocated} bytes allocated");

    let s = progress.snapshot();
    assert_eq!((s.phase, s.bytes_done, s.bytes_total), ("done", 6 * MIB, Some(6 * MIB)));
}

#[test]
fn wrong_digest_fails_and_leaves_the_table_areas_wiped() {
    let rig = Rig::new();
    let mut request = rig.request();
    let wrong = "ab".repeat(32);
    request.checksum = Some(ChecksumSource::Digest(ExpectedDigest {
        algorithm: HashAlgorithm::Sha256,
        hex: wrong.clone(),
    }));
    let progress = Progress::new();
    let err = write_image_with(&request, &progress, &options()).unwrap_err();
    match &err {
        WriteError::Verify(VerifyError::Mismatch { algorithm, expected, actual }) => {
            assert_eq!(*algorithm, HashAlgorithm::Sha256);
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &hex_digest(HashAlgorithm::Sha256, &rig.image));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    rig.assert_wiped();
    assert_eq!(progress.snapshot().phase, "failed");
}

#[test]
fn checksum_files_are_read_and_matched_by_the_image_name() {
    let rig = Rig::new();
    let sha512 = hex_digest(HashAlgorithm::Sha512, &rig.image);
    let other = "0".repeat(128);
    let sums = rig.dir.path().join("SHA512SUMS");
    std::fs::write(&sums, format!("{other}  other.raw\n{sha512}  disk image.raw\n")).unwrap();
    let mut request = rig.request();
    request.checksum =
        Some(ChecksumSource::File { url: format!("file://{}", sums.display()), algorithm: None });
    // The checksum file lists the decoded file name, not the escaped URL path.
    request.urls = vec![rig.image_path.display().to_string()];
    let report = write_image_with(&request, &Progress::new(), &options()).unwrap();
    assert_eq!(report.verified.unwrap().hex, sha512);
    assert_eq!(&rig.target_bytes()[..rig.image.len()], &rig.image[..]);
}

#[test]
fn a_checksum_file_without_the_image_fails_before_the_target_is_touched() {
    let rig = Rig::new();
    let sums = rig.dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{}  other.raw\n", "0".repeat(64))).unwrap();
    let mut request = rig.request();
    request.checksum =
        Some(ChecksumSource::File { url: sums.display().to_string(), algorithm: None });
    request.urls = vec![rig.image_path.display().to_string()];
    let err = write_image_with(&request, &Progress::new(), &options()).unwrap_err();
    match err {
        WriteError::ChecksumFile {
            source: ChecksumSelectionError::File(ChecksumFileError::FileNotListed { file }),
            ..
        } => assert_eq!(file, "disk image.raw"),
        other => panic!("{other:?}"),
    }
    rig.assert_untouched();
}

#[test]
fn refusals_before_writing_leave_the_target_untouched() {
    let rig = Rig::new();
    type Case = (&'static str, Box<dyn Fn(&mut WriteRequest, &Rig)>, fn(&WriteError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "declared qcow2, content raw",
            Box::new(|r, _| r.declared_disk_format = Some("qcow2".into())),
            |e| {
                matches!(e, WriteError::Format(FormatCheckError::Mismatch { detected, declared })
                    if *detected == DetectedFormat::Raw && declared == "qcow2")
            },
        ),
        (
            "raw not permitted",
            Box::new(|r, _| r.permitted_formats = Some(vec!["qcow2".into()])),
            |e| {
                matches!(e, WriteError::Format(FormatCheckError::NotPermitted { disk_format, .. })
                    if *disk_format == "raw")
            },
        ),
        (
            "qcow2 with a header that makes no sense",
            Box::new(|r, rig| {
                let mut qcow = b"QFI\xfb\0\0\0\x03".to_vec();
                qcow.resize(4096, 0);
                let path = rig.dir.path().join("x.qcow2");
                std::fs::write(&path, qcow).unwrap();
                r.urls = vec![path.display().to_string()];
                r.declared_disk_format = None;
                r.checksum = None;
            }),
            |e| matches!(e, WriteError::Qcow2(_)),
        ),
        (
            "image larger than the target",
            Box::new(|r, rig| {
                let path = rig.dir.path().join("big.raw");
                std::fs::File::create(&path).unwrap().set_len(17 * MIB).unwrap();
                r.urls = vec![path.display().to_string()];
                r.checksum = None;
            }),
            |e| {
                matches!(e, WriteError::ImageTooLarge { image_size, target_size }
                    if *image_size == 17 * MIB && *target_size == 16 * MIB)
            },
        ),
        (
            "md5 not allowed",
            Box::new(|r, rig| {
                r.checksum = Some(ChecksumSource::Digest(ExpectedDigest {
                    algorithm: HashAlgorithm::Md5,
                    hex: hex_digest(HashAlgorithm::Md5, &rig.image),
                }))
            }),
            |e| matches!(e, WriteError::Md5NotAllowed),
        ),
        ("truncated config drive", Box::new(|r, _| r.configdrive = Some("H4sIAAAA".into())), |e| {
            matches!(e, WriteError::ConfigDrive(_))
        }),
        (
            "http unreachable",
            Box::new(|r, _| r.urls = vec!["http://127.0.0.1:9/img.raw".into()]),
            |e| matches!(e, WriteError::OpenSource { url, .. } if url == "http://127.0.0.1:9/img.raw"),
        ),
        ("no urls", Box::new(|r, _| r.urls.clear()), |e| matches!(e, WriteError::NoUrls)),
        (
            "empty image",
            Box::new(|r, rig| {
                let path = rig.dir.path().join("empty.raw");
                std::fs::write(&path, b"").unwrap();
                r.urls = vec![path.display().to_string()];
                r.checksum = None;
            }),
            |e| matches!(e, WriteError::EmptyImage),
        ),
    ];
    for (name, alter, expected) in cases {
        let mut request = rig.request();
        alter(&mut request, &rig);
        let err = write_image_with(&request, &Progress::new(), &options()).unwrap_err();
        assert!(expected(&err), "{name}: {err:?}");
        rig.assert_untouched();
    }
}

#[test]
fn the_first_usable_url_is_used() {
    let rig = Rig::new();
    let mut request = rig.request();
    let missing = rig.dir.path().join("missing.raw").display().to_string();
    request.urls = vec![missing, "https://127.0.0.1:9/x.raw".into(), rig.url()];
    let report = write_image_with(&request, &Progress::new(), &options()).unwrap();
    assert_eq!(report.url, rig.url());
    assert_eq!(&rig.target_bytes()[..rig.image.len()], &rig.image[..]);
}

/// A scripted source: events in order, then the end.
struct Scripted {
    size: u64,
    head: Vec<u8>,
    events: VecDeque<Result<SourceEvent, String>>,
}

impl ImageSource for Scripted {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError> {
        let start = (offset as usize).min(self.head.len());
        let end = (start + len).min(self.head.len());
        Ok(self.head[start..end].to_vec())
    }

    fn next_event(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        match self.events.pop_front() {
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(message)) => Err(SourceError::Other(message)),
            None => Ok(None),
        }
    }

    fn stats(&self) -> SourceStats {
        SourceStats { restarts: 1, ..SourceStats::default() }
    }
}

fn scripted(image: &[u8], events: Vec<Result<SourceEvent, String>>) -> Box<dyn ImageSource> {
    Box::new(Scripted {
        size: image.len() as u64,
        head: image[..4096].to_vec(),
        events: events.into(),
    })
}

#[test]
fn a_restarted_source_is_hashed_and_written_from_the_start_again() {
    let rig = Rig::new();
    let request = rig.request();
    let expected = match &request.checksum {
        Some(ChecksumSource::Digest(d)) => d.clone(),
        other => panic!("{other:?}"),
    };
    let image = &rig.image;
    let mut events = vec![
        Ok(SourceEvent::Data(image[..3 * MIB as usize].to_vec())),
        // Garbage that the restart must make the hash forget.
        Ok(SourceEvent::Data(vec![7u8; 1000])),
        Ok(SourceEvent::Restart),
    ];
    events.extend(image.chunks(700_000).map(|c| Ok(SourceEvent::Data(c.to_vec()))));
    let source = scripted(image, events);
    let report = write_source(
        &request,
        "scripted".into(),
        source,
        Some(expected),
        None,
        &Progress::new(),
        &options(),
    )
    .unwrap();
    assert_eq!(report.source_stats.restarts, 1);
    assert_eq!(report.verified.unwrap().bytes, image.len() as u64);
    assert_eq!(&rig.target_bytes()[..image.len()], &image[..]);
}

#[test]
fn a_source_failing_mid_stream_leaves_the_table_areas_wiped() {
    let rig = Rig::new();
    let image = &rig.image;
    let events = vec![
        Ok(SourceEvent::Data(image[..4 * MIB as usize].to_vec())),
        Err("connection reset".to_owned()),
    ];
    let err = write_source(
        &rig.request(),
        "scripted".into(),
        scripted(image, events),
        None,
        None,
        &Progress::new(),
        &options(),
    )
    .unwrap_err();
    assert!(
        matches!(err, WriteError::Source(SourceError::Other(ref m)) if m == "connection reset")
    );
    rig.assert_wiped();
}

#[test]
fn a_source_ending_early_is_an_error_and_wipes() {
    let rig = Rig::new();
    let image = &rig.image;
    let events = vec![Ok(SourceEvent::Data(image[..2 * MIB as usize].to_vec()))];
    let err = write_source(
        &rig.request(),
        "scripted".into(),
        scripted(image, events),
        None,
        None,
        &Progress::new(),
        &options(),
    )
    .unwrap_err();
    assert!(
        matches!(err, WriteError::ShortImage { expected, received }
            if expected == 6 * MIB && received == 2 * MIB),
        "{err:?}"
    );
    rig.assert_wiped();
}

#[test]
fn requests_from_image_info() {
    let sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let info: ImageInfo = serde_json::from_value(serde_json::json!({
        "id": "img",
        "urls": ["http://h/img.qcow2"],
        "disk_format": "qcow2",
        "container_format": "bare",
        "stream_raw_images": true,
        "os_hash_algo": "sha256",
        "os_hash_value": sha256,
        "image_server_auth_strategy": "http_basic",
        "image_server_user": "u",
        "image_server_password": "p",
        "image_request_authorization": "QmVhcmVyIHh5eg==",
        "proxies": {"http": "http://proxy:3128"},
        "no_proxy": "10.0.0.1",
        "configdrive": "H4sI"
    }))
    .unwrap();
    let base = HttpOptions { retries: 3, ..HttpOptions::default() };
    let r = WriteRequest::from_image_info(&info, "/dev/sda".into(), false, None, base).unwrap();
    assert_eq!(r.urls, ["http://h/img.qcow2"]);
    assert_eq!(
        r.checksum,
        Some(ChecksumSource::Digest(ExpectedDigest {
            algorithm: HashAlgorithm::Sha256,
            hex: sha256.into()
        }))
    );
    assert_eq!(r.declared_disk_format.as_deref(), Some("qcow2"));
    assert_eq!(r.configdrive.as_deref(), Some("H4sI"));
    assert_eq!(r.http.authorization.as_deref(), Some("Bearer xyz"));
    assert_eq!(r.http.basic_auth, Some(("u".into(), "p".into())));
    assert_eq!(r.http.proxies.http.as_deref(), Some("http://proxy:3128"));
    assert_eq!(r.http.no_proxy.as_deref(), Some("10.0.0.1"));
    assert_eq!(r.http.retries, 3);

    let mut bad_auth = info.clone();
    bad_auth.image_request_authorization = Some("not base64!".into());
    let err = WriteRequest::from_image_info(&bad_auth, "/t".into(), false, None, base_http());
    assert!(matches!(err, Err(ImageRequestError::Download(_))), "{err:?}");

    let mut partition = info.clone();
    partition.image_type = Some("partition".into());
    let err = WriteRequest::from_image_info(&partition, "/t".into(), false, None, base_http());
    assert!(matches!(err, Err(ImageRequestError::PartitionImage)), "{err:?}");

    let mut md5 = info;
    md5.os_hash_algo = None;
    md5.os_hash_value = None;
    md5.checksum = Some("d41d8cd98f00b204e9800998ecf8427e".into());
    let err = WriteRequest::from_image_info(&md5, "/t".into(), false, None, base_http());
    assert!(matches!(err, Err(ImageRequestError::Checksum(_))), "{err:?}");
}

fn base_http() -> HttpOptions {
    HttpOptions::default()
}
