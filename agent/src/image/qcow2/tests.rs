//! Images made by the real `qemu-img` / `qemu-io`, decoded here and compared byte for byte
//! with `qemu-img convert -O raw`; and damaged or hostile images, each of which must fail
//! with its own error and never panic.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::image::extent::Extent;

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fresh qcow2 image of `size` with `writes` applied through qemu-io, in order.
fn qemu_io_image(
    dir: &Path,
    name: &str,
    create_opts: &str,
    size: &str,
    writes: &[&str],
) -> PathBuf {
    let path = dir.join(name);
    run("qemu-img", &["create", "-q", "-f", "qcow2", "-o", create_opts, path_str(&path), size]);
    let mut args = vec!["-f", "qcow2"];
    for w in writes {
        args.extend(["-c", w]);
    }
    args.push(path_str(&path));
    if !writes.is_empty() {
        run("qemu-io", &args);
    }
    path
}

/// A raw file with random data at a few places and holes elsewhere.
fn raw_with_data(dir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..12 {
        let len = rng.u64(1..300_000).min(size / 4);
        let at = rng.u64(0..size - len);
        let compressible = rng.bool();
        let data: Vec<u8> =
            (0..len).map(|i| if compressible { (i / 97) as u8 } else { rng.u8(..) }).collect();
        f.write_all_at(&data, at).unwrap();
    }
    path
}

fn convert(src: &Path, dst: &Path, args: &[&str]) {
    let mut all = vec!["convert", "-f", "raw"];
    all.extend(args);
    all.extend([path_str(src), path_str(dst)]);
    run("qemu-img", &all);
}

/// What `qemu-img` says the image's guest content is.
fn reference(img: &Path) -> Vec<u8> {
    let raw = img.with_extension("ref.raw");
    run("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", path_str(img), path_str(&raw)]);
    std::fs::read(raw).unwrap()
}

fn reader(file: &[u8]) -> impl FnMut(u64, usize) -> Result<Vec<u8>, Qcow2Error> + '_ {
    move |offset, len| {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(file.len());
        let end = start.saturating_add(len).min(file.len());
        Ok(file[start..end].to_vec())
    }
}

fn open_bytes(file: &[u8]) -> Result<Plan, Qcow2Error> {
    open(&mut reader(file), Some(file.len() as u64))
}

/// How the file is cut into pieces for the streaming pass.
#[derive(Debug, Clone, Copy)]
enum Split {
    Whole,
    Fixed(usize),
    Random(u64),
}

/// Decodes `file` with `plan` into a buffer pre-filled with a poison byte, checking that
/// the extents cover every guest byte exactly once and nothing outside the virtual size.
fn decode(plan: Plan, file: &[u8], split: Split) -> Result<Vec<u8>, Qcow2Error> {
    let size = plan.virtual_size() as usize;
    let mut image = vec![0xa5u8; size];
    let mut covered: Vec<(u64, u64)> = Vec::new();
    let mut decoder = Qcow2Decoder::new(plan);
    let mut sink = |e: Extent<'_>| -> Result<(), Qcow2Error> {
        let end = e.end().unwrap();
        assert!(
            end <= size as u64,
            "extent {:#x}+{:#x} past the virtual size",
            e.offset(),
            e.len()
        );
        covered.push((e.offset(), e.len()));
        match e {
            Extent::Data { offset, bytes } => {
                image[offset as usize..end as usize].copy_from_slice(bytes)
            }
            Extent::Zero { offset, len } => image[offset as usize..(offset + len) as usize].fill(0),
        }
        Ok(())
    };
    let mut rng = fastrand::Rng::with_seed(match split {
        Split::Random(seed) => seed,
        _ => 0,
    });
    let mut rest = file;
    while !rest.is_empty() {
        let n = match split {
            Split::Whole => rest.len(),
            Split::Fixed(n) => n,
            Split::Random(_) => match rng.u8(..4) {
                0 => rng.usize(1..600),
                1 => rng.usize(1..70_000),
                _ => rng.usize(1..1_500_000),
            },
        }
        .min(rest.len());
        decoder.feed(&rest[..n], &mut sink)?;
        rest = &rest[n..];
    }
    decoder.finish(&mut sink)?;
    covered.sort_unstable();
    let mut at = 0;
    for (offset, len) in covered {
        assert_eq!(offset, at, "guest bytes at {at:#x} covered twice or not at all");
        at += len;
    }
    assert_eq!(at, size as u64, "extents stop short of the virtual size");
    Ok(image)
}

