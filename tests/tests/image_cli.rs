//! `ferric-agent write-image` as a shell user runs it: the real binary, images and targets
//! in a temporary directory, digests from the coreutils tools.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use ferric_tests::agent_process::agent_binary;

const MIB: usize = 1 << 20;
const OLD: u8 = 0xaa;

struct Rig {
    dir: tempfile::TempDir,
    image: Vec<u8>,
    image_path: PathBuf,
    target: PathBuf,
}

impl Rig {
    /// A 5 MiB image with a zero run, and an 8 MiB target full of old content.
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut image: Vec<u8> = (0..5 * MIB).map(|i| ((i * 7 + 3) % 253) as u8 | 1).collect();
        image[2 * MIB..4 * MIB].fill(0);
        let image_path = dir.path().join("disk.raw");
        std::fs::write(&image_path, &image).unwrap();
        let target = dir.path().join("target.img");
        std::fs::write(&target, vec![OLD; 8 * MIB]).unwrap();
        Rig { dir, image, image_path, target }
    }

    fn digest(&self, tool: &str) -> String {
        let out = Command::new(tool).arg(&self.image_path).output().unwrap();
        assert!(out.status.success(), "{tool} failed");
        String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
    }

    fn run(&self, extra: &[&str]) -> Output {
        let url = format!("file://{}", self.image_path.display());
        let mut args = vec!["write-image", "--url", &url, "--target"];
        let target = self.target.to_str().unwrap();
        args.push(target);
        args.extend_from_slice(extra);
        agent(&args)
    }

    fn target_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.target).unwrap()
    }

    fn assert_written(&self) {
        let back = self.target_bytes();
        assert_eq!(back.len(), 8 * MIB);
        assert_eq!(&back[..self.image.len()], &self.image[..]);
    }
}

fn agent(args: &[&str]) -> Output {
    Command::new(agent_binary().unwrap())
        .args(args)
        .env_remove("FERRIC_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn writes_a_verified_raw_image_with_plain_progress_lines() {
    let rig = Rig::new();
    let sha256 = rig.digest("sha256sum");
    let out = rig.run(&["--checksum", &sha256]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    rig.assert_written();
    assert!(stdout.contains(&format!("sha256 verified ({sha256})")), "{stdout}");
    assert!(stdout.contains("5.0 MiB raw image"), "{stdout}");
    // Not a terminal: plain lines, no bar, no carriage returns, and a final one at 100%.
    assert!(!stderr.contains('\r') && !stderr.contains('['), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("done 5.0 MiB of 5.0 MiB (100%)")), "{stderr}");
}

#[test]
fn a_wrong_checksum_fails_with_both_digests_and_wipes_the_tables() {
    let rig = Rig::new();
    let actual = rig.digest("sha512sum");
    let wrong = "0".repeat(128);
    let out = rig.run(&["--os-hash-algo", "sha512", "--os-hash-value", &wrong]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sha512 digest mismatch"), "{stderr}");
    assert!(stderr.contains(&wrong) && stderr.contains(&actual), "{stderr}");
    let back = rig.target_bytes();
    assert!(back[..MIB].iter().all(|&b| b == 0), "first MiB not wiped");
    assert!(back[7 * MIB..].iter().all(|&b| b == 0), "last MiB not wiped");
}

#[test]
fn a_bsd_checksum_file_by_path_verifies_the_image() {
    let rig = Rig::new();
    let md5 = rig.digest("md5sum");
    let sums = rig.dir.path().join("MD5SUMS");
    std::fs::write(
        &sums,
        format!("MD5 (other.raw) = {}\nMD5 (disk.raw) = {md5}\n", "f".repeat(32)),
    )
    .unwrap();
    let out = rig.run(&["--checksum", sums.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("md5 verified ({md5})")));
    rig.assert_written();
}

#[test]
fn no_checksum_is_refused_unless_no_verify_is_explicit() {
    let rig = Rig::new();
    let out = rig.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--no-verify"), "{}", text(&out.stderr));
    assert!(rig.target_bytes().iter().all(|&b| b == OLD), "target changed");

    let out = rig.run(&["--no-verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("NOT verified"));
    rig.assert_written();
}

#[test]
fn errors_name_the_problem_and_exit_non_zero() {
    let rig = Rig::new();
    let missing = rig.dir.path().join("missing.raw");
    let target = rig.target.to_str().unwrap();
    let out = agent(&[
        "write-image",
        "--url",
        missing.to_str().unwrap(),
        "--target",
        target,
        "--no-verify",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing.raw") && stderr.contains("No such file"), "{stderr}");

    let gz = rig.dir.path().join("disk.raw.gz");
    std::fs::write(&gz, b"\x1f\x8b\x08\x00\x00\x00\x00\x00").unwrap();
    let out =
        agent(&["write-image", "--url", gz.to_str().unwrap(), "--target", target, "--no-verify"]);
    // A gzip stream cut short: found out while writing, so the target's table areas are
    // wiped (a half-written disk must not boot) and the rest is left alone.
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("compressed image is unusable"), "{stderr}");
    let disk = rig.target_bytes();
    assert!(disk[..MIB].iter().all(|&b| b == 0), "first MiB not wiped");
    assert!(disk[7 * MIB..].iter().all(|&b| b == 0), "last MiB not wiped");
    assert!(disk[MIB..7 * MIB].iter().all(|&b| b == OLD), "the middle changed");
}

#[test]
fn help_describes_the_subcommand() {
    let out = agent(&["write-image", "--help"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for flag in ["--url", "--target", "--checksum", "--os-hash-algo", "--no-verify", "--format"] {
        assert!(stdout.contains(flag), "{flag} missing from:\n{stdout}");
    }
    let top = text(&agent(&["--help"]).stdout);
    assert!(top.contains("write-image"), "{top}");
}
