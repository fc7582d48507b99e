//! `/v1/ports` and `/v1/nodes/{node}/ports`: create, list, show, JSON-patch update and
//! delete. MAC addresses are validated and stored in one spelling, so uniqueness holds
//! whatever case or separator a client used.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_shared::node::PatchOperation;
use ferric_shared::port::{normalize_mac, PortCollection, PortCreate, PORT_DEFAULT_LIST_FIELDS};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::body::JsonBody;
use super::error::ApiError;
use super::nodes::{
    next_link, parse_bool, parse_limit, parse_marker, parse_sort_dir, parse_uuid, query,
};
use super::patch::{self, PatchRules, Reset};
use super::version::RequestVersion;
use super::view::{self, Fields};
use super::ApiState;
use crate::store::{Port, PortQuery, PortSortKey, StoreError};

const PORT_FIELDS: &[&str] = &[
    "uuid",
    "address",
    "node_uuid",
    "name",
    "description",
    "extra",
    "internal_info",
    "local_link_connection",
    "pxe_enabled",
    "physical_network",
    "is_smartnic",
    "portgroup_uuid",
    "created_at",
    "updated_at",
    "links",
];

const PORT_PATCH_RULES: PatchRules = PatchRules {
    patchable: &[
        ("address", Reset::Null),
        ("node_uuid", Reset::Null),
        ("extra", Reset::EmptyObject),
        ("local_link_connection", Reset::EmptyObject),
        ("pxe_enabled", Reset::True),
        ("physical_network", Reset::Null),
        ("is_smartnic", Reset::False),
        ("portgroup_uuid", Reset::Null),
    ],
    internal: &[
        "uuid",
        "created_at",
        "updated_at",
        "links",
        "internal_info",
        "name",
        "description",
    ],
};

