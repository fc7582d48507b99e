//! Config drive images read back by real tools: `isoinfo` (primary names, Rock Ridge
//! and Joliet), `blkid`, and the kernel's isofs through a loop mount when this machine
//! allows one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use ferric_conductor::configdrive::{
    build_iso, drive_image, render, DriveNode, IsoError, IsoFile, IsoSpec, MAX_IMAGE_BYTES,
};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

const NODE_UUID: u128 = 0x0b5e_55ed_0000_4000_8000_0000_0000_0042;

fn node() -> DriveNode<'static> {
    DriveNode { uuid: Uuid::from_u128(NODE_UUID), name: Some("nœud-✓") }
}

fn at() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap()
}

fn parts(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// The image, written to a file of `dir`.
fn write_image(dir: &Path, image: &[u8]) -> PathBuf {
    let path = dir.join("drive.iso");
    std::fs::write(&path, image).unwrap();
    path
}

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("{program} cannot run: {e}");
    });
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn isoinfo(iso: &Path, args: &[&str]) -> Vec<u8> {
    let mut all = vec!["-i", iso.to_str().unwrap()];
    all.extend_from_slice(args);
    run("isoinfo", &all)
}

/// Every path `isoinfo -l` lists with `mode` ("-R", "-J" or "" for the primary names),
/// directories with a trailing `/`.
fn listing(iso: &Path, mode: &str) -> BTreeSet<String> {
    let mut args = vec!["-l"];
    if !mode.is_empty() {
        args.push(mode);
    }
    // Joliet names outside Latin-1 come out as `_` (isoinfo's own conversion).
    let text = String::from_utf8_lossy(&isoinfo(iso, &args)).into_owned();
    let mut paths = BTreeSet::new();
    let mut dir = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("Directory listing of ") {
            dir = d.trim_end().to_owned();
            continue;
        }
        // `drwxr-xr-x   2    0    0            2048 Jan 01 2026 [     23 02]  name `
        let Some((_, name)) = line.split_once(']') else { continue };
        let name = name.trim_start().strip_suffix(' ').unwrap_or(name.trim_start()).to_owned();
        if name.is_empty() || name == "." || name == ".." {
            continue;
        }
        let is_dir = line.starts_with('d');
        paths.insert(format!("{dir}{name}{}", if is_dir { "/" } else { "" }));
    }
    paths
}

fn drive_paths(names: &[&str]) -> BTreeSet<String> {
    let mut want: BTreeSet<String> =
        ["/openstack/", "/openstack/2012-08-10/", "/openstack/latest/"].map(String::from).into();
    for version in ["2012-08-10", "latest"] {
        for name in names {
            want.insert(format!("/openstack/{version}/{name}"));
        }
    }
    want
}

/// A loop mount of the image, undone on drop; `None` (with the reason printed) where the
/// kernel or the container does not allow one.
struct LoopMount {
    dir: PathBuf,
}

