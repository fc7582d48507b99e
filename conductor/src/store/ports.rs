//! Ports (a node's NICs), lookup by MAC, and stored inspection data.

use std::fmt;
use std::str::FromStr;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::codec::{conflict_or, json_text, normalize_mac, now, to_micros, Cols};
use super::nodes::{args_of, Bind, InvalidSortKey};
use super::{JsonMap, Store, StoreError};

/// A network port of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub uuid: Uuid,
    /// MAC address, lowercase and colon-separated.
    pub address: String,
    pub node_uuid: Uuid,
    pub pxe_enabled: bool,
    pub local_link_connection: JsonMap,
    pub physical_network: Option<String>,
    pub extra: JsonMap,
    pub internal_info: JsonMap,
    pub is_smartnic: bool,
    pub portgroup_uuid: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub updated_at: Option<OffsetDateTime>,
    /// Counts writes; guards [`Store::save_port`].
    pub version: i64,
}

impl Port {
    /// A new port with a fresh UUID and Ironic's defaults (`pxe_enabled` true). The
    /// address is validated by [`Store::create_port`].
    pub fn new(node_uuid: Uuid, address: impl Into<String>) -> Port {
        Port {
            uuid: Uuid::new_v4(),
            address: address.into(),
            node_uuid,
            pxe_enabled: true,
            local_link_connection: JsonMap::new(),
            physical_network: None,
            extra: JsonMap::new(),
            internal_info: JsonMap::new(),
            is_smartnic: false,
            portgroup_uuid: None,
            created_at: now(),
            updated_at: None,
            version: 0,
        }
    }
}

/// Sort keys accepted by [`Store::list_ports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortSortKey {
    #[default]
    Id,
    Uuid,
    Address,
    NodeUuid,
    CreatedAt,
    UpdatedAt,
}

impl PortSortKey {
    const NAMES: &[(&'static str, PortSortKey)] = &[
        ("id", PortSortKey::Id),
        ("uuid", PortSortKey::Uuid),
        ("address", PortSortKey::Address),
        ("node_uuid", PortSortKey::NodeUuid),
        ("created_at", PortSortKey::CreatedAt),
        ("updated_at", PortSortKey::UpdatedAt),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(_, key)| *key == self).map_or("id", |(name, _)| name)
    }

    fn expr(self, t: &str) -> String {
        match self {
            PortSortKey::UpdatedAt => format!("COALESCE({t}.updated_at, -1)"),
            other => format!("{t}.{}", other.as_str()),
        }
    }
}

impl FromStr for PortSortKey {
    type Err = InvalidSortKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, key)| *key)
            .ok_or_else(|| InvalidSortKey(s.to_owned()))
    }
}

impl fmt::Display for PortSortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Filters, order and page of [`Store::list_ports`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortQuery {
    pub node_uuid: Option<Uuid>,
    /// A MAC address in any accepted spelling.
    pub address: Option<String>,
    pub limit: Option<u32>,
    pub marker: Option<Uuid>,
    pub sort_key: PortSortKey,
    pub descending: bool,
}

fn port_from_row(row: &SqliteRow) -> Result<Port, StoreError> {
    let uuid_text: String = row.try_get("uuid")?;
    let c = Cols { row, uuid: uuid_text.clone() };
    let parse_uuid = |column: &'static str, text: &str| {
        Uuid::parse_str(text).map_err(|err| c.corrupt(column, err.to_string()))
    };
    let node_uuid: String = c.get("node_uuid")?;
    let portgroup: Option<String> = c.get("portgroup_uuid")?;
    Ok(Port {
        uuid: parse_uuid("uuid", &uuid_text)?,
        address: c.get("address")?,
        node_uuid: parse_uuid("node_uuid", &node_uuid)?,
        pxe_enabled: c.get("pxe_enabled")?,
        local_link_connection: c.map("local_link_connection")?,
        physical_network: c.get("physical_network")?,
        extra: c.map("extra")?,
        internal_info: c.map("internal_info")?,
        is_smartnic: c.get("is_smartnic")?,
        portgroup_uuid: portgroup.map(|p| parse_uuid("portgroup_uuid", &p)).transpose()?,
        created_at: c.time("created_at")?,
        updated_at: c.opt_time("updated_at")?,
        version: c.get("version")?,
    })
}