fn assert_decodes_like_qemu(img: &Path, splits: &[Split]) -> Plan {
    let file = std::fs::read(img).unwrap();
    let want = reference(img);
    let plan = open_bytes(&file).unwrap_or_else(|e| panic!("{}: {e}", img.display()));
    assert_eq!(plan.virtual_size(), want.len() as u64);
    for &split in splits {
        let got = decode(plan.clone(), &file, split).unwrap();
        if got != want {
            let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
            panic!("{} {split:?}: differs at {first_diff:?}", img.display());
        }
    }
    plan
}

const SPLITS: &[Split] = &[
    Split::Whole,
    Split::Fixed(4096),
    Split::Fixed(65536 + 7),
    Split::Random(1),
    Split::Random(2),
];

/// Guest writes in an order that gives later guest offsets earlier host clusters, plus
/// zeroed and discarded ranges.
const SCATTERED_WRITES: &[&str] = &[
    "write -P 0xaa 3M 64k",
    "write -P 0xbb 0 64k",
    "write -P 0xcc 10M 1M",
    "write -P 0x11 7M 100k",
    "write -P 0xdd 20M 256k",
    "write -z 20M 128k",
    "write -P 0xee 30M 64k",
    "discard 30M 64k",
    "write -P 0x5e 40956k 4k",
];

#[test]
fn v3_image_with_clusters_out_of_guest_order() {
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_io_image(dir.path(), "v3.qcow2", "compat=1.1", "40M", SCATTERED_WRITES);
    let plan = assert_decodes_like_qemu(&img, SPLITS);
    assert_eq!(plan.header().version, 3);
    // The point of the image: host order differs from guest order.
    let guests: Vec<u64> = plan.clusters().iter().map(|c| c.guest_offset).collect();
    assert!(guests.windows(2).any(|w| w[0] > w[1]), "{guests:x?}");
    assert!(plan.clusters().iter().all(|c| c.kind == ClusterKind::Data));
    // 64k + 64k + 1M + 128k (100k rounded up) + 128k (the unzeroed half) + 64k.
    assert_eq!(plan.mapped_bytes(), (64 + 64 + 1024 + 128 + 128 + 64) * 1024);
}

#[test]
fn v2_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_io_image(dir.path(), "v2.qcow2", "compat=0.10", "40M", SCATTERED_WRITES);
    let plan = assert_decodes_like_qemu(&img, SPLITS);
    assert_eq!(plan.header().version, 2);
}

#[test]
fn virtual_size_not_a_multiple_of_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    // 5 MiB + 3 sectors: the last cluster is mostly outside the guest.
    let img = qemu_io_image(
        dir.path(),
        "odd.qcow2",
        "compat=1.1",
        "5244416",
        &["write -P 0x42 5M 1536", "write -P 0x43 0 512"],
    );
    let plan = assert_decodes_like_qemu(&img, SPLITS);
    assert_eq!(plan.virtual_size(), 5_244_416);
}

#[test]
fn zlib_compressed_clusters_v2_and_v3() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_with_data(dir.path(), "src.raw", 24 << 20, 11);
    for (name, compat) in [("c3.qcow2", "compat=1.1"), ("c2.qcow2", "compat=0.10")] {
        let img = dir.path().join(name);
        convert(&raw, &img, &["-c", "-O", "qcow2", "-o", compat]);
        let plan = assert_decodes_like_qemu(&img, SPLITS);
        assert!(plan.clusters().iter().any(|c| c.kind == ClusterKind::Compressed), "{name}");
    }
}

#[test]
fn compressed_image_then_overwritten_mixes_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_with_data(dir.path(), "src.raw", 8 << 20, 12);
    let img = dir.path().join("mixed.qcow2");
    convert(&raw, &img, &["-c", "-O", "qcow2"]);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x77 1M 200k", "-c", "write -z 4M 64k", path_str(&img)],
    );
    let plan = assert_decodes_like_qemu(&img, SPLITS);
    let kinds: Vec<ClusterKind> = plan.clusters().iter().map(|c| c.kind).collect();
    assert!(kinds.contains(&ClusterKind::Data) && kinds.contains(&ClusterKind::Compressed));
}

