//! Everything the cycle runs against, started in one directory: the real `ferric
//! conductor` on its embedded SQLite store (the deploy ramdisk and the test image in its
//! image directory), the bootable test image, and the [`VmLab`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use super::cycle::DeployImage;
use super::{LabSpec, VmLab, CONDUCTOR_GUEST_URL};
use crate::conductor_process::ConductorProcess;
use crate::qemu::UnpackedQemu;
use crate::stamp_image;

/// The deploy image's file name in the conductor's image directory.
pub const IMAGE_NAME: &str = "stamp.qcow2";
/// The server's disk (sparse): at least the 4 GiB an agent accepts as a root disk
/// without hints.
pub const DISK_BYTES: u64 = 8 << 30;

/// Where everything comes from.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// Working directory; must not exist yet or be empty.
    pub dir: PathBuf,
    /// The `ferric` binary.
    pub ferric: PathBuf,
    /// The `ferric-lab` binary (the BMC's chassis hook).
    pub hook: PathBuf,
    /// An `image-elements/build` output: `ferric-agent.kernel` and `.initramfs`.
    pub ramdisk: PathBuf,
    /// Where QEMU and other Debian packages are unpacked and kept between runs.
    pub cache: PathBuf,
    /// What the deployed system prints once it boots (letters, digits and `-`).
    pub stamp: String,
}

/// A running stack; dropping it stops the lab, then the conductor.
#[derive(Debug)]
pub struct Stack {
    pub lab: VmLab,
    pub conductor: ConductorProcess,
    pub image: DeployImage,
}

/// The conductor's configuration for the lab: agents reach it as `http://10.0.2.100`,
/// the ramdisk is the default deploy kernel and ramdisk, cleaning runs only the metadata
/// erase, and the waits are short so that the cycle does not idle under TCG (the lab
/// network has no switch, so the LLDP listen is cut short).
fn conductor_config() -> String {
    format!(
        "public_url = \"{CONDUCTOR_GUEST_URL}\"

[deploy]
deploy_kernel = \"ferric-agent.kernel\"
deploy_ramdisk = \"ferric-agent.initramfs\"
kernel_append_params = \"console=ttyS0,115200n8\"

[cleaning]
erase_devices_priority = 0

[agent]
heartbeat_timeout = 10
post_deploy_get_power_state_retry_interval = 1
post_deploy_get_power_state_retries = 30

[power]
sync_interval = 10

[inspector]
extra_kernel_params = \"ipa-collect-lldp=1 ipa-lldp-timeout=2\"
"
    )
}

fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

impl Stack {
    pub async fn start(spec: &StackSpec) -> anyhow::Result<Stack> {
        // reqwest's TLS needs a process-wide crypto provider (a second install is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        for name in ["ferric-agent.kernel", "ferric-agent.initramfs"] {
            if !spec.ramdisk.join(name).is_file() {
                bail!(
                    "{} has no {name}: build the ramdisk first (image-elements/build)",
                    spec.ramdisk.display()
                );
            }
        }
        for (tool, package) in
            [("ipmi_sim", "openipmi"), ("ipmitool", "ipmitool"), ("socat", "socat")]
        {
            if !super::have(tool) {
                bail!("`{tool}` is not installed (Debian package {package})");
            }
        }
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("creating {}", spec.dir.display()))?;
        let qemu = UnpackedQemu::prepare(&spec.cache.join("qemu")).context("preparing QEMU")?;

        let busybox = stamp_image::busybox_static(&spec.cache.join("debs"))?;
        std::fs::create_dir_all(spec.dir.join("image"))?;
        let built = stamp_image::build(
            &spec.dir.join("image"),
            &spec.ramdisk.join("ferric-agent.kernel"),
            &busybox,
            &spec.stamp,
        )
        .context("building the deploy image")?;

        let data = spec.dir.join("conductor");
        let images = data.join("images");
        std::fs::create_dir_all(&images)?;
        for name in ["ferric-agent.kernel", "ferric-agent.initramfs"] {
            link_or_copy(&spec.ramdisk.join(name), &images.join(name))?;
        }
        link_or_copy(&built.qcow2, &images.join(IMAGE_NAME))?;
        let config = spec.dir.join("ferric.toml");
        std::fs::write(&config, conductor_config())?;
        let mut conductor =
            ConductorProcess::start_with_config(&spec.ferric, &data, Some(&config))?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        conductor.wait_ready(&http).await?;
        let boot_script = http
            .get(format!("{}/boot.ipxe", conductor.base_url()))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let port: u16 = conductor
            .base_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("the conductor's port")?;
        let lab = VmLab::start(&LabSpec {
            dir: spec.dir.join("lab"),
            hook: spec.hook.clone(),
            qemu,
            conductor_port: port,
            boot_script,
            disk_bytes: DISK_BYTES,
        })?;
        let image = DeployImage {
            name: IMAGE_NAME.to_owned(),
            sha256: built.qcow2_sha256.clone(),
            path: built.qcow2.clone(),
            stamp_line: stamp_image::stamp_line(&spec.stamp),
        };
        Ok(Stack { lab, conductor, image })
    }

    /// The lab's report and the conductor's log tail, for a failure.
    pub fn report(&self) -> String {
        format!(
            "{}--- conductor log (last 60 lines of {})\n{}\n",
            self.lab.report(40),
            self.conductor.log_path().display(),
            self.conductor.log_lines(60)
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.lab.stop();
        self.conductor.stop();
    }
}
