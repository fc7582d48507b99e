//! `GET /v1/nodes/{node}/inventory` (API 1.81): the hardware inventory the node's last
//! inspection reported, and the plugin data processing made of it.

use axum::extract::{Path, State};
use axum::Json;
use ferric_shared::api_version::ApiVersion;
use serde_json::{json, Value};

use super::error::ApiError;
use super::version::RequestVersion;
use super::ApiState;
use crate::orchestrate::inspect::unprocessed_plugin_data;

/// The first version with the inventory endpoint.
pub const INVENTORY_VERSION: ApiVersion = ApiVersion::new(1, 81);

pub async fn show(
    State(state): State<ApiState>,
    version: RequestVersion,
    Path(ident): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if version.0 < INVENTORY_VERSION {
        // As a route that does not exist yet at this version.
        return Err(ApiError::NotFound("The resource could not be found.".into()));
    }
    let node = state.store.get_node(&ident).await?;
    let not_found = || {
        ApiError::NotFound(format!(
            "Node inventory record for node {} could not be found.",
            node.uuid
        ))
    };
    let stored = state.store.get_inspection(node.uuid).await?.ok_or_else(not_found)?;
    let inventory = match stored.data.get("inventory") {
        Some(inventory @ Value::Object(_)) => inventory.clone(),
        _ => return Err(not_found()),
    };
    let plugin_data = stored.plugin_data.unwrap_or_else(|| unprocessed_plugin_data(&stored.data));
    Ok(Json(json!({"inventory": inventory, "plugin_data": plugin_data})))
}
