//! Writing the instance image: `standby.prepare_image`, the `write_image` deploy step
//! (which runs the same thing) and `standby.get_partition_uuids`.
//!
//! The command validates `image_info`, picks the target disk, turns both into an
//! [`image::pipeline::WriteRequest`](crate::image::pipeline::WriteRequest) and runs the
//! pipeline on a blocking thread, publishing its progress into the running command's
//! `command_result` every second and into the log every few seconds.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferric_shared::image_info::{ChecksumSelectionError, ImageInfo, ImageInfoError};
use ferric_shared::partition_uuids::PartitionUuids;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::LiveResult;
use crate::host::HostRoot;
use crate::image::pipeline::{self, ImageRequestError, WriteError, WriteReport, WriteRequest};
use crate::image::progress::{Progress, ProgressSnapshot};
use crate::image::source::{HttpOptions, SourceError};
use crate::target_disk::{self, TargetDisk, TargetDiskError};

/// How often a running write republishes its progress in `command_result`.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How often a running write logs its progress.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What the image commands keep between runs.
#[derive(Debug, Default)]
pub struct DeployContext {
    /// The download settings from the agent's configuration (CA, `ipa-insecure`, retry
    /// flags); each image adds its own auth and proxies.
    pub http: HttpOptions,
    written: Mutex<Option<WrittenImage>>,
}

/// The image this agent has written since it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    pub image_id: String,
    /// The device as the host names it (`/dev/sda`).
    pub device: String,
    /// The GPT disk GUID or the MBR signature (`0x%08x`), when the disk has either.
    pub disk_id: Option<String>,
}

impl DeployContext {
    pub fn new(http: HttpOptions) -> Self {
        Self { http, written: Mutex::new(None) }
    }

    pub fn written(&self) -> Option<WrittenImage> {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_written(&self, image: WrittenImage) {
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(image);
    }

    /// The `get_partition_uuids` result: `{}` before an image is written, then the disk
    /// identifier as `root uuid` (whole-disk images only, so far).
    pub fn partition_uuids(&self) -> PartitionUuids {
        match self.written() {
            Some(image) => PartitionUuids::whole_disk(image.disk_id),
            None => PartitionUuids::default(),
        }
    }
}

/// The parameters of `standby.prepare_image` (and of the `write_image` step's `args`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageParams {
    pub image_info: Value,
    #[serde(default)]
    pub configdrive: Option<String>,
}

/// A validated image write: what to write, and for which node.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageJob {
    pub info: ImageInfo,
    /// The step's / command's `configdrive`; `image_info.configdrive` when absent.
    pub configdrive: Option<String>,
    /// The node as the conductor sent it with the step; `None` uses lookup's copy.
    pub node: Option<Value>,
}

impl ImageJob {
    /// Validates `image_info` under the conductor's MD5 setting.
    pub fn from_params(
        params: ImageParams,
        node: Option<Value>,
        md5_allowed: bool,
    ) -> Result<Self, DeployError> {
        let info = ImageInfo::from_value(params.image_info, md5_allowed)
            .map_err(DeployError::InvalidImageInfo)?;
        Ok(Self { info, configdrive: params.configdrive, node })
    }
}

/// Why an image was not written.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid image_info")]
    InvalidImageInfo(#[source] ImageInfoError),
    #[error("invalid write_image arguments: {0}")]
    InvalidArgs(String),
    #[error(
        "partition images (image_type \"partition\") are not supported yet; use a whole-disk \
         image"
    )]
    PartitionImage,
    #[error("cannot tell how to verify image {image_id}")]
    Checksum {
        image_id: String,
        #[source]
        source: ChecksumSelectionError,
    },
    #[error("the image's download settings are unusable")]
    Download(#[source] SourceError),
    #[error("cannot choose the disk to write image {image_id} to")]
    TargetDisk {
        image_id: String,
        #[source]
        source: TargetDiskError,
    },
    #[error("writing image {image_id} to {device} failed")]
    Write {
        image_id: String,
        device: String,
        #[source]
        source: Box<WriteError>,
    },
    #[error("a blocking task of the image write ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

/// What a successful `prepare_image` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub image: WrittenImage,
    /// `false` when the same image had already been written in this session.
    pub written_now: bool,
}

