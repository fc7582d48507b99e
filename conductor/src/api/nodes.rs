//! `/v1/nodes`: create, list (with filters, `fields`, pagination and sorting), show,
//! JSON-patch update and delete.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_shared::node::{NodeCollection, NodeCreate, PatchOperation, NODE_DEFAULT_LIST_FIELDS};
use ferric_shared::states::ProvisionState;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::body::JsonBody;
use super::error::ApiError;
use super::patch::{self, PatchRules, Reset};
use super::version::RequestVersion;
use super::view::{self, Fields};
use super::ApiState;
use crate::store::{Node, NodeListItem, NodeQuery, NodeSortKey, UpdateError};

/// Ironic's `[api]max_limit`: the largest page, and the page size when none is asked.
pub const MAX_LIMIT: u32 = 1000;

/// States a node may be deleted in (any state when in maintenance), as Ironic allows.
const DELETE_ALLOWED: &[ProvisionState] = &[
    ProvisionState::Available,
    ProvisionState::Manageable,
    ProvisionState::Enroll,
    ProvisionState::AdoptFailed,
];

/// Fields a node patch may change, and what `remove` resets them to.
const NODE_PATCH_RULES: PatchRules = PatchRules {
    patchable: &[
        ("name", Reset::Null),
        ("description", Reset::Null),
        ("driver", Reset::Null),
        ("driver_info", Reset::EmptyObject),
        ("properties", Reset::EmptyObject),
        ("instance_info", Reset::EmptyObject),
        ("extra", Reset::EmptyObject),
        ("network_data", Reset::EmptyObject),
        ("resource_class", Reset::Null),
        ("instance_uuid", Reset::Null),
        ("maintenance", Reset::False),
        ("maintenance_reason", Reset::Null),
        ("owner", Reset::Null),
        ("lessee", Reset::Null),
        ("conductor_group", Reset::EmptyString),
        ("automated_clean", Reset::Null),
        ("protected", Reset::False),
        ("protected_reason", Reset::Null),
        ("retired", Reset::False),
        ("retired_reason", Reset::Null),
        ("bios_interface", Reset::Null),
        ("boot_interface", Reset::Null),
        ("console_interface", Reset::Null),
        ("deploy_interface", Reset::Null),
        ("firmware_interface", Reset::Null),
        ("inspect_interface", Reset::Null),
        ("management_interface", Reset::Null),
        ("network_interface", Reset::Null),
        ("power_interface", Reset::Null),
        ("raid_interface", Reset::Null),
        ("rescue_interface", Reset::Null),
        ("storage_interface", Reset::Null),
        ("vendor_interface", Reset::Null),
    ],
    internal: &[
        "uuid",
        "created_at",
        "updated_at",
        "links",
        "ports",
        "states",
        "portgroups",
        "volume",
        "conductor",
        "reservation",
        "provision_state",
        "target_provision_state",
        "provision_updated_at",
        "power_state",
        "target_power_state",
        "driver_internal_info",
        "last_error",
        "clean_step",
        "deploy_step",
        "service_step",
        "console_enabled",
        "fault",
        "traits",
        "boot_mode",
        "secure_boot",
        "raid_config",
        "target_raid_config",
        "inspection_started_at",
        "inspection_finished_at",
        "allocation_uuid",
        "chassis_uuid",
        "health",
        "instance_name",
        "shard",
        "parent_node",
        "disable_power_off",
    ],
};

/// Parses the query string into `T`, refusing unknown parameters.
pub(super) fn query<T: DeserializeOwned + Default>(uri: &Uri) -> Result<T, ApiError> {
    if uri.query().is_none_or(str::is_empty) {
        return Ok(T::default());
    }
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::Invalid(format!("Invalid query parameters: {}", e.body_text())))
}

/// Ironic's reading of boolean query values (`strutils.bool_from_string`, strict).
pub(super) fn parse_bool(name: &str, text: &str) -> Result<bool, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "y" | "t" => Ok(true),
        "false" | "0" | "no" | "off" | "n" | "f" => Ok(false),
        _ => Err(ApiError::Invalid(format!("Invalid value for {name}: {text:?} is not a boolean"))),
    }
}