impl LoopMount {
    fn new(iso: &Path, parent: &Path) -> Option<LoopMount> {
        let dir = parent.join("mnt");
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "iso9660", "-o", "loop,ro"])
            .arg(iso)
            .arg(&dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(LoopMount { dir }),
            Ok(out) => {
                eprintln!(
                    "skipping the kernel isofs check: mount -o loop,ro failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping the kernel isofs check: mount cannot run: {e}");
                None
            }
        }
    }

    /// Every path under the mount point, as [`listing`] gives them.
    fn paths(&self) -> BTreeSet<String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                if entry.file_type().unwrap().is_dir() {
                    out.insert(format!("/{rel}/"));
                    walk(root, &path, out);
                } else {
                    out.insert(format!("/{rel}"));
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.dir, &self.dir, &mut out);
        out
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        // `umount` of a loop mount also detaches the loop device mount set up.
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_rendered_drive_reads_back_with_isoinfo_blkid_and_isofs() {
    let user_data: String = (0u32..=0x2ff).filter_map(char::from_u32).collect();
    let drive = parts(json!({
        "meta_data": {"hostname": "h-ü", "public_keys": {"k": "ssh-ed25519 AAAA"}},
        "network_data": {"links": [{"id": "eth0", "type": "phy"}]},
        "vendor_data": {"vendor": "✓"},
        "user_data": user_data,
    }));
    let encoded = render(&drive, node(), at()).unwrap();
    let gz = base64::engine::general_purpose::STANDARD.decode(&encoded).unwrap();
    let mut image = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut image).unwrap();
    assert_eq!(image, drive_image(&drive, node(), at()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let iso = write_image(dir.path(), &image);

    let info = String::from_utf8(isoinfo(&iso, &["-d"])).unwrap();
    assert!(info.contains("Volume id: config-2\n"), "{info}");
    assert!(info.contains("Rock Ridge signatures version 1 found"), "{info}");
    assert!(info.contains("Joliet with UCS level 3 found"), "{info}");

    let names = ["meta_data.json", "network_data.json", "user_data", "vendor_data2.json"];
    assert_eq!(listing(&iso, "-R"), drive_paths(&names));
    assert_eq!(listing(&iso, "-J"), drive_paths(&names));
    let primary = listing(&iso, "");
    assert!(primary.contains("/OPENSTAC/LATEST/META_DAT.JSO;1"), "{primary:?}");

    let expected_meta = json!({"hostname": "h-ü", "public_keys": {"k": "ssh-ed25519 AAAA"},
        "uuid": Uuid::from_u128(NODE_UUID).to_string(), "name": "nœud-✓"});
    for mode in ["-R", "-J"] {
        for version in ["latest", "2012-08-10"] {
            let path = format!("/openstack/{version}/meta_data.json");
            let meta: Value = serde_json::from_slice(&isoinfo(&iso, &[mode, "-x", &path])).unwrap();
            assert_eq!(meta, expected_meta, "{mode} {path}");
            let path = format!("/openstack/{version}/user_data");
            assert_eq!(isoinfo(&iso, &[mode, "-x", &path]), user_data.as_bytes(), "{mode}");
        }
    }
    let vendor: Value = serde_json::from_slice(&isoinfo(
        &iso,
        &["-R", "-x", "/openstack/latest/vendor_data2.json"],
    ))
    .unwrap();
    assert_eq!(vendor, json!({"vendor": "✓"}));

    let blkid = String::from_utf8(run("blkid", &["-p", iso.to_str().unwrap()])).unwrap();
    assert!(blkid.contains(r#"LABEL="config-2""#), "{blkid}");
    assert!(blkid.contains(r#"TYPE="iso9660""#), "{blkid}");

    if let Some(mount) = LoopMount::new(&iso, dir.path()) {
        assert_eq!(mount.paths(), drive_paths(&names));
        let meta: Value = serde_json::from_slice(
            &std::fs::read(mount.dir.join("openstack/latest/meta_data.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta, expected_meta);
        let user = std::fs::read(mount.dir.join("openstack/2012-08-10/user_data")).unwrap();
        assert_eq!(user, user_data.as_bytes());
    }
}

#[test]
fn an_empty_dictionary_still_gives_meta_data() {
    let image = drive_image(&Map::new(), node(), at()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let iso = write_image(dir.path(), &image);
    assert_eq!(listing(&iso, "-R"), drive_paths(&["meta_data.json"]));
    assert_eq!(listing(&iso, "-J"), drive_paths(&["meta_data.json"]));
    let meta: Value =
        serde_json::from_slice(&isoinfo(&iso, &["-R", "-x", "/openstack/latest/meta_data.json"]))
            .unwrap();
    assert_eq!(meta, json!({"uuid": Uuid::from_u128(NODE_UUID).to_string(), "name": "nœud-✓"}));
}

#[test]
fn many_files_unicode_names_and_binary_contents() {
    // Enough entries that directories span several sectors, names that clash once cut
    // to 8.3, names outside ASCII (one outside the BMP), and every byte value.
    let mut files = Vec::new();
    for i in 0..300 {
        files.push(IsoFile::new(format!("many/a-long-file-name-{i:03}.json"), format!("{i}")));
    }
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    files.push(IsoFile::new("deep/er/still/binary.bin", bytes.clone()));
    files.push(IsoFile::new("unicode/名前.txt", "名前"));
    files.push(IsoFile::new("unicode/ÉtÉ été.json", "{}"));
    files.push(IsoFile::new("unicode/emoji-🙂", "smile"));
    files.push(IsoFile::new("empty", Vec::new()));
    let spec = IsoSpec {
        volume_id: "config-2",
        publisher: "ferric",
        timestamp: at(),
        max_bytes: MAX_IMAGE_BYTES,
    };
    let image = build_iso(&spec, &files).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let iso = write_image(dir.path(), &image);

    let mut want = BTreeSet::new();
    for f in &files {
        let mut prefix = String::new();
        let parts: Vec<&str> = f.path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            prefix.push('/');
            prefix.push_str(part);
            want.insert(format!("{prefix}/"));
        }
        want.insert(format!("/{}", f.path));
    }
    assert_eq!(listing(&iso, "-R"), want);
    let primary = listing(&iso, "");
    assert_eq!(primary.len(), want.len(), "every primary name is unique: {primary:?}");
    // isoinfo shows Joliet names only in 8-bit charsets: compare with what it shows for
    // genisoimage's image of the same tree.
    let tree = dir.path().join("tree");
    for f in &files {
        let path = tree.join(&f.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &f.data).unwrap();
    }
    let reference = dir.path().join("reference.iso");
    let (out, src) = (reference.to_str().unwrap(), tree.to_str().unwrap());
    run("genisoimage", &["-quiet", "-r", "-J", "-V", "config-2", "-o", out, src]);
    let theirs = listing(&reference, "-J");
    let ours = listing(&iso, "-J");
    let comparable = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter().filter(|p| !p.contains("emoji")).cloned().collect()
    };
    assert_eq!(comparable(&ours), comparable(&theirs));
    assert!(ours.iter().any(|p| p.starts_with("/unicode/emoji-")), "{ours:?}");
    assert_eq!(ours.len(), want.len());
    assert_eq!(isoinfo(&iso, &["-R", "-x", "/deep/er/still/binary.bin"]), bytes);
    assert_eq!(isoinfo(&iso, &["-J", "-x", "/deep/er/still/binary.bin"]), bytes);
    assert_eq!(isoinfo(&iso, &["-R", "-x", "/unicode/名前.txt"]), "名前".as_bytes());
    assert_eq!(isoinfo(&iso, &["-R", "-x", "/many/a-long-file-name-299.json"]), b"299");
    assert!(isoinfo(&iso, &["-R", "-x", "/empty"]).is_empty());

    if let Some(mount) = LoopMount::new(&iso, dir.path()) {
        assert_eq!(mount.paths(), want);
        assert_eq!(std::fs::read(mount.dir.join("deep/er/still/binary.bin")).unwrap(), bytes);
        assert_eq!(std::fs::read(mount.dir.join("unicode/emoji-🙂")).unwrap(), b"smile");
    }
}

#[test]
fn images_up_to_the_bound_are_built_and_larger_ones_refused() {
    // Two copies (one per metadata version) of 31 MiB fit in 64 MiB with room for the
    // directories; 33 MiB do not.
    let fits = "u".repeat(31 * 1024 * 1024);
    let image = drive_image(&parts(json!({"user_data": fits})), node(), at()).unwrap();
    assert!(image.len() as u64 <= MAX_IMAGE_BYTES);
    let dir = tempfile::tempdir().unwrap();
    let iso = write_image(dir.path(), &image);
    let read = isoinfo(&iso, &["-R", "-x", "/openstack/latest/user_data"]);
    assert_eq!(read.len(), fits.len());
    assert!(read.iter().all(|b| *b == b'u'));

    let too_big = "u".repeat(33 * 1024 * 1024);
    let err = render(&parts(json!({"user_data": too_big})), node(), at()).unwrap_err();
    let text = ferric_conductor::error_chain(&err);
    assert!(
        text.starts_with("cannot build the config drive image: the image would take ")
            && text.ends_with("bytes, more than the limit of 67108864 bytes"),
        "{text}"
    );
    assert!(matches!(
        err,
        ferric_conductor::configdrive::ConfigDriveError::Image(IsoError::TooLarge { .. })
    ));
}
