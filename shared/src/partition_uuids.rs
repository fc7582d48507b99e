//! The `standby.get_partition_uuids` result: where the written image's root (and boot)
//! partitions are. The wire keys contain spaces, exactly as ironic-python-agent spells
//! them.
//!
//! For a whole-disk image only `root uuid` is set, to the disk identifier (the GPT disk
//! GUID, or the MBR signature as `0x%08x`); before anything is written the result is `{}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The wire key of the root partition (or whole-disk identifier).
pub const ROOT_UUID_KEY: &str = "root uuid";

/// `get_partition_uuids` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionUuids {
    #[serde(rename = "root uuid", default, skip_serializing_if = "Option::is_none")]
    pub root_uuid: Option<String>,
    #[serde(
        rename = "efi system partition uuid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub efi_system_partition_uuid: Option<String>,
    #[serde(rename = "PReP Boot partition uuid", default, skip_serializing_if = "Option::is_none")]
    pub prep_boot_partition_uuid: Option<String>,
    /// Partition images only: the partitions created, as the agent describes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Value>,
}

impl PartitionUuids {
    /// The result for a whole-disk image whose disk identifier is `disk_id`.
    pub fn whole_disk(disk_id: Option<String>) -> Self {
        Self { root_uuid: disk_id, ..Self::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_have_spaces_and_absent_fields_are_omitted() {
        assert_eq!(serde_json::to_value(PartitionUuids::default()).unwrap(), json!({}));
        let whole = PartitionUuids::whole_disk(Some("0x1234abcd".into()));
        assert_eq!(serde_json::to_value(&whole).unwrap(), json!({"root uuid": "0x1234abcd"}));
        let full: PartitionUuids = serde_json::from_value(json!({
            "root uuid": "r", "efi system partition uuid": "e",
            "PReP Boot partition uuid": "p", "partitions": {"root": "/dev/sda2"}
        }))
        .unwrap();
        assert_eq!(full.root_uuid.as_deref(), Some("r"));
        assert_eq!(full.efi_system_partition_uuid.as_deref(), Some("e"));
        assert_eq!(full.prep_boot_partition_uuid.as_deref(), Some("p"));
        assert_eq!(full.partitions, Some(json!({"root": "/dev/sda2"})));
        // A null ESP (as IPA sends for BIOS images) reads as absent.
        let null_esp: PartitionUuids =
            serde_json::from_value(json!({"root uuid": "r", "efi system partition uuid": null}))
                .unwrap();
        assert_eq!(null_esp.efi_system_partition_uuid, None);
    }
}