/// `limit`: absent or 0 means the maximum; negative or not a number is `400`.
pub(super) fn parse_limit(text: Option<&str>) -> Result<u32, ApiError> {
    let Some(text) = text else { return Ok(MAX_LIMIT) };
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| ApiError::Invalid(format!("Invalid limit {text:?}: not an integer")))?;
    if n < 0 {
        return Err(ApiError::Invalid("Limit must be positive".into()));
    }
    Ok(if n == 0 { MAX_LIMIT } else { u32::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT) })
}

/// `sort_dir`: `asc` (default) or `desc`; returns whether it is descending.
pub(super) fn parse_sort_dir(text: Option<&str>) -> Result<bool, ApiError> {
    match text {
        None | Some("asc") => Ok(false),
        Some("desc") => Ok(true),
        Some(other) => Err(ApiError::Invalid(format!(
            "Invalid sort direction: {other}. Acceptable values are 'asc' or 'desc'"
        ))),
    }
}

/// `marker`: the UUID of the last entry of the previous page.
pub(super) fn parse_marker(text: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    text.map(|m| {
        Uuid::parse_str(m)
            .map_err(|_| ApiError::Invalid(format!("Invalid marker {m:?}: expected a UUID")))
    })
    .transpose()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
pub(super) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `next` link of a full page: the same request, continued after `last`.
pub(super) fn next_link(
    base: &str,
    path: &str,
    params: &[(&str, Option<&String>)],
    limit: u32,
    last: &str,
) -> String {
    let mut query: Vec<String> =
        params.iter().filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v)))).collect();
    query.push(format!("limit={limit}"));
    query.push(format!("marker={}", encode(last)));
    format!("{base}/v1/{path}?{}", query.join("&"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    fields: Option<String>,
    provision_state: Option<String>,
    maintenance: Option<String>,
    driver: Option<String>,
    resource_class: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    detail: Option<String>,
}

pub async fn list(
    State(state): State<ApiState>,
    version: RequestVersion,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<NodeCollection>, ApiError> {
    let params: ListParams = query(&uri)?;
    let detail = match &params.detail {
        Some(text) if version.at_least(43) => parse_bool("detail", text)?,
        Some(_) => {
            return Err(ApiError::NotAcceptable(
                "The detail parameter needs API version 1.43 or later.".into(),
            ))
        }
        None => false,
    };
    list_nodes(state, version, headers, params, detail, "nodes").await
}

pub async fn list_detail(
    State(state): State<ApiState>,
    version: RequestVersion,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<NodeCollection>, ApiError> {
    let params: ListParams = query(&uri)?;
    if params.detail.is_some() {
        return Err(ApiError::Invalid("The detail parameter is not valid on /detail.".into()));
    }
    list_nodes(state, version, headers, params, true, "nodes/detail").await
}

async fn list_nodes(
    state: ApiState,
    version: RequestVersion,
    headers: HeaderMap,
    params: ListParams,
    detail: bool,
    path: &str,
) -> Result<Json<NodeCollection>, ApiError> {
    let fields = match &params.fields {
        Some(_) if detail => {
            return Err(ApiError::Invalid(
                "Can not specify ?detail=True and fields in the same request.".into(),
            ))
        }
        Some(_) if !version.at_least(8) => {
            return Err(ApiError::NotAcceptable(
                "The fields parameter needs API version 1.8 or later.".into(),
            ))
        }
        Some(text) => Some(Fields::parse(text, &node_field_names())?),
        None if detail => None,
        None => Some(Fields::from_static(NODE_DEFAULT_LIST_FIELDS)),
    };
    let provision_state = params
        .provision_state
        .as_deref()
        .map(|s| {
            s.parse::<ProvisionState>()
                .map_err(|_| ApiError::Invalid(format!("Invalid provision state {s:?}")))
        })
        .transpose()?;
    let maintenance =
        params.maintenance.as_deref().map(|m| parse_bool("maintenance", m)).transpose()?;
    let sort_key = match params.sort_key.as_deref() {
        None => NodeSortKey::default(),
        Some(key) => key.parse().map_err(|_| {
            ApiError::Invalid(format!(
                "The sort_key value \"{key}\" is an invalid field for sorting"
            ))
        })?,
    };
    let limit = parse_limit(params.limit.as_deref())?;
    let query = NodeQuery {
        provision_state,
        maintenance,
        driver: params.driver.clone(),
        resource_class: params.resource_class.clone(),
        limit: Some(limit),
        marker: parse_marker(params.marker.as_deref())?,
        sort_key,
        descending: parse_sort_dir(params.sort_dir.as_deref())?,
    };
    let base = state.base_url(&headers);
    let conductor = state.conductor_name();
    // Decode no more than the fields shown: the list fields alone come from their own
    // columns; another selection skips the JSON documents it does not show.
    let mut out = Vec::new();
    let last = match &fields {
        Some(f) if f.names().all(|n| n == "links" || NodeListItem::COLUMNS.contains(&n)) => {
            let items = state.store.list_node_items(&query).await?;
            for item in &items {
                out.push(view::node_list_item(item, &base, f)?);
            }
            items.last().map(|item| item.uuid)
        }
        Some(f) => {
            let wanted: Vec<&str> = f.names().collect();
            let nodes = state.store.list_nodes_with_columns(&query, &wanted).await?;
            for node in &nodes {
                out.push(f.select(view::to_map(&view::node(node, &base, conductor))?));
            }
            nodes.last().map(|node| node.uuid)
        }
        None => {
            let nodes = state.store.list_nodes(&query).await?;
            for node in &nodes {
                out.push(view::to_map(&view::node(node, &base, conductor))?);
            }
            nodes.last().map(|node| node.uuid)
        }
    };
    let next = match last {
        Some(last) if out.len() == limit as usize => Some(next_link(
            &base,
            path,
            &[
                ("fields", params.fields.as_ref()),
                ("provision_state", params.provision_state.as_ref()),
                ("maintenance", params.maintenance.as_ref()),
                ("driver", params.driver.as_ref()),
                ("resource_class", params.resource_class.as_ref()),
                ("sort_key", params.sort_key.as_ref()),
                ("sort_dir", params.sort_dir.as_ref()),
                ("detail", params.detail.as_ref()),
            ],
            limit,
            &last.to_string(),
        )),
        _ => None,
    };
    Ok(Json(NodeCollection { nodes: out, next }))
}

/// Every field name of the node document.
fn node_field_names() -> Vec<&'static str> {
    const NAMES: &[&str] = &[
        "uuid",
        "name",
        "created_at",
        "updated_at",
        "links",
        "ports",
        "states",
        "portgroups",
        "volume",
        "chassis_uuid",
        "allocation_uuid",
        "conductor",
        "traits",
        "automated_clean",
        "bios_interface",
        "boot_interface",
        "boot_mode",
        "clean_step",
        "conductor_group",
        "console_enabled",
        "console_interface",
        "disable_power_off",
        "deploy_interface",
        "deploy_step",
        "description",
        "driver",
        "driver_info",
        "driver_internal_info",
        "extra",
        "fault",
        "firmware_interface",
        "health",
        "inspection_finished_at",
        "inspection_started_at",
        "inspect_interface",
        "instance_info",
        "instance_name",
        "instance_uuid",
        "last_error",
        "lessee",
        "maintenance",
        "maintenance_reason",
        "management_interface",
        "network_data",
        "network_interface",
        "owner",
        "parent_node",
        "power_interface",
        "power_state",
        "properties",
        "protected",
        "protected_reason",
        "provision_state",
        "provision_updated_at",
        "raid_config",
        "raid_interface",
        "rescue_interface",
        "reservation",
        "resource_class",
        "retired",
        "retired_reason",
        "secure_boot",
        "service_step",
        "shard",
        "storage_interface",
        "target_power_state",
        "target_provision_state",
        "target_raid_config",
        "vendor_interface",
    ];
    NAMES.to_vec()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowParams {
    fields: Option<String>,
}

pub async fn show(
    State(state): State<ApiState>,
    version: RequestVersion,
    Path(ident): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let params: ShowParams = query(&uri)?;
    let fields = match &params.fields {
        Some(_) if !version.at_least(8) => {
            return Err(ApiError::NotAcceptable(
                "The fields parameter needs API version 1.8 or later.".into(),
            ))
        }
        Some(text) => Some(Fields::parse(text, &node_field_names())?),
        None => None,
    };
    let node = state.store.get_node(&ident).await?;
    let base = state.base_url(&headers);
    let doc = view::to_map(&view::node(&node, &base, state.conductor_name()))?;
    Ok(Json(match fields {
        Some(f) => f.select(doc),
        None => doc,
    }))
}

/// Ironic's logical-name rule: RFC 3986 unreserved characters, at most 255 of them; a
/// name may not look like a UUID (identifiers are tried as UUIDs first).
pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        && Uuid::parse_str(name).is_err();
    if valid {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "Cannot use {name:?} as a node name: names are 1 to 255 letters, digits, '-', '.', \
             '_' or '~', and not a UUID."
        )))
    }
}

