//! The `image_info` of the `write_image` deploy step, built from the node's
//! `instance_info` as Ironic's direct deploy builds it (wire facts section 4).

use ferric_shared::image_info::{is_checksum_url, ImageInfo, ImageInfoError};
use ferric_shared::steps::NodeStep;
use serde_json::{json, Map, Value};

use crate::bmc::BootMode;

/// Conductor-wide settings that shape every `image_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfoConfig {
    /// `[agent]stream_raw_images`: raw images go straight to the disk.
    pub stream_raw_images: bool,
    /// `[agent]allow_md5_checksum`: whether a 32-character checksum is acceptable.
    pub allow_md5_checksum: bool,
    /// Boot mode of partition images when neither `instance_info` nor its
    /// capabilities name one.
    pub default_boot_mode: String,
}

impl Default for ImageInfoConfig {
    fn default() -> Self {
        Self {
            stream_raw_images: true,
            allow_md5_checksum: true,
            default_boot_mode: "uefi".to_owned(),
        }
    }
}

/// Why no `image_info` can be built from the node's `instance_info`.
#[derive(Debug, thiserror::Error)]
pub enum ImageInfoBuildError {
    #[error("instance_info has no image_source")]
    NoImageSource,
    #[error("instance_info field {field} must be {expected}")]
    InvalidField { field: &'static str, expected: &'static str },
    #[error(
        "image_source {image_source:?} is not an http(s) URL and instance_info has no \
         image_url to download it from"
    )]
    NoImageUrl { image_source: String },
    #[error("instance_info configdrive is still a dict; it must be rendered to an image first")]
    UnrenderedConfigDrive,
    #[error("partition images need instance_info root_gb (or root_mb)")]
    NoRootSize,
    #[error("the resulting image_info would be refused by the agent")]
    Rejected(#[source] ImageInfoError),
}

type Fields<'a> = &'a Map<String, Value>;

/// A string field; absent, `null` and `""` all mean "not set".
fn text(info: Fields, field: &'static str) -> Result<Option<String>, ImageInfoBuildError> {
    match info.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ImageInfoBuildError::InvalidField { field, expected: "a string" }),
    }
}

/// A size: a whole JSON number or a numeric string (the API stores what it was given).
fn size(info: Fields, field: &'static str) -> Result<Option<u64>, ImageInfoBuildError> {
    let invalid = ImageInfoBuildError::InvalidField { field, expected: "a whole number" };
    match info.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or(invalid),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid),
        Some(_) => Err(invalid),
    }
}

fn flag(info: Fields, field: &'static str) -> Result<Option<bool>, ImageInfoBuildError> {
    let invalid = ImageInfoBuildError::InvalidField { field, expected: "a boolean" };
    match info.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" | "" => Ok(Some(false)),
            _ => Err(invalid),
        },
        Some(_) => Err(invalid),
    }
}

/// `key` of `instance_info.capabilities`, which is a dict, a JSON string of a dict, or
/// the `"k1:v1,k2:v2"` form.
fn capability(info: Fields, key: &str) -> Option<String> {
    let from_map = |m: &Map<String, Value>| m.get(key).and_then(Value::as_str).map(str::to_owned);
    match info.get("capabilities")? {
        Value::Object(m) => from_map(m),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => from_map(&m),
            _ => s.split(',').find_map(|pair| {
                let (k, v) = pair.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_owned())
            }),
        },
        _ => None,
    }
}

/// A boot mode a node names that is neither `uefi` nor `bios`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} names boot mode {value:?}, which is neither \"uefi\" nor \"bios\"")]
pub struct UnknownBootMode {
    pub field: &'static str,
    pub value: String,
}

/// The boot mode a node names, and where: `instance_info.deploy_boot_mode`, else the
/// `boot_mode` capability of `instance_info`, else that of `properties`.
fn named_boot_mode(instance_info: Fields, properties: Fields) -> Option<(&'static str, String)> {
    let deploy = instance_info
        .get("deploy_boot_mode")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned);
    deploy
        .map(|m| ("instance_info/deploy_boot_mode", m))
        .or_else(|| {
            capability(instance_info, "boot_mode").map(|m| ("instance_info/capabilities", m))
        })
        .or_else(|| capability(properties, "boot_mode").map(|m| ("properties/capabilities", m)))
}

