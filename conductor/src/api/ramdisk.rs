//! The endpoints the ramdisk agent calls, without authentication: `GET /v1/lookup`,
//! `POST /v1/heartbeat/{node}` and `POST /v1/continue_inspection`. Their security is the
//! agent token: issued once per ramdisk boot on the first lookup, shown masked afterwards,
//! and required on every heartbeat.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ferric_shared::api_version::ApiVersion;
use ferric_shared::heartbeat::{AgentStatus, HeartbeatRequest};
use ferric_shared::lookup::MASKED_TOKEN;
use ferric_shared::node::{mask_instance_info_urls, mask_secrets, Link};
use ferric_shared::port::normalize_mac;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::body::JsonBody;
use super::error::ApiError;
use super::nodes::{parse_uuid, query};
use super::version::RequestVersion;
use super::view;
use super::{ApiState, ConductorTask};
use crate::store::{InfoChange, InfoView, Node, NodeQuery, StoreError, UpdateError};

/// The `driver_internal_info` key holding the agent token.
pub const TOKEN_KEY: &str = "agent_secret_token";

/// `continue_inspection` speaks the lookup dialect from this version on.
const INSPECTION_LOOKUP_VERSION: ApiVersion = ApiVersion::new(1, 84);

/// The message of every failed lookup: the same whether the node does not exist or is in
/// a state that allows no lookup, so that probing reveals nothing.
const LOOKUP_NOT_FOUND: &str = "Node matching the lookup request could not be found.";

/// A fresh agent token: 32 random bytes, URL-safe base64 without padding (43 characters,
/// the form of Python's `secrets.token_urlsafe()`). The bytes come from the operating
/// system's generator, by way of two version-4 UUIDs (`getrandom`); their 12 fixed
/// version/variant bits leave 244 random ones.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two tokens in time independent of where they differ.
fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn stored_token(node: &Node) -> Option<&str> {
    node.driver_internal_info.get(TOKEN_KEY).and_then(Value::as_str).filter(|t| !t.is_empty())
}

/// The token as this lookup shows it: the plain token if this call issued it, else the
/// mask. Issuing is an optimistic update, so of two racing lookups only one sees it.
async fn issue_token(state: &ApiState, node: &Node) -> Result<String, ApiError> {
    if stored_token(node).is_some() {
        return Ok(MASKED_TOKEN.to_owned());
    }
    let token = new_token();
    let result = state
        .store
        .update_node(&node.uuid.to_string(), |current| {
            if stored_token(current).is_some() {
                return Err(());
            }
            current.driver_internal_info.insert(TOKEN_KEY.into(), Value::String(token.clone()));
            Ok(())
        })
        .await;
    match result {
        Ok(_) => {
            tracing::info!(node = %node.uuid, "agent token issued");
            Ok(token)
        }
        Err(UpdateError::Rejected(())) => Ok(MASKED_TOKEN.to_owned()),
        Err(UpdateError::Store(err)) => Err(err.into()),
    }
}