fn check_driver(state: &ApiState, driver: &str) -> Result<(), ApiError> {
    if state.drivers.get(driver).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = state.drivers.names().collect();
    Err(ApiError::Invalid(format!(
        "No valid host was found. Reason: No conductor service registered which supports \
         driver {driver}. Known hardware types: {}.",
        known.join(", ")
    )))
}

pub(super) fn parse_uuid(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::Invalid(format!("Expected a UUID but received {text}.")))
}

pub async fn create(
    State(state): State<ApiState>,
    version: RequestVersion,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NodeCreate>,
) -> Result<Response, ApiError> {
    check_driver(&state, &body.driver)?;
    let mut node = Node::new(body.driver);
    if let Some(uuid) = &body.uuid {
        node.uuid = parse_uuid(uuid)?;
    }
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    if let Some(instance_uuid) = &body.instance_uuid {
        parse_uuid(instance_uuid)?;
    }
    if body.protected == Some(true) {
        return Err(ApiError::Invalid("Protection can only be set in \"active\" state".into()));
    }
    // Before 1.11 new nodes started in `available`, skipping enrollment.
    if !version.at_least(11) {
        node.provision_state = ProvisionState::Available;
    }
    node.name = body.name;
    node.driver_info = body.driver_info.unwrap_or_default();
    node.properties = body.properties.unwrap_or_default();
    node.instance_info = body.instance_info.unwrap_or_default();
    node.extra = body.extra.unwrap_or_default();
    node.network_data = body.network_data.unwrap_or_default();
    node.resource_class = body.resource_class;
    node.description = body.description;
    node.owner = body.owner;
    node.lessee = body.lessee;
    node.conductor_group = body.conductor_group.unwrap_or_default();
    node.automated_clean = body.automated_clean;
    node.retired = body.retired.unwrap_or(false);
    node.retired_reason = body.retired_reason;
    node.instance_uuid = body.instance_uuid;
    node.bios_interface = body.bios_interface;
    check_boot_interface(body.boot_interface.as_deref())?;
    node.boot_interface = body.boot_interface;
    node.console_interface = body.console_interface;
    node.deploy_interface = body.deploy_interface;
    node.firmware_interface = body.firmware_interface;
    node.inspect_interface = body.inspect_interface;
    node.management_interface = body.management_interface;
    node.network_interface = body.network_interface;
    node.power_interface = body.power_interface;
    node.raid_interface = body.raid_interface;
    node.rescue_interface = body.rescue_interface;
    node.storage_interface = body.storage_interface;
    node.vendor_interface = body.vendor_interface;
    if body.chassis_uuid.is_some()
        || body.shard.is_some()
        || body.parent_node.is_some()
        || body.disable_power_off == Some(true)
        || body.protected_reason.is_some()
    {
        return Err(ApiError::Invalid(
            "chassis_uuid, shard, parent_node, disable_power_off and protected_reason are not \
             supported by this conductor."
                .into(),
        ));
    }
    let created = state.store.create_node(&node).await?;
    tracing::info!(node = %created.uuid, driver = %created.driver, "node created");
    let base = state.base_url(&headers);
    let wire = view::node(&created, &base, state.conductor_name());
    let location = format!("{base}/v1/nodes/{}", created.uuid);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(wire)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchParams {
    reset_interfaces: Option<String>,
}

pub async fn update(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    JsonBody(ops): JsonBody<Vec<PatchOperation>>,
) -> Result<Json<ferric_shared::node::Node>, ApiError> {
    let params: PatchParams = query(&uri)?;
    if let Some(text) = &params.reset_interfaces {
        parse_bool("reset_interfaces", text)?;
    }
    let base = state.base_url(&headers);
    let conductor = state.conductor_name().to_owned();
    let result = state
        .store
        .update_node(&ident, |node| {
            if let Some(holder) = &node.reservation {
                return Err(ApiError::Conflict(format!(
                    "Node {} is locked by host {holder}, please retry after the current \
                     operation is completed.",
                    node.uuid
                )));
            }
            let doc = view::to_map(&view::node_unmasked(node, &base, &conductor))?;
            let patched =
                patch::apply(&doc, &ops, &NODE_PATCH_RULES).map_err(|e| ApiError::Invalid(e.0))?;
            apply_patched(&state, node, &patched)
        })
        .await;
    let node = match result {
        Ok(node) => node,
        Err(UpdateError::Rejected(err)) => return Err(err),
        Err(UpdateError::Store(err)) => return Err(err.into()),
    };
    tracing::info!(node = %node.uuid, "node updated");
    Ok(Json(view::node(&node, &base, state.conductor_name())))
}

fn bad_value(key: &str, expected: &str) -> ApiError {
    ApiError::Invalid(format!("Invalid value for field '/{key}': expected {expected}"))
}

fn opt_string(doc: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_value(key, "a string or null")),
    }
}

