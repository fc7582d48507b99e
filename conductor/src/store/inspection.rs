//! Inspection results: a processed report applied to a node and its ports in one
//! transaction, and the stored report read back with its plugin data.

use serde_json::Value;
use uuid::Uuid;

use super::codec::{json_text, normalize_mac, now, to_micros};
use super::nodes::{fetch_node, write_node};
use super::{JsonMap, Store, StoreError};
use crate::inspection::InspectionOutcome;

/// The report a ramdisk posted for a node, and what processing made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInspection {
    /// The whole body the ramdisk posted.
    pub data: Value,
    /// The hooks' plugin data; `None` until the report has been processed.
    pub plugin_data: Option<JsonMap>,
}

/// What [`Store::apply_inspection`] did to the node's ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedInspection {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<Uuid>,
    /// New ports not created because another port already has the MAC (as Ironic, which
    /// logs and goes on).
    pub taken_macs: Vec<String>,
    /// Updates for MACs the node has no port with.
    pub missing_macs: Vec<String>,
}

impl Store {
    /// Applies processed inspection results to node `uuid` in one transaction: the
    /// outcome's ports are deleted, updated and created, its properties set (other keys
    /// are kept), `inspection_finished_at` set to now, and `plugin_data` stored beside
    /// the report.
    pub async fn apply_inspection(
        &self,
        uuid: Uuid,
        outcome: &InspectionOutcome,
        plugin_data: &JsonMap,
    ) -> Result<AppliedInspection, StoreError> {
        let id = uuid.to_string();
        let mut applied = AppliedInspection::default();
        let mut tx = self.write_tx().await?;
        let mut node = fetch_node(&mut *tx, &id).await?;

        for port in &outcome.delete_ports {
            let done = sqlx::query("DELETE FROM ports WHERE uuid = ? AND node_uuid = ?")
                .bind(port.to_string())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 1 {
                applied.deleted.push(*port);
            }
        }

        for update in &outcome.port_updates {
            let address = normalize_mac(&update.address)?;
            let row: Option<(String, bool, String)> = sqlx::query_as(
                "SELECT uuid, pxe_enabled, local_link_connection FROM ports \
                 WHERE node_uuid = ? AND address = ?",
            )
            .bind(&id)
            .bind(&address)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((port, pxe, llc)) = row else {
                applied.missing_macs.push(address);
                continue;
            };
            let pxe = update.pxe_enabled.unwrap_or(pxe);
            let llc = match &update.local_link_connection {
                Some(map) => json_text(map),
                None => llc,
            };
            sqlx::query(
                "UPDATE ports SET pxe_enabled = ?, local_link_connection = ?, updated_at = ?, \
                 version = version + 1 WHERE uuid = ?",
            )
            .bind(pxe)
            .bind(llc)
            .bind(to_micros(now()))
            .bind(&port)
            .execute(&mut *tx)
            .await?;
            applied.updated.push(address);
        }

        for new in &outcome.new_ports {
            let address = normalize_mac(&new.address)?;
            let taken: Option<(String,)> =
                sqlx::query_as("SELECT uuid FROM ports WHERE address = ?")
                    .bind(&address)
                    .fetch_optional(&mut *tx)
                    .await?;
            if taken.is_some() {
                applied.taken_macs.push(address);
                continue;
            }
            sqlx::query(
                "INSERT INTO ports (uuid, address, node_uuid, pxe_enabled, \
                 local_link_connection, physical_network, extra, internal_info, is_smartnic, \
                 portgroup_uuid, created_at, updated_at, version) \
                 VALUES (?, ?, ?, ?, ?, NULL, '{}', '{}', 0, NULL, ?, NULL, 0)",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(&address)
            .bind(&id)
            .bind(new.pxe_enabled)
            .bind(json_text(&new.local_link_connection))
            .bind(to_micros(now()))
            .execute(&mut *tx)
            .await?;
            applied.created.push(address);
        }

        for (key, value) in &outcome.properties {
            node.properties.insert(key.clone(), value.clone());
        }
        node.inspection_finished_at = Some(now());
        // The transaction holds the write lock since the node was read, so its version
        // still matches.
        write_node(&mut *tx, &node).await?.ok_or(StoreError::Stale { kind: "node", uuid })?;

        let stored = sqlx::query("UPDATE inspection_data SET plugin_data = ? WHERE node_uuid = ?")
            .bind(json_text(plugin_data))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        if stored.rows_affected() == 0 {
            // Processing without a stored report (it was deleted meanwhile): keep what was
            // made of it anyway, beside an empty report.
            sqlx::query(
                "INSERT INTO inspection_data (node_uuid, data, created_at, plugin_data) \
                 VALUES (?, '{}', ?, ?)",
            )
            .bind(&id)
            .bind(to_micros(now()))
            .bind(json_text(plugin_data))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// The report stored for the node and its plugin data, if any report was stored.
    pub async fn get_inspection(
        &self,
        node_uuid: Uuid,
    ) -> Result<Option<StoredInspection>, StoreError> {
        let id = node_uuid.to_string();
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT data, plugin_data FROM inspection_data WHERE node_uuid = ?")
                .bind(&id)
                .fetch_optional(&self.read)
                .await?;
        let Some((data, plugin_data)) = row else {
            return Ok(None);
        };
        let corrupt = |column: &'static str, reason: String| StoreError::Corrupt {
            uuid: id.clone(),
            column,
            reason,
        };
        let data: Value =
            serde_json::from_str(&data).map_err(|e| corrupt("inspection_data", e.to_string()))?;
        let plugin_data = plugin_data
            .map(|text| match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err(corrupt("plugin_data", "not a JSON object".to_owned())),
                Err(e) => Err(corrupt("plugin_data", e.to_string())),
            })
            .transpose()?;
        Ok(Some(StoredInspection { data, plugin_data }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inspection::{NewPort, PortUpdate};
    use crate::store::{Node, Port, PortQuery};

    fn map(value: Value) -> JsonMap {
        match value {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[tokio::test]
    async fn an_outcome_changes_ports_properties_and_plugin_data_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).await.unwrap();
        let mut node = Node::new("fake-hardware");
        node.properties = map(json!({"cpus": 1, "vendor": "kept"}));
        let node = store.create_node(&node).await.unwrap();
        let other = store.create_node(&Node::new("fake-hardware")).await.unwrap();
        let stale = store.create_port(&Port::new(node.uuid, "52:54:00:00:00:01")).await.unwrap();
        let kept = store.create_port(&Port::new(node.uuid, "52:54:00:00:00:02")).await.unwrap();
        let foreign = store.create_port(&Port::new(other.uuid, "52:54:00:00:00:09")).await.unwrap();
        let report = json!({"inventory": {"interfaces": []}, "error": null});
        store.store_inspection_data(node.uuid, &report).await.unwrap();
        let unprocessed = store.get_inspection(node.uuid).await.unwrap().unwrap();
        assert_eq!(unprocessed, StoredInspection { data: report.clone(), plugin_data: None });

        let llc = map(json!({"switch_id": "aa:bb:cc:dd:ee:ff", "port_id": "Ethernet1"}));
        let outcome = InspectionOutcome {
            properties: map(json!({"cpus": 4, "memory_mb": 2048})),
            new_ports: vec![
                NewPort {
                    address: "52:54:00:00:00:03".into(),
                    pxe_enabled: true,
                    local_link_connection: llc.clone(),
                },
                NewPort {
                    address: "52:54:00:00:00:09".into(),
                    pxe_enabled: true,
                    local_link_connection: JsonMap::new(),
                },
            ],
            port_updates: vec![
                PortUpdate {
                    address: "52:54:00:00:00:02".into(),
                    pxe_enabled: Some(false),
                    local_link_connection: Some(llc.clone()),
                },
                PortUpdate { address: "52:54:00:00:00:77".into(), ..PortUpdate::default() },
            ],
            delete_ports: vec![stale.uuid, foreign.uuid],
            plugin_data: JsonMap::new(),
        };
        let plugin = map(json!({"valid_interfaces": {"eth0": {}}, "error": null}));
        let applied = store.apply_inspection(node.uuid, &outcome, &plugin).await.unwrap();
        assert_eq!(
            applied,
            AppliedInspection {
                created: vec!["52:54:00:00:00:03".into()],
                updated: vec!["52:54:00:00:00:02".into()],
                deleted: vec![stale.uuid],
                taken_macs: vec!["52:54:00:00:00:09".into()],
                missing_macs: vec!["52:54:00:00:00:77".into()],
            }
        );

        let after = store.get_node(&node.uuid.to_string()).await.unwrap();
        assert_eq!(after.properties, map(json!({"cpus": 4, "memory_mb": 2048, "vendor": "kept"})));
        assert!(after.inspection_finished_at.is_some());
        let query = PortQuery { node_uuid: Some(node.uuid), ..PortQuery::default() };
        let ports = store.list_ports(&query).await.unwrap();
        let addresses: Vec<&str> = ports.iter().map(|p| p.address.as_str()).collect();
        assert_eq!(addresses, ["52:54:00:00:00:02", "52:54:00:00:00:03"]);
        let updated = &ports[0];
        assert_eq!(updated.uuid, kept.uuid);
        assert!(!updated.pxe_enabled);
        assert_eq!(updated.local_link_connection, llc);
        assert_eq!(updated.version, kept.version + 1);
        assert!(ports[1].pxe_enabled);
        assert_eq!(ports[1].local_link_connection, llc);
        assert_eq!(store.get_port(foreign.uuid).await.unwrap(), foreign, "another node's port");

        let stored = store.get_inspection(node.uuid).await.unwrap().unwrap();
        assert_eq!(stored, StoredInspection { data: report, plugin_data: Some(plugin) });
        // A new report replaces the old one's plugin data.
        let newer = json!({"inventory": {"interfaces": [{"mac_address": "52:54:00:00:00:03"}]}});
        store.store_inspection_data(node.uuid, &newer).await.unwrap();
        let stored = store.get_inspection(node.uuid).await.unwrap().unwrap();
        assert_eq!(stored, StoredInspection { data: newer, plugin_data: None });
    }

    #[tokio::test]
    async fn a_bad_mac_or_a_missing_node_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).await.unwrap();
        let node = store.create_node(&Node::new("fake-hardware")).await.unwrap();
        let port = store.create_port(&Port::new(node.uuid, "52:54:00:00:00:01")).await.unwrap();
        let outcome = InspectionOutcome {
            properties: map(json!({"cpus": 4})),
            new_ports: vec![NewPort {
                address: "not a mac".into(),
                pxe_enabled: true,
                local_link_connection: JsonMap::new(),
            }],
            delete_ports: vec![port.uuid],
            ..InspectionOutcome::default()
        };
        let err = store.apply_inspection(node.uuid, &outcome, &JsonMap::new()).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidMac(_)), "{err}");
        assert_eq!(store.get_port(port.uuid).await.unwrap(), port, "rolled back");
        let after = store.get_node(&node.uuid.to_string()).await.unwrap();
        assert!(after.properties.is_empty());
        assert!(after.inspection_finished_at.is_none());
        assert_eq!(store.get_inspection(node.uuid).await.unwrap(), None);

        let missing = uuid::Uuid::new_v4();
        let err = store
            .apply_inspection(missing, &InspectionOutcome::default(), &JsonMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NodeNotFound(_)), "{err}");
    }
}
