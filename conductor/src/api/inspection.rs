//! Inspection reports: `POST /v1/continue_inspection` (Ironic), the endpoints older
//! ramdisks and scripts call (ironic-inspector's `POST /v1/continue`, ironic-discoverd's
//! `POST`/`GET /v1/introspection/{uuid}`), and auto-discovery: a report from a machine
//! that matches no node enrolls it, once.
//!
//! A report finds its node by `node_uuid`, else by the MACs of its interfaces (one node
//! owning them), else by the BMC address it found (`driver_info.*_address`). It is
//! stored and handed to the worker, which runs the processing hooks.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_shared::api_version::ApiVersion;
use ferric_shared::error_body::InspectorErrorBody;
use ferric_shared::node::ProvisionRequest;
use ferric_shared::port::normalize_mac;
use ferric_shared::states::ProvisionState;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::body::JsonBody;
use super::error::ApiError;
use super::nodes::{parse_uuid, query};
use super::ramdisk::{
    lookup_reply, node_by_macs_checked, node_by_uuid, MacOwners, LOOKUP_NOT_FOUND,
};
use super::version::RequestVersion;
use super::{ApiState, ConductorTask};
use crate::store::{Node, NodeQuery, Port};

/// `continue_inspection` speaks the lookup dialect from this version on.
const INSPECTION_LOOKUP_VERSION: ApiVersion = ApiVersion::new(1, 84);

/// The `driver_internal_info` key marking a node that auto-discovery enrolled; the
/// processing of its first report records `auto_discovered` in the plugin data.
pub const AUTO_DISCOVERED_KEY: &str = "auto_discovered";

/// Finding a report's node and enrolling an unknown machine happen one report at a time,
/// so that two reports of one new machine cannot enroll it twice.
static MATCH_OR_ENROLL: Mutex<()> = Mutex::const_new(());

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::Invalid(message.into())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectionParams {
    node_uuid: Option<String>,
}

/// What the inspection report offers to find its node by.
#[derive(Debug, Default, PartialEq)]
struct InspectionKeys {
    macs: Vec<String>,
    bmc_addresses: Vec<String>,
}

/// Checks the report's required shape (`inventory.interfaces`, at least one, each with a
/// string `mac_address`) and collects its MACs and BMC addresses.
fn inspection_keys(body: &Value) -> Result<InspectionKeys, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(invalid("The inspection data must be a JSON object."));
    };
    let Some(inventory) = obj.get("inventory").and_then(Value::as_object) else {
        return Err(invalid("The inspection data has no \"inventory\" object."));
    };
    let interfaces = match inventory.get("interfaces") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => {
            return Err(invalid(
                "\"inventory.interfaces\" must be a list with at least one interface.",
            ))
        }
    };
    let mut keys = InspectionKeys::default();
    let mut bad_macs = Vec::new();
    for (i, item) in interfaces.iter().enumerate() {
        let Some(mac) = item.get("mac_address").and_then(Value::as_str) else {
            return Err(invalid(format!(
                "\"inventory.interfaces[{i}].mac_address\" must be a string."
            )));
        };
        match normalize_mac(mac) {
            Ok(mac) => keys.macs.push(mac),
            // Other link types (InfiniBand's 20-byte addresses) may sit beside Ethernet
            // NICs; a report is refused only when no interface has a usable MAC.
            Err(_) => bad_macs.push(format!("interfaces[{i}].mac_address {mac:?}")),
        }
    }
    if keys.macs.is_empty() {
        return Err(invalid(format!(
            "The inspection data has no interface with a valid MAC address ({} is not a MAC \
             address).",
            bad_macs.join(", ")
        )));
    }
    for key in ["bmc_address", "bmc_v6address"] {
        match inventory.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(addr)) => {
                if !addr.is_empty() && addr != "0.0.0.0" && addr != "::/0" {
                    keys.bmc_addresses.push(addr.clone());
                }
            }
            Some(_) => {
                return Err(invalid(format!("\"inventory.{key}\" must be a string or null.")))
            }
        }
    }
    Ok(keys)
}

