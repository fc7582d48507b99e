//! The agent's HTTP source against the conductor's image server: a sparse image is
//! downloaded through its data map (only the data crosses the network), written and
//! verified like any other, and an image replaced mid-download is fetched again whole.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use ferric_agent::image::http::HttpSource;
use ferric_agent::image::pipeline::{write_image, FormatChoice, WriteRequest};
use ferric_agent::image::progress::Progress;
use ferric_agent::image::source::{HttpOptions, ImageSource, SourceEvent};
use ferric_shared::image_info::{ChecksumSource, ExpectedDigest, HashAlgorithm};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 24 * MIB;
/// Data islands of the test image: (offset, length).
const ISLANDS: [(u64, u64); 3] = [(0, MIB), (10 * MIB, 3 * MIB / 2), (SIZE - 100_000, 100_000)];

/// The conductor's image router on a loopback port, served from its own thread.
struct Server {
    base: String,
    _runtime: std::thread::JoinHandle<()>,
}

fn serve(dir: PathBuf) -> Server {
    let (tx, rx) = std::sync::mpsc::channel();
    let runtime = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, ferric_conductor::images::router(dir)).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    Server { base: format!("http://{addr}/images"), _runtime: runtime }
}

/// Writes the sparse test image, each island filled with `seed`-dependent bytes.
fn sparse_image(path: &Path, seed: u8) {
    let mut file = std::fs::File::create(path).unwrap();
    file.set_len(SIZE).unwrap();
    for (i, (offset, len)) in ISLANDS.iter().enumerate() {
        let bytes: Vec<u8> = (0..*len)
            .map(|n| (n as u8).wrapping_mul(31).wrapping_add(seed + i as u8) | 1)
            .collect();
        file.seek(SeekFrom::Start(*offset)).unwrap();
        file.write_all(&bytes).unwrap();
    }
    file.sync_all().unwrap();
}

/// Whether the file system reports the holes of `path` (tmpfs and ext4 do).
fn reports_holes(path: &Path) -> bool {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: lseek on an open descriptor.
    let data = unsafe { libc::lseek(file.as_raw_fd(), (2 * MIB) as libc::off_t, libc::SEEK_DATA) };
    data == (10 * MIB) as libc::off_t
}

fn options() -> HttpOptions {
    HttpOptions {
        retries: 2,
        retry_interval: std::time::Duration::from_millis(10),
        stall_timeout: std::time::Duration::from_secs(5),
        ..HttpOptions::default()
    }
}

/// Drains `source`: the bytes it stands for, the bytes handed out as holes, restarts.
fn drain(source: &mut HttpSource) -> (Vec<u8>, u64, u32) {
    let (mut out, mut holes, mut restarts) = (Vec::new(), 0u64, 0u32);
    while let Some(event) = source.next_event().unwrap() {
        match event {
            SourceEvent::Data(bytes) => out.extend_from_slice(&bytes),
            SourceEvent::Hole(len) => {
                holes += len;
                out.resize(out.len() + len as usize, 0);
            }
            SourceEvent::Restart => {
                restarts += 1;
                holes = 0;
                out.clear();
            }
        }
    }
    (out, holes, restarts)
}

#[test]
fn only_the_data_of_a_sparse_image_is_downloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.raw");
    sparse_image(&path, 1);
    if !reports_holes(&path) {
        println!("skipped: the temp directory's file system does not report holes");
        return;
    }
    let server = serve(dir.path().to_owned());
    let url = format!("{}/sparse.raw", server.base);
    let mut source = HttpSource::open(&url, &options()).unwrap();
    assert_eq!(source.size(), Some(SIZE));
    let (bytes, holes, restarts) = drain(&mut source);
    assert_eq!(restarts, 0);
    assert!(bytes == std::fs::read(&path).unwrap(), "content differs");
    let data: u64 = ISLANDS.iter().map(|(_, len)| len).sum();
    // Islands are rounded to whole 1 MiB merges at most; the rest came as holes.
    assert!(holes >= SIZE - data - 4 * MIB, "only {holes} bytes came as holes");

    // The same server without the map (a plain client): everything is data.
    let mut plain = HttpSource::open_with_chunk_size(&url, &options(), MIB as usize).unwrap();
    let (bytes, holes, _) = drain(&mut plain);
    assert_eq!(holes, 0);
    assert_eq!(bytes.len() as u64, SIZE);
}

#[test]
fn a_sparse_image_is_written_and_verified_through_its_map() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.raw");
    sparse_image(&path, 7);
    let image = std::fs::read(&path).unwrap();
    let server = serve(dir.path().to_owned());
    let target = dir.path().join("disk");
    let disk = std::fs::File::create(&target).unwrap();
    disk.set_len(SIZE + 8 * MIB).unwrap();
    // Old content where the image has holes must not survive.
    disk.write_all_at(&[0xAA; 4096], 16 * MIB).unwrap();
    drop(disk);
    let request = WriteRequest {
        urls: vec![format!("{}/sparse.raw", server.base)],
        target: target.clone(),
        checksum: Some(ChecksumSource::Digest(ExpectedDigest {
            algorithm: HashAlgorithm::Sha256,
            hex: ferric_agent::image::verify::hex_digest(HashAlgorithm::Sha256, &image),
        })),
        md5_allowed: false,
        format: FormatChoice::Auto,
        declared_disk_format: Some("raw".into()),
        permitted_formats: None,
        configdrive: None,
        http: options(),
    };
    let report = write_image(&request, &Progress::new()).unwrap();
    assert!(report.verified.is_some());
    assert_eq!(report.image_size, SIZE);
    let written = std::fs::read(&target).unwrap();
    assert!(written[..SIZE as usize] == image[..], "target differs from the image");

    // A wrong digest over the same map fails and leaves nothing bootable.
    let mut wrong = request.clone();
    wrong.checksum = Some(ChecksumSource::Digest(ExpectedDigest {
        algorithm: HashAlgorithm::Sha256,
        hex: "0".repeat(64),
    }));
    assert!(write_image(&wrong, &Progress::new()).is_err());
    let after = std::fs::read(&target).unwrap();
    assert!(after[..MIB as usize].iter().all(|&b| b == 0), "first MiB not wiped");
}

#[test]
fn an_image_replaced_mid_download_is_fetched_again_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.raw");
    sparse_image(&path, 3);
    if !reports_holes(&path) {
        println!("skipped: the temp directory's file system does not report holes");
        return;
    }
    let server = serve(dir.path().to_owned());
    let url = format!("{}/sparse.raw", server.base);
    let mut source = HttpSource::open(&url, &options()).unwrap();
    // The first island arrives through the map...
    let Some(SourceEvent::Data(first)) = source.next_event().unwrap() else {
        panic!("expected data first");
    };
    assert!(!first.is_empty());
    // ...then the image is replaced (new content, new validator).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let replacement = dir.path().join("replacement.raw");
    sparse_image(&replacement, 9);
    std::fs::rename(&replacement, &path).unwrap();
    let (bytes, _, restarts) = drain(&mut source);
    assert_eq!(restarts, 1, "the consumer must hear that the stream started over");
    assert!(bytes == std::fs::read(&path).unwrap(), "content is not the new image's");
}
