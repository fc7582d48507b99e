use std::io::{Read, Seek, SeekFrom, Write};

use axum::http::Request;
use tower::ServiceExt;

use super::*;

/// A directory with `small.img` (bytes 0..=255 repeated to 1000 bytes), `empty.img`, a
/// hidden file, a subdirectory and a secret next to the directory.
fn image_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("secret"), b"outside").unwrap();
    let dir = root.path().join("images");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("small.img"), small_content()).unwrap();
    std::fs::write(dir.join("empty.img"), b"").unwrap();
    std::fs::write(dir.join(".hidden"), b"HIDDEN-CONTENT").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let fifo = std::process::Command::new("mkfifo").arg(dir.join("pipe")).status();
    assert!(fifo.is_ok_and(|s| s.success()), "mkfifo failed");
    (root, dir)
}

fn small_content() -> Vec<u8> {
    (0..1000u32).map(|i| (i % 256) as u8).collect()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn request(dir: &Path, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = router(dir).oneshot(builder.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20).await.unwrap().to_vec();
    Reply { status, headers, body }
}

async fn get_range(dir: &Path, name: &str, range: &str) -> Reply {
    request(dir, Method::GET, &format!("/images/{name}"), &[("range", range)]).await
}

#[test]
fn range_parsing_table() {
    use RangeRequest::{Full, Partial, Unsatisfiable};
    let len = 1000;
    let table: &[(&str, u64, RangeRequest)] = &[
        ("bytes=0-99", len, Partial { start: 0, end: 99 }),
        ("bytes=0-0", len, Partial { start: 0, end: 0 }),
        ("bytes=999-999", len, Partial { start: 999, end: 999 }),
        ("bytes=999-", len, Partial { start: 999, end: 999 }),
        ("bytes=500-", len, Partial { start: 500, end: 999 }),
        ("bytes=900-5000", len, Partial { start: 900, end: 999 }),
        ("bytes=-1", len, Partial { start: 999, end: 999 }),
        ("bytes=-100", len, Partial { start: 900, end: 999 }),
        ("bytes=-5000", len, Partial { start: 0, end: 999 }),
        ("bytes=-0", len, Unsatisfiable),
        ("bytes=1000-", len, Unsatisfiable),
        ("bytes=1000-2000", len, Unsatisfiable),
        ("bytes=99999999999999999999999-", len, Unsatisfiable),
        ("bytes=0-99999999999999999999999", len, Partial { start: 0, end: 999 }),
        ("Bytes = 10 - 20 ", len, Partial { start: 10, end: 20 }),
        ("bytes=0-", 0, Unsatisfiable),
        ("bytes=-1", 0, Unsatisfiable),
        ("bytes=0-0", 0, Unsatisfiable),
        // Ignored: several ranges, another unit, garbage, last < first.
        ("bytes=0-1,5-6", len, Full),
        ("items=0-1", len, Full),
        ("bytes=abc", len, Full),
        ("bytes=a-b", len, Full),
        ("bytes=5-1", len, Full),
        ("bytes=-", len, Full),
        ("bytes=", len, Full),
        ("bytes=+1-2", len, Full),
        ("0-99", len, Full),
    ];
    for (header, len, expected) in table {
        assert_eq!(parse_range(header, *len), *expected, "{header:?} of {len} bytes");
    }
}

#[test]
fn name_validation_table() {
    let good = ["deploy.kernel", "ubuntu-24.04.qcow2", "a", "ramdisk.initramfs", "a-b_c+d@e"];
    for name in good {
        assert_eq!(validate_name(name), Ok(()), "{name}");
    }
    use ImageNameError as E;
    let bad = [
        ("", E::Empty),
        ("..", E::DotDot("..".into())),
        ("x..y", E::DotDot("x..y".into())),
        ("../secret", E::Separator("../secret".into())),
        ("a/b", E::Separator("a/b".into())),
        ("a\\b", E::Separator("a\\b".into())),
        ("/etc/passwd", E::Separator("/etc/passwd".into())),
        (".hidden", E::LeadingDot(".hidden".into())),
        ("a\0b", E::ControlCharacter("a\0b".into())),
        ("a\nb", E::ControlCharacter("a\nb".into())),
    ];
    for (name, expected) in bad {
        assert_eq!(validate_name(name), Err(expected), "{name:?}");
    }
    assert_eq!(validate_name(&"a".repeat(256)), Err(ImageNameError::TooLong));
    assert_eq!(validate_name(&"a".repeat(255)), Ok(()));
    assert_eq!(image_path(Path::new("/srv"), "k").unwrap(), Path::new("/srv/k"));
    assert!(image_path(Path::new("/srv"), "../k").is_err());
    assert_eq!(image_url("http://10.0.2.100:8080/", "k"), "http://10.0.2.100:8080/images/k");
    assert_eq!(image_url("http://h", "k"), "http://h/images/k");
}

#[tokio::test]
async fn whole_file_with_headers() {
    let (_root, dir) = image_dir();
    let reply = request(&dir, Method::GET, "/images/small.img", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, small_content());
    assert_eq!(reply.header(header::CONTENT_LENGTH), Some("1000"));
    assert_eq!(reply.header(header::ACCEPT_RANGES), Some("bytes"));
    assert!(reply.header(header::CONTENT_RANGE).is_none());
    let etag = reply.header(header::ETAG).unwrap();
    assert!(etag.starts_with("\"3e8-") && etag.ends_with('"'), "{etag}");
    let date = reply.header(header::LAST_MODIFIED).unwrap();
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
}

#[tokio::test]
async fn ranges_over_http() {
    let (_root, dir) = image_dir();
    let content = small_content();
    let cases: &[(&str, u64, u64)] = &[
        ("bytes=0-0", 0, 0),
        ("bytes=999-999", 999, 999),
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-10", 990, 999),
        ("bytes=-5000", 0, 999),
        ("bytes=995-100000", 995, 999),
    ];
    for (range, start, end) in cases {
        let reply = get_range(&dir, "small.img", range).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            reply.header(header::CONTENT_RANGE),
            Some(format!("bytes {start}-{end}/1000").as_str()),
            "{range}"
        );
        let (s, e) = (*start as usize, *end as usize);
        assert_eq!(reply.body, content[s..=e], "{range}");
        assert_eq!(reply.header(header::CONTENT_LENGTH), Some((e - s + 1).to_string().as_str()));
    }
}

