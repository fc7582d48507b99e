//! Nodes: CRUD with optimistic concurrency, provision state transitions as conditional
//! updates, reservations, `driver_internal_info` merges, and restart takeover.

use std::fmt;
use std::str::FromStr;

use ferric_shared::states::{
    advance, next_state, Event, PowerState, PowerTarget, ProvisionState, TRANSITIONS,
};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::codec::{conflict_or, json_text, list_text, now, opt_micros, to_micros, Cols};
use super::info_merge::{Decide, InfoChange, InfoMerge, InfoView, Merged};
use super::{JsonMap, Store, StoreError};

/// A bare-metal node as the conductor keeps it (the fields of Ironic's node that Ferric
/// stores). `version` counts writes and guards [`Store::save_node`].
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub driver: String,
    pub driver_info: JsonMap,
    pub driver_internal_info: JsonMap,
    pub properties: JsonMap,
    pub instance_info: JsonMap,
    pub instance_uuid: Option<String>,
    pub extra: JsonMap,
    pub resource_class: Option<String>,
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
    pub provision_updated_at: Option<OffsetDateTime>,
    pub power_state: Option<PowerState>,
    pub target_power_state: Option<PowerTarget>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub fault: Option<String>,
    pub last_error: Option<String>,
    pub reservation: Option<String>,
    /// The running clean step; empty when none (Ironic shows `{}`).
    pub clean_step: JsonMap,
    /// The running deploy step; empty when none.
    pub deploy_step: JsonMap,
    pub automated_clean: Option<bool>,
    pub console_enabled: bool,
    pub boot_mode: Option<String>,
    pub secure_boot: Option<bool>,
    pub bios_interface: Option<String>,
    pub boot_interface: Option<String>,
    pub console_interface: Option<String>,
    pub deploy_interface: Option<String>,
    pub firmware_interface: Option<String>,
    pub inspect_interface: Option<String>,
    pub management_interface: Option<String>,
    pub network_interface: Option<String>,
    pub power_interface: Option<String>,
    pub raid_interface: Option<String>,
    pub rescue_interface: Option<String>,
    pub storage_interface: Option<String>,
    pub vendor_interface: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    pub description: Option<String>,
    pub conductor_group: String,
    pub protected: bool,
    pub protected_reason: Option<String>,
    pub retired: bool,
    pub retired_reason: Option<String>,
    pub traits: Vec<String>,
    pub network_data: JsonMap,
    pub inspection_started_at: Option<OffsetDateTime>,
    pub inspection_finished_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: Option<OffsetDateTime>,
    pub version: i64,
}

impl Node {
    /// A new node for `driver` with a fresh UUID, in `enroll`, with every other field at
    /// Ironic's default. Set fields, then pass it to [`Store::create_node`].
    pub fn new(driver: impl Into<String>) -> Node {
        Node {
            uuid: Uuid::new_v4(),
            name: None,
            driver: driver.into(),
            driver_info: JsonMap::new(),
            driver_internal_info: JsonMap::new(),
            properties: JsonMap::new(),
            instance_info: JsonMap::new(),
            instance_uuid: None,
            extra: JsonMap::new(),
            resource_class: None,
            provision_state: ProvisionState::Enroll,
            target_provision_state: None,
            provision_updated_at: None,
            power_state: None,
            target_power_state: None,
            maintenance: false,
            maintenance_reason: None,
            fault: None,
            last_error: None,
            reservation: None,
            clean_step: JsonMap::new(),
            deploy_step: JsonMap::new(),
            automated_clean: None,
            console_enabled: false,
            boot_mode: None,
            secure_boot: None,
            bios_interface: None,
            boot_interface: None,
            console_interface: None,
            deploy_interface: None,
            firmware_interface: None,
            inspect_interface: None,
            management_interface: None,
            network_interface: None,
            power_interface: None,
            raid_interface: None,
            rescue_interface: None,
            storage_interface: None,
            vendor_interface: None,
            owner: None,
            lessee: None,
            description: None,
            conductor_group: String::new(),
            protected: false,
            protected_reason: None,
            retired: false,
            retired_reason: None,
            traits: Vec::new(),
            network_data: JsonMap::new(),
            inspection_started_at: None,
            inspection_finished_at: None,
            created_at: now(),
            updated_at: None,
            version: 0,
        }
    }
}

/// Columns written by [`Store::save_node`]: everything except the identity, the provision
/// state fields (only transitions move those), the reservation (only `reserve`/`release`)
/// and `created_at`.
const SAVED_COLUMNS: &[&str] = &[
    "name",
    "driver",
    "driver_info",
    "driver_internal_info",
    "properties",
    "instance_info",
    "instance_uuid",
    "extra",
    "resource_class",
    "power_state",
    "target_power_state",
    "maintenance",
    "maintenance_reason",
    "fault",
    "last_error",
    "clean_step",
    "deploy_step",
    "automated_clean",
    "console_enabled",
    "boot_mode",
    "secure_boot",
    "bios_interface",
    "boot_interface",
    "console_interface",
    "deploy_interface",
    "firmware_interface",
    "inspect_interface",
    "management_interface",
    "network_interface",
    "power_interface",
    "raid_interface",
    "rescue_interface",
    "storage_interface",
    "vendor_interface",
    "owner",
    "lessee",
    "description",
    "conductor_group",
    "protected",
    "protected_reason",
    "retired",
    "retired_reason",
    "traits",
    "network_data",
    "inspection_started_at",
    "inspection_finished_at",
];

/// Columns only set at creation or by dedicated operations.
const OTHER_COLUMNS: &[&str] = &[
    "uuid",
    "provision_state",
    "target_provision_state",
    "provision_updated_at",
    "reservation",
    "created_at",
    "updated_at",
    "version",
];

