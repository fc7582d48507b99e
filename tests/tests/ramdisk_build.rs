//! The deploy ramdisk builder (`image-elements/build`) run for real: a Debian kernel and
//! busybox downloaded with apt, the static agent, modules with their dependencies, an
//! ISO for BIOS and UEFI. Checks the size target, what the initramfs holds (read back
//! with `cpio`), that a second build gives the same bytes, and the builder's refusals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const SOURCE_DATE_EPOCH: &str = "1700000000";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The static agent that `tests/run-all.sh` builds, or why the test cannot run.
fn agent() -> Result<PathBuf, String> {
    let Some(path) = std::env::var_os("FERRIC_AGENT_BIN") else {
        return Err("FERRIC_AGENT_BIN is not set (tests/run-all.sh builds the static agent \
                    and sets it)"
            .into());
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!("FERRIC_AGENT_BIN={} is not a file", path.display()));
    }
    Ok(path)
}

fn preconditions() -> Result<PathBuf, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: the initramfs holds device nodes".into());
    }
    for tool in ["apt-get", "cpio", "xz", "depmod", "grub-mkrescue", "xorriso", "mformat"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(format!(
                "`{tool}` is not installed (.ci/run installs cpio kmod xorriso grub-common \
                 grub-pc-bin grub-efi-amd64-bin mtools)"
            ));
        }
    }
    agent()
}

fn build(args: &[&str]) -> Output {
    let cache = workspace().join("target/image-elements-cache");
    Command::new(workspace().join("image-elements/build"))
        .args(args)
        .arg("--cache")
        .arg(cache)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .output()
        .expect("running image-elements/build")
}

fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "build failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `cpio -itv` of the xz-compressed initramfs: (mode string, owner, group, path) per line.
fn listing(initramfs: &Path) -> Vec<(String, String, String, String)> {
    let script = format!("xz -dc '{}' | cpio -itv --quiet --numeric-uid-gid", initramfs.display());
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            // Device nodes show "major, minor" where others show a size.
            let skip = if words[0].starts_with(['c', 'b']) { 9 } else { 8 };
            let path = words[skip..].join(" ");
            let path = path.split(" -> ").next().unwrap_or_default().to_owned();
            (words[0].to_owned(), words[2].to_owned(), words[3].to_owned(), path)
        })
        .collect()
}

