//! `image_info`: the description of the image to write, sent by the conductor inside the
//! `write_image` deploy step (and to `standby.prepare_image`), with the agent's validation
//! rules and the choice of which checksum verifies the image.

pub mod checksum;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use checksum::{
    image_file_name, parse_checksum_file, ChecksumFileError, DigestLengthError, HashAlgorithm,
};

/// The image to fetch and write, exactly as the `image_info` JSON object carries it.
///
/// Unknown keys are ignored rather than rejected: newer conductors add keys, and the agent
/// must keep working with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Image id: last path segment of `image_source`; also the local cache file name.
    pub id: String,
    /// Where to download the image from, tried in order.
    pub urls: Vec<String>,
    /// `raw`, `qcow2`, … (always sent, possibly `null`).
    #[serde(default)]
    pub disk_format: Option<String>,
    /// Always sent, possibly `null`.
    #[serde(default)]
    pub container_format: Option<String>,
    #[serde(default)]
    pub stream_raw_images: bool,
    /// Legacy checksum: a hex digest or an `http(s)://` URL of a checksum file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_hash_algo: Option<String>,
    /// Hex digest, or an `http(s)://` URL of a checksum file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_hash_value: Option<String>,
    /// `http_basic` when the image server wants HTTP basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_server_auth_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_server_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_server_password: Option<String>,
    /// Base64 of a complete `Authorization` header value; wins over basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_request_authorization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<Proxies>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_uuid: Option<String>,
    /// Base64 of gzipped ISO9660, or a URL; duplicate of the step's `configdrive` argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configdrive: Option<String>,

    // Partition images only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramdisk: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub root_gb: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub root_mb: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub swap_mb: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub ephemeral_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_format: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    pub preserve_ephemeral: Option<bool>,
    /// `partition` for partition images; anything else (or nothing) is a whole-disk image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_type: Option<String>,
    /// `uefi` or `bios`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_boot_mode: Option<String>,
    /// `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_option: Option<String>,
    /// `gpt` or `msdos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_label: Option<String>,
}

/// `proxies`: the proxy for each URL scheme.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proxies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<String>,
}

/// Sizes arrive as JSON numbers, but values copied from `instance_info` can be numeric
/// strings (`"10"`); both mean the same to the conductor.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().map(Some).ok_or_else(|| D::Error::custom("expected a size in whole units"))
        }
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom("expected a size in whole units")),
        Some(_) => Err(D::Error::custom("expected a size in whole units")),
    }
}

/// Booleans copied from `instance_info` may be strings (`"true"`, `"False"`).
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(Some(true)),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(Some(false)),
            _ => Err(D::Error::custom("expected a boolean")),
        },
        Some(_) => Err(D::Error::custom("expected a boolean")),
    }
}

/// Why an `image_info` is refused; each names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImageInfoError {
    #[error("image_info is not a well-formed image description")]
    Malformed(#[source] serde_json::Error),
    #[error("image_info field 'id' must be a non-empty string")]
    EmptyId,
    #[error("image_info field 'urls' must be a list with at least one element")]
    NoUrls,
    #[error("image_info field 'checksum' must be a non-empty string")]
    EmptyChecksum,
    #[error(
        "image_info field '{0}' must be a non-empty string when the other os_hash field is set"
    )]
    IncompleteOsHash(&'static str),
    #[error(
        "image_info has no usable checksum: set 'checksum' (a URL, a digest longer than 32 \
         characters, or an MD5 digest where MD5 is allowed) or 'os_hash_algo' and \
         'os_hash_value'"
    )]
    NoUsableChecksum,
    #[error("image_info field '{0}' is required for partition images")]
    MissingPartitionField(&'static str),
}

/// Where the expected digest of the image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumSource {
    /// The digest is known now.
    Digest(ExpectedDigest),
    /// The digest is in a checksum file at `url`, on the line for the image's file name
    /// ([`image_file_name`] of the first URL). `algorithm` is the declared one
    /// (`os_hash_algo`); `None` means "infer from the digest's length".
    File { url: String, algorithm: Option<HashAlgorithm> },
}

/// An algorithm and the lowercase hex digest the image must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedDigest {
    pub algorithm: HashAlgorithm,
    pub hex: String,
}