#[tokio::test]
async fn unsatisfiable_ranges_are_416() {
    let (_root, dir) = image_dir();
    for (name, range, len) in [
        ("small.img", "bytes=1000-", 1000),
        ("small.img", "bytes=5000-6000", 1000),
        ("small.img", "bytes=-0", 1000),
        ("empty.img", "bytes=0-", 0),
        ("empty.img", "bytes=-10", 0),
    ] {
        let reply = get_range(&dir, name, range).await;
        assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE, "{name} {range}");
        assert_eq!(reply.header(header::CONTENT_RANGE), Some(format!("bytes */{len}").as_str()));
        assert!(reply.body.is_empty());
    }
}

#[tokio::test]
async fn multiple_or_bad_ranges_get_the_whole_file() {
    let (_root, dir) = image_dir();
    for range in ["bytes=0-1,10-11", "bytes=9-2", "pages=1-2", "nonsense"] {
        let reply = get_range(&dir, "small.img", range).await;
        assert_eq!(reply.status, StatusCode::OK, "{range}");
        assert_eq!(reply.body.len(), 1000, "{range}");
    }
}

#[tokio::test]
async fn if_range_honours_only_the_current_validator() {
    let (_root, dir) = image_dir();
    let full = request(&dir, Method::GET, "/images/small.img", &[]).await;
    let etag = full.header(header::ETAG).unwrap().to_owned();
    let date = full.header(header::LAST_MODIFIED).unwrap().to_owned();
    for validator in [etag.as_str(), date.as_str()] {
        let headers = [("range", "bytes=0-9"), ("if-range", validator)];
        let reply = request(&dir, Method::GET, "/images/small.img", &headers).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{validator}");
    }
    let headers = [("range", "bytes=0-9"), ("if-range", "\"stale\"")];
    let reply = request(&dir, Method::GET, "/images/small.img", &headers).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 1000);
}