/// The host part of a BMC address as `driver_info` holds it (`10.0.0.1`,
/// `https://10.0.0.1:8000`, `[fd00::1]`).
fn bmc_host(value: &str) -> &str {
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

async fn node_by_bmc(state: &ApiState, addresses: &[String]) -> Result<Option<Node>, ApiError> {
    if addresses.is_empty() {
        return Ok(None);
    }
    let nodes = state.store.list_nodes(&NodeQuery::default()).await?;
    Ok(nodes.into_iter().find(|node| {
        node.driver_info.iter().any(|(key, value)| {
            key.ends_with("_address")
                && value.as_str().is_some_and(|v| addresses.iter().any(|a| a == bmc_host(v)))
        })
    }))
}

/// Finds the report's node (or enrolls the machine), stores the report and hands it to
/// the worker.
async fn receive(
    state: &ApiState,
    node_uuid: Option<Uuid>,
    body: &Value,
) -> Result<Node, ApiError> {
    let keys = inspection_keys(body)?;
    let slot = state.task_slot()?;
    let guard = MATCH_OR_ENROLL.lock().await;
    let found = match node_uuid {
        Some(uuid) => node_by_uuid(state, uuid).await?,
        None => match node_by_macs_checked(state, &keys.macs).await? {
            MacOwners::One(node) => Some(*node),
            MacOwners::Several => return Err(ApiError::NotFound(LOOKUP_NOT_FOUND.into())),
            MacOwners::None => node_by_bmc(state, &keys.bmc_addresses).await?,
        },
    };
    let node = match found {
        Some(node) if node.provision_state.lookup_allowed(false) => node,
        // Auto-discovered nodes wait in enroll; their later reports are kept too.
        Some(node) if is_auto_discovered(&node) => node,
        Some(_) => return Err(ApiError::NotFound(LOOKUP_NOT_FOUND.into())),
        None if node_uuid.is_none() && state.config.inspector.auto_discovery => {
            enroll(state, &keys, body).await?
        }
        None => return Err(ApiError::NotFound(LOOKUP_NOT_FOUND.into())),
    };
    drop(guard);
    state.store.store_inspection_data(node.uuid, body).await?;
    tracing::info!(node = %node.uuid, "inspection data stored");
    slot.send(ConductorTask::InspectionData { node: node.uuid });
    Ok(node)
}

fn is_auto_discovered(node: &Node) -> bool {
    node.provision_state == ProvisionState::Enroll
        && node.driver_internal_info.get(AUTO_DISCOVERED_KEY) == Some(&Value::Bool(true))
}

/// The `driver_info` key of a driver's BMC address; `bmc_address` for drivers without one
/// (still found by the BMC-address match, which reads every `*_address` key).
fn bmc_address_key(driver: &str) -> &'static str {
    match driver {
        "ipmi" => "ipmi_address",
        "redfish" => "redfish_address",
        _ => "bmc_address",
    }
}

/// Enrolls a machine no node matches: `[inspector] discovery_driver` and
/// `discovery_driver_info` plus the BMC address the ramdisk found, in `enroll`, with a
/// port for the NIC it booted from (else for every NIC) so that its next report finds it.
async fn enroll(state: &ApiState, keys: &InspectionKeys, body: &Value) -> Result<Node, ApiError> {
    let config = &state.config.inspector;
    if state.drivers.get(&config.discovery_driver).is_none() {
        tracing::error!(driver = %config.discovery_driver,
            "auto-discovery is configured with a driver this conductor does not have");
        return Err(ApiError::Invalid(format!(
            "Auto-discovery is configured with driver {:?}, which this conductor does not \
             have; the machine was not enrolled.",
            config.discovery_driver
        )));
    }
    let mut node = Node::new(config.discovery_driver.as_str());
    node.driver_info = config.discovery_driver_info.clone();
    if let Some(address) = keys.bmc_addresses.first() {
        let key = bmc_address_key(&config.discovery_driver);
        node.driver_info.entry(key).or_insert_with(|| Value::String(address.clone()));
    }
    node.driver_internal_info.insert(AUTO_DISCOVERED_KEY.into(), Value::Bool(true));
    let boot_mac = body
        .get("boot_interface")
        .and_then(Value::as_str)
        .and_then(|b| normalize_mac(b.strip_prefix("01-").unwrap_or(b)).ok())
        .filter(|mac| keys.macs.contains(mac));
    let macs: Vec<String> = match &boot_mac {
        Some(mac) => vec![mac.clone()],
        None => keys.macs.clone(),
    };
    let node = state.store.create_node(&node).await?;
    for mac in macs {
        state.store.create_port(&Port::new(node.uuid, mac)).await?;
    }
    tracing::info!(node = %node.uuid, driver = %node.driver, bmc = ?keys.bmc_addresses.first(),
        "unknown machine enrolled by auto-discovery");
    Ok(node)
}