fn string(doc: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match doc.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(bad_value(key, "a string")),
    }
}

fn boolean(doc: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match doc.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        _ => Err(bad_value(key, "a boolean")),
    }
}

fn opt_boolean(doc: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad_value(key, "a boolean or null")),
    }
}

fn object(doc: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, ApiError> {
    match doc.get(key) {
        Some(Value::Object(m)) => Ok(m.clone()),
        _ => Err(bad_value(key, "an object")),
    }
}

/// Refuses a `boot_interface` Ferric does not implement (null means the default).
fn check_boot_interface(name: Option<&str>) -> Result<(), ApiError> {
    crate::boot::BootInterface::of_node(name)
        .map(|_| ())
        .map_err(|e| ApiError::Invalid(e.to_string()))
}

/// Copies the patchable fields of `doc` into `node`, checking each value and the rules
/// that tie fields together.
fn apply_patched(
    state: &ApiState,
    node: &mut Node,
    doc: &Map<String, Value>,
) -> Result<(), ApiError> {
    let name = opt_string(doc, "name")?;
    if let Some(name) = &name {
        if node.name.as_ref() != Some(name) {
            check_name(name)?;
        }
    }
    let driver = string(doc, "driver").map_err(|_| bad_value("driver", "a hardware type name"))?;
    if driver != node.driver {
        check_driver(state, &driver)?;
    }
    let instance_uuid = opt_string(doc, "instance_uuid")?;
    if let Some(u) = &instance_uuid {
        parse_uuid(u)?;
    }
    let maintenance = boolean(doc, "maintenance")?;
    let protected = boolean(doc, "protected")?;
    let protected_reason = opt_string(doc, "protected_reason")?;
    if protected && !node.protected && node.provision_state != ProvisionState::Active {
        return Err(ApiError::Invalid("Protection can only be set in \"active\" state".into()));
    }
    if !protected && protected_reason.is_some() {
        return Err(ApiError::Invalid(
            "The protected_reason field can only be set when protected is True".into(),
        ));
    }
    let retired = boolean(doc, "retired")?;
    let retired_reason = opt_string(doc, "retired_reason")?;
    if !retired && retired_reason.is_some() {
        return Err(ApiError::Invalid(
            "The retired_reason field can only be set when retired is True".into(),
        ));
    }
    node.name = name;
    node.description = opt_string(doc, "description")?;
    node.driver = driver;
    node.driver_info = object(doc, "driver_info")?;
    node.properties = object(doc, "properties")?;
    node.instance_info = object(doc, "instance_info")?;
    node.extra = object(doc, "extra")?;
    node.network_data = object(doc, "network_data")?;
    node.resource_class = opt_string(doc, "resource_class")?;
    node.instance_uuid = instance_uuid;
    node.maintenance_reason =
        if maintenance { opt_string(doc, "maintenance_reason")? } else { None };
    if !maintenance {
        node.fault = None;
    }
    node.maintenance = maintenance;
    node.owner = opt_string(doc, "owner")?;
    node.lessee = opt_string(doc, "lessee")?;
    node.conductor_group = opt_string(doc, "conductor_group")?.unwrap_or_default();
    node.automated_clean = opt_boolean(doc, "automated_clean")?;
    node.protected = protected;
    node.protected_reason = protected_reason;
    node.retired = retired;
    node.retired_reason = retired_reason;
    node.bios_interface = opt_string(doc, "bios_interface")?;
    node.boot_interface = opt_string(doc, "boot_interface")?;
    check_boot_interface(node.boot_interface.as_deref())?;
    node.console_interface = opt_string(doc, "console_interface")?;
    node.deploy_interface = opt_string(doc, "deploy_interface")?;
    node.firmware_interface = opt_string(doc, "firmware_interface")?;
    node.inspect_interface = opt_string(doc, "inspect_interface")?;
    node.management_interface = opt_string(doc, "management_interface")?;
    node.network_interface = opt_string(doc, "network_interface")?;
    node.power_interface = opt_string(doc, "power_interface")?;
    node.raid_interface = opt_string(doc, "raid_interface")?;
    node.rescue_interface = opt_string(doc, "rescue_interface")?;
    node.storage_interface = opt_string(doc, "storage_interface")?;
    node.vendor_interface = opt_string(doc, "vendor_interface")?;
    Ok(())
}

pub async fn delete(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
) -> Result<StatusCode, ApiError> {
    let node = state.store.get_node(&ident).await?;
    check_deletable(&node)?;
    // The lock keeps a provision request from moving the node between the check and the
    // delete; a node someone else holds is busy (409).
    let holder = state.conductor_name().to_owned();
    state.store.reserve(node.uuid, &holder).await?;
    let outcome = async {
        let node = state.store.get_node(&node.uuid.to_string()).await?;
        check_deletable(&node)?;
        state.store.delete_node(node.uuid).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if outcome.is_err() {
        if let Err(err) = state.store.release(node.uuid, &holder).await {
            tracing::warn!(node = %node.uuid, error = %err, "could not release the node");
        }
    }
    outcome?;
    tracing::info!(node = %node.uuid, "node deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn check_deletable(node: &Node) -> Result<(), ApiError> {
    if node.protected {
        return Err(ApiError::Forbidden(format!(
            "Node {} is protected and cannot be undeployed, rebuilt or deleted",
            node.uuid
        )));
    }
    if !node.maintenance && !DELETE_ALLOWED.contains(&node.provision_state) {
        let valid: Vec<&str> = DELETE_ALLOWED.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::Invalid(format!(
            "Can not delete node \"{}\" while it is in provision state \"{}\". Valid provision \
             states to perform deletion are: {}, or set the node into maintenance mode",
            node.uuid,
            node.provision_state,
            valid.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_value_tables() {
        assert_eq!(parse_limit(None).unwrap(), MAX_LIMIT);
        assert_eq!(parse_limit(Some("0")).unwrap(), MAX_LIMIT);
        assert_eq!(parse_limit(Some("5")).unwrap(), 5);
        assert_eq!(parse_limit(Some("5000")).unwrap(), MAX_LIMIT);
        for bad in ["-1", "x", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
        assert!(!parse_sort_dir(None).unwrap());
        assert!(parse_sort_dir(Some("desc")).unwrap());
        assert!(parse_sort_dir(Some("up")).is_err());
        assert!(parse_bool("m", "True").unwrap());
        assert!(!parse_bool("m", "off").unwrap());
        assert!(parse_bool("m", "maybe").is_err());
        assert_eq!(encode("clean wait"), "clean%20wait");
        assert_eq!(encode("a,b"), "a%2Cb");
    }

    #[test]
    fn names_table() {
        for (name, ok) in [
            ("node-1", true),
            ("n.1_x~", true),
            ("", false),
            ("has space", false),
            ("slash/y", false),
            ("1be26c0b-03f2-4d2e-ae87-c02d7f33c123", false),
            (&"a".repeat(256), false),
        ] {
            assert_eq!(check_name(name).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn next_link_keeps_filters() {
        let state = "clean wait".to_owned();
        let link = next_link(
            "http://h:1",
            "nodes",
            &[("provision_state", Some(&state)), ("driver", None)],
            2,
            "u-1",
        );
        assert_eq!(link, "http://h:1/v1/nodes?provision_state=clean%20wait&limit=2&marker=u-1");
    }
}