#[tokio::test]
async fn empty_file() {
    let (_root, dir) = image_dir();
    let reply = request(&dir, Method::GET, "/images/empty.img", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_LENGTH), Some("0"));
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn head_has_length_and_no_body() {
    let (_root, dir) = image_dir();
    let reply = request(&dir, Method::HEAD, "/images/small.img", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_LENGTH), Some("1000"));
    assert_eq!(reply.header(header::ACCEPT_RANGES), Some("bytes"));
    assert!(reply.body.is_empty());

    let reply = request(&dir, Method::HEAD, "/images/small.img", &[("range", "bytes=-10")]).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.header(header::CONTENT_LENGTH), Some("10"));
    assert_eq!(reply.header(header::CONTENT_RANGE), Some("bytes 990-999/1000"));
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn traversal_and_odd_names_are_refused() {
    let (_root, dir) = image_dir();
    let cases = [
        ("/images/..%2Fsecret", StatusCode::BAD_REQUEST),
        ("/images/%2E%2E%2Fsecret", StatusCode::BAD_REQUEST),
        ("/images/..", StatusCode::BAD_REQUEST),
        ("/images/.hidden", StatusCode::BAD_REQUEST),
        ("/images/a%00b", StatusCode::BAD_REQUEST),
        ("/images/..%5Csecret", StatusCode::BAD_REQUEST),
        ("/images/%2Fetc%2Fpasswd", StatusCode::BAD_REQUEST),
        // Not one path segment: no route at all.
        ("/images/../secret", StatusCode::NOT_FOUND),
        ("/images/sub/x", StatusCode::NOT_FOUND),
        ("/images/missing.img", StatusCode::NOT_FOUND),
        ("/images/sub", StatusCode::NOT_FOUND),
        ("/images/pipe", StatusCode::NOT_FOUND),
    ];
    for (uri, status) in cases {
        let reply = request(&dir, Method::GET, uri, &[]).await;
        assert_eq!(reply.status, status, "{uri}");
        assert!(!reply.body.windows(7).any(|w| w == b"outside"), "{uri}");
        assert!(!reply.body.windows(14).any(|w| w == b"HIDDEN-CONTENT"), "{uri}");
    }
    let reply = request(&dir, Method::POST, "/images/small.img", &[]).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// A 3 GiB sparse file with markers at the start, at 2 GiB and at its last bytes.
fn sparse_image(dir: &Path) -> u64 {
    const LEN: u64 = 3 << 30;
    let mut file = std::fs::File::create(dir.join("big.raw")).unwrap();
    file.set_len(LEN).unwrap();
    file.write_all(b"START").unwrap();
    file.seek(SeekFrom::Start(2 << 30)).unwrap();
    file.write_all(b"MIDDLE").unwrap();
    file.seek(SeekFrom::Start(LEN - 3)).unwrap();
    file.write_all(b"END").unwrap();
    LEN
}

#[tokio::test]
async fn sparse_multi_gib_file_ranges() {
    let (_root, dir) = image_dir();
    let len = sparse_image(&dir);

    let reply = request(&dir, Method::HEAD, "/images/big.raw", &[]).await;
    assert_eq!(reply.header(header::CONTENT_LENGTH), Some(len.to_string().as_str()));

    let reply = get_range(&dir, "big.raw", "bytes=-3").await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.body, b"END");
    assert_eq!(
        reply.header(header::CONTENT_RANGE),
        Some(format!("bytes {}-{}/{len}", len - 3, len - 1).as_str())
    );

    let start = 2u64 << 30;
    let reply = get_range(&dir, "big.raw", &format!("bytes={}-{}", start - 2, start + 5)).await;
    assert_eq!(reply.body, b"\0\0MIDDLE");

    // A range straddling chunk boundaries streams in several frames.
    let reply = get_range(&dir, "big.raw", "bytes=0-600000").await;
    assert_eq!(reply.body.len(), 600_001);
    assert_eq!(&reply.body[..5], b"START");
    assert!(reply.body[5..].iter().all(|b| *b == 0));
}

/// Serves `dir` on a loopback port picked by the kernel.
async fn serve_on_loopback(dir: PathBuf) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(dir)).await });
    addr
}

/// Sends a raw request and returns the whole raw reply.
async fn raw_http(addr: std::net::SocketAddr, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn head_over_a_real_connection_keeps_content_length() {
    let (_root, dir) = image_dir();
    let addr = serve_on_loopback(dir).await;
    let reply = raw_http(
        addr,
        "HEAD /images/small.img HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
    )
    .await;
    let lower = reply.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{reply}");
    assert!(lower.contains("\r\ncontent-length: 1000\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\n"), "HEAD must carry no body: {reply}");

    let reply = raw_http(
        addr,
        "GET /images/../secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(!reply.contains("outside"), "{reply}");
}

#[tokio::test]
async fn curl_range_download_matches_the_file() {
    let Ok(version) = std::process::Command::new("curl").arg("--version").output() else {
        println!("skipped: curl is not installed");
        return;
    };
    assert!(version.status.success());
    let (root, dir) = image_dir();
    let len = sparse_image(&dir);
    let addr = serve_on_loopback(dir.clone()).await;
    let out = root.path().join("part");
    let range = format!("{}-{}", len - 70_003, len - 1);
    let status = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--range", &range, "--output"])
        .arg(&out)
        .args(["--write-out", "%{http_code} %{size_download}"])
        .arg(format!("http://{addr}/images/big.raw"))
        .output()
        .await
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_eq!(String::from_utf8_lossy(&status.stdout), "206 70003");
    let mut expected = vec![0u8; 70_003];
    let mut file = std::fs::File::open(dir.join("big.raw")).unwrap();
    file.seek(SeekFrom::Start(len - 70_003)).unwrap();
    file.read_exact(&mut expected).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    assert!(expected.ends_with(b"END"));

    // curl resuming a partial download (-C) ends with the whole small file.
    let small = root.path().join("small");
    std::fs::write(&small, &small_content()[..400]).unwrap();
    let status = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "-C", "-", "--output"])
        .arg(&small)
        .arg(format!("http://{addr}/images/small.img"))
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&small).unwrap(), small_content());
}