#[test]
fn cluster_sizes_from_smallest_to_largest() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_with_data(dir.path(), "src.raw", 6 << 20, 13);
    for cluster in ["512", "4096", "2M"] {
        for compress in [false, true] {
            let img = dir.path().join(format!("cs{cluster}{compress}.qcow2"));
            let opts = format!("cluster_size={cluster}");
            let mut args = vec!["-O", "qcow2", "-o", &opts];
            if compress {
                args.insert(0, "-c");
            }
            convert(&raw, &img, &args);
            let plan = assert_decodes_like_qemu(&img, &[Split::Whole, Split::Random(3)]);
            assert_eq!(plan.cluster_size().to_string(), cluster.replace("2M", "2097152"));
        }
    }
}

#[test]
fn byte_by_byte_feeding() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_with_data(dir.path(), "src.raw", 1 << 20, 14);
    let img = dir.path().join("tiny.qcow2");
    convert(&raw, &img, &["-c", "-O", "qcow2", "-o", "cluster_size=512"]);
    assert_decodes_like_qemu(&img, &[Split::Fixed(1), Split::Fixed(3)]);
}

#[test]
fn empty_and_unallocated_images() {
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_io_image(dir.path(), "empty.qcow2", "compat=1.1", "16M", &[]);
    let plan = assert_decodes_like_qemu(&img, SPLITS);
    assert!(plan.clusters().is_empty());
    assert_eq!(plan.zero_ranges(), &[(0, 16 << 20)]);
    assert_eq!(plan.stream_end(), 0);

    let img = qemu_io_image(dir.path(), "zero.qcow2", "compat=1.1", "0", &[]);
    let plan = assert_decodes_like_qemu(&img, SPLITS);
    assert_eq!((plan.virtual_size(), plan.zero_ranges().len()), (0, 0));
}

#[test]
fn opening_reads_only_metadata_and_batches_l2_tables() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_with_data(dir.path(), "src.raw", 64 << 20, 15);
    let img = dir.path().join("many-l2.qcow2");
    // 4 KiB clusters: each L2 table maps 2 MiB, so 32 tables.
    convert(&raw, &img, &["-O", "qcow2", "-o", "cluster_size=4096"]);
    let file = std::fs::read(&img).unwrap();
    let mut reads = Vec::new();
    let mut read = |offset: u64, len: usize| -> Result<Vec<u8>, Qcow2Error> {
        reads.push((offset, len));
        reader(&file)(offset, len)
    };
    let plan = open(&mut read, Some(file.len() as u64)).unwrap();
    let read_bytes: usize = reads.iter().map(|r| r.1).sum();
    assert!(read_bytes < 200 * 1024, "read {read_bytes} bytes of metadata: {reads:x?}");
    assert!(reads.len() < 32 + 2, "{} reads", reads.len());
    assert!(plan.mapped_bytes() > 0);
}

// ---- hostile images -------------------------------------------------------------------

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Byte offsets of an image's L1 table and of its first L2 table.
struct Layout {
    cluster: u64,
    l1: usize,
    l2: usize,
}

