//! The agent's image pipeline over every source × format combination, each result
//! compared byte for byte with `qemu-img convert -O raw` of the same image; then the
//! partition-table fix-ups (backup GPT relocation checked by `sfdisk --verify`, the
//! config drive found by `blkid`) and the download faults seen through the whole pipeline.
//!
//! Images are made here with the real `qemu-img`, `qemu-io`, `gzip`, `xz`, `zstd` and
//! `sgdisk`; targets are sparse files in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferric_agent::fixtures::http_server::{ServerBuilder, TestHttpServer};
use ferric_agent::image::pipeline::{write_image, WriteError, WriteRequest};
use ferric_agent::image::progress::Progress;
use ferric_agent::image::source::HttpOptions;
use ferric_shared::image_info::{ChecksumSource, ExpectedDigest, HashAlgorithm};

const MIB: u64 = 1024 * 1024;
/// The disk the images are written to is larger than any image, as real disks are.
const DISK: u64 = 64 * MIB;

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Pattern bytes that differ per 512-byte sector, so misplaced data shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i / 512) as u8).wrapping_mul(31).wrapping_add(seed) ^ (i as u8)).collect()
}

/// A 24 MiB raw disk image with data scattered between zero runs (no partition table,
/// so the bytes written must equal the image exactly).
fn base_image(dir: &Path) -> PathBuf {
    let path = dir.join("base.raw");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(24 * MIB).unwrap();
    use std::os::unix::fs::FileExt;
    for (i, at) in
        [0u64, 3 * MIB + 4096, 9 * MIB, 17 * MIB + 512, 24 * MIB - 8192].into_iter().enumerate()
    {
        let len = if i == 2 { 2 * MIB as usize } else { 200 * 1024 };
        let len = len.min((24 * MIB - at) as usize);
        file.write_all_at(&pattern(len, i as u8 + 1), at).unwrap();
    }
    path
}

/// Every format the agent writes, made from `base`: (name, file).
fn variants(dir: &Path, base: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut out = vec![("raw", base.to_path_buf())];
    let convert = |name: &'static str, extra: &[&str]| {
        let dst = dir.join(format!("{name}.img"));
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(extra);
        args.extend([p(base), p(&dst)]);
        run("qemu-img", &args);
        (name, dst)
    };
    out.push(convert("qcow2-v2", &["-o", "compat=0.10"]));
    out.push(convert("qcow2-v3", &["-o", "compat=1.1"]));
    out.push(convert("qcow2-zlib", &["-c"]));
    // Data clusters out of guest order: later guest offsets written first get the
    // earlier host clusters.
    let shuffled = dir.join("qcow2-shuffled.img");
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&shuffled), "24M"]);
    let mut io = vec!["-f".to_owned(), "qcow2".to_owned()];
    for (at, pat) in [(20u64, 0xa1u8), (13, 0xb2), (7, 0xc3), (1, 0xd4), (0, 0xe5)] {
        io.push("-c".into());
        io.push(format!("write -P 0x{pat:02x} {}M 192k", at));
    }
    io.push(p(&shuffled).to_owned());
    let io: Vec<&str> = io.iter().map(String::as_str).collect();
    run("qemu-io", &io);
    out.push(("qcow2-shuffled", shuffled));
    for (name, tool, args) in [
        ("gzip", "gzip", &["-c", "-6"][..]),
        ("xz", "xz", &["-c", "-T1", "-1"][..]),
        ("zstd", "zstd", &["-c", "-q", "-3"][..]),
    ] {
        let mut a = args.to_vec();
        a.push(p(base));
        let bytes = run(tool, &a);
        let dst = dir.join(format!("{name}.img"));
        std::fs::write(&dst, bytes).unwrap();
        out.push((name, dst));
    }
    out
}

/// What the image must read back as: `qemu-img convert -O raw` of it (a compressed stream
/// holds the base image itself).
fn expected_raw(dir: &Path, name: &str, image: &Path, base: &Path) -> Vec<u8> {
    if matches!(name, "gzip" | "xz" | "zstd" | "raw") {
        return std::fs::read(base).unwrap();
    }
    let out = dir.join(format!("{name}.expected"));
    run("qemu-img", &["convert", "-O", "raw", p(image), p(&out)]);
    std::fs::read(out).unwrap()
}