/// Why no expected digest can be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumSelectionError {
    #[error("image_info field '{0}' is not a hex digest")]
    NotHex(&'static str),
    #[error("image_info field '{field}' has an unusable digest")]
    DigestLength {
        field: &'static str,
        #[source]
        cause: DigestLengthError,
    },
    #[error("image_info field 'os_hash_algo' is md5, which is not allowed")]
    Md5NotAllowed,
    #[error(
        "image_info field 'os_hash_algo' names an unsupported algorithm {0:?} and there is \
         no 'checksum' to fall back to"
    )]
    UnsupportedAlgorithm(String),
    #[error("image_info has neither 'os_hash_algo'/'os_hash_value' nor 'checksum'")]
    NoChecksum,
    #[error("checksum file gives no digest")]
    File(#[source] ChecksumFileError),
    #[error("checksum file digest is unusable")]
    FileDigestLength(#[source] DigestLengthError),
}

/// Whether a checksum value is a checksum-file URL rather than a digest.
pub fn is_checksum_url(value: &str) -> bool {
    value.starts_with("http://") || value.starts_with("https://")
}

fn non_empty(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.is_empty())
}

impl ImageInfo {
    /// Parses and validates an `image_info` object.
    pub fn from_value(value: Value, md5_allowed: bool) -> Result<ImageInfo, ImageInfoError> {
        let info: ImageInfo = serde_json::from_value(value).map_err(ImageInfoError::Malformed)?;
        info.validate(md5_allowed)?;
        Ok(info)
    }

    /// The agent's acceptance rules: an id, at least one URL, a non-empty `checksum` if
    /// given, both os_hash fields if either is set, at least one checksum usable under
    /// `md5_allowed`, and the sizing keys of a partition image.
    pub fn validate(&self, md5_allowed: bool) -> Result<(), ImageInfoError> {
        if self.id.is_empty() {
            return Err(ImageInfoError::EmptyId);
        }
        if self.urls.is_empty() {
            return Err(ImageInfoError::NoUrls);
        }
        let mut usable = false;
        if let Some(checksum) = &self.checksum {
            if checksum.is_empty() {
                return Err(ImageInfoError::EmptyChecksum);
            }
            let len = checksum.chars().count();
            usable = is_checksum_url(checksum) || len > 32 || (len == 32 && md5_allowed);
        }
        if non_empty(&self.os_hash_algo) || non_empty(&self.os_hash_value) {
            if !non_empty(&self.os_hash_algo) {
                return Err(ImageInfoError::IncompleteOsHash("os_hash_algo"));
            }
            if !non_empty(&self.os_hash_value) {
                return Err(ImageInfoError::IncompleteOsHash("os_hash_value"));
            }
            usable = true;
        }
        if !usable {
            return Err(ImageInfoError::NoUsableChecksum);
        }
        if !self.is_whole_disk() {
            let required = [
                ("root_mb", self.root_mb.is_some()),
                ("swap_mb", self.swap_mb.is_some()),
                ("ephemeral_mb", self.ephemeral_mb.is_some()),
                ("preserve_ephemeral", self.preserve_ephemeral.is_some()),
            ];
            if let Some((field, _)) = required.into_iter().find(|(_, present)| !present) {
                return Err(ImageInfoError::MissingPartitionField(field));
            }
        }
        Ok(())
    }

    /// Whole-disk unless `image_type` is exactly `partition`.
    pub fn is_whole_disk(&self) -> bool {
        self.image_type.as_deref() != Some("partition")
    }

    /// Whether the image is streamed straight to the device instead of staged and
    /// converted: only raw images, and only when the conductor allows it.
    pub fn streams_raw(&self) -> bool {
        self.stream_raw_images && self.disk_format.as_deref() == Some("raw")
    }

    /// The file name the image is listed under in a checksum file.
    pub fn file_name(&self) -> &str {
        self.urls.first().map_or("", |url| image_file_name(url))
    }