const SELECT_NODE: &str = "SELECT * FROM nodes";

/// The JSON document columns with the empty document that stands in for them when a
/// column-limited list leaves them out. Parsing these is most of the cost of reading a
/// node; every other column is a scalar.
const JSON_COLUMNS: &[(&str, &str)] = &[
    ("driver_info", "'{}'"),
    ("driver_internal_info", "'{}'"),
    ("properties", "'{}'"),
    ("instance_info", "'{}'"),
    ("extra", "'{}'"),
    ("clean_step", "'{}'"),
    ("deploy_step", "'{}'"),
    ("network_data", "'{}'"),
    ("traits", "'[]'"),
];

/// The select list of a node list on alias `n`: every column, except the JSON documents
/// not in `wanted` (`None`: all of them), which read as empty documents.
fn node_select_list(wanted: Option<&[&str]>) -> String {
    let Some(wanted) = wanted else {
        return "n.*".to_owned();
    };
    SAVED_COLUMNS
        .iter()
        .chain(OTHER_COLUMNS)
        .map(|column| match JSON_COLUMNS.iter().find(|(name, _)| name == column) {
            Some((name, empty)) if !wanted.contains(name) => format!("{empty} AS {name}"),
            _ => format!("n.{column}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds the [`SAVED_COLUMNS`] of `node`, in that order.
fn bind_saved(args: &mut SqliteArguments<'static>, node: &Node) -> Result<(), StoreError> {
    let text = |v: &Option<String>| v.clone();
    let values: Vec<Bind> = vec![
        Bind::OptText(text(&node.name)),
        Bind::Text(node.driver.clone()),
        Bind::Text(json_text(&node.driver_info)),
        Bind::Text(json_text(&node.driver_internal_info)),
        Bind::Text(json_text(&node.properties)),
        Bind::Text(json_text(&node.instance_info)),
        Bind::OptText(text(&node.instance_uuid)),
        Bind::Text(json_text(&node.extra)),
        Bind::OptText(text(&node.resource_class)),
        Bind::OptText(node.power_state.map(|s| s.as_str().to_owned())),
        Bind::OptText(node.target_power_state.map(|s| s.as_str().to_owned())),
        Bind::Bool(node.maintenance),
        Bind::OptText(text(&node.maintenance_reason)),
        Bind::OptText(text(&node.fault)),
        Bind::OptText(text(&node.last_error)),
        Bind::Text(json_text(&node.clean_step)),
        Bind::Text(json_text(&node.deploy_step)),
        Bind::OptBool(node.automated_clean),
        Bind::Bool(node.console_enabled),
        Bind::OptText(text(&node.boot_mode)),
        Bind::OptBool(node.secure_boot),
        Bind::OptText(text(&node.bios_interface)),
        Bind::OptText(text(&node.boot_interface)),
        Bind::OptText(text(&node.console_interface)),
        Bind::OptText(text(&node.deploy_interface)),
        Bind::OptText(text(&node.firmware_interface)),
        Bind::OptText(text(&node.inspect_interface)),
        Bind::OptText(text(&node.management_interface)),
        Bind::OptText(text(&node.network_interface)),
        Bind::OptText(text(&node.power_interface)),
        Bind::OptText(text(&node.raid_interface)),
        Bind::OptText(text(&node.rescue_interface)),
        Bind::OptText(text(&node.storage_interface)),
        Bind::OptText(text(&node.vendor_interface)),
        Bind::OptText(text(&node.owner)),
        Bind::OptText(text(&node.lessee)),
        Bind::OptText(text(&node.description)),
        Bind::Text(node.conductor_group.clone()),
        Bind::Bool(node.protected),
        Bind::OptText(text(&node.protected_reason)),
        Bind::Bool(node.retired),
        Bind::OptText(text(&node.retired_reason)),
        Bind::Text(list_text(&node.traits)),
        Bind::Text(json_text(&node.network_data)),
        Bind::OptInt(opt_micros(node.inspection_started_at)),
        Bind::OptInt(opt_micros(node.inspection_finished_at)),
    ];
    debug_assert_eq!(values.len(), SAVED_COLUMNS.len());
    for value in values {
        value.add_to(args)?;
    }
    Ok(())
}

/// One bind parameter of a dynamically built statement.
#[derive(Debug, Clone)]
pub(super) enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    OptBool(Option<bool>),
}

impl Bind {
    pub(super) fn add_to(self, args: &mut SqliteArguments<'static>) -> Result<(), StoreError> {
        let result = match self {
            Bind::Text(v) => args.add(v),
            Bind::OptText(v) => args.add(v),
            Bind::Int(v) => args.add(v),
            Bind::OptInt(v) => args.add(v),
            Bind::Bool(v) => args.add(v),
            Bind::OptBool(v) => args.add(v),
        };
        result.map_err(|err| StoreError::Database(sqlx::Error::Encode(err)))
    }
}

pub(super) fn args_of(binds: Vec<Bind>) -> Result<SqliteArguments<'static>, StoreError> {
    let mut args = SqliteArguments::default();
    for bind in binds {
        bind.add_to(&mut args)?;
    }
    Ok(args)
}

fn node_from_row(row: &SqliteRow) -> Result<Node, StoreError> {
    let uuid_text: String = row.try_get("uuid")?;
    let c = Cols { row, uuid: uuid_text.clone() };
    let uuid = Uuid::parse_str(&uuid_text).map_err(|err| c.corrupt("uuid", err.to_string()))?;
    Ok(Node {
        uuid,
        name: c.get("name")?,
        driver: c.get("driver")?,
        driver_info: c.map("driver_info")?,
        driver_internal_info: c.map("driver_internal_info")?,
        properties: c.map("properties")?,
        instance_info: c.map("instance_info")?,
        instance_uuid: c.get("instance_uuid")?,
        extra: c.map("extra")?,
        resource_class: c.get("resource_class")?,
        provision_state: c.parse("provision_state")?,
        target_provision_state: c.opt_parse("target_provision_state")?,
        provision_updated_at: c.opt_time("provision_updated_at")?,
        power_state: c.opt_parse("power_state")?,
        target_power_state: c.opt_parse("target_power_state")?,
        maintenance: c.get("maintenance")?,
        maintenance_reason: c.get("maintenance_reason")?,
        fault: c.get("fault")?,
        last_error: c.get("last_error")?,
        reservation: c.get("reservation")?,
        clean_step: c.map("clean_step")?,
        deploy_step: c.map("deploy_step")?,
        automated_clean: c.get("automated_clean")?,
        console_enabled: c.get("console_enabled")?,
        boot_mode: c.get("boot_mode")?,
        secure_boot: c.get("secure_boot")?,
        bios_interface: c.get("bios_interface")?,
        boot_interface: c.get("boot_interface")?,
        console_interface: c.get("console_interface")?,
        deploy_interface: c.get("deploy_interface")?,
        firmware_interface: c.get("firmware_interface")?,
        inspect_interface: c.get("inspect_interface")?,
        management_interface: c.get("management_interface")?,
        network_interface: c.get("network_interface")?,
        power_interface: c.get("power_interface")?,
        raid_interface: c.get("raid_interface")?,
        rescue_interface: c.get("rescue_interface")?,
        storage_interface: c.get("storage_interface")?,
        vendor_interface: c.get("vendor_interface")?,
        owner: c.get("owner")?,
        lessee: c.get("lessee")?,
        description: c.get("description")?,
        conductor_group: c.get("conductor_group")?,
        protected: c.get("protected")?,
        protected_reason: c.get("protected_reason")?,
        retired: c.get("retired")?,
        retired_reason: c.get("retired_reason")?,
        traits: c.list("traits")?,
        network_data: c.map("network_data")?,
        inspection_started_at: c.opt_time("inspection_started_at")?,
        inspection_finished_at: c.opt_time("inspection_finished_at")?,
        created_at: c.time("created_at")?,
        updated_at: c.opt_time("updated_at")?,
        version: c.get("version")?,
    })
}

fn node_conflict(err: sqlx::Error, node: &Node) -> StoreError {
    let uuid = node.uuid.to_string();
    conflict_or(
        err,
        "node",
        &[
            ("nodes.instance_uuid", "instance_uuid", node.instance_uuid.as_deref().unwrap_or("")),
            ("nodes.uuid", "uuid", &uuid),
            ("nodes.name", "name", node.name.as_deref().unwrap_or("")),
        ],
    )
}

/// The fields of Ironic's default (non-detail) node list, read by
/// [`Store::list_node_items`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeListItem {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub instance_uuid: Option<String>,
    pub maintenance: bool,
    pub power_state: Option<PowerState>,
    pub provision_state: ProvisionState,
}

impl NodeListItem {
    /// The columns read, which are also the API field names.
    pub const COLUMNS: [&'static str; 6] =
        ["uuid", "name", "instance_uuid", "maintenance", "power_state", "provision_state"];

    fn from_row(row: &SqliteRow) -> Result<NodeListItem, StoreError> {
        let uuid_text: String = row.try_get("uuid")?;
        let c = Cols { row, uuid: uuid_text.clone() };
        let uuid = Uuid::parse_str(&uuid_text).map_err(|err| c.corrupt("uuid", err.to_string()))?;
        Ok(NodeListItem {
            uuid,
            name: c.get("name")?,
            instance_uuid: c.get("instance_uuid")?,
            maintenance: c.get("maintenance")?,
            power_state: c.opt_parse("power_state")?,
            provision_state: c.parse("provision_state")?,
        })
    }
}

/// Sort keys accepted by [`Store::list_nodes`]; JSON columns are not sortable (as in
/// Ironic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeSortKey {
    /// Creation order (Ironic's default).
    #[default]
    Id,
    Uuid,
    Name,
    Driver,
    ProvisionState,
    PowerState,
    Maintenance,
    ResourceClass,
    ConductorGroup,
    Owner,
    Lessee,
    InstanceUuid,
    CreatedAt,
    UpdatedAt,
    ProvisionUpdatedAt,
}

impl NodeSortKey {
    const NAMES: &[(&'static str, NodeSortKey)] = &[
        ("id", NodeSortKey::Id),
        ("uuid", NodeSortKey::Uuid),
        ("name", NodeSortKey::Name),
        ("driver", NodeSortKey::Driver),
        ("provision_state", NodeSortKey::ProvisionState),
        ("power_state", NodeSortKey::PowerState),
        ("maintenance", NodeSortKey::Maintenance),
        ("resource_class", NodeSortKey::ResourceClass),
        ("conductor_group", NodeSortKey::ConductorGroup),
        ("owner", NodeSortKey::Owner),
        ("lessee", NodeSortKey::Lessee),
        ("instance_uuid", NodeSortKey::InstanceUuid),
        ("created_at", NodeSortKey::CreatedAt),
        ("updated_at", NodeSortKey::UpdatedAt),
        ("provision_updated_at", NodeSortKey::ProvisionUpdatedAt),
    ];

    /// The API name of the key.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(_, key)| *key == self).map_or("id", |(name, _)| name)
    }

    /// The sort expression on table alias `t`. NULLs sort as the smallest value
    /// everywhere (SQLite and PostgreSQL disagree on where NULL goes), which keeps marker
    /// comparisons total.
    fn expr(self, t: &str) -> String {
        match self {
            NodeSortKey::Id
            | NodeSortKey::Uuid
            | NodeSortKey::Driver
            | NodeSortKey::ProvisionState
            | NodeSortKey::Maintenance
            | NodeSortKey::CreatedAt => format!("{t}.{}", self.as_str()),
            NodeSortKey::UpdatedAt | NodeSortKey::ProvisionUpdatedAt => {
                format!("COALESCE({t}.{}, -1)", self.as_str())
            }
            _ => format!("COALESCE({t}.{}, '')", self.as_str()),
        }
    }
}

/// A sort key that is not in the whitelist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid sort key")]
pub struct InvalidSortKey(pub String);

impl FromStr for NodeSortKey {
    type Err = InvalidSortKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, key)| *key)
            .ok_or_else(|| InvalidSortKey(s.to_owned()))
    }
}