fn fresh_disk(path: &Path, size: u64) {
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

fn quick_http() -> HttpOptions {
    HttpOptions {
        retries: 3,
        retry_interval: Duration::from_millis(50),
        stall_timeout: Duration::from_secs(2),
        ..HttpOptions::default()
    }
}

fn request(url: String, target: &Path, digest_of: &[u8], http: HttpOptions) -> WriteRequest {
    WriteRequest {
        urls: vec![url],
        target: target.to_path_buf(),
        checksum: Some(ChecksumSource::Digest(ExpectedDigest {
            algorithm: HashAlgorithm::Sha256,
            hex: sha256(digest_of),
        })),
        md5_allowed: false,
        format: Default::default(),
        declared_disk_format: None,
        permitted_formats: None,
        configdrive: None,
        http,
    }
}

fn serve_all(files: &[(&str, PathBuf)], https: bool) -> TestHttpServer {
    let mut builder = ServerBuilder::new();
    for (name, path) in files {
        builder = builder.file_from_disk(&format!("/{name}"), path.clone());
    }
    if https {
        builder = builder.https();
    }
    builder.start().unwrap()
}

#[test]
fn every_source_and_format_reads_back_as_qemu_img_converts_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let base = base_image(dir.path());
    let variants = variants(dir.path(), &base);
    let http = serve_all(&variants, false);
    let https = serve_all(&variants, true);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, https.cert_pem().unwrap()).unwrap();
    let target = dir.path().join("disk");
    for (name, image) in &variants {
        let expected = expected_raw(dir.path(), name, image, &base);
        let bytes = std::fs::read(image).unwrap();
        let sources = [
            ("file", image.display().to_string(), quick_http()),
            ("http", http.url(&format!("/{name}")), quick_http()),
            (
                "https",
                https.url(&format!("/{name}")),
                HttpOptions { ca_file: Some(ca.clone()), ..quick_http() },
            ),
        ];
        for (source, url, options) in sources {
            fresh_disk(&target, DISK);
            let req = request(url, &target, &bytes, options);
            let report = write_image(&req, &Progress::new())
                .unwrap_or_else(|e| panic!("{name} from {source}: {e:?}"));
            let written = std::fs::read(&target).unwrap();
            assert_eq!(report.image_size, expected.len() as u64, "{name} from {source}");
            assert!(
                written[..expected.len()] == expected[..],
                "{name} from {source}: the disk does not read back as qemu-img's conversion"
            );
            assert!(
                written[expected.len()..].iter().all(|&b| b == 0),
                "{name} from {source}: bytes beyond the image"
            );
            assert!(report.verified.is_some(), "{name} from {source}: not verified");
        }
    }
}

/// A GPT image (sgdisk) written to a larger disk with a config drive: the backup GPT is
/// moved to the disk's end (`sfdisk --verify` clean) and `blkid` finds `config-2`.
#[test]
fn gpt_is_relocated_and_the_config_drive_is_found_by_blkid() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("gpt.raw");
    std::fs::File::create(&image).unwrap().set_len(16 * MIB).unwrap();
    run("sgdisk", &["-o", "-n", "1:2048:+4M", "-t", "1:8300", p(&image)]);
    let bytes = std::fs::read(&image).unwrap();
    // A config drive as a conductor sends it: base64(gzip(ISO 9660 labelled config-2)).
    let tree = dir.path().join("cd/openstack/latest");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("meta_data.json"), br#"{"uuid": "abc"}"#).unwrap();
    let iso = dir.path().join("cd.iso");
    run(
        "genisoimage",
        &["-quiet", "-o", p(&iso), "-V", "config-2", "-r", "-J", p(&dir.path().join("cd"))],
    );
    let gz = run("gzip", &["-c", p(&iso)]);
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(gz);

    let server = ServerBuilder::new().file("/gpt.raw", bytes.clone()).start().unwrap();
    let target = dir.path().join("disk");
    fresh_disk(&target, DISK);
    let mut req = request(server.url("/gpt.raw"), &target, &bytes, quick_http());
    req.configdrive = Some(encoded);
    write_image(&req, &Progress::new()).unwrap();

    let verify = Command::new("sfdisk").args(["--verify", p(&target)]).output().unwrap();
    let text = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && !text.contains("roblem"), "sfdisk --verify: {text}");
    let json: serde_json::Value =
        serde_json::from_slice(&run("sfdisk", &["--json", p(&target)])).unwrap();
    let table = &json["partitiontable"];
    assert_eq!(table["lastlba"], serde_json::json!(DISK / 512 - 34), "{table:#}");
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "the image's partition and the config drive: {table:#}");
    let cd_start = parts[1]["start"].as_u64().unwrap() * 512;
    let probe = run("blkid", &["-p", "-O", &cd_start.to_string(), p(&target)]);
    let probe = String::from_utf8_lossy(&probe);
    assert!(probe.contains("LABEL=\"config-2\"") && probe.contains("TYPE=\"iso9660\""), "{probe}");
}