pub async fn continue_inspection(
    State(state): State<ApiState>,
    version: RequestVersion,
    headers: HeaderMap,
    uri: Uri,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    // Exactly 1.1 (no header, which is what the agent sends) is ironic-inspector's
    // dialect; otherwise 1.84 or later is needed.
    let legacy = version.0 == ApiVersion::MINIMUM;
    if !legacy && version.0 < INSPECTION_LOOKUP_VERSION {
        return Err(ApiError::NotFound("API version 1.84 or newer is required".into()));
    }
    let params: InspectionParams = query(&uri)?;
    if legacy && params.node_uuid.is_some() {
        return Err(invalid("The node_uuid parameter needs API version 1.84 or later."));
    }
    let node_uuid = params.node_uuid.as_deref().map(parse_uuid).transpose()?;
    let node = receive(&state, node_uuid, &body).await?;
    let reply = if legacy {
        json!({"uuid": node.uuid.to_string()})
    } else {
        lookup_reply(&state, &node, version, &headers).await?
    };
    Ok((StatusCode::ACCEPTED, Json(reply)).into_response())
}

/// An error in ironic-inspector's shape (`{"error": {"message": …}}`), for its endpoints.
#[derive(Debug)]
pub struct InspectorApiError(ApiError);

impl From<ApiError> for InspectorApiError {
    fn from(error: ApiError) -> Self {
        InspectorApiError(error)
    }
}

impl IntoResponse for InspectorApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        tracing::info!(status = status.as_u16(), error = %self.0, "inspector request refused");
        (status, Json(InspectorErrorBody::new(self.0.to_string()))).into_response()
    }
}

