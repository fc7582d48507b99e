//! HttpSource against the fault-injecting test server.

use std::time::{Duration, Instant};

use super::*;
use crate::fixtures::http_server::{RecordedRequest, ServerBuilder, TestHttpServer};
use crate::image::source::TransientFailure;

const LEN: usize = 300_001;
const CHUNK: usize = 64 * 1024;

fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn opts() -> HttpOptions {
    HttpOptions {
        retries: 3,
        retry_interval: Duration::from_millis(10),
        stall_timeout: Duration::from_secs(5),
        ..HttpOptions::default()
    }
}

fn serve(builder: ServerBuilder, data: &[u8]) -> TestHttpServer {
    builder.file("/image.raw", data.to_vec()).start().unwrap()
}

fn open(server: &TestHttpServer, opts: &HttpOptions) -> HttpSource {
    HttpSource::open_with_chunk_size(&server.url("/image.raw"), opts, CHUNK).unwrap()
}

/// Reads the whole stream, applying restarts; also returns how many restarts were seen.
fn drain(source: &mut HttpSource) -> (Vec<u8>, u32) {
    let mut out = Vec::new();
    let mut restarts = 0;
    while let Some(event) = source.next_event().unwrap() {
        match event {
            SourceEvent::Data(bytes) => {
                // Every piece but the last is exactly one chunk.
                assert!(bytes.len() <= CHUNK && !bytes.is_empty(), "{}", bytes.len());
                out.extend_from_slice(&bytes);
            }
            SourceEvent::Hole(len) => out.resize(out.len() + len as usize, 0),
            SourceEvent::Restart => {
                restarts += 1;
                out.clear();
            }
        }
    }
    (out, restarts)
}

fn body_total(requests: &[RecordedRequest]) -> u64 {
    requests.iter().map(|r| r.body_bytes).sum()
}

#[test]
fn streams_the_whole_image_in_chunks() {
    let data = image(LEN, 1);
    let server = serve(ServerBuilder::new(), &data);
    let mut source = open(&server, &opts());
    assert_eq!(source.size(), Some(LEN as u64));
    let mut sizes = Vec::new();
    let mut out = Vec::new();
    while let Some(SourceEvent::Data(bytes)) = source.next_event().unwrap() {
        sizes.push(bytes.len());
        out.extend(bytes);
    }
    assert!(out == data, "content differs");
    assert_eq!(sizes.len(), LEN.div_ceil(CHUNK));
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == CHUNK), "{sizes:?}");
    assert_eq!(source.stats(), SourceStats::default());
    assert!(source.next_event().unwrap().is_none(), "the end stays the end");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].method.as_str(), requests[0].range.as_deref()), ("GET", None));
}

#[test]
fn a_cut_stream_resumes_at_the_exact_byte() {
    let data = image(LEN, 2);
    let cut = 100_000;
    let server = serve(ServerBuilder::new().cut_after(cut, 1), &data);
    let mut source = open(&server, &opts());
    let (out, restarts) = drain(&mut source);
    assert!(out == data, "content differs");
    assert_eq!(restarts, 0);
    let stats = source.stats();
    assert_eq!((stats.resumes, stats.retries, stats.restarts, stats.refetched_bytes), (1, 1, 0, 0));
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].body_bytes, cut);
    assert_eq!(requests[1].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(requests[1].status, 206);
    assert_eq!(requests[1].if_range.as_deref(), Some(format!("\"v1-{LEN}\"").as_str()));
    // Nothing was fetched twice, let alone a whole chunk.
    assert_eq!(body_total(&requests), LEN as u64);
}

#[test]
fn repeated_cuts_resume_each_time_and_do_not_use_up_the_retries() {
    let data = image(LEN, 3);
    let cut = 70_000;
    // More cuts than retries: each resume made progress, so the stream carries on.
    let server = serve(ServerBuilder::new().cut_after(cut, 4), &data);
    let mut source = open(&server, &HttpOptions { retries: 2, ..opts() });
    let (out, _) = drain(&mut source);
    assert!(out == data, "content differs");
    assert_eq!((source.stats().resumes, source.stats().retries), (4, 4));
    let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
    let want: Vec<_> = [None, Some(70_000), Some(140_000), Some(210_000), Some(280_000)]
        .into_iter()
        .map(|at| at.map(|at| format!("bytes={at}-")))
        .collect();
    assert_eq!(ranges, want);
    assert_eq!(body_total(&server.requests()), LEN as u64);
}