/// Faults of the image server, seen through the whole pipeline.
#[test]
fn download_faults_resume_retry_or_fail_cleanly() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let image = std::fs::read(base_image(dir.path())).unwrap();
    let target = dir.path().join("disk");

    // A connection cut mid-stream: resumed with a Range request, at most one chunk
    // fetched twice, the disk right.
    let server =
        ServerBuilder::new().file("/i", image.clone()).cut_after(5 * MIB, 1).start().unwrap();
    fresh_disk(&target, DISK);
    let report =
        write_image(&request(server.url("/i"), &target, &image, quick_http()), &Progress::new())
            .unwrap();
    assert_eq!(report.source_stats.resumes, 1, "{:?}", report.source_stats);
    assert!(report.source_stats.refetched_bytes <= MIB, "{:?}", report.source_stats);
    let ranged: Vec<_> = server.requests().into_iter().filter_map(|r| r.range).collect();
    assert!(
        ranged.iter().any(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-")),
        "{ranged:?}"
    );
    assert_eq!(&std::fs::read(&target).unwrap()[..image.len()], &image[..]);

    // 500s, then success.
    let server = ServerBuilder::new().file("/i", image.clone()).fail_first(2, 500).start().unwrap();
    fresh_disk(&target, DISK);
    let report =
        write_image(&request(server.url("/i"), &target, &image, quick_http()), &Progress::new())
            .unwrap();
    assert!(report.source_stats.retries >= 2, "{:?}", report.source_stats);

    // A stall: detected, resumed.
    let server = ServerBuilder::new()
        .file("/i", image.clone())
        .stall_after(3 * MIB, Duration::from_secs(5), 1)
        .start()
        .unwrap();
    fresh_disk(&target, DISK);
    let opts = HttpOptions { stall_timeout: Duration::from_millis(500), ..quick_http() };
    let report =
        write_image(&request(server.url("/i"), &target, &image, opts), &Progress::new()).unwrap();
    assert!(report.source_stats.retries >= 1, "{:?}", report.source_stats);
    assert_eq!(&std::fs::read(&target).unwrap()[..image.len()], &image[..]);

    // A server that ignores Range: after the cut the stream restarts from byte 0.
    let server = ServerBuilder::new()
        .file("/i", image.clone())
        .ignore_range()
        .cut_after(4 * MIB, 1)
        .start()
        .unwrap();
    fresh_disk(&target, DISK);
    let report =
        write_image(&request(server.url("/i"), &target, &image, quick_http()), &Progress::new())
            .unwrap();
    assert_eq!(report.source_stats.restarts, 1, "{:?}", report.source_stats);
    assert_eq!(&std::fs::read(&target).unwrap()[..image.len()], &image[..]);

    // A wrong checksum: the first MiB is not the image's and both table areas are wiped.
    let server = ServerBuilder::new().file("/i", image.clone()).start().unwrap();
    fresh_disk(&target, DISK);
    std::fs::write(&target, vec![0x5a; DISK as usize]).unwrap();
    let err =
        write_image(&request(server.url("/i"), &target, b"other", quick_http()), &Progress::new())
            .unwrap_err();
    assert!(matches!(err, WriteError::Verify(_)), "{err:?}");
    let disk = std::fs::read(&target).unwrap();
    assert!(disk[..MIB as usize].iter().all(|&b| b == 0), "first MiB not wiped");
    assert!(disk[(DISK - MIB) as usize..].iter().all(|&b| b == 0), "last MiB not wiped");

    // A checksum file without the image's name: refused before the disk is touched.
    let sums = format!("{}  other.img\n", sha256(&image));
    let server = ServerBuilder::new()
        .file("/i.raw", image.clone())
        .file("/SHA256SUMS", sums)
        .start()
        .unwrap();
    fresh_disk(&target, DISK);
    std::fs::write(&target, vec![0x5a; DISK as usize]).unwrap();
    let mut req = request(server.url("/i.raw"), &target, &image, quick_http());
    req.checksum = Some(ChecksumSource::File { url: server.url("/SHA256SUMS"), algorithm: None });
    let err = write_image(&req, &Progress::new()).unwrap_err();
    assert!(matches!(err, WriteError::ChecksumFile { .. }), "{err:?}");
    assert!(std::fs::read(&target).unwrap().iter().all(|&b| b == 0x5a), "the disk was touched");
}