fn mac(text: &str) -> Result<String, ApiError> {
    normalize_mac(text).map_err(|e| ApiError::Invalid(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    fields: Option<String>,
    node: Option<String>,
    node_uuid: Option<String>,
    address: Option<String>,
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
) -> Result<Json<PortCollection>, ApiError> {
    let params: ListParams = query(&uri)?;
    let detail = match &params.detail {
        Some(text) => parse_bool("detail", text)?,
        None => false,
    };
    list_ports(&state, version, &headers, params, detail, None, "ports").await
}

pub async fn list_detail(
    State(state): State<ApiState>,
    version: RequestVersion,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<PortCollection>, ApiError> {
    let params: ListParams = query(&uri)?;
    list_ports(&state, version, &headers, params, true, None, "ports/detail").await
}

pub async fn list_for_node(
    State(state): State<ApiState>,
    version: RequestVersion,
    Path(ident): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<PortCollection>, ApiError> {
    let params: ListParams = query(&uri)?;
    let node = state.store.get_node(&ident).await?;
    let detail = match &params.detail {
        Some(text) => parse_bool("detail", text)?,
        None => false,
    };
    let path = format!("nodes/{}/ports", node.uuid);
    list_ports(&state, version, &headers, params, detail, Some(node.uuid), &path).await
}

pub async fn list_for_node_detail(
    State(state): State<ApiState>,
    version: RequestVersion,
    Path(ident): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<PortCollection>, ApiError> {
    let params: ListParams = query(&uri)?;
    let node = state.store.get_node(&ident).await?;
    let path = format!("nodes/{}/ports/detail", node.uuid);
    list_ports(&state, version, &headers, params, true, Some(node.uuid), &path).await
}

async fn list_ports(
    state: &ApiState,
    version: RequestVersion,
    headers: &HeaderMap,
    params: ListParams,
    detail: bool,
    node: Option<Uuid>,
    path: &str,
) -> Result<Json<PortCollection>, ApiError> {
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
        Some(text) => Some(Fields::parse(text, PORT_FIELDS)?),
        None if detail => None,
        None => Some(Fields::from_static(PORT_DEFAULT_LIST_FIELDS)),
    };
    let node_uuid = match (node, &params.node, &params.node_uuid) {
        (_, Some(_), Some(_)) => {
            return Err(ApiError::Invalid("Only one of node and node_uuid may be given.".into()))
        }
        (Some(uuid), _, _) => Some(uuid),
        (None, Some(ident), None) => Some(state.store.get_node(ident).await?.uuid),
        (None, None, Some(uuid)) => Some(parse_uuid(uuid)?),
        (None, None, None) => None,
    };
    let address = params.address.as_deref().map(mac).transpose()?;
    let sort_key = match params.sort_key.as_deref() {
        None => PortSortKey::default(),
        Some(key) => key.parse().map_err(|_| {
            ApiError::Invalid(format!(
                "The sort_key value \"{key}\" is an invalid field for sorting"
            ))
        })?,
    };
    let limit = parse_limit(params.limit.as_deref())?;
    let query = PortQuery {
        node_uuid,
        address,
        limit: Some(limit),
        marker: parse_marker(params.marker.as_deref())?,
        sort_key,
        descending: parse_sort_dir(params.sort_dir.as_deref())?,
    };
    let ports = state.store.list_ports(&query).await?;
    let base = state.base_url(headers);
    let next = match ports.last() {
        Some(last) if ports.len() == limit as usize => Some(next_link(
            &base,
            path,
            &[
                ("fields", params.fields.as_ref()),
                ("node", params.node.as_ref()),
                ("node_uuid", params.node_uuid.as_ref()),
                ("address", params.address.as_ref()),
                ("sort_key", params.sort_key.as_ref()),
                ("sort_dir", params.sort_dir.as_ref()),
                ("detail", params.detail.as_ref()),
            ],
            limit,
            &last.uuid.to_string(),
        )),
        _ => None,
    };
    let mut out = Vec::with_capacity(ports.len());
    for port in &ports {
        let doc = view::to_map(&view::port(port, &base))?;
        out.push(match &fields {
            Some(f) => f.select(doc),
            None => doc,
        });
    }
    Ok(Json(PortCollection { ports: out, next }))
}

fn port_uuid(ident: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(ident).map_err(|_| ApiError::PortNotFound(ident.to_owned()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowParams {
    fields: Option<String>,
}

pub async fn show(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let params: ShowParams = query(&uri)?;
    let fields = params.fields.as_deref().map(|f| Fields::parse(f, PORT_FIELDS)).transpose()?;
    let port = state.store.get_port(port_uuid(&ident)?).await?;
    let doc = view::to_map(&view::port(&port, &state.base_url(&headers)))?;
    Ok(Json(match fields {
        Some(f) => f.select(doc),
        None => doc,
    }))
}

pub async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PortCreate>,
) -> Result<Response, ApiError> {
    let node_uuid = parse_uuid(&body.node_uuid)?;
    let address = mac(&body.address)?;
    let mut port = Port::new(node_uuid, address);
    if let Some(uuid) = &body.uuid {
        port.uuid = parse_uuid(uuid)?;
    }
    port.extra = body.extra.unwrap_or_default();
    port.local_link_connection = body.local_link_connection.unwrap_or_default();
    port.pxe_enabled = body.pxe_enabled.unwrap_or(true);
    port.physical_network = body.physical_network;
    port.is_smartnic = body.is_smartnic.unwrap_or(false);
    port.portgroup_uuid = body.portgroup_uuid.as_deref().map(parse_uuid).transpose()?;
    let created = match state.store.create_port(&port).await {
        // The port names a node that does not exist: a bad request, naming the node.
        Err(StoreError::NodeNotFound(node)) => {
            return Err(ApiError::Invalid(format!("Node {node} could not be found.")))
        }
        other => other?,
    };
    tracing::info!(node = %created.node_uuid, port = %created.uuid, "port created");
    let base = state.base_url(&headers);
    let location = format!("{base}/v1/ports/{}", created.uuid);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view::port(&created, &base)))
        .into_response())
}

fn bad_value(key: &str, expected: &str) -> ApiError {
    ApiError::Invalid(format!("Invalid value for field '/{key}': expected {expected}"))
}

fn apply_patched(port: &mut Port, doc: &Map<String, Value>) -> Result<(), ApiError> {
    let text = |key: &str| match doc.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(bad_value(key, "a string")),
    };
    let opt_text = |key: &str| match doc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_value(key, "a string or null")),
    };
    let flag = |key: &str| match doc.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        _ => Err(bad_value(key, "a boolean")),
    };
    let object = |key: &str| match doc.get(key) {
        Some(Value::Object(m)) => Ok(m.clone()),
        _ => Err(bad_value(key, "an object")),
    };
    port.address = mac(&text("address").map_err(|_| bad_value("address", "a MAC address"))?)?;
    port.node_uuid = parse_uuid(&text("node_uuid").map_err(|_| bad_value("node_uuid", "a UUID"))?)?;
    port.extra = object("extra")?;
    port.local_link_connection = object("local_link_connection")?;
    port.pxe_enabled = flag("pxe_enabled")?;
    port.physical_network = opt_text("physical_network")?;
    port.is_smartnic = flag("is_smartnic")?;
    port.portgroup_uuid = opt_text("portgroup_uuid")?.as_deref().map(parse_uuid).transpose()?;
    Ok(())
}

pub async fn update(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    JsonBody(ops): JsonBody<Vec<PatchOperation>>,
) -> Result<Json<ferric_shared::port::Port>, ApiError> {
    let uuid = port_uuid(&ident)?;
    let base = state.base_url(&headers);
    let mut port = state.store.get_port(uuid).await?;
    let doc = view::to_map(&view::port(&port, &base))?;
    let patched =
        patch::apply(&doc, &ops, &PORT_PATCH_RULES).map_err(|e| ApiError::Invalid(e.0))?;
    apply_patched(&mut port, &patched)?;
    let saved = match state.store.save_port(&port).await {
        Err(StoreError::NodeNotFound(node)) => {
            return Err(ApiError::Invalid(format!("Node {node} could not be found.")))
        }
        other => other?,
    };
    tracing::info!(port = %saved.uuid, "port updated");
    Ok(Json(view::port(&saved, &base)))
}

pub async fn delete(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
) -> Result<StatusCode, ApiError> {
    let uuid = port_uuid(&ident)?;
    state.store.delete_port(uuid).await?;
    tracing::info!(port = %uuid, "port deleted");
    Ok(StatusCode::NO_CONTENT)
}