/// The boot mode a node is deployed and booted in: `instance_info.deploy_boot_mode`, else
/// the `boot_mode` capability of `instance_info`, else that of `properties`, else
/// `default` (the conductor's `[deploy] default_boot_mode`).
pub fn node_boot_mode(
    instance_info: &Map<String, Value>,
    properties: &Map<String, Value>,
    default: BootMode,
) -> Result<BootMode, UnknownBootMode> {
    match named_boot_mode(instance_info, properties) {
        None => Ok(default),
        Some((field, value)) => BootMode::from_name(&value).ok_or(UnknownBootMode { field, value }),
    }
}

/// Builds the `image_info` for `write_image` from `instance_info`:
///
/// | image_info | from |
/// | --- | --- |
/// | `id` | last path segment of `image_source` |
/// | `urls` | `[image_url]`, else `[image_source]` when that is an http(s) URL |
/// | `disk_format`, `container_format` | `image_disk_format`, `image_container_format` |
/// | `stream_raw_images` | configuration |
/// | `checksum` | `image_checksum`, when set |
/// | `os_hash_algo`, `os_hash_value` | `image_os_hash_algo` / `_value`, only as a pair |
/// | `node_uuid` | the node |
/// | `configdrive` | `configdrive` (the rendered string form) |
/// | partition keys | only when `image_type` is `partition` |
///
/// The result is checked with the agent's own acceptance rules, so a node that cannot
/// deploy fails here with a clear reason instead of at the agent.
pub fn build_image_info(
    instance_info: &Map<String, Value>,
    node_uuid: &str,
    config: &ImageInfoConfig,
) -> Result<ImageInfo, ImageInfoBuildError> {
    let info = instance_info;
    let image_source = text(info, "image_source")?.ok_or(ImageInfoBuildError::NoImageSource)?;
    let id = image_source.rsplit('/').next().unwrap_or_default().to_owned();
    let url = match text(info, "image_url")? {
        Some(url) => url,
        None if is_checksum_url(&image_source) => image_source.clone(),
        None => return Err(ImageInfoBuildError::NoImageUrl { image_source }),
    };
    let (os_hash_algo, os_hash_value) =
        match (text(info, "image_os_hash_algo")?, text(info, "image_os_hash_value")?) {
            (Some(algo), Some(value)) => (Some(algo), Some(value)),
            _ => (None, None),
        };
    let configdrive = match info.get("configdrive") {
        Some(Value::Object(_)) => return Err(ImageInfoBuildError::UnrenderedConfigDrive),
        _ => text(info, "configdrive")?,
    };
    let mut image = ImageInfo {
        id,
        urls: vec![url],
        disk_format: text(info, "image_disk_format")?,
        container_format: text(info, "image_container_format")?,
        stream_raw_images: config.stream_raw_images,
        checksum: text(info, "image_checksum")?,
        os_hash_algo,
        os_hash_value,
        node_uuid: Some(node_uuid.to_owned()),
        configdrive,
        ..ImageInfo::default()
    };
    if text(info, "image_type")?.as_deref() == Some("partition") {
        let root_mb = match (size(info, "root_mb")?, size(info, "root_gb")?) {
            (Some(mb), _) => mb,
            (None, Some(gb)) => gb.saturating_mul(1024),
            (None, None) => return Err(ImageInfoBuildError::NoRootSize),
        };
        let ephemeral_mb = match (size(info, "ephemeral_mb")?, size(info, "ephemeral_gb")?) {
            (Some(mb), _) => mb,
            (None, Some(gb)) => gb.saturating_mul(1024),
            (None, None) => 0,
        };
        image.kernel = text(info, "kernel")?;
        image.ramdisk = text(info, "ramdisk")?;
        image.root_gb = size(info, "root_gb")?;
        image.root_mb = Some(root_mb);
        image.swap_mb = Some(size(info, "swap_mb")?.unwrap_or(0));
        image.ephemeral_mb = Some(ephemeral_mb);
        image.ephemeral_format = text(info, "ephemeral_format")?;
        image.preserve_ephemeral = Some(flag(info, "preserve_ephemeral")?.unwrap_or(false));
        image.image_type = Some("partition".to_owned());
        // A non-string deploy_boot_mode is refused by name.
        text(info, "deploy_boot_mode")?;
        image.deploy_boot_mode = Some(
            named_boot_mode(info, &Map::new())
                .map(|(_, mode)| mode)
                .unwrap_or_else(|| config.default_boot_mode.clone()),
        );
        image.boot_option = Some("local".to_owned());
        image.disk_label = capability(info, "disk_label");
    }
    image.validate(config.allow_md5_checksum).map_err(ImageInfoBuildError::Rejected)?;
    Ok(image)
}

