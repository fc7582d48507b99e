//! End to end: a virtual server behind a real IPMI BMC (`ipmi_sim`) network-boots the
//! deploy ramdisk through iPXE, is cleaned, receives a bootable qcow2 whole-disk image,
//! boots it from its own disk, and is cleaned again — driven by the real `ferric
//! conductor` through its API. See `ferric_tests::vm_lab` for the lab itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ferric_tests::vm_lab::cycle::{self, Printer};
use ferric_tests::vm_lab::stack::{Stack, StackSpec};
use ferric_tests::workspace_bin::workspace_binary;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Why the test cannot run here, if it cannot.
fn missing_precondition() -> Option<String> {
    if std::env::var_os("FERRIC_AGENT_BIN").is_none() {
        return Some(
            "FERRIC_AGENT_BIN is not set (tests/run-all.sh builds the static agent and sets it)"
                .into(),
        );
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: the ramdisk's initramfs holds device nodes".into());
    }
    let tools = [
        ("ipmi_sim", "openipmi"),
        ("ipmitool", "ipmitool"),
        ("socat", "socat"),
        ("qemu-img", "qemu-utils"),
        ("sfdisk", "fdisk"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("syslinux", "syslinux"),
        ("cpio", "cpio"),
        ("depmod", "kmod"),
        ("apt-get", "apt"),
    ];
    for (tool, package) in tools {
        if !ferric_tests::vm_lab::have(tool) {
            return Some(format!("`{tool}` is not installed (Debian package {package})"));
        }
    }
    None
}

/// The deploy ramdisk (kernel + initramfs, no ISO) built from the static agent.
fn build_ramdisk(out: &Path) -> PathBuf {
    let agent = std::env::var_os("FERRIC_AGENT_BIN").unwrap();
    let output = Command::new(workspace().join("image-elements/build"))
        .args(["--elements", "base,kernel,ferric-agent", "--no-iso", "-o"])
        .arg(out)
        .arg("--agent")
        .arg(agent)
        .arg("--cache")
        .arg(workspace().join("target/image-elements-cache"))
        .output()
        .expect("running image-elements/build");
    assert!(
        output.status.success(),
        "building the ramdisk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_is_cleaned_deployed_boots_its_disk_and_is_cleaned_again() {
    if let Some(why) = missing_precondition() {
        println!("skipped: {why}");
        return;
    }
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ramdisk = build_ramdisk(&dir.path().join("ramdisk"));
    let ferric = workspace_binary("ferric-conductor", "ferric").unwrap();
    let stamp = format!("e2e-{:016x}", fastrand::u64(..));
    let spec = StackSpec {
        dir: dir.path().join("stack"),
        ferric,
        hook: PathBuf::from(env!("CARGO_BIN_EXE_ferric-lab")),
        ramdisk,
        cache: workspace().join("target/vm-lab"),
        stamp,
    };
    let stack = Stack::start(&spec).await.unwrap_or_else(|e| panic!("starting the lab: {e:#}"));
    let prepared = began.elapsed();
    let narrator = Printer(Instant::now());
    let timings =
        match cycle::run(stack.conductor.base_url(), &stack.lab, &stack.image, &narrator).await {
            Ok(timings) => timings,
            Err(e) => {
                let report = stack.report();
                drop(stack);
                // The whole lab (every console, the conductor's log, the disk) stays for a look.
                let kept = dir.keep();
                panic!("{e:#}\n{report}\nthe lab's files are kept in {}", kept.display())
            }
        };
    // One ramdisk boot each for provide, deploy and undeploy, and each heartbeat seen.
    assert_eq!(timings.power_on_to_heartbeat.len(), 3, "{timings:?}\n{}", stack.report());
    // The BMC really drove the server: every power-on was through ipmi_sim's hook, and
    // the disk boot came after the conductor set the boot device back to the disk.
    let calls: Vec<String> = stack.lab.chassis_calls().iter().map(|c| c.args.join(" ")).collect();
    let last_disk = calls.iter().rposition(|c| c == "set boot default");
    let last_pxe = calls.iter().rposition(|c| c == "set boot pxe");
    assert!(last_disk.is_some() && last_pxe.is_some(), "{calls:?}");
    println!(
        "\nlab prepared in {:.1} s (ramdisk build, image, conductor, BMC)\n{}",
        prepared.as_secs_f64(),
        timings.table()
    );
    println!("e2e test total: {:.1} s", began.elapsed().as_secs_f64());
}
