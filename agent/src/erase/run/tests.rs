use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::fixtures::{DiskSpec, HostBuilder};

fn device(name: &str, size: u64) -> EraseDevice {
    EraseDevice {
        name: name.to_owned(),
        path: PathBuf::from(name),
        size_bytes: size,
        partitions: Vec::new(),
    }
}

use std::path::PathBuf;

fn report(name: &str) -> DiskReport {
    DiskReport {
        device: name.to_owned(),
        method: EraseMethod::ZeroFill,
        duration_s: 0.0,
        bytes: 1,
        passes: 1,
        verification: Verification::Verified { samples: 1, bytes_checked: 1 },
        fallbacks: Vec::new(),
    }
}

#[test]
fn concurrency_from_the_node() {
    let node = |v: Value| json!({"driver_internal_info": {"disk_erasure_concurrency": v}});
    assert_eq!(erasure_concurrency(None).unwrap(), 1);
    assert_eq!(erasure_concurrency(Some(&json!({}))).unwrap(), 1);
    assert_eq!(erasure_concurrency(Some(&node(Value::Null))).unwrap(), 1);
    assert_eq!(erasure_concurrency(Some(&node(json!(4)))).unwrap(), 4);
    assert_eq!(erasure_concurrency(Some(&node(json!(" 3 ")))).unwrap(), 3);
    for bad in [json!(0), json!(-2), json!(1.5), json!("many"), json!(true)] {
        let err = erasure_concurrency(Some(&node(bad.clone()))).unwrap_err();
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
    }
}

#[test]
fn disks_run_in_parallel_up_to_the_concurrency() {
    let devices: Vec<EraseDevice> =
        (0..6).map(|i| device(&format!("/dev/sd{}", (b'a' + i) as char), 100)).collect();
    for concurrency in [1usize, 3] {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let sink = |_: Value| {};
        let results = erase_each(&devices, concurrency, &sink, PROGRESS_INTERVAL, |dev, p| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(150));
            p(100, 100);
            running.fetch_sub(1, Ordering::SeqCst);
            Ok((report(&dev.name), json!({})))
        });
        let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, want, "results keep the device order");
        assert!(results.iter().all(|(_, r)| r.is_ok()));
        assert_eq!(peak.load(Ordering::SeqCst), concurrency, "concurrency {concurrency}");
    }
}

#[test]
fn progress_is_published_while_erasing_and_at_the_end() {
    let devices = vec![device("/dev/sda", 1000), device("/dev/sdb", 2000)];
    let published = Mutex::new(Vec::new());
    let sink = |v: Value| published.lock().unwrap().push(v);
    erase_each(&devices, 1, &sink, Duration::from_millis(10), |dev, p| {
        p(dev.size_bytes / 2, dev.size_bytes);
        std::thread::sleep(Duration::from_millis(200));
        p(dev.size_bytes, dev.size_bytes);
        Ok((report(&dev.name), json!({})))
    });
    let published = published.into_inner().unwrap();
    assert_eq!(
        published.first().unwrap(),
        &json!({"erasing": {"/dev/sda": {"done": 0, "total": 1000},
                            "/dev/sdb": {"done": 0, "total": 2000}}})
    );
    assert!(
        published.iter().any(|v| v["erasing"]["/dev/sda"]["done"] == 500),
        "no interim value in {published:?}"
    );
    assert_eq!(
        published.last().unwrap(),
        &json!({"erasing": {"/dev/sda": {"done": 1000, "total": 1000},
                            "/dev/sdb": {"done": 2000, "total": 2000}}})
    );
}

#[test]
fn failures_are_aggregated_naming_every_device() {
    let devices = vec![device("/dev/sda", 1), device("/dev/sdb", 1), device("/dev/sdc", 1)];
    let sink = |_: Value| {};
    let results = erase_each(&devices, 2, &sink, PROGRESS_INTERVAL, |dev, _| {
        if dev.name == "/dev/sdb" {
            Ok((report(&dev.name), json!({"extra": 1})))
        } else {
            Err(format!("{} is on fire", dev.name))
        }
    });
    let err = finish(&Selection::default(), results).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to erase the following devices: /dev/sda: /dev/sda is on fire; \
         /dev/sdc: /dev/sdc is on fire"
    );
}

#[test]
fn result_is_keyed_by_device_with_skipped_devices_listed() {
    let sel = Selection {
        devices: vec![device("/dev/sda", 1)],
        excluded: vec![devices::ExcludedDevice {
            name: "/dev/sdb".to_owned(),
            reason: devices::Exclusion::Skipped,
        }],
    };
    let results = vec![("/dev/sda".to_owned(), Ok((report("/dev/sda"), json!({"extra": 1}))))];
    let v = finish(&sel, results).unwrap();
    assert_eq!(v["/dev/sda"]["method"], "zero_fill");
    assert_eq!(v["/dev/sda"]["extra"], 1);
    assert_eq!(v["skipped_devices"], json!({"/dev/sdb": "listed in skip_block_devices"}));
}

fn ext4_magic(path: &std::path::Path, at: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x53, 0xef], at + 1024 + 0x38).unwrap();
}

fn has_ext4_magic(path: &std::path::Path, at: u64) -> bool {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 2];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, at + 1024 + 0x38).unwrap();
    b == [0x53, 0xef]
}