/// The lookup reply: the node as the agent needs it (secrets masked) and the `config`
/// block, with the token issued at 1.62 and later.
async fn lookup_reply(
    state: &ApiState,
    node: &Node,
    version: RequestVersion,
    headers: &HeaderMap,
) -> Result<Value, ApiError> {
    let token = if version.0 >= ApiVersion::AGENT_TOKEN {
        Some(issue_token(state, node).await?)
    } else {
        None
    };
    let mut instance_info = node.instance_info.clone();
    mask_secrets(&mut instance_info);
    mask_instance_info_urls(&mut instance_info);
    let mut driver_internal_info = node.driver_internal_info.clone();
    if let Some(token) = token.as_ref().filter(|t| t.as_str() != MASKED_TOKEN) {
        // Issued by this call: the node now has it, and shows it masked like any secret.
        driver_internal_info.insert(TOKEN_KEY.into(), Value::String(token.clone()));
    }
    mask_secrets(&mut driver_internal_info);
    let mut properties = node.properties.clone();
    mask_secrets(&mut properties);
    let base = state.base_url(headers);
    let mut config = json!({
        "metrics": {"backend": "noop", "prepend_host": false, "prepend_uuid": false,
                    "prepend_host_reverse": true, "global_prefix": null},
        "metrics_statsd": {"statsd_host": "localhost", "statsd_port": 8125},
        "heartbeat_timeout": state.config.agent.heartbeat_timeout,
        "agent_md5_checksum_enable": false,
        "disable_deep_image_inspection": false,
        "permitted_image_formats": ["raw", "qcow2", "iso"],
        "agent_skip_bmc_detect": false,
        "enable_bios_bootloader_install": false,
        "tls_min_version": null,
        "tls_cipher_suites": null,
    });
    if let (Some(token), Some(map)) = (token, config.as_object_mut()) {
        map.insert("agent_token".into(), Value::String(token));
        map.insert("agent_token_required".into(), Value::Bool(true));
    }
    Ok(json!({
        "node": {
            "uuid": node.uuid.to_string(),
            "properties": properties,
            "instance_info": instance_info,
            "driver_internal_info": driver_internal_info,
            "links": Link::pair(&base, &format!("nodes/{}", node.uuid)),
        },
        "config": config,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupParams {
    addresses: Option<String>,
    node_uuid: Option<String>,
}

/// Valid MACs of a comma-separated list; invalid entries are skipped, as Ironic does.
fn valid_macs(addresses: &str) -> Vec<String> {
    addresses
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .filter_map(|a| match normalize_mac(a) {
            Ok(mac) => Some(mac),
            Err(err) => {
                tracing::debug!(error = %err, "ignoring an address in a lookup");
                None
            }
        })
        .collect()
}

/// The one node owning any of `macs`, or `None` when none does or they span nodes.
async fn node_by_macs(state: &ApiState, macs: &[String]) -> Result<Option<Node>, ApiError> {
    if macs.is_empty() {
        return Ok(None);
    }
    let found = state.store.find_node_by_macs(macs).await?;
    match found.as_slice() {
        [uuid] => match state.store.get_node(&uuid.to_string()).await {
            Ok(node) => Ok(Some(node)),
            Err(StoreError::NodeNotFound(_)) => Ok(None),
            Err(err) => Err(err.into()),
        },
        [] => Ok(None),
        many => {
            tracing::warn!(nodes = many.len(), "addresses belong to several nodes");
            Ok(None)
        }
    }
}

async fn node_by_uuid(state: &ApiState, uuid: Uuid) -> Result<Option<Node>, ApiError> {
    match state.store.get_node(&uuid.to_string()).await {
        Ok(node) => Ok(Some(node)),
        Err(StoreError::NodeNotFound(_)) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

pub async fn lookup(
    State(state): State<ApiState>,
    version: RequestVersion,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    if version.0 < ApiVersion::RAMDISK_ENDPOINTS {
        return Err(ApiError::NotFound("The resource could not be found.".into()));
    }
    let params: LookupParams = query(&uri)?;
    let macs = params.addresses.as_deref().map(valid_macs).unwrap_or_default();
    let node_uuid = params.node_uuid.as_deref().map(parse_uuid).transpose()?;
    if macs.is_empty() && node_uuid.is_none() {
        return Err(ApiError::Invalid(
            "Incomplete lookup request: at least one valid MAC address in \"addresses\" or a \
             \"node_uuid\" is required."
                .into(),
        ));
    }
    let node = match node_uuid {
        Some(uuid) => node_by_uuid(&state, uuid).await?,
        None => node_by_macs(&state, &macs).await?,
    };
    let node = node
        .filter(|n| n.provision_state.lookup_allowed(false))
        .ok_or_else(|| ApiError::NotFound(LOOKUP_NOT_FOUND.into()))?;
    tracing::info!(node = %node.uuid, state = %node.provision_state, "agent lookup");
    Ok(Json(lookup_reply(&state, &node, version, &headers).await?))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::Invalid(message.into())
}

/// Whether `url` is acceptable as a callback: empty (some ramdisks send none), or an
/// `http`/`https` URL with a host.
fn callback_url_ok(url: &str) -> bool {
    if url.is_empty() {
        return true;
    }
    let Some((scheme, rest)) = url.split_once("://") else { return false };
    let host = rest.split('/').next().unwrap_or("");
    matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") && !host.is_empty()
}

/// What heartbeat `hb` records on `node`, or why it is refused: a changed callback URL
/// or certificate, a missing or wrong token, no version and no status, plain HTTP where
/// TLS is required, or a first heartbeat while another conductor holds the node.
fn heartbeat_change(
    node: &InfoView<'_>,
    hb: &HeartbeatRequest,
    require_tls: bool,
    now: String,
) -> Result<InfoChange, ApiError> {
    let info = node.driver_internal_info;
    let recorded_url = info.get("agent_url").and_then(Value::as_str);
    if let Some(recorded) = recorded_url {
        if recorded != hb.callback_url {
            return Err(invalid(format!(
                "Detected change in ramdisk provided \"callback_url\" for node {}",
                node.uuid
            )));
        }
    }
    let Some(sent) = hb.agent_token.as_deref() else {
        return Err(invalid("Agent token is required for heartbeat processing."));
    };
    let stored = info.get(TOKEN_KEY).and_then(Value::as_str).filter(|t| !t.is_empty());
    if !stored.is_some_and(|stored| tokens_match(stored, sent)) {
        return Err(invalid("Invalid or missing agent token received."));
    }
    if hb.agent_version.is_none() && hb.agent_status.is_none() {
        return Err(invalid("Heartbeat carries neither agent_version nor agent_status."));
    }
    if require_tls && !hb.callback_url.to_ascii_lowercase().starts_with("https://") {
        return Err(invalid(format!(
            "Agent on node {} uses an insecure callback_url; TLS is required.",
            node.uuid
        )));
    }
    if let (Some(sent), Some(stored)) =
        (&hb.agent_verify_ca, info.get("agent_verify_ca").and_then(Value::as_str))
    {
        if sent != stored {
            return Err(invalid(format!(
                "Detected change in the agent's certificate for node {}",
                node.uuid
            )));
        }
    }
    if recorded_url.is_none() {
        if let Some(holder) = node.reservation {
            return Err(ApiError::Conflict(format!(
                "Node {} is locked by host {holder}, please retry after the current operation \
                 is completed.",
                node.uuid
            )));
        }
    }
    let mut set = Map::new();
    set.insert("agent_url".into(), Value::String(hb.callback_url.clone()));
    set.insert("agent_last_heartbeat".into(), Value::String(now));
    if let Some(v) = &hb.agent_version {
        set.insert("agent_version".into(), Value::String(v.clone()));
    }
    if let Some(pem) = &hb.agent_verify_ca {
        set.insert("agent_verify_ca".into(), Value::String(pem.clone()));
    }
    if let Some(status) = hb.agent_status {
        let text = match status {
            AgentStatus::Start => "start",
            AgentStatus::End => "end",
            AgentStatus::Error => "error",
        };
        set.insert("agent_status".into(), Value::String(text.into()));
    }
    if let Some(message) = &hb.agent_status_message {
        set.insert("agent_status_message".into(), Value::String(message.clone()));
    }
    // Ironic's heartbeat touches the provisioning time in the states that wait for the
    // agent, so a long step with a live agent does not hit the callback timeout.
    let touch_provisioning = node.provision_state.is_agent_wait()
        && node.provision_state != ferric_shared::states::ProvisionState::InspectWait;
    Ok(InfoChange { set, remove: Vec::new(), touch_provisioning })
}

pub async fn heartbeat(
    State(state): State<ApiState>,
    version: RequestVersion,
    Path(ident): Path<String>,
    JsonBody(hb): JsonBody<HeartbeatRequest>,
) -> Result<StatusCode, ApiError> {
    if version.0 < ApiVersion::RAMDISK_ENDPOINTS {
        return Err(ApiError::NotFound("The resource could not be found.".into()));
    }
    hb.check_version(version.0).map_err(|e| invalid(e.to_string()))?;
    if !callback_url_ok(&hb.callback_url) {
        return Err(invalid(format!(
            "Invalid callback_url {:?}: expected an http:// or https:// URL",
            hb.callback_url
        )));
    }
    // Agents heartbeat by UUID; a name is resolved first (an extra read, off the hot path).
    let uuid = match Uuid::parse_str(&ident) {
        Ok(uuid) => uuid,
        Err(_) => state.store.get_node(&ident).await?.uuid,
    };
    let require_tls = state.config.agent.require_tls;
    let now = view::timestamp(OffsetDateTime::now_utc());
    // The checks run in the store's write transaction against the row being written, and
    // concurrent heartbeats share that transaction (group commit): one heartbeat costs no
    // read and no transaction of its own.
    let provision_state = match state
        .store
        .update_driver_internal_info_with(uuid, move |node| {
            heartbeat_change(node, &hb, require_tls, now)
        })
        .await
    {
        Ok(provision_state) => provision_state,
        Err(UpdateError::Rejected(err)) => return Err(err),
        Err(UpdateError::Store(StoreError::NodeNotFound(_))) => {
            return Err(ApiError::NodeNotFound(ident))
        }
        Err(UpdateError::Store(err)) => return Err(err.into()),
    };
    // Only the agent wait states have work to do on a heartbeat; in the record-only
    // states (cleaning, deploying, the hold states, …) recording it above is all, as in
    // Ironic — and queueing it anyway would cost the worker a lock round-trip per
    // heartbeat.
    if provision_state.is_agent_wait() {
        // Like Ironic's conductor skipping a locked node, a full queue drops this
        // heartbeat's processing; the agent heartbeats again soon.
        if let Err(err) = state.tasks.try_send(ConductorTask::Heartbeat { node: uuid }) {
            tracing::warn!(node = %uuid, error = %err, "heartbeat recorded, not processed");
        }
    } else {
        tracing::debug!(node = %uuid, state = %provision_state,
            "heartbeat recorded; the node's state expects none");
    }
    Ok(StatusCode::ACCEPTED)
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
    for (i, item) in interfaces.iter().enumerate() {
        let Some(mac) = item.get("mac_address").and_then(Value::as_str) else {
            return Err(invalid(format!(
                "\"inventory.interfaces[{i}].mac_address\" must be a string."
            )));
        };
        if let Ok(mac) = normalize_mac(mac) {
            keys.macs.push(mac);
        }
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
    let keys = inspection_keys(&body)?;
    if node_uuid.is_none() && keys.macs.is_empty() && keys.bmc_addresses.is_empty() {
        return Err(invalid(
            "The inspection data names no node: no node_uuid, no valid MAC address and no BMC \
             address.",
        ));
    }
    let node = match node_uuid {
        Some(uuid) => node_by_uuid(&state, uuid).await?,
        None => match node_by_macs(&state, &keys.macs).await? {
            Some(node) => Some(node),
            None => node_by_bmc(&state, &keys.bmc_addresses).await?,
        },
    };
    let node = node
        .filter(|n| n.provision_state.lookup_allowed(false))
        .ok_or_else(|| ApiError::NotFound(LOOKUP_NOT_FOUND.into()))?;
    let slot = state.task_slot()?;
    state.store.store_inspection_data(node.uuid, &body).await?;
    tracing::info!(node = %node.uuid, "inspection data stored");
    slot.send(ConductorTask::InspectionData { node: node.uuid });
    let reply = if legacy {
        json!({"uuid": node.uuid.to_string()})
    } else {
        lookup_reply(&state, &node, version, &headers).await?
    };
    Ok((StatusCode::ACCEPTED, Json(reply)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_urlsafe_characters_and_differ() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
        assert_ne!(a, b);
        assert!(tokens_match(&a, &a.clone()));
        assert!(!tokens_match(&a, &b));
        assert!(!tokens_match(&a, &a[..42]));
    }

    #[test]
    fn callback_urls() {
        for (url, ok) in [
            ("https://10.0.0.5:9999", true),
            ("http://[fd00::5]:9999", true),
            ("", true),
            ("ftp://x:1", false),
            ("10.0.0.5:9999", false),
            ("https://", false),
        ] {
            assert_eq!(callback_url_ok(url), ok, "{url}");
        }
    }

    #[test]
    fn macs_from_lookup_addresses() {
        assert_eq!(
            valid_macs("52:54:00:12:34:56, bogus,,AA-BB-CC-DD-EE-FF"),
            vec!["52:54:00:12:34:56".to_owned(), "aa:bb:cc:dd:ee:ff".to_owned()]
        );
    }

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
                json!({"inventory": {"interfaces": [{"mac_address": "x"}], "bmc_address": 5}}),
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
}