/// One file of the initramfs.
fn extract(initramfs: &Path, member: &str) -> Vec<u8> {
    let script =
        format!("xz -dc '{}' | cpio -i --to-stdout --quiet '{member}'", initramfs.display());
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn the_ramdisk_is_small_complete_bootable_media_and_reproducible() {
    let agent = match preconditions() {
        Ok(agent) => agent,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id.pub");
    std::fs::write(&key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFerricTestKeyOnlyForTheRamdiskBuild operator@example\n")
        .unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let elements = "base,kernel,ferric-agent,ca-bundle,debug-ssh";
    let common = |out: &Path| {
        vec![
            "--elements".to_owned(),
            elements.to_owned(),
            "-o".to_owned(),
            out.display().to_string(),
            "--agent".to_owned(),
            agent.display().to_string(),
            "--authorized-keys".to_owned(),
            key.display().to_string(),
        ]
    };
    let args = common(&first);
    succeeded(&build(&args.iter().map(String::as_str).collect::<Vec<_>>()));

    // The manifest names what went in and matches what came out.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(first.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["elements"],
        serde_json::json!(["base", "kernel", "ferric-agent", "ca-bundle", "debug-ssh"])
    );
    let kver = manifest["kernel_version"].as_str().unwrap().to_owned();
    assert!(kver.ends_with("-amd64"), "{manifest:#}");
    for file in ["ferric-agent.kernel", "ferric-agent.initramfs", "ferric-agent.iso"] {
        let path = first.join(file);
        assert_eq!(manifest["files"][file]["sha256"], sha256(&path), "{file}");
        assert_eq!(manifest["files"][file]["size"], std::fs::metadata(&path).unwrap().len());
    }
    let kernel = std::fs::metadata(first.join("ferric-agent.kernel")).unwrap().len();
    let initramfs_path = first.join("ferric-agent.initramfs");
    let initramfs = std::fs::metadata(&initramfs_path).unwrap().len();
    println!(
        "kernel {:.1} MiB + initramfs {:.1} MiB = {:.1} MiB; ISO {:.1} MiB",
        kernel as f64 / MIB as f64,
        initramfs as f64 / MIB as f64,
        (kernel + initramfs) as f64 / MIB as f64,
        std::fs::metadata(first.join("ferric-agent.iso")).unwrap().len() as f64 / MIB as f64
    );
    assert!(kernel + initramfs <= 32 * MIB, "kernel + initramfs exceed 32 MiB");

    // What the initramfs holds, all owned by root.
    let entries = listing(&initramfs_path);
    let find = |path: &str| {
        entries
            .iter()
            .find(|(_, _, _, p)| p == path)
            .unwrap_or_else(|| panic!("{path} is not in the initramfs"))
            .clone()
    };
    assert!(entries.iter().all(|(_, uid, gid, _)| uid == "0" && gid == "0"));
    assert!(find("dev/console").0.starts_with('c'), "a character device");
    assert!(find("init").0.starts_with("-rwxr-xr-x"));
    assert!(find("root/.ssh/authorized_keys").0.starts_with("-rw-------"));
    find("bin/busybox");
    find("sbin/udhcpc");
    find("etc/udhcpc/default.script");
    find("etc/ssl/certs/ca-certificates.crt");
    find("usr/sbin/dropbear");
    assert_eq!(extract(&initramfs_path, "usr/bin/ferric-agent"), std::fs::read(&agent).unwrap());
    assert_eq!(extract(&initramfs_path, "root/.ssh/authorized_keys"), std::fs::read(&key).unwrap());
    // Modules of the list are there with what they depend on, and depmod knows them.
    let modules: Vec<&str> =
        manifest["modules"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for needed in ["virtio_net", "net_failover", "failover", "virtio_blk", "nvme", "ipmi_si"] {
        assert!(modules.contains(&needed), "{needed} missing from {modules:?}");
    }
    let dep =
        String::from_utf8(extract(&initramfs_path, &format!("lib/modules/{kver}/modules.dep")))
            .unwrap();
    let virtio_net = dep
        .lines()
        .find(|l| l.contains("/virtio_net.ko"))
        .unwrap_or_else(|| panic!("virtio_net not in modules.dep"));
    assert!(virtio_net.contains("net_failover.ko"), "{virtio_net}");
    for line in dep.lines() {
        let module = line.split(':').next().unwrap();
        find(&format!("lib/modules/{kver}/{module}"));
    }

    // The ISO boots on BIOS and UEFI, with the same kernel and initramfs.
    let iso = first.join("ferric-agent.iso");
    let report = Command::new("xorriso")
        .args(["-indev"])
        .arg(&iso)
        .args(["-report_el_torito", "plain"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(report.contains("BIOS  y"), "{report}");
    assert!(report.contains("UEFI  y"), "{report}");
    let copied = dir.path().join("from-iso");
    let status = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&iso)
        .args(["-extract", "/boot/initramfs"])
        .arg(&copied)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_eq!(sha256(&copied), sha256(&initramfs_path));

    // Same inputs, same bytes.
    let mut args = common(&second);
    args.push("--no-iso".into());
    succeeded(&build(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(sha256(&second.join("ferric-agent.initramfs")), sha256(&initramfs_path));
    assert!(!second.join("ferric-agent.iso").exists());
}

#[test]
fn the_builder_refuses_bad_input_by_name() {
    if let Err(why) = preconditions() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--elements", "base,kernel,turbo", "-o", out], "unknown element 'turbo'"),
        (&["--elements", "base,ferric-agent", "-o", out], "element 'kernel' is required"),
        (
            &["--elements", "base,kernel", "-o", out, "--frobnicate"],
            "unknown argument: --frobnicate",
        ),
        (&["--elements", "base,kernel"], "-o OUTDIR is required"),
    ];
    for (args, words) in cases {
        let output = build(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
    // Element checks: a dynamically linked agent, debug-ssh without keys.
    let output = build(&[
        "--elements",
        "base,kernel,ferric-agent",
        "-o",
        out,
        "--agent",
        "/bin/ls",
        "--no-iso",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("dynamically linked"), "{stderr}");
    let output = build(&["--elements", "base,kernel,debug-ssh", "-o", out, "--no-iso"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("--authorized-keys"), "{stderr}");
    // Nothing half-made is left behind.
    assert!(!Path::new(out).join("ferric-agent.initramfs").exists());
}