    /// Chooses how the image is verified, in the agent's order: a supported `os_hash_algo`
    /// with `os_hash_value` (a digest, or a checksum-file URL); else a `checksum` URL; else
    /// the `checksum` digest with its algorithm inferred from its length.
    pub fn checksum_source(
        &self,
        md5_allowed: bool,
    ) -> Result<ChecksumSource, ChecksumSelectionError> {
        let algo_name = self.os_hash_algo.as_deref().filter(|a| !a.is_empty());
        let os_value = self.os_hash_value.as_deref().filter(|v| !v.is_empty());
        if let (Some(name), Some(value)) = (algo_name, os_value) {
            if let Ok(algorithm) = name.parse::<HashAlgorithm>() {
                if algorithm == HashAlgorithm::Md5 && !md5_allowed {
                    return Err(ChecksumSelectionError::Md5NotAllowed);
                }
                if is_checksum_url(value) {
                    let url = value.to_owned();
                    return Ok(ChecksumSource::File { url, algorithm: Some(algorithm) });
                }
                // A length that does not fit the declared algorithm is left for the
                // comparison to reject: the declaration wins.
                let hex =
                    hex_digest(value).ok_or(ChecksumSelectionError::NotHex("os_hash_value"))?;
                return Ok(ChecksumSource::Digest(ExpectedDigest { algorithm, hex }));
            }
        }
        match self.checksum.as_deref().filter(|c| !c.is_empty()) {
            Some(url) if is_checksum_url(url) => {
                Ok(ChecksumSource::File { url: url.to_owned(), algorithm: None })
            }
            Some(value) => {
                let hex = hex_digest(value).ok_or(ChecksumSelectionError::NotHex("checksum"))?;
                let algorithm =
                    HashAlgorithm::from_digest_len(hex.len(), md5_allowed).map_err(|cause| {
                        ChecksumSelectionError::DigestLength { field: "checksum", cause }
                    })?;
                Ok(ChecksumSource::Digest(ExpectedDigest { algorithm, hex }))
            }
            None => match (algo_name, os_value) {
                (Some(name), Some(_)) => {
                    Err(ChecksumSelectionError::UnsupportedAlgorithm(name.to_owned()))
                }
                _ => Err(ChecksumSelectionError::NoChecksum),
            },
        }
    }
}

impl ChecksumSource {
    /// For a [`ChecksumSource::File`], the expected digest read from the downloaded
    /// checksum file `text` for the image file `image_file_name`. A declared algorithm
    /// also admits its own digest length (e.g. 40 for sha1). A [`ChecksumSource::Digest`]
    /// is returned as it is.
    pub fn resolve(
        &self,
        text: &str,
        image_file_name: &str,
        md5_allowed: bool,
    ) -> Result<ExpectedDigest, ChecksumSelectionError> {
        match self {
            ChecksumSource::Digest(digest) => Ok(digest.clone()),
            ChecksumSource::File { algorithm: Some(algorithm), .. } => {
                let lengths = [32, 64, 128, algorithm.hex_len()];
                let hex =
                    checksum::parse_checksum_file_with_lengths(text, image_file_name, &lengths)
                        .map_err(ChecksumSelectionError::File)?;
                Ok(ExpectedDigest { algorithm: *algorithm, hex })
            }
            ChecksumSource::File { algorithm: None, .. } => {
                let hex = parse_checksum_file(text, image_file_name)
                    .map_err(ChecksumSelectionError::File)?;
                let algorithm = HashAlgorithm::from_digest_len(hex.len(), md5_allowed)
                    .map_err(ChecksumSelectionError::FileDigestLength)?;
                Ok(ExpectedDigest { algorithm, hex })
            }
        }
    }
}