impl Prepared {
    /// The result text, without the `prepare_image: ` prefix the executor adds.
    pub fn message(&self) -> String {
        let WrittenImage { image_id, device, disk_id } = &self.image;
        // Python's rendering of a missing value, as ironic-python-agent's message has it.
        let root = disk_id.as_deref().unwrap_or("None");
        if self.written_now {
            format!("image ({image_id}) written to device {device} root_uuid={root}")
        } else {
            format!(
                "image ({image_id}) already written to device {device} root_uuid={root}; \
                 not written again"
            )
        }
    }
}

/// The `{"progress": …}` published while a write runs.
pub fn progress_result(snapshot: &ProgressSnapshot) -> Value {
    let mut map = Map::new();
    map.insert("progress".into(), serde_json::to_value(snapshot).unwrap_or(Value::Null));
    Value::Object(map)
}

/// Builds the pipeline's request for `job` writing to `disk`.
pub fn write_request(
    job: &ImageJob,
    disk: &TargetDisk,
    base: &HttpOptions,
    md5_allowed: bool,
    permitted_formats: Option<Vec<String>>,
) -> Result<WriteRequest, DeployError> {
    let info = &job.info;
    let mut request = WriteRequest::from_image_info(
        info,
        disk.path.clone(),
        md5_allowed,
        permitted_formats,
        base.clone(),
    )
    .map_err(|e| match e {
        ImageRequestError::PartitionImage => DeployError::PartitionImage,
        ImageRequestError::Checksum(source) => {
            DeployError::Checksum { image_id: info.id.clone(), source }
        }
        ImageRequestError::Download(source) => DeployError::Download(source),
    })?;
    // The step's own argument wins over the copy in image_info.
    request.configdrive = job.configdrive.clone().or(request.configdrive).filter(|c| !c.is_empty());
    Ok(request)
}

/// Everything [`prepare_image`] needs from the agent.
#[derive(Debug)]
pub struct PrepareEnv<'a> {
    pub host: &'a HostRoot,
    pub deploy: &'a DeployContext,
    /// Lookup's node, used when the job carries none.
    pub cached_node: Option<Value>,
    pub md5_allowed: bool,
    pub permitted_formats: Option<Vec<String>>,
    pub live: &'a LiveResult,
}

/// Writes the job's image to the node's target disk, unless this session already wrote
/// that image.
pub async fn prepare_image(job: &ImageJob, env: PrepareEnv<'_>) -> Result<Prepared, DeployError> {
    let info = &job.info;
    if !info.is_whole_disk() {
        return Err(DeployError::PartitionImage);
    }
    if let Some(image) = env.deploy.written().filter(|w| w.image_id == info.id) {
        tracing::info!(image = %info.id, device = %image.device, "image already written");
        return Ok(Prepared { image, written_now: false });
    }
    let node = job.node.clone().or(env.cached_node).unwrap_or(Value::Null);
    // Reading sysfs and /proc is quick but still blocking file I/O: off the async threads.
    let host = env.host.clone();
    let disk = tokio::task::spawn_blocking(move || target_disk::select(&host, &node))
        .await
        .map_err(DeployError::Task)?
        .map_err(|source| DeployError::TargetDisk { image_id: info.id.clone(), source })?;
    tracing::info!(image = %info.id, device = %disk.name, size = disk.size_bytes, "target disk");
    let request =
        write_request(job, &disk, &env.deploy.http, env.md5_allowed, env.permitted_formats)?;
    let write = move |progress: &Progress| pipeline::write_image(&request, progress);
    let report = run_write(write, env.live).await.map_err(|e| match e {
        RunError::Task(e) => DeployError::Task(e),
        RunError::Write(source) => DeployError::Write {
            image_id: info.id.clone(),
            device: disk.name.clone(),
            source: Box::new(source),
        },
    })?;
    tracing::info!(
        image = %info.id,
        device = %disk.name,
        bytes_written = report.bytes_written,
        image_size = report.image_size,
        "image written"
    );
    let path = disk.path.clone();
    let disk_id = match tokio::task::spawn_blocking(move || read_disk_identifier(&path))
        .await
        .map_err(DeployError::Task)?
    {
        Ok(id) => id,
        Err(e) => {
            let error = crate::executor::error_chain(&e);
            tracing::warn!(device = %disk.name, %error, "cannot read the disk identifier");
            None
        }
    };
    let image = WrittenImage { image_id: info.id.clone(), device: disk.name, disk_id };
    env.deploy.set_written(image.clone());
    Ok(Prepared { image, written_now: true })
}

