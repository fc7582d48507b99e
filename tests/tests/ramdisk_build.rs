//! The deploy ramdisk builder (`image-elements/build`) run for real: a Debian kernel and
//! busybox downloaded with apt, the static agent, modules with their dependencies, an
//! ISO for BIOS and UEFI. Checks the size target, what the initramfs holds (read back
//! with `cpio`), that a second build gives the same bytes, the builder's refusals, and
//! that the ramdisk boots in QEMU (TCG) — directly and from its ISO under UEFI — and its
//! agent reaches a conductor through user networking that can reach nothing else.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferric_tests::fake_conductor::{FakeConductor, FakeConductorConfig};
use ferric_tests::qemu::UnpackedQemu;
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

/// What the shared build was made from and where it is.
struct Built {
    dir: PathBuf,
    agent: PathBuf,
    key: PathBuf,
}

const MAC: &str = "52:54:00:12:34:56";

/// One full build (every element) shared by the tests of this file, made on first use.
fn built() -> Result<&'static Built, String> {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let agent = preconditions()?;
            // Kept for the whole test run; the process exit leaves it to the OS tmp cleaner.
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?.keep();
            let key = dir.join("id.pub");
            std::fs::write(&key, TEST_KEY).map_err(|e| e.to_string())?;
            let out = dir.join("first");
            let args = full_build_args(&out, &agent, &key);
            let output = build(&args.iter().map(String::as_str).collect::<Vec<_>>());
            if !output.status.success() {
                return Err(format!(
                    "build failed ({}):\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            Ok(Built { dir: out, agent, key })
        })
        .as_ref()
        .map_err(Clone::clone)
}

const TEST_KEY: &str = "ssh-ed25519 \
    AAAAC3NzaC1lZDI1NTE5AAAAIFerricTestKeyOnlyForTheRamdiskBuild operator@example\n";

fn full_build_args(out: &Path, agent: &Path, key: &Path) -> Vec<String> {
    vec![
        "--elements".to_owned(),
        "base,kernel,ferric-agent,ca-bundle,debug-ssh".to_owned(),
        "-o".to_owned(),
        out.display().to_string(),
        "--agent".to_owned(),
        agent.display().to_string(),
        "--authorized-keys".to_owned(),
        key.display().to_string(),
        "--cmdline".to_owned(),
        ISO_CMDLINE.to_owned(),
    ]
}

/// What the ISO's boot entry passes: the conductor as the VM lab forwards it. The agent
/// advertises its own address, which only the guest network knows.
const ISO_CMDLINE: &str =
    "console=ttyS0,115200n8 ipa-api-url=http://10.0.2.100 ipa-enable-auto-tls=0";