impl fmt::Display for NodeSortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Filters, order and page of [`Store::list_nodes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeQuery {
    pub provision_state: Option<ProvisionState>,
    pub maintenance: Option<bool>,
    pub driver: Option<String>,
    pub resource_class: Option<String>,
    /// At most this many nodes; `None` for all.
    pub limit: Option<u32>,
    /// Start after the node with this UUID (in the chosen order).
    pub marker: Option<Uuid>,
    pub sort_key: NodeSortKey,
    /// Descending instead of ascending.
    pub descending: bool,
}

/// What a transition does to `last_error`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LastError {
    #[default]
    Keep,
    Clear,
    Set(String),
}

/// A provision state change driven by `event`, applied by [`Store::transition`] as one
/// conditional UPDATE whose WHERE lists the states in which the event is valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub event: Event,
    /// Restricts the source states further (e.g. `abort` only from agent wait states);
    /// `None` allows every source the transition table allows.
    pub only_from: Option<Vec<ProvisionState>>,
    /// Requested `target_provision_state` (e.g. `manageable` for manual cleaning); `None`
    /// keeps or defaults it as [`advance`] does.
    pub target: Option<ProvisionState>,
    pub last_error: LastError,
    /// `Some` replaces the node's `clean_step` (an empty map clears it).
    pub clean_step: Option<JsonMap>,
    /// `Some` replaces the node's `deploy_step` (an empty map clears it).
    pub deploy_step: Option<JsonMap>,
    /// Keys set in `driver_internal_info` in the same transaction.
    pub internal_info_set: JsonMap,
    /// Keys removed from `driver_internal_info` in the same transaction.
    pub internal_info_remove: Vec<String>,
}

impl Transition {
    pub fn new(event: Event) -> Transition {
        Transition {
            event,
            only_from: None,
            target: None,
            last_error: LastError::Keep,
            clean_step: None,
            deploy_step: None,
            internal_info_set: JsonMap::new(),
            internal_info_remove: Vec::new(),
        }
    }

    pub fn only_from(mut self, states: &[ProvisionState]) -> Transition {
        self.only_from = Some(states.to_vec());
        self
    }

    pub fn target(mut self, target: ProvisionState) -> Transition {
        self.target = Some(target);
        self
    }

    pub fn last_error(mut self, last_error: LastError) -> Transition {
        self.last_error = last_error;
        self
    }

    pub fn clean_step(mut self, step: JsonMap) -> Transition {
        self.clean_step = Some(step);
        self
    }

    /// Sets `key` in `driver_internal_info` together with the state change.
    pub fn set_internal_info(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.internal_info_set.insert(key.into(), value);
        self
    }

    /// Removes `key` from `driver_internal_info` together with the state change.
    pub fn remove_internal_info(mut self, key: impl Into<String>) -> Transition {
        self.internal_info_remove.push(key.into());
        self
    }

    pub fn deploy_step(mut self, step: JsonMap) -> Transition {
        self.deploy_step = Some(step);
        self
    }

    /// The table rows this transition may use, honouring `only_from` and the requested
    /// target.
    fn rows(&self) -> Vec<(ProvisionState, ProvisionState)> {
        TRANSITIONS
            .iter()
            .filter(|row| row.event == self.event)
            .filter(|row| self.only_from.as_ref().is_none_or(|only| only.contains(&row.from)))
            .filter(|row| {
                self.target
                    .is_none_or(|t| row.to.is_stable() || row.to.possible_targets().contains(&t))
            })
            .map(|row| (row.from, row.to))
            .collect()
    }
}

/// The result of a successful [`Store::transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The node moved.
    Moved { from: ProvisionState, to: ProvisionState, target: Option<ProvisionState> },
    /// The node already was in a state this event leads to; nothing was written.
    AlreadyThere { state: ProvisionState },
}