/// `POST /v1/continue`: ironic-inspector's report endpoint, for ramdisks built for it.
/// Answers `{"uuid": …}`.
pub async fn inspector_continue(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, InspectorApiError> {
    let node = receive(&state, None, &body).await?;
    Ok(Json(json!({"uuid": node.uuid.to_string()})).into_response())
}

/// `POST /v1/introspection/{uuid}`: ironic-discoverd's "inspect this node", the
/// `inspect` provision verb under its old name. 202 with no body.
pub async fn start_introspection(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
) -> Result<Response, InspectorApiError> {
    let node = state.store.get_node(&ident).await.map_err(ApiError::from)?;
    let request: ProvisionRequest = serde_json::from_value(json!({"target": "inspect"}))
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    super::node_actions::provision(
        State(state),
        RequestVersion(super::version::MAX_VERSION),
        Path(node.uuid.to_string()),
        HeaderMap::new(),
        JsonBody(request),
    )
    .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /v1/introspection/{uuid}`: ironic-discoverd's status of a node's inspection:
/// `finished` and `error` (plus ironic-inspector's `state`, `started_at`, `finished_at`).
pub async fn introspection_status(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
) -> Result<Json<Value>, InspectorApiError> {
    let node = state.store.get_node(&ident).await.map_err(ApiError::from)?;
    if node.inspection_started_at.is_none() && node.inspection_finished_at.is_none() {
        return Err(ApiError::NotFound(format!(
            "Introspection for node {} was not found.",
            node.uuid
        ))
        .into());
    }
    Ok(Json(introspection_view(&node)))
}

fn introspection_view(node: &Node) -> Value {
    let (finished, error, status) = match node.provision_state {
        ProvisionState::InspectFailed => (true, node.last_error.clone(), "error"),
        ProvisionState::Inspecting => (false, None, "processing"),
        ProvisionState::InspectWait => (false, None, "waiting"),
        _ => (node.inspection_finished_at.is_some(), None, "finished"),
    };
    json!({
        "uuid": node.uuid.to_string(),
        "finished": finished,
        "error": error,
        "state": status,
        "started_at": node.inspection_started_at.map(super::view::timestamp),
        "finished_at": node.inspection_finished_at.map(super::view::timestamp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspection_shape_rules() {
        let ok = json!({"inventory": {"interfaces": [{"mac_address": "52:54:00:12:34:56"}],
            "bmc_address": "10.0.0.9", "bmc_v6address": null}});
        let keys = inspection_keys(&ok).unwrap();
        assert_eq!(keys.macs, vec!["52:54:00:12:34:56"]);
        assert_eq!(keys.bmc_addresses, vec!["10.0.0.9"]);
        for (bad, fragment) in [
            (json!([]), "JSON object"),
            (json!({}), "\"inventory\""),
            (json!({"inventory": {"interfaces": []}}), "at least one"),
            (json!({"inventory": {"interfaces": [{"name": "eth0"}]}}), "interfaces[0]"),
            (
                json!({"inventory": {"interfaces": [{"mac_address": "zz:zz"}]}}),
                "interfaces[0].mac_address \"zz:zz\"",
            ),
            (
                json!({"inventory": {"interfaces": [{"mac_address": "52:54:00:12:34:56"}],
                    "bmc_address": 5}}),
                "bmc_address",
            ),
        ] {
            let err = inspection_keys(&bad).unwrap_err().to_string();
            assert!(err.contains(fragment), "{bad}: {err}");
        }
    }

    #[test]
    fn bmc_hosts() {
        for (value, host) in [
            ("10.0.0.1", "10.0.0.1"),
            ("10.0.0.1:623", "10.0.0.1"),
            ("https://10.0.0.1:8000/redfish/v1", "10.0.0.1"),
            ("[fd00::1]:443", "fd00::1"),
            ("fd00::1", "fd00::1"),
        ] {
            assert_eq!(bmc_host(value), host, "{value}");
        }
    }

    #[test]
    fn discovery_fills_the_drivers_bmc_address_key() {
        assert_eq!(bmc_address_key("ipmi"), "ipmi_address");
        assert_eq!(bmc_address_key("redfish"), "redfish_address");
        assert_eq!(bmc_address_key("fake-hardware"), "bmc_address");
    }

    #[test]
    fn discoverd_status_follows_the_provision_state() {
        let mut node = Node::new("fake-hardware");
        node.inspection_started_at = Some(time::OffsetDateTime::now_utc());
        for (state, finished, status) in [
            (ProvisionState::InspectWait, false, "waiting"),
            (ProvisionState::Inspecting, false, "processing"),
            (ProvisionState::Manageable, false, "finished"),
        ] {
            node.provision_state = state;
            let view = introspection_view(&node);
            assert_eq!(
                (view["finished"].as_bool(), view["state"].as_str()),
                (Some(finished), Some(status))
            );
        }
        node.inspection_finished_at = Some(time::OffsetDateTime::now_utc());
        assert_eq!(introspection_view(&node)["finished"], true);
        node.provision_state = ProvisionState::InspectFailed;
        node.last_error = Some("Ramdisk reported error: no disks".into());
        let view = introspection_view(&node);
        assert_eq!(
            (view["finished"].clone(), view["error"].clone()),
            (json!(true), json!("Ramdisk reported error: no disks"))
        );
    }
}