/// The lowercase form of `value` if it is a non-empty hex string.
fn hex_digest(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
    const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn whole_disk_doc() -> Value {
        json!({
            "id": "a1b2c3",
            "urls": ["http://10.0.0.1:8080/images/img.qcow2"],
            "disk_format": "qcow2",
            "container_format": "bare",
            "stream_raw_images": true,
            "checksum": MD5,
            "os_hash_algo": "sha256",
            "os_hash_value": SHA256,
            "image_server_auth_strategy": "http_basic",
            "image_server_user": "u",
            "image_server_password": "p",
            "image_request_authorization": "QmFzaWMgdTpw",
            "proxies": {"http": "http://proxy:3128", "https": "http://proxy:3128"},
            "no_proxy": "10.0.0.1",
            "node_uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
            "configdrive": "H4sIAAAA"
        })
    }

    fn partition_doc() -> Value {
        json!({
            "id": "p1",
            "urls": ["http://h/p.raw"],
            "disk_format": "raw",
            "container_format": null,
            "stream_raw_images": false,
            "os_hash_algo": "sha512",
            "os_hash_value": "http://h/p.raw.sha512sum",
            "node_uuid": "n",
            "kernel": "http://h/vmlinuz",
            "ramdisk": "http://h/initrd",
            "root_gb": 10,
            "root_mb": 10240,
            "swap_mb": 0,
            "ephemeral_mb": 0,
            "ephemeral_format": "ext4",
            "preserve_ephemeral": false,
            "image_type": "partition",
            "deploy_boot_mode": "uefi",
            "boot_option": "local",
            "disk_label": "gpt"
        })
    }

    #[test]
    fn whole_disk_round_trip() {
        let doc = whole_disk_doc();
        let info = ImageInfo::from_value(doc.clone(), false).unwrap();
        assert_eq!(info.proxies.as_ref().unwrap().https.as_deref(), Some("http://proxy:3128"));
        assert!(info.is_whole_disk());
        assert!(!info.streams_raw());
        assert_eq!(info.file_name(), "img.qcow2");
        assert_eq!(serde_json::to_value(&info).unwrap(), doc);
    }

    #[test]
    fn partition_round_trip() {
        let doc = partition_doc();
        let info = ImageInfo::from_value(doc.clone(), false).unwrap();
        assert!(!info.is_whole_disk());
        assert_eq!(info.root_mb, Some(10240));
        assert_eq!(serde_json::to_value(&info).unwrap(), doc);
    }

    #[test]
    fn minimal_image_keeps_null_formats_and_omits_absent_options() {
        let info = ImageInfo::from_value(
            json!({"id": "x", "urls": ["http://h/x"], "checksum": SHA256}),
            false,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            json!({"id": "x", "urls": ["http://h/x"], "disk_format": null,
                "container_format": null, "stream_raw_images": false, "checksum": SHA256})
        );
    }

    #[test]
    fn string_sizes_and_booleans_are_accepted() {
        let mut doc = partition_doc();
        doc["root_mb"] = json!("2048");
        doc["preserve_ephemeral"] = json!("True");
        let info: ImageInfo = serde_json::from_value(doc).unwrap();
        assert_eq!(info.root_mb, Some(2048));
        assert_eq!(info.preserve_ephemeral, Some(true));
        for (key, bad) in [
            ("root_mb", json!("ten")),
            ("swap_mb", json!(-1)),
            ("preserve_ephemeral", json!("maybe")),
        ] {
            let mut doc = partition_doc();
            doc[key] = bad;
            assert!(serde_json::from_value::<ImageInfo>(doc).is_err(), "{key}");
        }
    }

    #[test]
    fn whole_disk_and_streaming_rules() {
        let table = [
            (None, true, Some("raw"), true, true),
            (Some("whole-disk"), true, Some("raw"), true, true),
            (Some("partition"), true, Some("raw"), false, true),
            (None, false, Some("raw"), true, false),
            (None, true, Some("qcow2"), true, false),
            (None, true, None, true, false),
            (Some("Partition"), true, Some("RAW"), true, false),
        ];
        for (image_type, stream, format, whole, streams) in table {
            let info = ImageInfo {
                image_type: image_type.map(str::to_owned),
                stream_raw_images: stream,
                disk_format: format.map(str::to_owned),
                ..ImageInfo::default()
            };
            assert_eq!(info.is_whole_disk(), whole, "{image_type:?}");
            assert_eq!(info.streams_raw(), streams, "{stream} {format:?}");
        }
    }

    fn info(checksum: Option<&str>, algo: Option<&str>, value: Option<&str>) -> ImageInfo {
        ImageInfo {
            id: "x".into(),
            urls: vec!["http://h/dir/img.raw?sig=1".into()],
            checksum: checksum.map(str::to_owned),
            os_hash_algo: algo.map(str::to_owned),
            os_hash_value: value.map(str::to_owned),
            ..ImageInfo::default()
        }
    }

    #[test]
    fn validation_rules() {
        let sha512 = "a".repeat(128);
        // (checksum, os_hash_algo, os_hash_value, md5_allowed, expected error text or None)
        type Row<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, bool, Option<&'a str>);
        let table: &[Row] = &[
            (Some(SHA256), None, None, false, None),
            (Some(MD5), None, None, true, None),
            (Some(MD5), None, None, false, Some("no usable checksum")),
            (Some("http://h/SHA256SUMS"), None, None, false, None),
            (Some(&sha512), None, None, false, None),
            (Some(""), Some("sha256"), Some(SHA256), true, Some("'checksum' must be")),
            (None, Some("sha256"), Some(SHA256), false, None),
            (Some(MD5), Some("sha256"), Some(SHA256), false, None),
            (None, Some("sha256"), None, true, Some("'os_hash_value'")),
            (None, None, Some(SHA256), true, Some("'os_hash_algo'")),
            (None, Some(""), Some(SHA256), true, Some("'os_hash_algo'")),
            (Some(SHA256), Some(""), Some(""), false, None),
            (None, Some(""), Some(""), true, Some("no usable checksum")),
            (None, None, None, true, Some("no usable checksum")),
            (Some("abc"), None, None, true, Some("no usable checksum")),
        ];
        for (checksum, algo, value, md5, expected) in table {
            let result = info(*checksum, *algo, *value).validate(*md5);
            match expected {
                None => assert!(result.is_ok(), "{checksum:?} {algo:?} {value:?}: {result:?}"),
                Some(text) => {
                    let err = result.expect_err(text).to_string();
                    assert!(err.contains(text), "{err}");
                }
            }
        }
    }

    #[test]
    fn id_urls_and_partition_fields_are_required() {
        let mut doc = whole_disk_doc();
        doc.as_object_mut().unwrap().remove("id");
        let err = ImageInfo::from_value(doc, true).unwrap_err();
        assert!(matches!(&err, ImageInfoError::Malformed(e) if e.to_string().contains("`id`")));

        let mut doc = whole_disk_doc();
        doc["urls"] = json!("http://h/x");
        assert!(matches!(ImageInfo::from_value(doc, true), Err(ImageInfoError::Malformed(_))));

        let mut doc = whole_disk_doc();
        doc["urls"] = json!([]);
        assert!(matches!(ImageInfo::from_value(doc, true), Err(ImageInfoError::NoUrls)));

        let mut doc = whole_disk_doc();
        doc["id"] = json!("");
        assert!(matches!(ImageInfo::from_value(doc, true), Err(ImageInfoError::EmptyId)));

        for field in ["root_mb", "swap_mb", "ephemeral_mb", "preserve_ephemeral"] {
            let mut doc = partition_doc();
            doc.as_object_mut().unwrap().remove(field);
            match ImageInfo::from_value(doc, true) {
                Err(ImageInfoError::MissingPartitionField(f)) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn checksum_selection() {
        use ChecksumSource::*;
        use HashAlgorithm::*;
        let digest = |algorithm, hex: &str| Digest(ExpectedDigest { algorithm, hex: hex.into() });
        let file = |url: &str, algorithm| File { url: url.into(), algorithm };
        let upper = SHA256.to_ascii_uppercase();
        let table: Vec<(ImageInfo, bool, Result<ChecksumSource, ChecksumSelectionError>)> = vec![
            (info(Some(MD5), Some("sha256"), Some(SHA256)), false, Ok(digest(Sha256, SHA256))),
            (info(None, Some("sha256"), Some(&upper)), false, Ok(digest(Sha256, SHA256))),
            (info(None, Some("sha1"), Some(MD5)), false, Ok(digest(Sha1, MD5))),
            (info(None, Some("md5"), Some(MD5)), true, Ok(digest(Md5, MD5))),
            (info(None, Some("md5"), Some(MD5)), false, Err(ChecksumSelectionError::Md5NotAllowed)),
            (
                info(Some(MD5), Some("sha512"), Some("https://h/SHA512SUMS")),
                true,
                Ok(file("https://h/SHA512SUMS", Some(Sha512))),
            ),
            (info(Some(SHA256), Some("SHA256"), Some(SHA256)), false, Ok(digest(Sha256, SHA256))),
            (
                info(Some("http://h/SHA256SUMS"), Some("sha3_256"), Some(SHA256)),
                false,
                Ok(file("http://h/SHA256SUMS", None)),
            ),
            (
                info(None, Some("sha3_256"), Some(SHA256)),
                false,
                Err(ChecksumSelectionError::UnsupportedAlgorithm("sha3_256".into())),
            ),
            (info(Some(MD5), None, None), true, Ok(digest(Md5, MD5))),
            (
                info(Some(MD5), None, None),
                false,
                Err(ChecksumSelectionError::DigestLength {
                    field: "checksum",
                    cause: DigestLengthError::Md5NotAllowed,
                }),
            ),
            (info(Some(&"b".repeat(128)), None, None), false, Ok(digest(Sha512, &"b".repeat(128)))),
            (
                info(Some(&"b".repeat(40)), None, None),
                true,
                Err(ChecksumSelectionError::DigestLength {
                    field: "checksum",
                    cause: DigestLengthError::UnknownLength(40),
                }),
            ),
            (
                info(Some(&"z".repeat(64)), None, None),
                true,
                Err(ChecksumSelectionError::NotHex("checksum")),
            ),
            (
                info(None, Some("sha256"), Some("not hex")),
                true,
                Err(ChecksumSelectionError::NotHex("os_hash_value")),
            ),
            (info(None, None, None), true, Err(ChecksumSelectionError::NoChecksum)),
        ];
        for (image, md5, expected) in table {
            assert_eq!(image.checksum_source(md5), expected, "{image:?} md5={md5}");
        }
    }

    #[test]
    fn resolving_checksum_files() {
        let image = info(Some("http://h/SHA256SUMS"), None, None);
        let source = image.checksum_source(false).unwrap();
        let text = format!("{MD5}  other.raw\n{SHA256}  img.raw\n");
        assert_eq!(
            source.resolve(&text, image.file_name(), false).unwrap(),
            ExpectedDigest { algorithm: HashAlgorithm::Sha256, hex: SHA256.into() }
        );
        let md5_text = format!("{MD5} *img.raw\n{SHA256}  other.raw\n");
        assert_eq!(
            source.resolve(&md5_text, "img.raw", false),
            Err(ChecksumSelectionError::FileDigestLength(DigestLengthError::Md5NotAllowed))
        );
        assert_eq!(
            source.resolve(&md5_text, "img.raw", true).unwrap().algorithm,
            HashAlgorithm::Md5
        );
        assert_eq!(
            source.resolve(&text, "missing.raw", true),
            Err(ChecksumSelectionError::File(ChecksumFileError::FileNotListed {
                file: "missing.raw".into()
            }))
        );

        let sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
        let declared =
            ChecksumSource::File { url: "http://h/S".into(), algorithm: Some(HashAlgorithm::Sha1) };
        let text = format!("SHA1 (img.raw) = {sha1}\n{SHA256}  other.raw\n");
        assert_eq!(
            declared.resolve(&text, "img.raw", false).unwrap(),
            ExpectedDigest { algorithm: HashAlgorithm::Sha1, hex: sha1.into() }
        );

        let known = ChecksumSource::Digest(ExpectedDigest {
            algorithm: HashAlgorithm::Sha256,
            hex: SHA256.into(),
        });
        assert_eq!(known.resolve("garbage", "img.raw", false).unwrap().hex, SHA256);
    }

    #[test]
    fn garbage_image_info_never_panics() {
        let mut state: u64 = 0x0123_4567_89ab_cdef;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const KEYS: &[&str] = &[
            "id",
            "urls",
            "checksum",
            "os_hash_algo",
            "os_hash_value",
            "disk_format",
            "image_type",
            "root_mb",
            "swap_mb",
            "ephemeral_mb",
            "preserve_ephemeral",
            "stream_raw_images",
            "proxies",
        ];
        const STRINGS: &[&str] = &[
            "",
            "sha256",
            "md5",
            "sha512",
            "SHA1",
            "http://h/img.raw",
            "https://h/SUMS",
            "partition",
            "raw",
            MD5,
            SHA256,
            "zz",
            "10",
            "true",
            "é€",
        ];
        let mut accepted = 0;
        for _ in 0..5_000 {
            // Start valid, then damage it, so both outcomes are exercised.
            let mut doc = serde_json::Map::new();
            doc.insert("id".into(), json!("img"));
            doc.insert("urls".into(), json!(["http://h/img.raw"]));
            doc.insert("checksum".into(), json!("https://h/SUMS"));
            for _ in 0..(next() % 5) {
                let key = KEYS[(next() % KEYS.len() as u64) as usize];
                let text = STRINGS[(next() % STRINGS.len() as u64) as usize];
                let value = match next() % 6 {
                    0 => json!(null),
                    1 => json!(text),
                    2 => json!([text]),
                    3 => json!(next() % 3 == 0),
                    4 => json!((next() % 5) as i64 - 2),
                    _ => json!({"http": text}),
                };
                doc.insert(key.to_owned(), value);
            }
            let md5 = next() % 2 == 0;
            let Ok(image) = ImageInfo::from_value(Value::Object(doc), md5) else {
                continue;
            };
            accepted += 1;
            assert!(!image.id.is_empty() && !image.urls.is_empty());
            if let Ok(source) = image.checksum_source(md5) {
                let text = format!("{SHA256}  {}\n{MD5} x\n", image.file_name());
                if let Ok(digest) = source.resolve(&text, image.file_name(), md5) {
                    assert!(!digest.hex.is_empty(), "{image:?}");
                    assert_eq!(digest.hex, digest.hex.to_ascii_lowercase());
                    assert!(md5 || digest.algorithm != HashAlgorithm::Md5, "{image:?}");
                }
            }
        }
        assert!(accepted > 100, "only {accepted} generated image_info documents were valid");
    }
}
