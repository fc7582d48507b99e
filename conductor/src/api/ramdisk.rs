//! The endpoints the ramdisk agent calls, without authentication: `GET /v1/lookup` and
//! `POST /v1/heartbeat/{node}` (inspection reports: `super::inspection`). Their security is the
//! agent token: issued once per ramdisk boot on the first lookup, shown masked afterwards,
//! and required on every heartbeat.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
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
use crate::store::{InfoChange, InfoView, Node, StoreError, UpdateError};

/// The `driver_internal_info` key holding the agent token.
pub const TOKEN_KEY: &str = "agent_secret_token";

/// The message of every failed lookup: the same whether the node does not exist or is in
/// a state that allows no lookup, so that probing reveals nothing.
pub(super) const LOOKUP_NOT_FOUND: &str = "Node matching the lookup request could not be found.";

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
pub(super) async fn lookup_reply(
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

/// Who owns a set of MACs.
pub(super) enum MacOwners {
    None,
    One(Box<Node>),
    /// The MACs span nodes: no answer is safe.
    Several,
}

/// The node owning any of `macs`, telling "nobody" from "several nodes".
pub(super) async fn node_by_macs_checked(
    state: &ApiState,
    macs: &[String],
) -> Result<MacOwners, ApiError> {
    if macs.is_empty() {
        return Ok(MacOwners::None);
    }
    let found = state.store.find_node_by_macs(macs).await?;
    match found.as_slice() {
        [uuid] => match state.store.get_node(&uuid.to_string()).await {
            Ok(node) => Ok(MacOwners::One(Box::new(node))),
            Err(StoreError::NodeNotFound(_)) => Ok(MacOwners::None),
            Err(err) => Err(err.into()),
        },
        [] => Ok(MacOwners::None),
        many => {
            tracing::warn!(nodes = many.len(), "addresses belong to several nodes");
            Ok(MacOwners::Several)
        }
    }
}

/// The one node owning any of `macs`, or `None` when none does or they span nodes.
async fn node_by_macs(state: &ApiState, macs: &[String]) -> Result<Option<Node>, ApiError> {
    Ok(match node_by_macs_checked(state, macs).await? {
        MacOwners::One(node) => Some(*node),
        MacOwners::None | MacOwners::Several => None,
    })
}

pub(super) async fn node_by_uuid(state: &ApiState, uuid: Uuid) -> Result<Option<Node>, ApiError> {
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
}