/// Whether the file system under `dir` reports holes (tmpfs and ext4 do; some do not).
fn reports_holes(dir: &Path) -> bool {
    let path = dir.join("probe.raw");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(8 << 20).unwrap();
    let supported = matches!(seek(&file, 0, libc::SEEK_DATA), Ok(None));
    std::fs::remove_file(path).unwrap();
    supported
}

#[tokio::test]
async fn data_map_lists_the_data_of_a_sparse_image() {
    let (_root, dir) = image_dir();
    let len = sparse_image(&dir);
    let accept = [("accept", data_map::MEDIA_TYPE)];
    let reply = request(&dir, Method::GET, "/images/big.raw", &accept).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_TYPE), Some(data_map::MEDIA_TYPE));
    assert_eq!(reply.header(header::VARY), Some("accept"));
    let map: DataMap = serde_json::from_slice(&reply.body).unwrap();
    map.validate().unwrap();
    assert_eq!(map.size, len);
    // The map's validator is the image's, so ranges can be fetched with If-Range.
    let image = request(&dir, Method::HEAD, "/images/big.raw", &[]).await;
    assert_eq!(image.header(header::ETAG), Some(map.etag.as_str()));
    assert_eq!(image.header(data_map::ADVERTISE_HEADER.try_into().unwrap()), Some("available"));
    // Every marker is inside a listed range, whatever the file system reports.
    for (offset, marker) in [(0u64, 5u64), (2 << 30, 6), (len - 3, 3)] {
        assert!(
            map.locate(offset).is_ok() && map.locate(offset + marker - 1).is_ok(),
            "marker at {offset} not covered by {:?}",
            map.data
        );
    }
    if reports_holes(&dir) {
        // Three small islands, each within a few blocks, far apart.
        assert_eq!(map.data.len(), 3, "{:?}", map.data);
        assert!(map.data_bytes() <= 3 * (1 << 20), "{:?}", map.data);
    } else {
        println!("the test directory's file system reports no holes; map is one range");
    }

    // A dense file is one range; an empty one has none; HEAD has no body.
    let dense = request(&dir, Method::GET, "/images/small.img", &accept).await;
    let dense: DataMap = serde_json::from_slice(&dense.body).unwrap();
    assert_eq!(dense.data, vec![[0, 1000]]);
    let empty = request(&dir, Method::GET, "/images/empty.img", &accept).await;
    let empty: DataMap = serde_json::from_slice(&empty.body).unwrap();
    assert_eq!((empty.size, empty.data.len()), (0, 0));
    let head = request(&dir, Method::HEAD, "/images/small.img", &accept).await;
    assert!(head.body.is_empty());
    assert!(head.header(header::CONTENT_LENGTH).is_some_and(|n| n != "0"));
    // Asked among other types, the map still wins; other types get the image.
    let listed = [("accept", "text/plain, application/vnd.ferric.data-map+json;q=0.9")];
    let reply = request(&dir, Method::GET, "/images/small.img", &listed).await;
    assert_eq!(reply.header(header::CONTENT_TYPE), Some(data_map::MEDIA_TYPE));
    let other = request(&dir, Method::GET, "/images/small.img", &[("accept", "*/*")]).await;
    assert_eq!(other.body, small_content());
}

#[tokio::test]
async fn holes_stream_as_zeros() {
    let (_root, dir) = image_dir();
    let len = sparse_image(&dir);
    // Across the first marker, a hole and into the middle marker.
    let start = (2u64 << 30) - (3 << 20) - 7;
    let reply = get_range(&dir, "big.raw", &format!("bytes={start}-{}", (2u64 << 30) + 5)).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    let body = reply.body;
    assert_eq!(body.len() as u64, (2u64 << 30) + 6 - start);
    assert!(body[..body.len() - 6].iter().all(|&b| b == 0));
    assert_eq!(&body[body.len() - 6..], b"MIDDLE");
    assert!(len > 2 << 30);
}
