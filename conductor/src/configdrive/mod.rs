//! Config drives given as a dictionary (`{"meta_data", "network_data", "user_data",
//! "vendor_data"}`), rendered as Ironic renders them: the files of an OpenStack config
//! drive in an ISO 9660 image labelled `config-2`, gzipped, base64-encoded — the string
//! form the agent writes to the disk.
//!
//! Files, in `openstack/2012-08-10/` and again in `openstack/latest/`:
//!
//! | file | from | written |
//! | --- | --- | --- |
//! | `meta_data.json` | `meta_data`, with `uuid` and `name` of the node when missing | always |
//! | `network_data.json` | `network_data` | when not empty |
//! | `vendor_data2.json` | `vendor_data` | when not empty |
//! | `user_data` | `user_data`: a string as is, an object or array as JSON | when not empty |

pub mod iso9660;

use std::io::Write;

use base64::Engine;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

pub use iso9660::{build_iso, IsoError, IsoFile, IsoSpec};

/// The largest config drive image, as IPA's config drive partition.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

/// The label cloud-init and IPA look for.
pub const VOLUME_ID: &str = "config-2";

/// Metadata versions written, each a directory under `openstack/`.
pub const VERSIONS: &[&str] = &["2012-08-10", "latest"];

/// The keys a config drive dictionary may have.
pub const KEYS: &[&str] = &["meta_data", "network_data", "user_data", "vendor_data"];

const PUBLISHER: &str = "ferric";