fn layout(file: &[u8]) -> Layout {
    let cluster = 1u64 << be32(file, 20);
    let l1 = be64(file, 40) as usize;
    let l2 = (be64(file, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    Layout { cluster, l1, l2 }
}

/// A small v3 image with data in its first clusters, as bytes.
fn sample_image(dir: &Path, compat: &str) -> Vec<u8> {
    let img = qemu_io_image(
        dir,
        &format!("sample-{compat}.qcow2"),
        compat,
        "8M",
        &["write -P 0x61 0 64k", "write -P 0x62 64k 64k", "write -P 0x63 1M 64k"],
    );
    std::fs::read(img).unwrap()
}

fn compressed_sample(dir: &Path) -> Vec<u8> {
    let raw = raw_with_data(dir, "csrc.raw", 4 << 20, 16);
    let img = dir.join("csample.qcow2");
    convert(&raw, &img, &["-c", "-O", "qcow2"]);
    std::fs::read(img).unwrap()
}

fn open_and_decode(file: &[u8], file_len: Option<u64>) -> Result<Vec<u8>, Qcow2Error> {
    let plan = open(&mut reader(file), file_len)?;
    decode(plan, file, Split::Random(5))
}

#[test]
fn refused_header_features() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_image(dir.path(), "compat=1.1");
    let patched = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        open_bytes(&b).unwrap_err()
    };
    let cases: Vec<(Qcow2Error, Qcow2Error)> = vec![
        (patched(&|b| b[0] = b'X'), Qcow2Error::NotQcow2),
        (patched(&|b| b[7] = 4), Qcow2Error::UnsupportedVersion(4)),
        (patched(&|b| b[23] = 8), Qcow2Error::ClusterBits(8)),
        (patched(&|b| b[23] = 22), Qcow2Error::ClusterBits(22)),
        (patched(&|b| put64(b, 8, 0x1000)), Qcow2Error::BackingFile),
        (patched(&|b| b[35] = 2), Qcow2Error::Encrypted(2)),
        (patched(&|b| b[79] |= 1 << 2), Qcow2Error::ExternalDataFile),
        (patched(&|b| b[79] |= 1 << 4), Qcow2Error::ExtendedL2),
        (patched(&|b| b[79] |= 1 << 1), Qcow2Error::MarkedCorrupt),
        (patched(&|b| b[78] |= 1), Qcow2Error::UnknownIncompatibleFeatures(1 << 8)),
        (patched(&|b| b[104] = 1), Qcow2Error::ZstdCompression),
        (patched(&|b| b[104] = 9), Qcow2Error::UnknownCompression(9)),
        (patched(&|b| b[103] = 100), Qcow2Error::HeaderLength(100)),
        (
            patched(&|b| put64(b, 24, 1 << 60)),
            Qcow2Error::VirtualSizeTooLarge { size: 1 << 60, max: MAX_VIRTUAL_SIZE },
        ),
        (patched(&|b| put64(b, 24, 1 << 40)), Qcow2Error::L1TooSmall { l1_size: 1, needed: 2048 }),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    // The dirty bit only concerns refcounts, which are not read.
    let mut dirty = good.clone();
    dirty[79] |= 1;
    assert!(open_bytes(&dirty).is_ok());
}

#[test]
fn images_made_with_refused_features_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = qemu_io_image(d, "base.qcow2", "compat=1.1", "1M", &[]);
    let cases: Vec<(String, Qcow2Error)> = vec![
        (format!("backing_file={},backing_fmt=qcow2", base.display()), Qcow2Error::BackingFile),
        (format!("data_file={}", d.join("data.raw").display()), Qcow2Error::ExternalDataFile),
        ("extended_l2=on".into(), Qcow2Error::ExtendedL2),
        ("compression_type=zstd".into(), Qcow2Error::ZstdCompression),
    ];
    for (i, (opts, want)) in cases.into_iter().enumerate() {
        let img = qemu_io_image(d, &format!("refused{i}.qcow2"), &opts, "1M", &[]);
        let err = open_bytes(&std::fs::read(img).unwrap()).unwrap_err();
        assert_eq!(err, want, "{opts}");
    }
    assert!(Qcow2Error::BackingFile.to_string().contains("unsafe"));
    assert!(Qcow2Error::ZstdCompression.to_string().contains("zstd"));
}

#[test]
fn truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_image(dir.path(), "compat=1.1");
    let lay = layout(&good);
    // Cut inside the header, the L1 table, an L2 table and the data.
    for cut in [0, 3, 50, 80, lay.l1 + 4, lay.l2 + 100, good.len() - 1000] {
        let file = &good[..cut];
        let err = open_and_decode(file, Some(cut as u64)).unwrap_err();
        assert!(
            matches!(err, Qcow2Error::Truncated { .. } | Qcow2Error::PastEnd { .. }),
            "cut at {cut}: {err:?}"
        );
        // Not knowing the length up front gives the same kind of answer, later.
        let err = open_and_decode(file, None).unwrap_err();
        assert!(
            matches!(
                err,
                Qcow2Error::Truncated { .. }
                    | Qcow2Error::StreamTruncated { .. }
                    | Qcow2Error::NotQcow2
            ),
            "cut at {cut}, length unknown: {err:?}"
        );
    }
    // Metadata read in full, then the stream stops early.
    let plan = open_bytes(&good).unwrap();
    let err = decode(plan, &good[..good.len() - 1000], Split::Whole).unwrap_err();
    assert!(matches!(err, Qcow2Error::StreamTruncated { .. }), "{err:?}");
    assert!(err.to_string().contains("stream ended"), "{err}");
}