enum RunError {
    Task(tokio::task::JoinError),
    Write(WriteError),
}

/// Runs `write` (the pipeline) on a blocking thread; meanwhile publishes its progress.
async fn run_write<F>(write: F, live: &LiveResult) -> Result<WriteReport, RunError>
where
    F: FnOnce(&Progress) -> Result<WriteReport, WriteError> + Send + 'static,
{
    let progress = Progress::new();
    let worker_progress = progress.clone();
    let mut task = tokio::task::spawn_blocking(move || write(&worker_progress));
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_log = Instant::now();
    let outcome = loop {
        tokio::select! {
            joined = &mut task => break joined,
            _ = publish.tick() => {
                let snapshot = progress.snapshot();
                live.publish(progress_result(&snapshot));
                if last_log.elapsed() >= LOG_EVERY {
                    last_log = Instant::now();
                    log_progress(&snapshot);
                }
            }
        }
    };
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(RunError::Write(e)),
        Err(e) => Err(RunError::Task(e)),
    }
}

fn log_progress(s: &ProgressSnapshot) {
    tracing::info!(
        phase = s.phase,
        bytes_done = s.bytes_done,
        bytes_total = ?s.bytes_total,
        rate_mib_s = format!("{:.1}", s.rate_bytes_per_second / f64::from(1u32 << 20)),
        eta_seconds = ?s.eta_seconds.map(|e| e.round()),
        "writing image"
    );
}