/// One node moved by [`Store::takeover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    pub uuid: Uuid,
    pub from: ProvisionState,
    pub to: ProvisionState,
}

/// Why [`Store::update_node`] did not save.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The closure refused the change.
    #[error("the change was refused")]
    Rejected(#[source] E),
}

/// How often [`Store::update_node`] re-reads and re-applies after a concurrent write.
const UPDATE_ATTEMPTS: usize = 8;

/// `driver_internal_info` text `text` of node `id` with `remove` removed and `set` set.
fn merge_info(id: &str, text: &str, set: &JsonMap, remove: &[&str]) -> Result<String, StoreError> {
    let mut info: JsonMap = serde_json::from_str(text).map_err(|err| StoreError::Corrupt {
        uuid: id.to_owned(),
        column: "driver_internal_info",
        reason: err.to_string(),
    })?;
    for key in remove {
        info.remove(*key);
    }
    info.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(json_text(&info))
}

/// The node with this UUID or name, read through `exec`.
pub(super) async fn fetch_node<'e>(
    exec: impl sqlx::SqliteExecutor<'e>,
    ident: &str,
) -> Result<Node, StoreError> {
    let row = match Uuid::parse_str(ident) {
        Ok(uuid) => {
            sqlx::query(&format!("{SELECT_NODE} WHERE uuid = ?"))
                .bind(uuid.to_string())
                .fetch_optional(exec)
                .await?
        }
        Err(_) => {
            sqlx::query(&format!("{SELECT_NODE} WHERE name = ?"))
                .bind(ident)
                .fetch_optional(exec)
                .await?
        }
    };
    match row {
        Some(row) => node_from_row(&row),
        None => Err(StoreError::NodeNotFound(ident.to_owned())),
    }
}