#[test]
fn metadata_step_erases_partitions_then_disks_and_never_the_boot_medium() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let built = HostBuilder::new()
        .add_disk(DiskSpec::sata("sda", "0000:00:17.0", 64 * MIB).partition(8 * MIB).backing_file())
        .add_disk(DiskSpec::sata("sdb", "0000:00:17.0", 64 * MIB).partition(8 * MIB).backing_file())
        .cmdline("root=/dev/sda1")
        .file("/dev/sdb1", vec![0u8; 8 << 20])
        .file("/dev/sda1", vec![0u8; 8 << 20])
        .build(dir.path())
        .unwrap();
    let host = &built.host;
    for dev in ["/dev/sda", "/dev/sdb", "/dev/sda1", "/dev/sdb1"] {
        ext4_magic(&host.path(dev), 0);
    }
    let published = Mutex::new(Vec::new());
    let sink = |v: Value| published.lock().unwrap().push(v);
    let out = erase_devices_metadata(host, None, &EraseConfig::default(), &sink).unwrap();
    // The boot medium and its partition keep their signatures.
    assert!(has_ext4_magic(&host.path("/dev/sda"), 0));
    assert!(has_ext4_magic(&host.path("/dev/sda1"), 0));
    assert!(!has_ext4_magic(&host.path("/dev/sdb"), 0));
    assert!(!has_ext4_magic(&host.path("/dev/sdb1"), 0));
    let removed = &out["/dev/sdb"]["signatures_removed"];
    assert_eq!(
        removed,
        &json!([{"device": "/dev/sdb1", "name": "ext2", "offset": 1080},
                {"device": "/dev/sdb", "name": "ext2", "offset": 1080}])
    );
    assert_eq!(out["/dev/sdb"]["method"], "metadata");
    assert_eq!(out["/dev/sdb"]["bytes"], 1024);
    assert_eq!(
        out["skipped_devices"]["/dev/sda"],
        "in use by the running system (root=/dev/sda1 on the kernel command line)"
    );
    assert!(out.get("/dev/sda").is_none());
    assert!(!published.lock().unwrap().is_empty());
}

#[test]
fn metadata_step_failure_names_the_device() {
    let dir = tempfile::tempdir().unwrap();
    // No backing file: the device node cannot be opened.
    let built = HostBuilder::new()
        .add_disk(DiskSpec::sata("sda", "0000:00:17.0", 1 << 20))
        .build(dir.path())
        .unwrap();
    let config = EraseConfig { guard_special_filesystems: false, ..EraseConfig::default() };
    let sink = |_: Value| {};
    let err = erase_devices_metadata(&built.host, None, &config, &sink).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("failed to erase the following devices: /dev/sda: cannot open"),
        "{text}"
    );
}

#[test]
fn full_and_express_steps_over_fixture_disks() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let built = HostBuilder::new()
        .add_disk(DiskSpec::sata("sda", "0000:00:17.0", 8 * MIB).backing_file())
        .add_disk(DiskSpec::sata("sdb", "0000:00:17.0", 8 * MIB).backing_file())
        .add_disk(DiskSpec::virtio("vda", "0000:00:04.0", 8 * MIB).backing_file())
        .file("/proc/mounts", "/dev/sda / ext4 rw 0 0\n")
        .build(dir.path())
        .unwrap();
    let host = &built.host;
    for dev in ["/dev/sda", "/dev/sdb", "/dev/vda"] {
        std::fs::write(host.path(dev), vec![0xa5u8; 8 << 20]).unwrap();
        ext4_magic(&host.path(dev), 0);
    }
    let node = json!({"driver_internal_info": {
        "agent_erase_devices_iterations": 0, "disk_erasure_concurrency": 2}});
    let sink = |_: Value| {};
    let out = erase_devices(host, Some(&node), &EraseConfig::default(), &sink).unwrap();
    for dev in ["/dev/sdb", "/dev/vda"] {
        assert_eq!(out[dev]["method"], "zero_fill", "{dev}: {}", out[dev]);
        assert_eq!(out[dev]["verification"]["outcome"], "verified", "{dev}");
        assert!(std::fs::read(host.path(dev)).unwrap().iter().all(|&b| b == 0), "{dev}");
    }
    assert!(out.get("/dev/sda").is_none());
    let boot = std::fs::read(host.path("/dev/sda")).unwrap();
    assert_eq!(boot[0], 0xa5, "the mounted disk was written");

    // Express: regular files have no hardware erase, so their metadata goes.
    ext4_magic(&host.path("/dev/sdb"), 0);
    let out = erase_devices_express(host, None, &EraseConfig::default(), &sink).unwrap();
    assert_eq!(out["/dev/sdb"]["method"], "metadata", "{}", out["/dev/sdb"]);
    assert_eq!(out["/dev/sdb"]["signatures_removed"][0]["name"], "ext2");
    assert!(!has_ext4_magic(&host.path("/dev/sdb"), 0));
    assert!(has_ext4_magic(&host.path("/dev/sda"), 0));

    let bad = json!({"driver_internal_info": {"agent_erase_devices_iterations": "lots"}});
    let err = erase_devices(host, Some(&bad), &EraseConfig::default(), &sink).unwrap_err();
    assert!(matches!(err, EraseStepError::Options(_)), "{err:?}");
}