#[test]
fn table_entries_pointing_past_the_end_or_into_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_image(dir.path(), "compat=1.1");
    let lay = layout(&good);
    let len = good.len() as u64;
    let c = lay.cluster;
    let with = |at: usize, v: u64| {
        let mut b = good.clone();
        put64(&mut b, at, v);
        open_and_decode(&b, Some(len)).unwrap_err()
    };
    let copied = 1u64 << 63;
    let after_end = len.next_multiple_of(c) + 4 * c;

    let err = with(lay.l1, copied | after_end);
    assert!(matches!(err, Qcow2Error::PastEnd { .. }), "L1 past end: {err:?}");
    assert!(err.to_string().contains("L2 table"), "{err}");

    let err = with(lay.l2, copied | after_end);
    assert!(matches!(err, Qcow2Error::PastEnd { .. }), "L2 past end: {err:?}");
    assert!(err.to_string().contains("data cluster for guest offset 0x0"), "{err}");

    let err = with(40, 0);
    assert!(matches!(err, Qcow2Error::Overlap { .. }), "L1 in the header: {err:?}");
    assert!(err.to_string().contains("header cluster"), "{err}");

    let err = with(lay.l1, copied | lay.l1 as u64);
    assert!(matches!(err, Qcow2Error::Overlap { .. }), "L2 on the L1 table: {err:?}");

    let err = with(lay.l2, copied | lay.l2 as u64);
    assert!(err.to_string().contains("L2 table"), "data on its own L2 table: {err}");

    let err = with(lay.l2, copied | lay.l1 as u64);
    assert!(err.to_string().contains("L1 table"), "data on the L1 table: {err}");

    // A compressed descriptor pointing into the header cluster.
    let err = with(lay.l2, (1 << 62) | 8);
    assert_eq!(err, Qcow2Error::CompressedOffset { guest: 0, host: 8 });

    let err = with(lay.l2, copied | (lay.l2 as u64 + 4 * c + 512));
    assert_eq!(
        err,
        Qcow2Error::Unaligned { what: "data cluster", offset: lay.l2 as u64 + 4 * c + 512 }
    );

    let err = with(lay.l1, copied | (lay.l2 as u64 + 512));
    assert_eq!(err, Qcow2Error::Unaligned { what: "L2 table", offset: lay.l2 as u64 + 512 });

    let err = with(40, u64::MAX - 100);
    assert!(
        matches!(err, Qcow2Error::OffsetOverflow { .. } | Qcow2Error::Unaligned { .. }),
        "{err:?}"
    );
}

#[test]
fn overlapping_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_image(dir.path(), "compat=1.1");
    let lay = layout(&good);
    // Guest clusters 0 and 1 mapped to the same host cluster.
    let mut b = good.clone();
    let first = be64(&b, lay.l2);
    put64(&mut b, lay.l2 + 8, first);
    let err = open_bytes(&b).unwrap_err();
    assert!(matches!(err, Qcow2Error::Overlap { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("guest offset 0x0") && msg.contains("guest offset 0x10000"), "{msg}");

    // Two L1 entries sharing one L2 table.
    let mut b = good.clone();
    put64(&mut b, 24, 1 << 30); // 1 GiB virtual: two L1 entries needed at 64 KiB clusters
    put64(&mut b, 36, 0); // clear l1_size's high half (it is 32 bits at 36)
    b[36..40].copy_from_slice(&2u32.to_be_bytes());
    let l1e = be64(&b, lay.l1);
    put64(&mut b, lay.l1 + 8, l1e);
    let err = open_bytes(&b).unwrap_err();
    assert!(matches!(err, Qcow2Error::Overlap { .. }), "{err:?}");

    // A compressed cluster overlapping a data cluster.
    let mut b = good.clone();
    let data_host = be64(&b, lay.l2) & 0x00ff_ffff_ffff_fe00;
    put64(&mut b, lay.l2 + 16 * 8, (1 << 62) | (data_host + 100));
    let err = open_bytes(&b).unwrap_err();
    assert!(matches!(err, Qcow2Error::Overlap { .. }), "{err:?}");
}

#[test]
fn v2_zero_flag_is_refused_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_image(dir.path(), "compat=0.10");
    let lay = layout(&good);
    let mut b = good.clone();
    let e = be64(&b, lay.l2 + 8);
    put64(&mut b, lay.l2 + 8, e | 1);
    assert_eq!(open_bytes(&b).unwrap_err(), Qcow2Error::ZeroFlagInV2 { guest: 0x10000 });
}