/// Writes the saved columns of `node` if its version still matches; `None` when no row
/// matched (changed meanwhile, or gone).
pub(super) async fn write_node<'e>(
    exec: impl sqlx::SqliteExecutor<'e>,
    node: &Node,
) -> Result<Option<Node>, StoreError> {
    let assignments: Vec<String> = SAVED_COLUMNS.iter().map(|c| format!("{c} = ?")).collect();
    let sql = format!(
        "UPDATE nodes SET {}, updated_at = ?, version = version + 1 \
         WHERE uuid = ? AND version = ?",
        assignments.join(", ")
    );
    let updated_at = now();
    let mut args = SqliteArguments::default();
    bind_saved(&mut args, node)?;
    for bind in [
        Bind::Int(to_micros(updated_at)),
        Bind::Text(node.uuid.to_string()),
        Bind::Int(node.version),
    ] {
        bind.add_to(&mut args)?;
    }
    let done =
        sqlx::query_with(&sql, args).execute(exec).await.map_err(|err| node_conflict(err, node))?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    // The version matched, so nobody else wrote these columns: the stored node is the one
    // given (the reservation, which saves do not write, may have changed).
    let mut saved = node.clone();
    saved.version = node.version + 1;
    saved.updated_at = Some(updated_at);
    Ok(Some(saved))
}