fn port_conflict(err: sqlx::Error, port: &Port) -> StoreError {
    let uuid = port.uuid.to_string();
    conflict_or(
        err,
        "port",
        &[("ports.address", "address", &port.address), ("ports.uuid", "uuid", &uuid)],
    )
}

impl Store {
    /// Inserts `port` with its address validated and normalised. A taken MAC or UUID is
    /// [`StoreError::Conflict`]; a missing node is [`StoreError::NodeNotFound`].
    pub async fn create_port(&self, port: &Port) -> Result<Port, StoreError> {
        let mut port = port.clone();
        port.address = normalize_mac(&port.address)?;
        port.created_at = now();
        port.updated_at = None;
        port.version = 0;
        let node = port.node_uuid.to_string();
        let mut tx = self.write_tx().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM nodes WHERE uuid = ?")
            .bind(&node)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NodeNotFound(node));
        }
        sqlx::query(
            "INSERT INTO ports (uuid, address, node_uuid, pxe_enabled, local_link_connection, \
             physical_network, extra, internal_info, is_smartnic, portgroup_uuid, created_at, \
             updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0)",
        )
        .bind(port.uuid.to_string())
        .bind(&port.address)
        .bind(&node)
        .bind(port.pxe_enabled)
        .bind(json_text(&port.local_link_connection))
        .bind(&port.physical_network)
        .bind(json_text(&port.extra))
        .bind(json_text(&port.internal_info))
        .bind(port.is_smartnic)
        .bind(port.portgroup_uuid.map(|u| u.to_string()))
        .bind(to_micros(port.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|err| port_conflict(err, &port))?;
        tx.commit().await?;
        Ok(port)
    }

    /// The port with this UUID.
    pub async fn get_port(&self, uuid: Uuid) -> Result<Port, StoreError> {
        let row = sqlx::query("SELECT * FROM ports WHERE uuid = ?")
            .bind(uuid.to_string())
            .fetch_optional(&self.read)
            .await?;
        match row {
            Some(row) => port_from_row(&row),
            None => Err(StoreError::PortNotFound(uuid.to_string())),
        }
    }

    /// Ports matching `query`, in its order, one page.
    pub async fn list_ports(&self, query: &PortQuery) -> Result<Vec<Port>, StoreError> {
        let mut sql = String::from("SELECT * FROM ports p WHERE 1 = 1");
        let mut binds = Vec::new();
        if let Some(node) = query.node_uuid {
            sql.push_str(" AND p.node_uuid = ?");
            binds.push(Bind::Text(node.to_string()));
        }
        if let Some(address) = &query.address {
            sql.push_str(" AND p.address = ?");
            binds.push(Bind::Text(normalize_mac(address)?));
        }
        let key = query.sort_key;
        let (cmp, dir) = if query.descending { ("<", "DESC") } else { (">", "ASC") };
        if let Some(marker) = query.marker {
            let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM ports WHERE uuid = ?")
                .bind(marker.to_string())
                .fetch_optional(&self.read)
                .await?;
            if exists.is_none() {
                return Err(StoreError::MarkerNotFound(marker.to_string()));
            }
            let mine = key.expr("p");
            let theirs = key.expr("m");
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM ports m WHERE m.uuid = ? AND \
                 ({mine} {cmp} {theirs} OR ({mine} = {theirs} AND p.id {cmp} m.id)))"
            ));
            binds.push(Bind::Text(marker.to_string()));
        }
        sql.push_str(&format!(" ORDER BY {} {dir}, p.id {dir}", key.expr("p")));
        if let Some(limit) = query.limit {
            sql.push_str(" LIMIT ?");
            binds.push(Bind::Int(i64::from(limit)));
        }
        let rows = sqlx::query_with(&sql, args_of(binds)?).fetch_all(&self.read).await?;
        rows.iter().map(port_from_row).collect()
    }

    /// Writes the port if nobody wrote it since it was read; otherwise
    /// [`StoreError::Stale`]. The address is validated again; the node must exist.
    pub async fn save_port(&self, port: &Port) -> Result<Port, StoreError> {
        let mut saved = port.clone();
        saved.address = normalize_mac(&port.address)?;
        let updated_at = now();
        let node = port.node_uuid.to_string();
        let mut tx = self.write_tx().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM nodes WHERE uuid = ?")
            .bind(&node)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NodeNotFound(node));
        }
        let done = sqlx::query(
            "UPDATE ports SET address = ?, node_uuid = ?, pxe_enabled = ?, \
             local_link_connection = ?, physical_network = ?, extra = ?, internal_info = ?, \
             is_smartnic = ?, portgroup_uuid = ?, updated_at = ?, version = version + 1 \
             WHERE uuid = ? AND version = ?",
        )
        .bind(&saved.address)
        .bind(&node)
        .bind(saved.pxe_enabled)
        .bind(json_text(&saved.local_link_connection))
        .bind(&saved.physical_network)
        .bind(json_text(&saved.extra))
        .bind(json_text(&saved.internal_info))
        .bind(saved.is_smartnic)
        .bind(saved.portgroup_uuid.map(|u| u.to_string()))
        .bind(to_micros(updated_at))
        .bind(saved.uuid.to_string())
        .bind(saved.version)
        .execute(&mut *tx)
        .await
        .map_err(|err| port_conflict(err, &saved))?;
        if done.rows_affected() == 0 {
            let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM ports WHERE uuid = ?")
                .bind(saved.uuid.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match exists {
                Some(_) => StoreError::Stale { kind: "port", uuid: saved.uuid },
                None => StoreError::PortNotFound(saved.uuid.to_string()),
            });
        }
        tx.commit().await?;
        saved.version += 1;
        saved.updated_at = Some(updated_at);
        Ok(saved)
    }

    /// Deletes the port.
    pub async fn delete_port(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM ports WHERE uuid = ?")
            .bind(uuid.to_string())
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::PortNotFound(uuid.to_string()));
        }
        Ok(())
    }

    /// The distinct nodes owning any of these MAC addresses (as the agent reports them on
    /// lookup), in creation order. Strings that are not MAC addresses are skipped: the
    /// agent reports every interface, and one odd entry must not fail the lookup.
    pub async fn find_node_by_macs(&self, macs: &[String]) -> Result<Vec<Uuid>, StoreError> {
        let macs: Vec<String> = macs.iter().filter_map(|m| normalize_mac(m).ok()).collect();
        if macs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT n.uuid FROM nodes n WHERE n.uuid IN \
             (SELECT p.node_uuid FROM ports p WHERE p.address IN ({})) ORDER BY n.id",
            vec!["?"; macs.len()].join(", ")
        );
        let mut query = sqlx::query_as::<_, (String,)>(&sql);
        for mac in &macs {
            query = query.bind(mac);
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.into_iter()
            .map(|(id,)| {
                Uuid::parse_str(&id).map_err(|err| StoreError::Corrupt {
                    uuid: id.clone(),
                    column: "uuid",
                    reason: err.to_string(),
                })
            })
            .collect()
    }

    /// Stores (replacing any earlier) inspection data posted for the node; the plugin data
    /// of an earlier report goes with it.
    pub async fn store_inspection_data(
        &self,
        node_uuid: Uuid,
        data: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let node = node_uuid.to_string();
        let mut tx = self.write_tx().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM nodes WHERE uuid = ?")
            .bind(&node)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NodeNotFound(node));
        }
        sqlx::query(
            "INSERT INTO inspection_data (node_uuid, data, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (node_uuid) DO UPDATE SET data = excluded.data, \
             created_at = excluded.created_at, plugin_data = NULL",
        )
        .bind(&node)
        .bind(data.to_string())
        .bind(to_micros(now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The inspection data stored for the node, if any.
    pub async fn get_inspection_data(
        &self,
        node_uuid: Uuid,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let node = node_uuid.to_string();
        let row: Option<(String,)> =
            sqlx::query_as("SELECT data FROM inspection_data WHERE node_uuid = ?")
                .bind(&node)
                .fetch_optional(&self.read)
                .await?;
        row.map(|(text,)| {
            serde_json::from_str(&text).map_err(|err| StoreError::Corrupt {
                uuid: node.clone(),
                column: "inspection_data",
                reason: err.to_string(),
            })
        })
        .transpose()
    }
}