/// Why the disk identifier could not be read.
#[derive(Debug, thiserror::Error)]
enum DiskIdError {
    #[error("opening the disk")]
    Open(#[source] std::io::Error),
    #[error(transparent)]
    Table(#[from] crate::disk::gpt::GptError),
}

/// The identifier `get_partition_uuids` reports for the written disk.
fn read_disk_identifier(path: &Path) -> Result<Option<String>, DiskIdError> {
    let file = std::fs::File::open(path).map_err(DiskIdError::Open)?;
    Ok(crate::disk::uuids::disk_identifier(&file)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::pipeline::FormatChoice;
    use base64::Engine as _;
    use ferric_shared::image_info::{ChecksumSource, ExpectedDigest, HashAlgorithm, Proxies};
    use serde_json::json;

    const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn job(image_info: Value, configdrive: Option<&str>) -> ImageJob {
        let params = ImageParams { image_info, configdrive: configdrive.map(str::to_owned) };
        ImageJob::from_params(params, None, false).unwrap()
    }

    fn disk() -> TargetDisk {
        TargetDisk { name: "/dev/sda".into(), path: "/fake/dev/sda".into(), size_bytes: 1 << 33 }
    }

    #[test]
    fn requests_carry_image_auth_proxies_and_agent_settings() {
        let auth = base64::engine::general_purpose::STANDARD.encode("Bearer abc");
        let j = job(
            json!({"id": "img", "urls": ["http://h/img.qcow2"], "disk_format": "qcow2",
                   "os_hash_algo": "sha256", "os_hash_value": SHA256,
                   "image_request_authorization": auth,
                   "image_server_auth_strategy": "http_basic",
                   "image_server_user": "u", "image_server_password": "p",
                   "proxies": {"https": "http://proxy:3128"}, "no_proxy": ".local",
                   "configdrive": "from-image-info", "node_uuid": "n"}),
            None,
        );
        let base = HttpOptions { insecure: true, retries: 2, ..HttpOptions::default() };
        let permitted = Some(vec!["raw".to_owned(), "qcow2".to_owned()]);
        let req = write_request(&j, &disk(), &base, false, permitted.clone()).unwrap();
        assert_eq!(req.urls, ["http://h/img.qcow2"]);
        assert_eq!(req.target, Path::new("/fake/dev/sda"));
        assert_eq!(
            req.checksum,
            Some(ChecksumSource::Digest(ExpectedDigest {
                algorithm: HashAlgorithm::Sha256,
                hex: SHA256.into()
            }))
        );
        assert!(!req.md5_allowed);
        assert_eq!(req.format, FormatChoice::Auto);
        assert_eq!(req.declared_disk_format.as_deref(), Some("qcow2"));
        assert_eq!(req.permitted_formats, permitted);
        assert_eq!(req.configdrive.as_deref(), Some("from-image-info"));
        assert_eq!(req.http.authorization.as_deref(), Some("Bearer abc"));
        assert_eq!(req.http.basic_auth, Some(("u".to_owned(), "p".to_owned())));
        assert_eq!(
            req.http.proxies,
            Proxies { http: None, https: Some("http://proxy:3128".into()) }
        );
        assert_eq!(req.http.no_proxy.as_deref(), Some(".local"));
        assert!(req.http.insecure);
        assert_eq!(req.http.retries, 2);

        // The command's own configdrive wins over image_info's copy.
        let j = job(
            json!({"id": "img", "urls": ["http://h/i"], "checksum": SHA256,
                   "configdrive": "inner"}),
            Some("outer"),
        );
        let req = write_request(&j, &disk(), &HttpOptions::default(), false, None).unwrap();
        assert_eq!(req.configdrive.as_deref(), Some("outer"));
        assert_eq!(req.http.authorization, None);
        assert_eq!(req.http.basic_auth, None);
    }

    #[test]
    fn request_building_refusals() {
        let bad_auth = job(
            json!({"id": "img", "urls": ["http://h/i"], "checksum": SHA256,
                   "image_request_authorization": "not base64!"}),
            None,
        );
        let err = write_request(&bad_auth, &disk(), &HttpOptions::default(), false, None);
        assert!(matches!(err, Err(DeployError::Download(_))), "{err:?}");

        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let params = ImageParams {
            image_info: json!({"id": "img", "urls": ["http://h/i"], "checksum": md5}),
            configdrive: None,
        };
        // Refused while validating unless the conductor allows MD5...
        let err = ImageJob::from_params(params.clone(), None, false).unwrap_err();
        assert!(matches!(err, DeployError::InvalidImageInfo(ImageInfoError::NoUsableChecksum)));
        // ...and then chosen as MD5.
        let j = ImageJob::from_params(params, None, true).unwrap();
        let req = write_request(&j, &disk(), &HttpOptions::default(), true, None).unwrap();
        assert!(matches!(
            req.checksum,
            Some(ChecksumSource::Digest(ExpectedDigest { algorithm: HashAlgorithm::Md5, .. }))
        ));
    }

    #[test]
    fn messages() {
        let image = WrittenImage {
            image_id: "img".into(),
            device: "/dev/sda".into(),
            disk_id: Some("0x0000abcd".into()),
        };
        let now = Prepared { image: image.clone(), written_now: true };
        assert_eq!(now.message(), "image (img) written to device /dev/sda root_uuid=0x0000abcd");
        let again = Prepared { image: WrittenImage { disk_id: None, ..image }, written_now: false };
        assert_eq!(
            again.message(),
            "image (img) already written to device /dev/sda root_uuid=None; not written again"
        );
    }

    #[test]
    fn disk_identifier_of_the_written_disk() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        let sig: &[u8] = &[0x55, 0xaa];
        for (offset, data) in [(440u64, &[0xcd, 0xab, 0x34, 0x12][..]), (510, sig)] {
            std::os::unix::fs::FileExt::write_all_at(f.as_file(), data, offset).unwrap();
        }
        assert_eq!(read_disk_identifier(f.path()).unwrap().as_deref(), Some("0x1234abcd"));
        let blank = tempfile::NamedTempFile::new().unwrap();
        blank.as_file().set_len(1 << 20).unwrap();
        assert_eq!(read_disk_identifier(blank.path()).unwrap(), None);
        assert!(read_disk_identifier(Path::new("/nonexistent/disk")).is_err());
    }

    #[tokio::test]
    async fn the_same_image_is_not_written_twice() {
        let deploy = DeployContext::default();
        let written = WrittenImage {
            image_id: "img".into(),
            device: "/dev/vda".into(),
            disk_id: Some("0x00c0ffee".into()),
        };
        deploy.set_written(written.clone());
        // A host with no disks at all: choosing one would fail, so success proves the
        // write was skipped before any disk was looked at.
        let empty = tempfile::tempdir().unwrap();
        let host = HostRoot::new(empty.path());
        let live = LiveResult::detached();
        let env = || PrepareEnv {
            host: &host,
            deploy: &deploy,
            cached_node: None,
            md5_allowed: false,
            permitted_formats: None,
            live: &live,
        };
        let same = job(json!({"id": "img", "urls": ["http://h/i"], "checksum": SHA256}), None);
        let prepared = prepare_image(&same, env()).await.unwrap();
        assert_eq!(prepared, Prepared { image: written.clone(), written_now: false });

        let other = job(json!({"id": "img-2", "urls": ["http://h/i"], "checksum": SHA256}), None);
        let err = prepare_image(&other, env()).await.unwrap_err();
        assert!(matches!(err, DeployError::TargetDisk { ref image_id, .. } if image_id == "img-2"));
        assert_eq!(deploy.written(), Some(written));
    }

    #[tokio::test]
    async fn a_running_write_publishes_its_progress() {
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<Value>();
        let live = LiveResult::new(move |v| {
            let _ = seen_tx.send(v);
        });
        let (half_tx, half_rx) = std::sync::mpsc::channel::<()>();
        let write = move |p: &Progress| {
            p.set_phase("downloading");
            p.set_total(100);
            p.set_done(50);
            half_tx.send(()).unwrap();
            // Finish only once the half-way point has been published.
            loop {
                let v = seen_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                if v["progress"]["bytes_done"] == 50 {
                    assert_eq!(v["progress"]["phase"], "downloading");
                    assert_eq!(v["progress"]["bytes_total"], 100);
                    return Ok(WriteReport {
                        bytes_written: 100,
                        image_size: 100,
                        bytes_zeroed: 0,
                        target_size: 100,
                        format: crate::image::pipeline::ImageFormat::Raw,
                        url: "file:///image".into(),
                        verified: None,
                        source_stats: Default::default(),
                    });
                }
            }
        };
        let report = tokio::time::timeout(Duration::from_secs(20), run_write(write, &live))
            .await
            .expect("the write never saw its progress published");
        assert!(matches!(report, Ok(WriteReport { bytes_written: 100, .. })));
        half_rx.recv().unwrap();

        let panicking = |_: &Progress| -> Result<WriteReport, WriteError> { panic!("boom") };
        let err = run_write(panicking, &LiveResult::detached()).await;
        assert!(matches!(err, Err(RunError::Task(_))));
    }

    #[test]
    fn partition_uuids_follow_the_written_image() {
        let ctx = DeployContext::default();
        assert_eq!(serde_json::to_value(ctx.partition_uuids()).unwrap(), json!({}));
        ctx.set_written(WrittenImage {
            image_id: "img".into(),
            device: "/dev/sda".into(),
            disk_id: Some("0x1234abcd".into()),
        });
        assert_eq!(
            serde_json::to_value(ctx.partition_uuids()).unwrap(),
            json!({"root uuid": "0x1234abcd"})
        );
    }
}