pub(super) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl Store {
    /// Inserts `node` (its `uuid`, `provision_state` and other fields as given) and
    /// returns it as stored. A taken `name`, `uuid` or `instance_uuid` is
    /// [`StoreError::Conflict`] naming the field.
    pub async fn create_node(&self, node: &Node) -> Result<Node, StoreError> {
        let mut columns: Vec<&str> = SAVED_COLUMNS.to_vec();
        columns.extend_from_slice(OTHER_COLUMNS);
        let sql = format!(
            "INSERT INTO nodes ({}) VALUES ({})",
            columns.join(", "),
            placeholders(columns.len())
        );
        let created_at = now();
        let mut args = SqliteArguments::default();
        bind_saved(&mut args, node)?;
        for bind in [
            Bind::Text(node.uuid.to_string()),
            Bind::Text(node.provision_state.as_str().to_owned()),
            Bind::OptText(node.target_provision_state.map(|s| s.as_str().to_owned())),
            Bind::OptInt(opt_micros(node.provision_updated_at)),
            Bind::OptText(node.reservation.clone()),
            Bind::Int(to_micros(created_at)),
            Bind::OptInt(None),
            Bind::Int(0),
        ] {
            bind.add_to(&mut args)?;
        }
        sqlx::query_with(&sql, args)
            .execute(&self.write)
            .await
            .map_err(|err| node_conflict(err, node))?;
        let mut stored = node.clone();
        stored.created_at = created_at;
        stored.updated_at = None;
        stored.version = 0;
        Ok(stored)
    }

    /// The node with this UUID or name.
    pub async fn get_node(&self, ident: &str) -> Result<Node, StoreError> {
        fetch_node(&self.read, ident).await
    }

    /// Nodes matching `query`, in its order, one page.
    pub async fn list_nodes(&self, query: &NodeQuery) -> Result<Vec<Node>, StoreError> {
        self.list_nodes_selecting(query, None).await
    }

    /// As [`Store::list_nodes`], but reading only the JSON document columns named in
    /// `wanted` (`driver_info`, `instance_info`, `traits`, …); the others come back
    /// empty. Scalar columns are always read. For lists that show a few fields of many
    /// nodes, where decoding every document of every node would be wasted.
    pub async fn list_nodes_with_columns(
        &self,
        query: &NodeQuery,
        wanted: &[&str],
    ) -> Result<Vec<Node>, StoreError> {
        self.list_nodes_selecting(query, Some(wanted)).await
    }

    /// The [`NodeListItem`] columns of the nodes matching `query`, in its order, one
    /// page: Ironic's default (non-detail) node list, without reading anything else.
    pub async fn list_node_items(
        &self,
        query: &NodeQuery,
    ) -> Result<Vec<NodeListItem>, StoreError> {
        let select = NodeListItem::COLUMNS.map(|c| format!("n.{c}")).join(", ");
        let rows = self.list_rows(query, &select).await?;
        rows.iter().map(NodeListItem::from_row).collect()
    }

    async fn list_nodes_selecting(
        &self,
        query: &NodeQuery,
        wanted: Option<&[&str]>,
    ) -> Result<Vec<Node>, StoreError> {
        let rows = self.list_rows(query, &node_select_list(wanted)).await?;
        rows.iter().map(node_from_row).collect()
    }

    /// The rows of a node list: `select` on alias `n`, filtered, ordered and paged.
    async fn list_rows(
        &self,
        query: &NodeQuery,
        select: &str,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let mut sql = format!("SELECT {select} FROM nodes n WHERE 1 = 1");
        let mut binds = Vec::new();
        if let Some(state) = query.provision_state {
            sql.push_str(" AND n.provision_state = ?");
            binds.push(Bind::Text(state.as_str().to_owned()));
        }
        if let Some(maintenance) = query.maintenance {
            sql.push_str(" AND n.maintenance = ?");
            binds.push(Bind::Bool(maintenance));
        }
        if let Some(driver) = &query.driver {
            sql.push_str(" AND n.driver = ?");
            binds.push(Bind::Text(driver.clone()));
        }
        if let Some(class) = &query.resource_class {
            sql.push_str(" AND n.resource_class = ?");
            binds.push(Bind::Text(class.clone()));
        }
        let key = query.sort_key;
        let (cmp, dir) = if query.descending { ("<", "DESC") } else { (">", "ASC") };
        if let Some(marker) = query.marker {
            let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM nodes WHERE uuid = ?")
                .bind(marker.to_string())
                .fetch_optional(&self.read)
                .await?;
            if exists.is_none() {
                return Err(StoreError::MarkerNotFound(marker.to_string()));
            }
            // Keyset pagination on (sort expression, id): stable whatever the sort key.
            let mine = key.expr("n");
            let theirs = key.expr("m");
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM nodes m WHERE m.uuid = ? AND \
                 ({mine} {cmp} {theirs} OR ({mine} = {theirs} AND n.id {cmp} m.id)))"
            ));
            binds.push(Bind::Text(marker.to_string()));
        }
        sql.push_str(&format!(" ORDER BY {} {dir}, n.id {dir}", key.expr("n")));
        if let Some(limit) = query.limit {
            sql.push_str(" LIMIT ?");
            binds.push(Bind::Int(i64::from(limit)));
        }
        Ok(sqlx::query_with(&sql, args_of(binds)?).fetch_all(&self.read).await?)
    }

    /// Writes every editable field of `node` if nobody wrote the node since it was read
    /// (its `version` still matches); otherwise [`StoreError::Stale`]. Provision state,
    /// reservation and `created_at` are not written: they change only through
    /// [`Store::transition`], [`Store::reserve`] and friends.
    pub async fn save_node(&self, node: &Node) -> Result<Node, StoreError> {
        match write_node(&self.write, node).await? {
            Some(saved) => Ok(saved),
            None => {
                self.get_node(&node.uuid.to_string()).await?;
                Err(StoreError::Stale { kind: "node", uuid: node.uuid })
            }
        }
    }

    /// Reads the node, lets `change` edit it, and saves it; re-reads and re-applies when
    /// another writer got in between. After a few lost races the last attempt runs inside
    /// a locking transaction, so a busy node is still updated. `change` must be free of
    /// side effects: it may run more than once.
    pub async fn update_node<E>(
        &self,
        ident: &str,
        mut change: impl FnMut(&mut Node) -> Result<(), E>,
    ) -> Result<Node, UpdateError<E>> {
        for _ in 1..UPDATE_ATTEMPTS {
            let mut node = self.get_node(ident).await?;
            change(&mut node).map_err(UpdateError::Rejected)?;
            match self.save_node(&node).await {
                Err(StoreError::Stale { .. }) => continue,
                other => return other.map_err(UpdateError::Store),
            }
        }
        let mut tx = self.write_tx().await?;
        let mut node = fetch_node(&mut *tx, ident).await?;
        change(&mut node).map_err(UpdateError::Rejected)?;
        let saved = write_node(&mut *tx, &node)
            .await?
            .ok_or(StoreError::Stale { kind: "node", uuid: node.uuid })?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(saved)
    }

    /// Deletes the node, its ports and its inspection data in one transaction.
    pub async fn delete_node(&self, uuid: Uuid) -> Result<(), StoreError> {
        let id = uuid.to_string();
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM ports WHERE node_uuid = ?").bind(&id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM inspection_data WHERE node_uuid = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let done =
            sqlx::query("DELETE FROM nodes WHERE uuid = ?").bind(&id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NodeNotFound(id));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies `transition` to node `uuid` as one conditional UPDATE: the WHERE lists every
    /// state in which the event is valid and the new state and target are computed per
    /// source state inside the statement, so concurrent transitions cannot both win.
    ///
    /// When no row changes: a missing node is [`StoreError::NodeNotFound`]; a node already
    /// in a state the event leads to is [`TransitionOutcome::AlreadyThere`]; otherwise
    /// [`StoreError::InvalidState`] (or [`StoreError::InvalidTarget`]).
    pub async fn transition(
        &self,
        uuid: Uuid,
        transition: &Transition,
    ) -> Result<TransitionOutcome, StoreError> {
        let rows = transition.rows();
        let id = uuid.to_string();
        let at = to_micros(now());
        let mut tx = self.write_tx().await?;
        let before: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT provision_state, target_provision_state FROM nodes WHERE uuid = ?",
        )
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((before_state, _)) = before else {
            return Err(StoreError::NodeNotFound(id));
        };
        let current: ProvisionState =
            before_state.parse().map_err(|err: ferric_shared::states::UnknownProvisionState| {
                StoreError::Corrupt {
                    uuid: id.clone(),
                    column: "provision_state",
                    reason: err.to_string(),
                }
            })?;

        let mut changed = 0;
        if !rows.is_empty() {
            let mut binds = Vec::new();
            let mut state_case = String::from("CASE provision_state");
            for (from, to) in &rows {
                state_case.push_str(" WHEN ? THEN ?");
                binds.push(Bind::Text(from.as_str().to_owned()));
                binds.push(Bind::Text(to.as_str().to_owned()));
            }
            state_case.push_str(" END");
            let mut target_case = String::from("CASE provision_state");
            for (from, to) in &rows {
                target_case.push_str(" WHEN ? THEN ");
                binds.push(Bind::Text(from.as_str().to_owned()));
                if to.is_stable() {
                    target_case.push_str("NULL");
                } else if let Some(requested) = transition.target {
                    target_case.push('?');
                    binds.push(Bind::Text(requested.as_str().to_owned()));
                } else {
                    // Keep a current target the new state can have, else its default.
                    let possible = to.possible_targets();
                    target_case.push_str(&format!(
                        "CASE WHEN target_provision_state IN ({}) \
                         THEN target_provision_state ELSE ? END",
                        placeholders(possible.len())
                    ));
                    for state in possible {
                        binds.push(Bind::Text(state.as_str().to_owned()));
                    }
                    binds.push(Bind::OptText(possible.first().map(|s| s.as_str().to_owned())));
                }
            }
            target_case.push_str(" END");
            let mut sql = format!(
                "UPDATE nodes SET provision_state = {state_case}, \
                 target_provision_state = {target_case}, provision_updated_at = ?, \
                 updated_at = ?, version = version + 1"
            );
            binds.push(Bind::Int(at));
            binds.push(Bind::Int(at));
            match &transition.last_error {
                LastError::Keep => {}
                LastError::Clear => sql.push_str(", last_error = NULL"),
                LastError::Set(message) => {
                    sql.push_str(", last_error = ?");
                    binds.push(Bind::Text(message.clone()));
                }
            }
            if let Some(step) = &transition.clean_step {
                sql.push_str(", clean_step = ?");
                binds.push(Bind::Text(json_text(step)));
            }
            if let Some(step) = &transition.deploy_step {
                sql.push_str(", deploy_step = ?");
                binds.push(Bind::Text(json_text(step)));
            }
            sql.push_str(&format!(
                " WHERE uuid = ? AND provision_state IN ({})",
                placeholders(rows.len())
            ));
            binds.push(Bind::Text(id.clone()));
            for (from, _) in &rows {
                binds.push(Bind::Text(from.as_str().to_owned()));
            }
            changed =
                sqlx::query_with(&sql, args_of(binds)?).execute(&mut *tx).await?.rows_affected();
        }
        if changed == 1 {
            if !transition.internal_info_set.is_empty()
                || !transition.internal_info_remove.is_empty()
            {
                let (text,): (String,) =
                    sqlx::query_as("SELECT driver_internal_info FROM nodes WHERE uuid = ?")
                        .bind(&id)
                        .fetch_one(&mut *tx)
                        .await?;
                let remove: Vec<&str> =
                    transition.internal_info_remove.iter().map(String::as_str).collect();
                let merged = merge_info(&id, &text, &transition.internal_info_set, &remove)?;
                sqlx::query("UPDATE nodes SET driver_internal_info = ? WHERE uuid = ?")
                    .bind(merged)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
            let after: (String, Option<String>) = sqlx::query_as(
                "SELECT provision_state, target_provision_state FROM nodes WHERE uuid = ?",
            )
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            let corrupt = |reason: String| StoreError::Corrupt {
                uuid: id.clone(),
                column: "provision_state",
                reason,
            };
            let to =
                after.0.parse().map_err(|e: ferric_shared::states::UnknownProvisionState| {
                    corrupt(e.to_string())
                })?;
            let target = after.1.map(|t| t.parse()).transpose().map_err(
                |e: ferric_shared::states::UnknownProvisionState| corrupt(e.to_string()),
            )?;
            return Ok(TransitionOutcome::Moved { from: current, to, target });
        }
        tx.rollback().await?;
        let leads_to = TRANSITIONS
            .iter()
            .filter(|row| row.event == transition.event)
            .filter(|row| transition.only_from.as_ref().is_none_or(|only| only.contains(&row.from)))
            .any(|row| row.to == current);
        if leads_to {
            return Ok(TransitionOutcome::AlreadyThere { state: current });
        }
        if let (Some(target), Some(_)) = (transition.target, next_state(current, transition.event))
        {
            let allowed = transition.only_from.as_ref().is_none_or(|only| only.contains(&current));
            if allowed {
                return Err(StoreError::InvalidTarget { uuid, current, target });
            }
        }
        Err(StoreError::InvalidState { uuid, current, event: transition.event })
    }

    /// Takes the node's lock for `holder`; [`StoreError::Locked`] names the current holder
    /// when someone (including `holder` itself: locks do not nest) has it.
    pub async fn reserve(&self, uuid: Uuid, holder: &str) -> Result<(), StoreError> {
        let id = uuid.to_string();
        let mut tx = self.write_tx().await?;
        let current: Option<(Option<String>,)> =
            sqlx::query_as("SELECT reservation FROM nodes WHERE uuid = ?")
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
        match current {
            None => Err(StoreError::NodeNotFound(id)),
            Some((Some(holder),)) => Err(StoreError::Locked { uuid, holder }),
            Some((None,)) => {
                // Still conditional: the lock must be free at the moment it is taken.
                let done = sqlx::query(
                    "UPDATE nodes SET reservation = ? WHERE uuid = ? AND reservation IS NULL",
                )
                .bind(holder)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                match done.rows_affected() {
                    1 => Ok(()),
                    _ => Err(StoreError::NodeNotFound(id)),
                }
            }
        }
    }

    /// Releases the node's lock if `holder` has it; releasing a lock held by someone else
    /// is [`StoreError::Locked`], releasing a free node is a no-op.
    pub async fn release(&self, uuid: Uuid, holder: &str) -> Result<(), StoreError> {
        let id = uuid.to_string();
        let done =
            sqlx::query("UPDATE nodes SET reservation = NULL WHERE uuid = ? AND reservation = ?")
                .bind(&id)
                .bind(holder)
                .execute(&self.write)
                .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let current: Option<(Option<String>,)> =
            sqlx::query_as("SELECT reservation FROM nodes WHERE uuid = ?")
                .bind(&id)
                .fetch_optional(&self.write)
                .await?;
        match current {
            None => Err(StoreError::NodeNotFound(id)),
            Some((Some(other),)) => Err(StoreError::Locked { uuid, holder: other }),
            Some((None,)) => Ok(()),
        }
    }

    /// Sets the keys of `set` and removes the keys of `remove` in the node's
    /// `driver_internal_info`. Returns once the change is committed.
    pub async fn update_driver_internal_info(
        &self,
        uuid: Uuid,
        set: JsonMap,
        remove: &[&str],
    ) -> Result<(), StoreError> {
        let change = InfoChange {
            set,
            remove: remove.iter().map(|k| (*k).to_owned()).collect(),
            touch_provisioning: false,
        };
        match self.queue_merge(uuid, Box::new(move |_| Some(change))).await? {
            Merged::Applied(_) => Ok(()),
            // The decision above always accepts.
            Merged::Refused => Ok(()),
        }
    }

    /// Lets `decide` look at the node (its state, reservation and `driver_internal_info`
    /// as of the transaction that writes it) and either return the keys to set and remove
    /// or refuse with its own error; applies the change and returns the node's provision
    /// state once committed. Heartbeats call this: the token check and the write are one
    /// atomic step. `decide` runs while the write transaction is open, so it must be
    /// quick and must not block.
    ///
    /// Kept cheap for heartbeat rates: concurrent merges are committed together, in one
    /// transaction, by the store's merge writer (see `info_merge`), instead of a read and
    /// a transaction each through the single writer connection.
    pub async fn update_driver_internal_info_with<E>(
        &self,
        uuid: Uuid,
        decide: impl FnOnce(&InfoView<'_>) -> Result<InfoChange, E> + Send + 'static,
    ) -> Result<ProvisionState, UpdateError<E>>
    where
        E: Send + 'static,
    {
        let refusal = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = refusal.clone();
        let decide = Box::new(move |view: &InfoView<'_>| match decide(view) {
            Ok(change) => Some(change),
            Err(err) => {
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(err);
                }
                None
            }
        });
        match self.queue_merge(uuid, decide).await? {
            Merged::Applied(state) => Ok(state),
            Merged::Refused => {
                let err = refusal.lock().ok().and_then(|mut slot| slot.take());
                // The refusal is stored before the writer answers, so it is there.
                Err(err
                    .map_or(UpdateError::Store(StoreError::WriterStopped), UpdateError::Rejected))
            }
        }
    }

    async fn queue_merge(&self, uuid: Uuid, decide: Decide) -> Result<Merged, StoreError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.info_merges
            .send(InfoMerge { uuid, decide, done })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        outcome.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Start-up takeover after a restart of conductor `holder`: every node in a transient
    /// state (one with a `fail` transition: verifying, deploying, wait call-back, cleaning,
    /// clean wait, …) moves to its failed state with a `last_error` saying so, and every
    /// reservation is cleared (one conductor owns the whole database). One transaction.
    pub async fn takeover(&self, holder: &str) -> Result<Vec<TakenOver>, StoreError> {
        let transient: Vec<ProvisionState> = ProvisionState::ALL
            .iter()
            .copied()
            .filter(|state| next_state(*state, Event::Fail).is_some())
            .collect();
        let mut tx = self.write_tx().await?;
        let sql = format!(
            "SELECT uuid, provision_state, target_provision_state FROM nodes \
             WHERE provision_state IN ({}) ORDER BY id",
            placeholders(transient.len())
        );
        let mut query = sqlx::query_as::<_, (String, String, Option<String>)>(&sql);
        for state in &transient {
            query = query.bind(state.as_str());
        }
        let found = query.fetch_all(&mut *tx).await?;
        let at = to_micros(now());
        let mut moved = Vec::with_capacity(found.len());
        for (id, state_text, target_text) in found {
            let corrupt =
                |column, reason: String| StoreError::Corrupt { uuid: id.clone(), column, reason };
            let uuid = Uuid::parse_str(&id).map_err(|e| corrupt("uuid", e.to_string()))?;
            let from: ProvisionState =
                state_text.parse().map_err(|e: ferric_shared::states::UnknownProvisionState| {
                    corrupt("provision_state", e.to_string())
                })?;
            // An unreadable target is replaced by the failed state's default.
            let target = target_text.and_then(|t| t.parse::<ProvisionState>().ok());
            let change = advance(from, Event::Fail, target, None)
                .map_err(|e| corrupt("provision_state", e.to_string()))?;
            let message = format!(
                "Conductor {holder} restarted while the node was in {from}; the operation \
                 was aborted and the node moved to {}.",
                change.provision_state
            );
            sqlx::query(
                "UPDATE nodes SET provision_state = ?, target_provision_state = ?, \
                 last_error = ?, provision_updated_at = ?, updated_at = ?, \
                 version = version + 1 WHERE uuid = ? AND provision_state = ?",
            )
            .bind(change.provision_state.as_str())
            .bind(change.target_provision_state.map(ProvisionState::as_str))
            .bind(message)
            .bind(at)
            .bind(at)
            .bind(&id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
            moved.push(TakenOver { uuid, from, to: change.provision_state });
        }
        sqlx::query("UPDATE nodes SET reservation = NULL WHERE reservation IS NOT NULL")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(moved)
    }
}