#[test]
fn server_errors_are_retried_until_success() {
    let data = image(LEN, 4);
    let server = serve(ServerBuilder::new().fail_first(2, 500), &data);
    let mut source = open(&server, &opts());
    assert!(drain(&mut source).0 == data);
    assert_eq!(source.stats().retries, 2);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
}

#[test]
fn retries_run_out_with_a_clear_error() {
    let server = serve(ServerBuilder::new().fail_first(100, 503), b"x");
    let url = server.url("/image.raw").replace("http://", "http://user:secret@");
    let err = HttpSource::open(&url, &HttpOptions { retries: 2, ..opts() }).unwrap_err();
    match &err {
        SourceError::RetriesExhausted { attempts: 3, last, url } => {
            assert!(matches!(last, TransientFailure::ServerError { status: 503 }), "{last:?}");
            assert_eq!(url, &server.url("/image.raw"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.to_string().contains("secret"), "{err}");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn client_errors_are_fatal_at_once() {
    let server = serve(ServerBuilder::new(), b"x");
    let started = Instant::now();
    let slow_retries = HttpOptions { retry_interval: Duration::from_secs(30), ..opts() };
    let err = HttpSource::open(&server.url("/missing.raw"), &slow_retries).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "no retry wait");
    match &err {
        SourceError::Status { status: 404, url } => assert!(url.ends_with("/missing.raw")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_stall_is_detected_and_the_stream_resumes() {
    let data = image(LEN, 5);
    let stall_timeout = Duration::from_millis(300);
    let server =
        serve(ServerBuilder::new().stall_after(150_000, Duration::from_secs(20), 1), &data);
    let mut source = open(&server, &HttpOptions { stall_timeout, ..opts() });
    let started = Instant::now();
    let (out, _) = drain(&mut source);
    let took = started.elapsed();
    assert!(out == data, "content differs");
    // Detected after about one stall timeout, long before the server would carry on.
    assert!(took >= stall_timeout && took < Duration::from_secs(5), "{took:?}");
    assert_eq!((source.stats().resumes, source.stats().retries), (1, 1));
    let requests = server.requests();
    assert_eq!(requests[1].range.as_deref(), Some("bytes=150000-"));
    assert_eq!(body_total(&requests), LEN as u64);
}

#[test]
fn a_stall_on_every_attempt_exhausts_the_retries() {
    let data = image(LEN, 6);
    let server = serve(ServerBuilder::new().stall_after(0, Duration::from_secs(20), 10), &data);
    let options = HttpOptions { stall_timeout: Duration::from_millis(200), retries: 1, ..opts() };
    let started = Instant::now();
    // Whether the stall shows before or after the reply's headers, it ends the same way.
    let outcome = HttpSource::open(&server.url("/image.raw"), &options).and_then(|mut source| {
        while source.next_event()?.is_some() {}
        Ok(())
    });
    let err = outcome.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(server.requests().len(), 2);
    assert!(
        matches!(err, SourceError::RetriesExhausted { last: TransientFailure::Stall(_), .. }),
        "{err:?}"
    );
}

#[test]
fn a_server_ignoring_range_restarts_the_stream() {
    let data = image(LEN, 7);
    let server = serve(ServerBuilder::new().ignore_range().cut_after(200_000, 1), &data);
    let mut source = open(&server, &opts());
    let (out, restarts) = drain(&mut source);
    assert!(out == data, "content differs");
    assert_eq!(restarts, 1);
    let stats = source.stats();
    assert_eq!((stats.restarts, stats.resumes), (1, 0));
    // The chunks handed out before the cut were withdrawn.
    assert_eq!(stats.discarded_bytes, (200_000 / CHUNK * CHUNK) as u64);
    let requests = server.requests();
    assert_eq!(requests[1].range.as_deref(), Some("bytes=200000-"));
    assert_eq!(requests[1].status, 200);
}

/// Collects what the fmt subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_restart_is_logged_in_the_callers_span() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber =
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let data = image(LEN, 21);
    let server = serve(ServerBuilder::new().ignore_range().cut_after(100_000, 1), &data);
    // While only one dispatcher is registered, tracing-core decides a callsite's interest
    // from whichever thread hits it first; the stream's callsites are also hit by other
    // tests' threads, which have no subscriber. A second live dispatcher makes it ask
    // every registered dispatcher instead.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        let _span = tracing::info_span!("write_image", node = "n-1").entered();
        let mut source = open(&server, &opts());
        assert!(drain(&mut source).0 == data);
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let restart = text.lines().find(|l| l.contains("ignored the Range request")).expect(&text);
    assert!(restart.contains("WARN") && restart.contains("node=\"n-1\""), "{restart}");
    assert!(text.contains("retrying"), "{text}");
}

#[test]
fn restarts_that_never_get_further_use_up_the_retries() {
    let server =
        serve(ServerBuilder::new().ignore_range().cut_after(100_000, 100), &image(LEN, 18));
    let mut source = open(&server, &HttpOptions { retries: 2, ..opts() });
    let err = loop {
        match source.next_event() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("every reply is cut"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            SourceError::RetriesExhausted { attempts: 3, last: TransientFailure::Transport(_), .. }
        ),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 3);
    assert_eq!(source.stats().restarts, 2);
}

#[test]
fn a_changed_image_restarts_the_stream() {
    let data = image(LEN, 8);
    let newer = image(LEN + 5, 9);
    let server = serve(ServerBuilder::new().cut_after(200_000, 1), &data);
    let mut source = open(&server, &opts());
    assert!(matches!(source.next_event().unwrap(), Some(SourceEvent::Data(_))));
    server.set_file("/image.raw", newer.clone());
    let (out, restarts) = drain(&mut source);
    assert_eq!(restarts, 1);
    assert!(out == newer, "the new version is delivered whole");
    assert_eq!(source.size(), Some(newer.len() as u64));
    // If-Range made the server answer the resume with the whole new version.
    let requests = server.requests();
    assert_eq!((requests.len(), requests[1].status), (2, 200));
}

#[test]
fn read_range_returns_exact_bytes() {
    let data = image(LEN, 10);
    let server = serve(ServerBuilder::new(), &data);
    let mut source = open(&server, &opts());
    let table: &[(u64, usize, std::ops::Range<usize>)] = &[
        (0, 512, 0..512),
        (65_536, 100_000, 65_536..165_536),
        (LEN as u64 - 10, 100, LEN - 10..LEN),
        (LEN as u64, 10, LEN..LEN),
        (u64::MAX - 5, 10, LEN..LEN),
        (7, 0, 7..7),
    ];
    for (offset, len, want) in table {
        let got = source.read_range(*offset, *len).unwrap();
        assert!(got == data[want.clone()], "range at {offset} len {len}: {} bytes", got.len());
    }
    let ranges: Vec<_> = server.requests().into_iter().skip(1).filter_map(|r| r.range).collect();
    assert_eq!(ranges, ["bytes=0-511", "bytes=65536-165535", "bytes=299991-300000"]);
    // The sequential stream is unaffected by the ranged reads.
    assert!(drain(&mut source).0 == data);
}

#[test]
fn read_range_survives_a_cut() {
    let data = image(LEN, 11);
    // The opening GET is cut too; the stream's first bytes come from the resume.
    let server = serve(ServerBuilder::new().cut_after(1000, 2), &data);
    let mut source = open(&server, &opts());
    let got = source.read_range(5000, 20_000).unwrap();
    assert!(got == data[5000..25_000]);
    assert_eq!(source.stats().retries, 1);
}

#[test]
fn files_served_from_disk_stream_and_read_in_ranges() {
    let data = image(LEN, 19);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.raw");
    std::fs::write(&path, &data).unwrap();
    let server = ServerBuilder::new()
        .file_from_disk("/image.raw", &path)
        .cut_after(123_457, 1)
        .start()
        .unwrap();
    let mut source = open(&server, &opts());
    assert!(source.read_range(299_000, 5000).unwrap() == data[299_000..]);
    assert!(drain(&mut source).0 == data);
    assert_eq!(source.stats().resumes, 1);
}

#[test]
fn an_image_of_unknown_length_is_streamed_and_resumed() {
    let data = image(LEN, 20);
    let server = serve(ServerBuilder::new().without_length().cut_after(100_000, 1), &data);
    let mut source = open(&server, &opts());
    assert_eq!(source.size(), None);
    assert!(drain(&mut source).0 == data);
    assert_eq!(source.stats().resumes, 1);
    // The resume's Content-Range told the length.
    assert_eq!(source.size(), Some(LEN as u64));
    assert_eq!(server.requests()[1].range.as_deref(), Some("bytes=100000-"));

    let server = serve(ServerBuilder::new().without_length(), &data);
    let mut source = open(&server, &opts());
    assert!(drain(&mut source).0 == data);
    assert_eq!(source.size(), Some(LEN as u64), "known once the stream ended");
}

#[test]
fn read_range_needs_a_server_that_does_ranges() {
    let server = serve(ServerBuilder::new().ignore_range(), &image(LEN, 12));
    let mut source = open(&server, &opts());
    let err = source.read_range(10, 10).unwrap_err();
    assert!(matches!(err, SourceError::RangeNotSupported { .. }), "{err:?}");
    assert!(err.to_string().contains("does not serve byte ranges"), "{err}");
}

#[test]
fn redirects_are_followed_but_not_forever() {
    let data = image(LEN, 13);
    let server = ServerBuilder::new()
        .file("/image.raw", data.clone())
        .redirect("/old.raw", "/image.raw")
        .redirect("/loop-a", "/loop-b")
        .redirect("/loop-b", "/loop-a")
        .start()
        .unwrap();
    let mut source = HttpSource::open(&server.url("/old.raw"), &opts()).unwrap();
    assert_eq!(source.size(), Some(LEN as u64));
    let mut out = Vec::new();
    while let Some(SourceEvent::Data(bytes)) = source.next_event().unwrap() {
        assert!(bytes.len() <= DEFAULT_CHUNK_SIZE);
        out.extend(bytes);
    }
    assert!(out == data);
    let err = HttpSource::open(&server.url("/loop-a"), &opts()).unwrap_err();
    assert!(matches!(err, SourceError::TooManyRedirects { .. }), "{err:?}");
}

#[test]
fn https_with_the_servers_ca_or_insecure() {
    let data = image(LEN, 14);
    let server = serve(ServerBuilder::new().https().cut_after(50_000, 1), &data);
    assert!(server.url("/").starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.cert_pem().unwrap()).unwrap();

    let mut source = open(&server, &HttpOptions { ca_file: Some(ca), ..opts() });
    assert!(drain(&mut source).0 == data);
    assert_eq!(source.stats().resumes, 1);

    let mut source = open(&server, &HttpOptions { insecure: true, ..opts() });
    assert!(drain(&mut source).0 == data);

    // Another CA: the certificate is rejected without retries.
    let other = ServerBuilder::new().https().start().unwrap();
    std::fs::write(dir.path().join("other.pem"), other.cert_pem().unwrap()).unwrap();
    let wrong_ca = HttpOptions {
        ca_file: Some(dir.path().join("other.pem")),
        retry_interval: Duration::from_secs(30),
        ..opts()
    };
    let started = Instant::now();
    let err = HttpSource::open(&server.url("/image.raw"), &wrong_ca).unwrap_err();
    assert!(matches!(err, SourceError::Certificate { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let missing = HttpOptions { ca_file: Some(dir.path().join("none.pem")), ..opts() };
    let err = HttpSource::open(&server.url("/image.raw"), &missing).unwrap_err();
    assert!(matches!(err, SourceError::Tls(_)), "{err:?}");
}

#[test]
fn authorization_is_sent_on_every_request() {
    let data = image(LEN, 15);
    let value = "Bearer abc.def";
    let builder = ServerBuilder::new().require_authorization(value).cut_after(90_000, 1);
    let server = serve(builder, &data);
    let with_both = HttpOptions {
        authorization: Some(value.into()),
        basic_auth: Some(("user".into(), "pass".into())),
        ..opts()
    };
    let mut source = open(&server, &with_both);
    assert!(drain(&mut source).0 == data);
    assert!(source.read_range(0, 10).unwrap() == data[..10]);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.authorization.as_deref() == Some(value)), "{requests:?}");

    let err = HttpSource::open(&server.url("/image.raw"), &opts()).unwrap_err();
    assert!(matches!(err, SourceError::Status { status: 401, .. }), "{err:?}");
}

#[test]
fn basic_auth_from_options_and_from_the_url() {
    let server = serve(ServerBuilder::new().require_authorization("Basic dXNlcjpwYXNz"), b"ok");
    let basic = HttpOptions { basic_auth: Some(("user".into(), "pass".into())), ..opts() };
    assert_eq!(fetch_text(&server.url("/image.raw"), &basic, 10).unwrap(), "ok");
    let url = server.url("/image.raw").replace("http://", "http://user:pass@");
    assert_eq!(fetch_text(&url, &opts(), 10).unwrap(), "ok");
}

#[test]
fn proxies_and_no_proxy() {
    let data = image(1000, 16);
    let proxy = serve(ServerBuilder::new(), &data);
    let via_proxy = HttpOptions {
        proxies: ferric_shared::image_info::Proxies { http: Some(proxy.url("")), https: None },
        ..opts()
    };
    let url = "http://images.example.invalid/image.raw";
    let mut source = HttpSource::open(url, &via_proxy).unwrap();
    assert!(drain(&mut source).0 == data);
    assert_eq!(proxy.requests()[0].target, url);

    // The proxy is unreachable, but the image's host is exempt from it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let server = serve(ServerBuilder::new(), &data);
    let bypass = HttpOptions {
        proxies: ferric_shared::image_info::Proxies { http: Some(dead_url), https: None },
        no_proxy: Some("example.org,127.0.0.1".into()),
        ..opts()
    };
    let mut source = open(&server, &bypass);
    assert!(drain(&mut source).0 == data);
    assert_eq!(server.requests()[0].target, "/image.raw");

    // HTTPS through the proxy's CONNECT tunnel; the TLS session is end to end.
    let secure = serve(ServerBuilder::new().https(), &data);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, secure.cert_pem().unwrap()).unwrap();
    let tunnel = HttpOptions {
        ca_file: Some(ca),
        proxies: ferric_shared::image_info::Proxies { http: None, https: Some(proxy.url("")) },
        ..opts()
    };
    let mut source = open(&secure, &tunnel);
    assert!(drain(&mut source).0 == data);
    let connect = proxy.requests().into_iter().find(|r| r.method == "CONNECT").unwrap();
    assert_eq!((connect.target, connect.status), (secure.addr().to_string(), 200));
    assert_eq!(secure.requests()[0].target, "/image.raw");

    let bad = HttpOptions {
        proxies: ferric_shared::image_info::Proxies { http: Some("::bad".into()), https: None },
        ..opts()
    };
    assert!(matches!(HttpSource::open(url, &bad), Err(SourceError::Proxy { .. })));
}

#[test]
fn fetch_text_is_bounded_and_text() {
    let sums = "abc123  image.raw\n";
    let server = ServerBuilder::new()
        .file("/SHA256SUMS", sums)
        .file("/big", vec![b'a'; 5000])
        .file("/binary", vec![0xff, 0xfe, 0x00])
        .fail_first(1, 502)
        .start()
        .unwrap();
    assert_eq!(fetch_text(&server.url("/SHA256SUMS"), &opts(), 1024).unwrap(), sums);
    let err = fetch_text(&server.url("/big"), &opts(), 4096).unwrap_err();
    assert!(matches!(err, SourceError::TooLarge { limit: 4096, .. }), "{err:?}");
    // Without a Content-Length the limit is enforced while reading.
    let unsized_big = serve(ServerBuilder::new().without_length(), &[b'a'; 200_000]);
    let err = fetch_bytes(&unsized_big.url("/image.raw"), &opts(), 100_000).unwrap_err();
    assert!(matches!(err, SourceError::TooLarge { limit: 100_000, .. }), "{err:?}");
    assert!(unsized_big.requests()[0].body_bytes > 0, "the limit was hit while streaming");
    assert_eq!(fetch_bytes(&server.url("/binary"), &opts(), 3).unwrap(), [0xff, 0xfe, 0x00]);
    let err = fetch_text(&server.url("/binary"), &opts(), 4096).unwrap_err();
    assert!(matches!(err, SourceError::NotText { .. }), "{err:?}");
    let err = fetch_text(&server.url("/nothing"), &opts(), 4096).unwrap_err();
    assert!(matches!(err, SourceError::Status { status: 404, .. }), "{err:?}");
}

#[test]
fn a_connection_refused_is_retried_then_reported() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/image.raw", dead.local_addr().unwrap());
    drop(dead);
    let err = HttpSource::open(&url, &HttpOptions { retries: 1, ..opts() }).unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::RetriesExhausted { attempts: 2, last: TransientFailure::Transport(_), .. }
        ),
        "{err:?}"
    );
}

#[test]
fn works_from_a_blocking_thread_of_an_async_runtime() {
    let data = image(LEN, 17);
    let server = serve(ServerBuilder::new().cut_after(40_000, 1), &data);
    let url = server.url("/image.raw");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    let out = runtime.block_on(async move {
        tokio::task::spawn_blocking(move || {
            let mut source = HttpSource::open_with_chunk_size(&url, &opts(), CHUNK).unwrap();
            drain(&mut source).0
        })
        .await
        .unwrap()
    });
    assert!(out == data);
}

/// `image(LEN)` with zeros outside `ranges`, as a sparse image whose map lists them.
fn holey_image(ranges: &[[u64; 2]], seed: u64) -> Vec<u8> {
    let full = image(LEN, seed);
    let mut data = vec![0u8; LEN];
    for &[offset, len] in ranges {
        let r = offset as usize..(offset + len) as usize;
        data[r.clone()].copy_from_slice(&full[r]);
    }
    data
}

#[test]
fn a_data_map_limits_the_download_to_the_data_and_survives_a_cut() {
    let ranges = vec![[0, 50_000], [200_000, 80_000]];
    let data = holey_image(&ranges, 11);
    // The first (whole-image) reply is dropped for the map; the cut hits the first range.
    let server =
        serve(ServerBuilder::new().data_map("/image.raw", ranges).cut_after(30_000, 2), &data);
    let mut source =
        HttpSource::open_with(&server.url("/image.raw"), &opts(), CHUNK, true).unwrap();
    let mut out = Vec::new();
    let mut holes = Vec::new();
    while let Some(event) = source.next_event().unwrap() {
        match event {
            SourceEvent::Data(bytes) => out.extend_from_slice(&bytes),
            SourceEvent::Hole(len) => {
                holes.push((out.len() as u64, len));
                out.resize(out.len() + len as usize, 0);
            }
            SourceEvent::Restart => panic!("no restart expected"),
        }
    }
    assert!(out == data, "content differs");
    assert_eq!(holes, [(50_000, 150_000), (280_000, LEN as u64 - 280_000)]);
    let stats = source.stats();
    assert_eq!((stats.resumes, stats.restarts, stats.refetched_bytes), (1, 0, 0));
    let requests = server.requests();
    let ranges: Vec<_> = requests.iter().skip(2).map(|r| r.range.clone()).collect();
    assert_eq!(
        ranges,
        [
            Some("bytes=0-49999".to_owned()),
            Some("bytes=30000-49999".to_owned()),
            Some("bytes=200000-279999".to_owned())
        ]
    );
    assert!(requests.iter().skip(2).all(|r| r.if_range.as_deref() == Some("\"v1-300001\"")));
    // Exactly the data crossed the wire after the map: nothing twice, no zeros.
    assert_eq!(body_total(&requests[2..]), 130_000);
}

#[test]
fn an_unusable_data_map_means_the_whole_image() {
    let data = image(LEN, 12);
    // Ranges past the end: the map is refused and the image streamed whole.
    let server =
        serve(ServerBuilder::new().data_map("/image.raw", vec![[0, LEN as u64 + 5]]), &data);
    let mut source =
        HttpSource::open_with(&server.url("/image.raw"), &opts(), CHUNK, true).unwrap();
    let (out, restarts) = drain(&mut source);
    assert!(out == data, "content differs");
    assert_eq!(restarts, 0);
    assert!(server.requests().iter().all(|r| r.range.is_none()));
    // Without asking for maps, none is fetched.
    let server = serve(ServerBuilder::new().data_map("/image.raw", vec![[0, 10]]), &data);
    let mut source = open(&server, &opts());
    assert!(drain(&mut source).0 == data);
    assert_eq!(server.requests().len(), 1);
}