/// Replaces the compressed bytes of the first compressed cluster with `stream`.
fn with_compressed_stream(file: &[u8], stream: &[u8]) -> (Vec<u8>, Cluster) {
    let plan = open_bytes(file).unwrap();
    let c = *plan
        .clusters()
        .iter()
        .filter(|c| c.kind == ClusterKind::Compressed)
        .max_by_key(|c| c.host_len)
        .expect("a compressed cluster");
    assert!(c.host_len >= stream.len() as u64, "{} bytes do not fit in {c:?}", stream.len());
    let mut b = file.to_vec();
    b[c.host_offset as usize..c.host_offset as usize + stream.len()].copy_from_slice(stream);
    (b, c)
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn compressed_clusters_must_inflate_to_exactly_one_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let good = compressed_sample(dir.path());
    let cluster = 1u64 << be32(&good, 20);

    let (b, c) = with_compressed_stream(&good, &deflate(&vec![0u8; cluster as usize + 1]));
    let err = open_and_decode(&b, Some(b.len() as u64)).unwrap_err();
    assert_eq!(
        err,
        Qcow2Error::InflatesPastCluster {
            guest: c.guest_offset,
            host: c.host_offset,
            cluster_size: cluster
        }
    );
    // Far past it: a cluster of zeros is tiny compressed, a bomb must not get through.
    let (b, _) = with_compressed_stream(&good, &deflate(&vec![0u8; 1 << 20]));
    assert!(matches!(
        open_and_decode(&b, Some(b.len() as u64)).unwrap_err(),
        Qcow2Error::InflatesPastCluster { .. }
    ));

    let (b, c) = with_compressed_stream(&good, &deflate(&vec![7u8; cluster as usize - 10]));
    assert_eq!(
        open_and_decode(&b, Some(b.len() as u64)).unwrap_err(),
        Qcow2Error::InflatesShort {
            guest: c.guest_offset,
            host: c.host_offset,
            got: cluster - 10,
            cluster_size: cluster
        }
    );

    let (b, _) = with_compressed_stream(&good, &[0xff; 64]);
    assert!(matches!(
        open_and_decode(&b, Some(b.len() as u64)).unwrap_err(),
        Qcow2Error::Inflate { .. }
    ));

    // An exact cluster followed by more input the descriptor's rounding covers is fine.
    let mut exact = deflate(&vec![9u8; cluster as usize]);
    exact.extend_from_slice(&[0u8; 3]);
    let (b, c) = with_compressed_stream(&good, &exact);
    let image = open_and_decode(&b, Some(b.len() as u64)).unwrap();
    let g = c.guest_offset as usize;
    assert!(image[g..g + cluster as usize].iter().all(|&x| x == 9));
}

#[test]
fn compressed_cluster_reaching_past_the_file_end_is_clipped() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("pattern.raw");
    let pattern: Vec<u8> = (0..3u32 << 20).map(|i| (i / 1000) as u8).collect();
    std::fs::write(&raw, pattern).unwrap();
    let img = dir.path().join("pattern.qcow2");
    convert(&raw, &img, &["-c", "-O", "qcow2"]);
    let good = std::fs::read(&img).unwrap();
    let want = reference(&img);
    let plan = open_bytes(&good).unwrap();
    let last = *plan.clusters().last().unwrap();
    assert_eq!(last.kind, ClusterKind::Compressed);
    // Cut the file right after the last compressed cluster's real data: its rounded
    // sector count then reaches past the end, which QEMU reads as zeros.
    let mut inflater = flate2::Decompress::new(false);
    let mut out = vec![0u8; plan.cluster_size() as usize];
    let host = &good[last.host_offset as usize..last.host_end() as usize];
    inflater.decompress(host, &mut out, flate2::FlushDecompress::Finish).unwrap();
    let cut = last.host_offset as usize + inflater.total_in() as usize;
    let file = &good[..cut];
    if cut < last.host_end() as usize {
        for len in [Some(cut as u64), None] {
            let plan = open(&mut reader(file), len).unwrap();
            let got = decode(plan, file, Split::Random(7)).unwrap();
            assert!(got == want, "file length {len:?}");
        }
    }
}