/// Why a config drive dictionary cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error(
        "unknown config drive key {key:?}; only meta_data, network_data, user_data and \
         vendor_data are allowed"
    )]
    UnknownKey { key: String },
    #[error("config drive {key} must be {expected}")]
    WrongType { key: &'static str, expected: &'static str },
    #[error("cannot build the config drive image")]
    Image(#[from] IsoError),
    #[error("cannot compress the config drive image")]
    Compress(#[source] std::io::Error),
    #[error("cannot encode the config drive {key}")]
    Encode {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The node facts the drive records.
#[derive(Debug, Clone, Copy)]
pub struct DriveNode<'a> {
    pub uuid: Uuid,
    pub name: Option<&'a str>,
}

/// Checks the dictionary's keys and value types as Ironic's API does: `meta_data`,
/// `network_data` and `vendor_data` objects, `user_data` an object, array or string;
/// `null` stands for a missing key.
pub fn check_parts(parts: &Map<String, Value>) -> Result<(), ConfigDriveError> {
    for (key, value) in parts {
        let Some(known) = KEYS.iter().find(|k| **k == key) else {
            return Err(ConfigDriveError::UnknownKey { key: key.clone() });
        };
        let fits = match (*known, value) {
            (_, Value::Null) => true,
            ("user_data", v) => v.is_object() || v.is_array() || v.is_string(),
            (_, v) => v.is_object(),
        };
        if !fits {
            let expected =
                if *known == "user_data" { "an object, an array or a string" } else { "an object" };
            return Err(ConfigDriveError::WrongType { key: known, expected });
        }
    }
    Ok(())
}

/// The files of the drive, paths relative to its root.
pub fn drive_files(
    parts: &Map<String, Value>,
    node: DriveNode<'_>,
) -> Result<Vec<IsoFile>, ConfigDriveError> {
    check_parts(parts)?;
    let json = |key: &'static str, value: &Value| {
        serde_json::to_vec(value).map_err(|source| ConfigDriveError::Encode { key, source })
    };
    let mut meta = match parts.get("meta_data") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    meta.entry("uuid").or_insert_with(|| Value::String(node.uuid.to_string()));
    if let Some(name) = node.name {
        meta.entry("name").or_insert_with(|| Value::String(name.to_owned()));
    }
    let mut contents: Vec<(&str, Vec<u8>)> =
        vec![("meta_data.json", json("meta_data", &Value::Object(meta))?)];
    for (key, file) in [("network_data", "network_data.json"), ("vendor_data", "vendor_data2.json")]
    {
        if let Some(Value::Object(m)) = parts.get(key) {
            if !m.is_empty() {
                contents.push((file, json(key, &Value::Object(m.clone()))?));
            }
        }
    }
    match parts.get("user_data") {
        Some(Value::String(text)) if !text.is_empty() => {
            contents.push(("user_data", text.as_bytes().to_vec()))
        }
        Some(v @ (Value::Object(_) | Value::Array(_))) => {
            contents.push(("user_data", json("user_data", v)?))
        }
        _ => {}
    }
    let mut files = Vec::with_capacity(VERSIONS.len() * contents.len());
    for version in VERSIONS {
        for (name, data) in &contents {
            files.push(IsoFile::new(format!("openstack/{version}/{name}"), data.clone()));
        }
    }
    Ok(files)
}

/// The ISO 9660 image of the drive, timestamps set to `at`.
pub fn drive_image(
    parts: &Map<String, Value>,
    node: DriveNode<'_>,
    at: OffsetDateTime,
) -> Result<Vec<u8>, ConfigDriveError> {
    let files = drive_files(parts, node)?;
    let spec = IsoSpec {
        volume_id: VOLUME_ID,
        publisher: PUBLISHER,
        timestamp: at,
        max_bytes: MAX_IMAGE_BYTES,
    };
    Ok(build_iso(&spec, &files)?)
}

/// The drive in the form the agent takes: base64(gzip(ISO 9660 image)).
pub fn render(
    parts: &Map<String, Value>,
    node: DriveNode<'_>,
    at: OffsetDateTime,
) -> Result<String, ConfigDriveError> {
    let image = drive_image(parts, node, at)?;
    // No file name and a zero mtime in the gzip header keep the output reproducible.
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(image.len() / 4), flate2::Compression::default());
    gz.write_all(&image).map_err(ConfigDriveError::Compress)?;
    let compressed = gz.finish().map_err(ConfigDriveError::Compress)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(compressed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> DriveNode<'static> {
        DriveNode { uuid: Uuid::from_u128(0x1234), name: Some("web-1") }
    }

    fn files(parts: Value) -> Vec<(String, Vec<u8>)> {
        drive_files(parts.as_object().unwrap(), node())
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.data))
            .collect()
    }

    #[test]
    fn keys_and_types_are_checked_as_ironic_does() {
        let cases = [
            (json!({}), None),
            (json!({"meta_data": {}, "network_data": {}, "vendor_data": {}}), None),
            (json!({"user_data": "#!/bin/sh"}), None),
            (json!({"user_data": ["a"]}), None),
            (json!({"user_data": {"a": 1}}), None),
            (json!({"meta_data": null, "user_data": null}), None),
            (
                json!({"meta_data": {}, "colour": "red"}),
                Some("unknown config drive key \"colour\""),
            ),
            (json!({"meta_data": "x"}), Some("config drive meta_data must be an object")),
            (json!({"network_data": []}), Some("config drive network_data must be an object")),
            (json!({"vendor_data": 1}), Some("config drive vendor_data must be an object")),
            (json!({"user_data": 5}), Some("user_data must be an object, an array or a string")),
            (json!({"user_data": true}), Some("user_data must be")),
        ];
        for (parts, want) in cases {
            let got = check_parts(parts.as_object().unwrap()).err().map(|e| e.to_string());
            match want {
                None => assert_eq!(got, None, "{parts}"),
                Some(fragment) => {
                    let got = got.unwrap_or_default();
                    assert!(got.contains(fragment), "{parts}: {got}");
                }
            }
        }
    }

    #[test]
    fn files_follow_ironics_layout() {
        let uuid = Uuid::from_u128(0x1234).to_string();
        let cases = [
            (
                json!({}),
                vec![("meta_data.json", json!({"uuid": uuid, "name": "web-1"}).to_string())],
            ),
            (
                json!({"meta_data": {"uuid": "mine", "hostname": "h"}, "network_data": {},
                       "vendor_data": {}, "user_data": ""}),
                vec![(
                    "meta_data.json",
                    json!({"uuid": "mine", "hostname": "h", "name": "web-1"}).to_string(),
                )],
            ),
            (
                json!({"network_data": {"links": []}, "vendor_data": {"v": 1},
                       "user_data": "#cloud-config\n"}),
                vec![
                    ("meta_data.json", json!({"uuid": uuid, "name": "web-1"}).to_string()),
                    ("network_data.json", r#"{"links":[]}"#.to_owned()),
                    ("vendor_data2.json", r#"{"v":1}"#.to_owned()),
                    ("user_data", "#cloud-config\n".to_owned()),
                ],
            ),
            (
                json!({"user_data": {"ignition": {"version": "3.0.0"}}}),
                vec![
                    ("meta_data.json", json!({"uuid": uuid, "name": "web-1"}).to_string()),
                    ("user_data", r#"{"ignition":{"version":"3.0.0"}}"#.to_owned()),
                ],
            ),
            (
                json!({"user_data": []}),
                vec![
                    ("meta_data.json", json!({"uuid": uuid, "name": "web-1"}).to_string()),
                    ("user_data", "[]".to_owned()),
                ],
            ),
        ];
        for (parts, per_version) in cases {
            let got = files(parts.clone());
            let mut want = Vec::new();
            for version in ["2012-08-10", "latest"] {
                for (name, text) in &per_version {
                    want.push((format!("openstack/{version}/{name}"), text.as_bytes().to_vec()));
                }
            }
            // meta_data.json is compared as JSON (key order is not part of the contract).
            assert_eq!(got.len(), want.len(), "{parts}");
            for ((gp, gd), (wp, wd)) in got.iter().zip(&want) {
                assert_eq!(gp, wp, "{parts}");
                if gp.ends_with(".json") {
                    let g: Value = serde_json::from_slice(gd).unwrap();
                    let w: Value = serde_json::from_slice(wd).unwrap();
                    assert_eq!(g, w, "{parts} {gp}");
                } else {
                    assert_eq!(gd, wd, "{parts} {gp}");
                }
            }
        }
    }

    #[test]
    fn a_nameless_node_gets_no_name() {
        let parts = Map::new();
        let files =
            drive_files(&parts, DriveNode { uuid: Uuid::from_u128(7), name: None }).unwrap();
        let meta: Value = serde_json::from_slice(&files[0].data).unwrap();
        assert_eq!(meta, json!({"uuid": Uuid::from_u128(7).to_string()}));
    }

    #[test]
    fn rendering_is_reproducible_and_decodes_to_the_image() {
        let parts = json!({"user_data": "hello"});
        let parts = parts.as_object().unwrap();
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let a = render(parts, node(), at).unwrap();
        assert_eq!(a, render(parts, node(), at).unwrap());
        let later = render(parts, node(), at + time::Duration::hours(1)).unwrap();
        assert_ne!(a, later, "the timestamp is recorded");
        let gz = base64::engine::general_purpose::STANDARD.decode(&a).unwrap();
        let mut iso = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut iso).unwrap();
        assert_eq!(iso, drive_image(parts, node(), at).unwrap());
    }

    #[test]
    fn the_size_bound_is_enforced() {
        let big = "x".repeat(40 * 1024 * 1024);
        let parts = json!({"user_data": big});
        let err =
            render(parts.as_object().unwrap(), node(), OffsetDateTime::UNIX_EPOCH).unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains("more than the limit of 67108864 bytes"), "{text}");
    }
}