/// The step sent to the agent for Ironic's `write_image` (deploy interface, priority
/// 80), carrying `image_info` and, again at top level, the config drive.
pub fn write_image_step(image_info: &ImageInfo) -> Result<NodeStep, serde_json::Error> {
    serde_json::from_value(json!({
        "interface": "deploy",
        "step": "write_image",
        "priority": 80,
        "args": {
            "image_info": image_info,
            "configdrive": image_info.configdrive,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// (case, instance_info, expected image_info JSON)
    fn ok_table() -> Vec<(&'static str, Value, Value)> {
        vec![
            (
                "http source, sha256 checksum, raw",
                json!({"image_source": "http://img.example/images/jammy.raw",
                    "image_checksum": SHA256, "image_disk_format": "raw"}),
                json!({"id": "jammy.raw", "urls": ["http://img.example/images/jammy.raw"],
                    "disk_format": "raw", "container_format": null,
                    "stream_raw_images": true, "checksum": SHA256,
                    "node_uuid": "n-1"}),
            ),
            (
                "image_url wins over image_source; os_hash pair; container format",
                json!({"image_source": "file:///var/lib/ferric/images/os.qcow2",
                    "image_url": "http://10.0.0.1:6385/images/os.qcow2",
                    "image_os_hash_algo": "sha512", "image_os_hash_value": "ab".repeat(64),
                    "image_disk_format": "qcow2", "image_container_format": "bare"}),
                json!({"id": "os.qcow2", "urls": ["http://10.0.0.1:6385/images/os.qcow2"],
                    "disk_format": "qcow2", "container_format": "bare",
                    "stream_raw_images": true, "os_hash_algo": "sha512",
                    "os_hash_value": "ab".repeat(64), "node_uuid": "n-1"}),
            ),
            (
                "half an os_hash pair is dropped; checksum URL kept; configdrive duplicated",
                json!({"image_source": "https://img.example/a/b/c.img",
                    "image_checksum": "https://img.example/a/b/SHA256SUMS",
                    "image_os_hash_algo": "sha256", "configdrive": "H4sIAAAA"}),
                json!({"id": "c.img", "urls": ["https://img.example/a/b/c.img"],
                    "disk_format": null, "container_format": null,
                    "stream_raw_images": true,
                    "checksum": "https://img.example/a/b/SHA256SUMS",
                    "configdrive": "H4sIAAAA", "node_uuid": "n-1"}),
            ),
            (
                "whole-disk image_type keeps partition keys out",
                json!({"image_source": "http://i/x.raw", "image_checksum": SHA256,
                    "image_type": "whole-disk", "root_gb": 10, "kernel": "http://i/k"}),
                json!({"id": "x.raw", "urls": ["http://i/x.raw"], "disk_format": null,
                    "container_format": null, "stream_raw_images": true,
                    "checksum": SHA256, "node_uuid": "n-1"}),
            ),
            (
                "partition image: sizes from GiB, defaults, capabilities string",
                json!({"image_source": "http://i/p.img", "image_checksum": SHA256,
                    "image_type": "partition", "root_gb": "10", "kernel": "http://i/vmlinuz",
                    "ramdisk": "http://i/initrd", "ephemeral_gb": 2,
                    "ephemeral_format": "ext4",
                    "capabilities": "boot_mode:bios,disk_label:msdos"}),
                json!({"id": "p.img", "urls": ["http://i/p.img"], "disk_format": null,
                    "container_format": null, "stream_raw_images": true,
                    "checksum": SHA256, "node_uuid": "n-1",
                    "kernel": "http://i/vmlinuz", "ramdisk": "http://i/initrd",
                    "root_gb": 10, "root_mb": 10240, "swap_mb": 0, "ephemeral_mb": 2048,
                    "ephemeral_format": "ext4", "preserve_ephemeral": false,
                    "image_type": "partition", "deploy_boot_mode": "bios",
                    "boot_option": "local", "disk_label": "msdos"}),
            ),
            (
                "partition image: explicit MiB, dict capabilities, default boot mode",
                json!({"image_source": "http://i/p.img", "image_checksum": SHA256,
                    "image_type": "partition", "root_mb": 4096, "swap_mb": 512,
                    "preserve_ephemeral": "true", "capabilities": {"disk_label": "gpt"}}),
                json!({"id": "p.img", "urls": ["http://i/p.img"], "disk_format": null,
                    "container_format": null, "stream_raw_images": true,
                    "checksum": SHA256, "node_uuid": "n-1",
                    "root_mb": 4096, "swap_mb": 512, "ephemeral_mb": 0,
                    "preserve_ephemeral": true, "image_type": "partition",
                    "deploy_boot_mode": "uefi", "boot_option": "local",
                    "disk_label": "gpt"}),
            ),
        ]
    }

    #[test]
    fn builds_image_info_as_the_table_says() {
        for (case, instance_info, expected) in ok_table() {
            let built = build_image_info(&map(instance_info), "n-1", &ImageInfoConfig::default())
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(serde_json::to_value(&built).unwrap(), expected, "{case}");
        }
    }

    #[test]
    fn boot_mode_comes_from_instance_info_then_capabilities_then_the_default() {
        let caps = |m: &str| json!({"capabilities": format!("disk_label:gpt,boot_mode:{m}")});
        // (instance_info, properties, default, expected)
        let table = [
            (json!({}), json!({}), BootMode::Uefi, Ok(BootMode::Uefi)),
            (json!({}), json!({}), BootMode::Bios, Ok(BootMode::Bios)),
            (json!({"deploy_boot_mode": "bios"}), caps("uefi"), BootMode::Uefi, Ok(BootMode::Bios)),
            (json!({"deploy_boot_mode": "UEFI"}), json!({}), BootMode::Bios, Ok(BootMode::Uefi)),
            (json!({"deploy_boot_mode": ""}), caps("bios"), BootMode::Uefi, Ok(BootMode::Bios)),
            (caps("bios"), caps("uefi"), BootMode::Uefi, Ok(BootMode::Bios)),
            (json!({}), caps("bios"), BootMode::Uefi, Ok(BootMode::Bios)),
            (
                json!({}),
                json!({"capabilities": {"boot_mode": "bios"}}),
                BootMode::Uefi,
                Ok(BootMode::Bios),
            ),
            (
                json!({}),
                json!({"capabilities": "{\"boot_mode\": \"uefi\"}"}),
                BootMode::Bios,
                Ok(BootMode::Uefi),
            ),
            (
                json!({"deploy_boot_mode": "legacy"}),
                json!({}),
                BootMode::Uefi,
                Err("instance_info/deploy_boot_mode names boot mode \"legacy\""),
            ),
            (json!({}), caps("efi"), BootMode::Uefi, Err("properties/capabilities")),
        ];
        for (instance_info, properties, default, want) in table {
            let got =
                node_boot_mode(&map(instance_info.clone()), &map(properties.clone()), default);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{instance_info} {properties}"),
                (Err(err), Err(fragment)) => {
                    assert!(err.to_string().contains(fragment), "{err}")
                }
                (got, want) => panic!("{instance_info} {properties}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn configuration_is_honoured() {
        let config = ImageInfoConfig {
            stream_raw_images: false,
            allow_md5_checksum: false,
            default_boot_mode: "bios".into(),
        };
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let info = map(json!({"image_source": "http://i/x.raw", "image_checksum": md5}));
        let err = build_image_info(&info, "n", &config).unwrap_err();
        assert!(
            matches!(err, ImageInfoBuildError::Rejected(ImageInfoError::NoUsableChecksum)),
            "{err:?}"
        );
        let allowed = ImageInfoConfig { allow_md5_checksum: true, ..config.clone() };
        let built = build_image_info(&info, "n", &allowed).unwrap();
        assert!(!built.stream_raw_images);
        let partition = map(json!({"image_source": "http://i/p", "image_checksum": SHA256,
            "image_type": "partition", "root_gb": 1}));
        let built = build_image_info(&partition, "n", &config).unwrap();
        assert_eq!(built.deploy_boot_mode.as_deref(), Some("bios"));
    }

    #[test]
    fn refuses_what_cannot_be_deployed() {
        let table: Vec<(Value, &str)> = vec![
            (json!({}), "NoImageSource"),
            (json!({"image_source": ""}), "NoImageSource"),
            (json!({"image_source": 7}), "InvalidField(image_source)"),
            (json!({"image_source": "glance-uuid", "image_checksum": SHA256}), "NoImageUrl"),
            (json!({"image_source": "http://i/x"}), "Rejected"),
            (json!({"image_source": "http://i/", "image_checksum": SHA256}), "Rejected"),
            (
                json!({"image_source": "http://i/x", "image_checksum": SHA256,
                    "configdrive": {"meta_data": {}}}),
                "UnrenderedConfigDrive",
            ),
            (
                json!({"image_source": "http://i/x", "image_checksum": SHA256,
                    "image_type": "partition"}),
                "NoRootSize",
            ),
            (
                json!({"image_source": "http://i/x", "image_checksum": SHA256,
                    "image_type": "partition", "root_gb": "ten"}),
                "InvalidField(root_gb)",
            ),
            (
                json!({"image_source": "http://i/x", "image_checksum": SHA256,
                    "image_type": "partition", "root_gb": -1}),
                "InvalidField(root_gb)",
            ),
            (
                json!({"image_source": "http://i/x", "image_checksum": SHA256,
                    "image_type": "partition", "root_gb": 1, "preserve_ephemeral": "maybe"}),
                "InvalidField(preserve_ephemeral)",
            ),
            (
                json!({"image_source": "http://i/x", "image_checksum": ["a"]}),
                "InvalidField(image_checksum)",
            ),
        ];
        for (instance_info, expected) in table {
            let err = build_image_info(&map(instance_info.clone()), "n", &Default::default())
                .unwrap_err();
            let got = match &err {
                ImageInfoBuildError::NoImageSource => "NoImageSource".to_owned(),
                ImageInfoBuildError::InvalidField { field, .. } => format!("InvalidField({field})"),
                ImageInfoBuildError::NoImageUrl { .. } => "NoImageUrl".to_owned(),
                ImageInfoBuildError::UnrenderedConfigDrive => "UnrenderedConfigDrive".to_owned(),
                ImageInfoBuildError::NoRootSize => "NoRootSize".to_owned(),
                ImageInfoBuildError::Rejected(_) => "Rejected".to_owned(),
            };
            assert_eq!(got, expected, "{instance_info}: {err}");
        }
    }

    #[test]
    fn write_image_step_carries_image_info_and_configdrive() {
        let info = map(json!({"image_source": "http://i/x.raw", "image_checksum": SHA256,
            "configdrive": "H4sI"}));
        let image = build_image_info(&info, "n", &Default::default()).unwrap();
        let step = write_image_step(&image).unwrap();
        assert_eq!((step.interface.as_str(), step.step.as_str()), ("deploy", "write_image"));
        assert_eq!(step.priority, Some(80));
        assert_eq!(step.args["configdrive"], json!("H4sI"));
        assert_eq!(step.args["image_info"], serde_json::to_value(&image).unwrap());
        assert_eq!(step.args["image_info"]["configdrive"], json!("H4sI"));
    }
}