#[test]
fn errors_from_the_reader_and_the_sink_come_back_unchanged() {
    #[derive(Debug, PartialEq)]
    enum Outer {
        Io(&'static str),
        Qcow2(Qcow2Error),
    }
    impl From<Qcow2Error> for Outer {
        fn from(e: Qcow2Error) -> Self {
            Outer::Qcow2(e)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let good = sample_image(dir.path(), "compat=1.1");
    let mut failing = |_o: u64, _l: usize| -> Result<Vec<u8>, Outer> { Err(Outer::Io("cut")) };
    assert_eq!(open(&mut failing, None).unwrap_err(), Outer::Io("cut"));

    let plan = open_bytes(&good).unwrap();
    let mut d = Qcow2Decoder::new(plan);
    let err = d.feed(&good, &mut |_e: Extent<'_>| Err(Outer::Io("disk full"))).unwrap_err();
    assert_eq!(err, Outer::Io("disk full"));
}

#[test]
fn reset_starts_the_pass_over() {
    let dir = tempfile::tempdir().unwrap();
    let img =
        qemu_io_image(dir.path(), "r.qcow2", "compat=1.1", "8M", SCATTERED_WRITES[..2].as_ref());
    let file = std::fs::read(&img).unwrap();
    let want = reference(&img);
    let plan = open_bytes(&file).unwrap();
    let mut d = Qcow2Decoder::new(plan);
    let mut image = vec![0x33u8; want.len()];
    let mut sink = |e: Extent<'_>| -> Result<(), Qcow2Error> {
        if let Extent::Data { offset, bytes } = e {
            image[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        } else if let Extent::Zero { offset, len } = e {
            image[offset as usize..(offset + len) as usize].fill(0);
        }
        Ok(())
    };
    let clusters = d.plan().clusters().len();
    assert_eq!(d.clusters_remaining(), clusters);
    d.feed(&file[..file.len() / 2 + 13], &mut sink).unwrap();
    d.reset();
    assert_eq!(d.clusters_remaining(), clusters);
    d.feed(&file, &mut sink).unwrap();
    assert_eq!(d.clusters_remaining(), 0);
    d.finish(&mut sink).unwrap();
    assert_eq!(d.position(), file.len() as u64);
    assert!(image == want);
}

/// Random damage to the metadata of real images: any answer but a panic or an extent
/// outside the guest is acceptable.
#[test]
fn random_metadata_damage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let samples = [
        sample_image(dir.path(), "compat=1.1"),
        sample_image(dir.path(), "compat=0.10"),
        compressed_sample(dir.path()),
    ];
    let mut rng = fastrand::Rng::with_seed(99);
    for round in 0..600 {
        let good = &samples[round % samples.len()];
        let lay = layout(good);
        let mut b = good.clone();
        for _ in 0..rng.usize(1..6) {
            let at = match rng.u8(..3) {
                0 => rng.usize(0..112),
                1 => lay.l1 + rng.usize(0..16),
                _ => lay.l2 + rng.usize(0..(lay.cluster as usize).min(4096)),
            };
            b[at] ^= 1 << rng.u8(..8);
        }
        let len = if rng.bool() { Some(b.len() as u64) } else { None };
        // Images that still open must decode within their virtual size (checked by
        // `decode`), unless their size is beyond what a test can hold.
        let opened = open(&mut reader(&b), len);
        if let Ok(plan) = opened {
            if plan.virtual_size() <= 256 << 20 {
                let _ = decode(plan, &b, Split::Random(round as u64));
            }
        }
    }
}