#[test]
fn the_ramdisk_is_small_complete_bootable_media_and_reproducible() {
    let built = match built() {
        Ok(built) => built,
        Err(why) if why.starts_with("build failed") => panic!("{why}"),
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let (first, agent, key) = (&built.dir, &built.agent, &built.key);
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("second");

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
    assert_eq!(extract(&initramfs_path, "usr/bin/ferric-agent"), std::fs::read(agent).unwrap());
    assert_eq!(extract(&initramfs_path, "root/.ssh/authorized_keys"), std::fs::read(key).unwrap());
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
    let mut args = full_build_args(&second, agent, key);
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

/// A QEMU process killed and reaped on drop; its serial console goes to a file.
struct Vm {
    child: Child,
    console: PathBuf,
}

impl Vm {
    fn console(&self) -> String {
        let text = std::fs::read(&self.console).unwrap_or_default();
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts a VM with 512 MiB, a 1 GiB sparse virtio disk and a virtio NIC whose user
/// network reaches nothing but the fake conductor (as `http://10.0.2.100`, through socat)
/// and exposes the agent's port 9999 on `127.0.0.1:agent_port`.
fn start_vm(
    qemu: &UnpackedQemu,
    dir: &Path,
    conductor_port: u16,
    agent_port: u16,
    boot: &[String],
) -> Vm {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(1 << 30).unwrap();
    let console = dir.join("console.log");
    let netdev = format!(
        "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:{conductor_port},\
         hostfwd=tcp:127.0.0.1:{agent_port}-:9999"
    );
    let child = qemu
        .command()
        .args(["-m", "512", "-serial"])
        .arg(format!("file:{}", console.display()))
        .args(["-netdev", &netdev, "-device"])
        .arg(format!("virtio-net-pci,netdev=n0,mac={MAC}"))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw,cache=unsafe", disk.display()))
        .args(boot)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting qemu-system-x86_64");
    Vm { child, console }
}

/// The kernel command line that points the agent at the fake conductor and advertises
/// the host side of the port forward.
fn agent_cmdline(agent_port: u16) -> String {
    format!(
        "console=ttyS0,115200n8 ipa-api-url=http://10.0.2.100 ipa-advertise-host=127.0.0.1 \
         ipa-advertise-port={agent_port} ipa-enable-auto-tls=0"
    )
}

/// Waits for the first heartbeat and checks the agent behind it: reachable through the
/// forward, taking the token, reporting the VM's real disk and NIC.
async fn first_heartbeat_and_inventory(
    fake: &FakeConductor,
    vm: &mut Vm,
    agent_port: u16,
    started: Instant,
) -> (Duration, Duration) {
    let timings =
        first_heartbeat(fake, vm, started, &format!("http://127.0.0.1:{agent_port}")).await;
    let callback = fake.last_callback().expect("an accepted heartbeat");
    let token = fake.token().expect("the lookup issued a token");
    let http = reqwest::Client::new();
    let reply = http
        .post(format!("{}/v1/commands/?wait=true&agent_token={token}", callback.callback_url))
        .json(&serde_json::json!({"name": "poll.get_hardware_info", "params": {}}))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap_or_else(|e| panic!("agent API through the forward: {e}\n{}", vm.console()));
    assert_eq!(reply.status(), 200);
    let result: Value = reply.json().await.unwrap();
    assert_eq!(result["command_status"], "SUCCEEDED", "{result:#}");
    let inventory = &result["command_result"];
    let disks = inventory["disks"].as_array().cloned().unwrap_or_default();
    assert!(
        disks.iter().any(|d| d["name"] == "/dev/vda" && d["size"] == 1u64 << 30),
        "the 1 GiB virtio disk is missing: {inventory:#}"
    );
    let interfaces = inventory["interfaces"].as_array().cloned().unwrap_or_default();
    assert!(
        interfaces.iter().any(|i| i["mac_address"] == MAC && i["ipv4_address"] == "10.0.2.15"),
        "the NIC is missing: {inventory:#}"
    );
    assert!(vm.child.try_wait().unwrap().is_none(), "the VM is still running");
    timings
}

/// Waits for the first heartbeat; returns the times of the first lookup and of that
/// heartbeat, from `started`. The agent must call back at `callback_url`.
async fn first_heartbeat(
    fake: &FakeConductor,
    vm: &Vm,
    started: Instant,
    callback_url: &str,
) -> (Duration, Duration) {
    let deadline = Duration::from_secs(240);
    let Some(heartbeat) = fake.wait_for_heartbeats(1, deadline).await else {
        panic!("no heartbeat within {deadline:?}; console:\n{}", vm.console());
    };
    let lookup = fake.lookups().first().map(|l| l.at.duration_since(started)).unwrap_or_default();
    let callback = fake.last_callback().expect("an accepted heartbeat");
    assert_eq!(callback.callback_url, callback_url, "{}", vm.console());
    (lookup, heartbeat[0].at.duration_since(started))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ramdisk_boots_and_its_agent_reaches_the_conductor() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let built = match built() {
        Ok(built) => built,
        Err(why) if why.starts_with("build failed") => panic!("{why}"),
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let socat = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("socat").is_file()));
    if !socat {
        println!("skipped: `socat` is not installed (.ci/run installs it)");
        return;
    }
    let qemu = UnpackedQemu::prepare(&workspace().join("target/vm-lab/qemu"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().unwrap();
    let mut timings = Vec::new();

    // Direct kernel boot (BIOS), then the ISO under UEFI, each against a fresh conductor.
    for how in ["kernel + initramfs", "ISO under UEFI"] {
        let fake = FakeConductor::start(FakeConductorConfig::default()).await.unwrap();
        let agent_port = free_port();
        let vm_dir = dir.path().join(how.replace([' ', '+'], "-"));
        std::fs::create_dir_all(&vm_dir).unwrap();
        let boot: Vec<String> = if how.starts_with("kernel") {
            vec![
                "-kernel".into(),
                built.dir.join("ferric-agent.kernel").display().to_string(),
                "-initrd".into(),
                built.dir.join("ferric-agent.initramfs").display().to_string(),
                "-append".into(),
                agent_cmdline(agent_port),
            ]
        } else {
            let (code, vars_template) = qemu.ovmf();
            let vars = vm_dir.join("OVMF_VARS.fd");
            std::fs::copy(vars_template, &vars).unwrap();
            vec![
                "-machine".into(),
                "q35".into(),
                "-drive".into(),
                format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars.display()),
                "-cdrom".into(),
                built.dir.join("ferric-agent.iso").display().to_string(),
            ]
        };
        let started = Instant::now();
        let mut vm = start_vm(&qemu, &vm_dir, fake.addr().port(), agent_port, &boot);
        let (lookup, heartbeat) = if how.starts_with("kernel") {
            first_heartbeat_and_inventory(&fake, &mut vm, agent_port, started).await
        } else {
            first_heartbeat(&fake, &vm, started, "http://10.0.2.15:9999").await
        };
        let console = vm.console();
        assert!(console.contains("ferric-ramdisk: starting ferric-agent"), "{console}");
        assert!(console.contains("has 10.0.2.15/24"), "{console}");
        timings.push((how, lookup, heartbeat));
    }
    for (how, lookup, heartbeat) in timings {
        println!(
            "{how}: QEMU start → first lookup {:.1} s, → first heartbeat {:.1} s (TCG)",
            lookup.as_secs_f64(),
            heartbeat.as_secs_f64()
        );
    }
}
