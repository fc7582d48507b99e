//! Node actions: `states`, `states/provision`, `states/power`, `maintenance`,
//! `management/boot_device` and `validate`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_shared::api_version::ApiVersion;
use ferric_shared::node::{
    BootDeviceRequest, BootDeviceView, ConfigDrive, InterfaceValidation, MaintenanceRequest,
    NodeStates, PowerRequest, ProvisionRequest, ValidateResult, VALIDATED_INTERFACES,
};
use ferric_shared::states::{next_state, verb_event, Event, ProvisionState, ProvisionVerb};
use serde_json::{json, Value};

use super::body::{JsonBody, OptionalJsonBody};
use super::error::ApiError;
use super::version::RequestVersion;
use super::view;
use super::{ApiState, ConductorTask};
use crate::agent_client::image::node_boot_mode;
use crate::bmc::{Bmc, BmcError, BootDevice, BootMode, DriverInfoError};
use crate::boot::BootInterface;
use crate::orchestrate::clean;
use crate::store::{LastError, Node, Transition, UpdateError};

pub async fn states(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
    headers: HeaderMap,
) -> Result<Json<NodeStates>, ApiError> {
    let node = state.store.get_node(&ident).await?;
    let wire = view::node(&node, &state.base_url(&headers), state.conductor_name());
    Ok(Json(NodeStates::from(&wire)))
}

fn accepted(state: &ApiState, headers: &HeaderMap, node: &Node) -> Response {
    let location = format!("{}/v1/nodes/{}/states", state.base_url(headers), node.uuid);
    (StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response()
}

fn needs_version(what: &str, min: ApiVersion) -> ApiError {
    ApiError::NotAcceptable(format!("{what} needs API version {min} or later."))
}

fn not_locked(node: &Node) -> Result<(), ApiError> {
    match &node.reservation {
        Some(holder) => Err(ApiError::Conflict(format!(
            "Node {} is locked by host {holder}, please retry after the current operation is \
             completed.",
            node.uuid
        ))),
        None => Ok(()),
    }
}

/// Checks that the body's optional fields fit the verb and the version, as Ironic does.
fn check_provision_body(req: &ProvisionRequest, version: RequestVersion) -> Result<(), ApiError> {
    use ProvisionVerb as V;
    let verb = req.target;
    let deploying = matches!(verb, V::Active | V::Deploy | V::Rebuild);
    if let Some(drive) = &req.configdrive {
        if !deploying {
            return Err(ApiError::Invalid(format!(
                "Adding a config drive is only supported when setting provision state to \
                 active, deploy or rebuild, not {verb}"
            )));
        }
        if let ConfigDrive::Parts(parts) = drive {
            if !version.at_least(56) {
                return Err(needs_version(
                    "A config drive given as a dictionary",
                    ApiVersion::new(1, 56),
                ));
            }
            crate::configdrive::check_parts(parts)
                .map_err(|e| ApiError::Invalid(format!("Invalid configdrive format: {e}")))?;
            if parts.contains_key("vendor_data") && !version.at_least(59) {
                return Err(needs_version("vendor_data in a config drive", ApiVersion::new(1, 59)));
            }
        }
    }
    match (&req.clean_steps, verb) {
        (None, V::Clean) => {
            return Err(ApiError::Invalid(
                "\"clean_steps\" is required when setting target provision state to clean".into(),
            ))
        }
        (Some(_), V::Clean) | (None, _) => {}
        (Some(_), _) => {
            return Err(ApiError::Invalid(format!(
                "\"clean_steps\" is only valid when setting target provision state to clean, \
                 not {verb}"
            )))
        }
    }
    if req.deploy_steps.is_some() {
        if !version.at_least(69) {
            return Err(needs_version("\"deploy_steps\"", ApiVersion::new(1, 69)));
        }
        if !deploying {
            return Err(ApiError::Invalid(format!(
                "\"deploy_steps\" is only valid when setting target provision state to active, \
                 deploy or rebuild, not {verb}"
            )));
        }
    }
    match (&req.service_steps, verb) {
        (None, V::Service) => {
            return Err(ApiError::Invalid(
                "\"service_steps\" is required when setting target provision state to service"
                    .into(),
            ))
        }
        (Some(_), V::Service) | (None, _) => {}
        (Some(_), _) => {
            return Err(ApiError::Invalid(format!(
                "\"service_steps\" is only valid when setting target provision state to \
                 service, not {verb}"
            )))
        }
    }
    match (&req.rescue_password, verb) {
        (Some(p), V::Rescue) if !p.trim().is_empty() => {}
        (_, V::Rescue) => {
            return Err(ApiError::Invalid(
                "A non-empty \"rescue_password\" is required when setting target provision \
                 state to rescue"
                    .into(),
            ))
        }
        (Some(_), _) => {
            return Err(ApiError::Invalid(format!(
                "\"rescue_password\" is only valid when setting target provision state to \
                 rescue, not {verb}"
            )))
        }
        (None, _) => {}
    }
    if req.disable_ramdisk.is_some() {
        if !version.at_least(70) {
            return Err(needs_version("\"disable_ramdisk\"", ApiVersion::new(1, 70)));
        }
        if !matches!(verb, V::Clean | V::Service) {
            return Err(ApiError::Invalid(format!(
                "\"disable_ramdisk\" is only valid for clean and service, not {verb}"
            )));
        }
    }
    if req.runbook.is_some() {
        return Err(ApiError::Invalid("Runbooks are not supported by this conductor.".into()));
    }
    Ok(())
}

/// Verbs that start work on the machine and so are refused while it is in maintenance.
fn refused_in_maintenance(verb: ProvisionVerb) -> bool {
    use ProvisionVerb as V;
    matches!(
        verb,
        V::Active
            | V::Deploy
            | V::Rebuild
            | V::Provide
            | V::Clean
            | V::Inspect
            | V::Rescue
            | V::Service
            | V::Adopt
    )
}

pub async fn provision(
    State(state): State<ApiState>,
    version: RequestVersion,
    Path(ident): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ProvisionRequest>,
) -> Result<Response, ApiError> {
    let node = state.store.get_node(&ident).await?;
    let verb = req.target;
    let min = verb.min_version_in(node.provision_state);
    if version.0 < min {
        return Err(needs_version(&format!("The provision target \"{verb}\""), min));
    }
    check_provision_body(&req, version)?;
    let current = node.provision_state;
    let event = verb_event(verb);
    if next_state(current, event).is_none() {
        return Err(ApiError::InvalidStateRequested {
            action: verb.to_string(),
            node: node.uuid.to_string(),
            state: current.to_string(),
        });
    }
    if node.maintenance && refused_in_maintenance(verb) {
        return Err(ApiError::Invalid(format!(
            "Cannot perform the requested operation on node {} since it is in maintenance mode.",
            node.uuid
        )));
    }
    if node.protected
        && matches!(verb, ProvisionVerb::Rebuild | ProvisionVerb::Deleted | ProvisionVerb::Undeploy)
    {
        return Err(ApiError::Forbidden(format!(
            "Node {} is protected and cannot be undeployed, rebuilt or deleted",
            node.uuid
        )));
    }
    not_locked(&node)?;
    let out_of_band = verb == ProvisionVerb::Inspect && inspects_out_of_band(&node)?;
    if boots_ramdisk(verb) && !out_of_band {
        if let Err(reason) = check_ramdisk_boot(&state, &node) {
            return Err(ApiError::Invalid(format!(
                "Failed to validate boot info for node {}. Error: {reason}",
                node.uuid
            )));
        }
    }
    let cleaning = matches!(current, ProvisionState::CleanWait | ProvisionState::CleanHold);
    if verb == ProvisionVerb::Abort
        && cleaning
        && !node.clean_step.is_empty()
        && !clean::clean_step_abortable(&node.clean_step)
    {
        // As Ironic: a running step that cannot be interrupted is marked, and cleaning
        // stops once it is done.
        mark_abort_after(&state, &node).await?;
        return Ok(accepted(&state, &headers, &node));
    }
    let slot = state.task_slot()?;
    let mut transition = Transition::new(event).only_from(&[current]);
    transition = match verb {
        ProvisionVerb::Clean => transition.target(ProvisionState::Manageable),
        ProvisionVerb::Provide => transition.target(ProvisionState::Available),
        _ => transition,
    };
    transition = transition.last_error(if event == Event::Abort {
        LastError::Set(if current == ProvisionState::InspectWait {
            crate::orchestrate::inspect::INSPECTION_ABORTED.to_owned()
        } else {
            format!("Aborted by request while in \"{current}\".")
        })
    } else {
        LastError::Clear
    });
    let outcome = state.store.transition(node.uuid, &transition).await?;
    tracing::info!(node = %node.uuid, verb = %verb, ?outcome, "provision request accepted");
    slot.send(ConductorTask::Provision { node: node.uuid, verb, event, request: Box::new(req) });
    Ok(accepted(&state, &headers, &node))
}

/// Marks the node's running clean step `abort_after`, unless the node moved on since it
/// was read (another step, another state, or a task now holds it): then 409, retry.
async fn mark_abort_after(state: &ApiState, node: &Node) -> Result<(), ApiError> {
    let read = node.clone();
    let result = state
        .store
        .update_node(&node.uuid.to_string(), |current| {
            let same_step = ["interface", "step"]
                .iter()
                .all(|key| current.clean_step.get(*key) == read.clean_step.get(*key));
            if current.provision_state != read.provision_state
                || current.reservation.is_some()
                || !same_step
            {
                return Err(ApiError::Conflict(format!(
                    "Node {} changed while the abort was requested; please retry.",
                    read.uuid
                )));
            }
            current.clean_step.insert(clean::ABORT_AFTER_KEY.into(), Value::Bool(true));
            Ok(())
        })
        .await;
    match result {
        Ok(_) => {
            tracing::info!(node = %node.uuid, "the clean step is not abortable; cleaning will \
                be aborted after it");
            Ok(())
        }
        Err(UpdateError::Rejected(err)) => Err(err),
        Err(UpdateError::Store(err)) => Err(err.into()),
    }
}

pub async fn power(
    State(state): State<ApiState>,
    version: RequestVersion,
    Path(ident): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PowerRequest>,
) -> Result<Response, ApiError> {
    let min = req.target.min_version();
    if version.0 < min {
        return Err(needs_version(&format!("The power target \"{}\"", req.target), min));
    }
    if req.timeout.is_some() && !version.at_least(27) {
        return Err(needs_version("A power timeout", ApiVersion::new(1, 27)));
    }
    if req.timeout == Some(0) {
        return Err(ApiError::Invalid("The power timeout must be at least 1 second.".into()));
    }
    let node = state.store.get_node(&ident).await?;
    if matches!(node.provision_state, ProvisionState::Cleaning | ProvisionState::CleanWait) {
        return Err(ApiError::InvalidStateRequested {
            action: req.target.to_string(),
            node: node.uuid.to_string(),
            state: node.provision_state.to_string(),
        });
    }
    not_locked(&node)?;
    if let Some(pending) = node.target_power_state {
        return Err(ApiError::Conflict(format!(
            "Node {} is already changing its power state to \"{pending}\"; retry once it is \
             done.",
            node.uuid
        )));
    }
    let slot = state.task_slot()?;
    tracing::info!(node = %node.uuid, target = %req.target, "power request accepted");
    slot.send(ConductorTask::Power {
        node: node.uuid,
        target: req.target,
        timeout: req.timeout.map(Duration::from_secs),
    });
    Ok(accepted(&state, &headers, &node))
}

async fn set_maintenance(
    state: &ApiState,
    ident: &str,
    on: bool,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let result = state
        .store
        .update_node(ident, |node| {
            node.maintenance = on;
            node.maintenance_reason = if on { reason.clone() } else { None };
            if !on {
                node.fault = None;
            }
            Ok::<_, ApiError>(())
        })
        .await;
    match result {
        Ok(node) => {
            tracing::info!(node = %node.uuid, maintenance = on, "maintenance changed");
            Ok(())
        }
        Err(UpdateError::Rejected(err)) => Err(err),
        Err(UpdateError::Store(err)) => Err(err.into()),
    }
}

pub async fn maintenance_on(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<MaintenanceRequest>,
) -> Result<StatusCode, ApiError> {
    set_maintenance(&state, &ident, true, req.reason).await?;
    Ok(StatusCode::ACCEPTED)
}

pub async fn maintenance_off(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_maintenance(&state, &ident, false, None).await?;
    Ok(StatusCode::ACCEPTED)
}

fn driver_info_error(err: DriverInfoError) -> ApiError {
    ApiError::Invalid(err.to_string())
}

/// A BMC failure as the API reports it: unsupported is the client's problem (400), a BMC
/// that did not answer may answer later (503), anything else is ours (500).
fn bmc_error(err: BmcError) -> ApiError {
    match err {
        BmcError::Unsupported { .. } => ApiError::Invalid(err.to_string()),
        err if err.is_transient() => ApiError::Unavailable(err.to_string()),
        err => ApiError::Internal(err.to_string()),
    }
}

fn connect(state: &ApiState, node: &Node) -> Result<Arc<dyn Bmc>, ApiError> {
    let driver = state.drivers.get(&node.driver).ok_or_else(|| {
        ApiError::Invalid(format!(
            "Cannot load hardware type {} for node {}",
            node.driver, node.uuid
        ))
    })?;
    driver.connect(&node.uuid.to_string(), &node.driver_info).map_err(driver_info_error)
}

pub async fn boot_device(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
) -> Result<Json<BootDeviceView>, ApiError> {
    let node = state.store.get_node(&ident).await?;
    let bmc = connect(&state, &node)?;
    let setting = bmc.boot_device().await.map_err(bmc_error)?;
    Ok(Json(BootDeviceView {
        boot_device: setting.device.map(|d| d.as_str().to_owned()),
        persistent: setting.persistent,
    }))
}

pub async fn set_boot_device(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
    JsonBody(req): JsonBody<BootDeviceRequest>,
) -> Result<StatusCode, ApiError> {
    let device = BootDevice::from_api(&req.boot_device).ok_or_else(|| {
        let names: Vec<&str> = BootDevice::ALL.iter().map(|d| d.as_str()).collect();
        ApiError::Invalid(format!(
            "Invalid boot device {}, supported boot devices are: {}",
            req.boot_device,
            names.join(", ")
        ))
    })?;
    let node = state.store.get_node(&ident).await?;
    not_locked(&node)?;
    let mode = boot_mode(&state, &node).map_err(ApiError::Invalid)?;
    let bmc = connect(&state, &node)?;
    bmc.set_boot_device(device, req.persistent, Some(mode)).await.map_err(bmc_error)?;
    tracing::info!(node = %node.uuid, device = device.as_str(), persistent = req.persistent,
        mode = mode.as_str(), "boot device set");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn supported_boot_devices(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.store.get_node(&ident).await?;
    let names: Vec<&str> = BootDevice::ALL.iter().map(|d| d.as_str()).collect();
    Ok(Json(json!({"supported_boot_devices": names})))
}

pub async fn validate(
    State(state): State<ApiState>,
    Path(ident): Path<String>,
) -> Result<Json<ValidateResult>, ApiError> {
    let node = state.store.get_node(&ident).await?;
    Ok(Json(validate_node(&state, &node)))
}

/// Verbs that boot the deploy ramdisk, and so need a usable boot interface.
fn boots_ramdisk(verb: ProvisionVerb) -> bool {
    use ProvisionVerb as V;
    matches!(verb, V::Provide | V::Clean | V::Active | V::Deploy | V::Rebuild | V::Inspect)
}

/// Whether `inspect` reads the node through its BMC (`inspect_interface: redfish`) rather
/// than a ramdisk; refuses what cannot inspect at all.
fn inspects_out_of_band(node: &Node) -> Result<bool, ApiError> {
    match node.inspect_interface.as_deref() {
        Some("redfish") if node.driver == "redfish" => Ok(true),
        Some("redfish") => Err(ApiError::Invalid(format!(
            "Node {}: inspect_interface redfish needs the redfish driver, not {}.",
            node.uuid, node.driver
        ))),
        Some("no-inspect") => Err(ApiError::Invalid(format!(
            "Node {} has inspect_interface no-inspect: it cannot be inspected.",
            node.uuid
        ))),
        _ => {
            // The deploy ISO is the same for every node, so it cannot carry the
            // inspection callback a ramdisk needs.
            if node.boot_interface.as_deref() == Some("redfish-virtual-media") {
                return Err(ApiError::Invalid(format!(
                    "Node {} boots the ramdisk from virtual media, which cannot carry the \
                     inspection callback; set inspect_interface to redfish to inspect it \
                     through its BMC.",
                    node.uuid
                )));
            }
            Ok(false)
        }
    }
}

/// The node's boot mode (`instance_info`, capabilities, else the configured default).
fn boot_mode(state: &ApiState, node: &Node) -> Result<BootMode, String> {
    let default = state.config.deploy.default_boot_mode();
    node_boot_mode(&node.instance_info, &node.properties, default).map_err(|e| e.to_string())
}

/// What stops the node's boot interface from booting the ramdisk for sure, before any
/// BMC is asked: an unknown interface or boot mode, or virtual media the driver cannot do
/// or without an ISO. (A missing iPXE kernel or ramdisk only shows when the node boots,
/// as a script that says so; validation reports it.)
fn check_ramdisk_boot(state: &ApiState, node: &Node) -> Result<BootInterface, String> {
    let interface =
        BootInterface::of_node(node.boot_interface.as_deref()).map_err(|e| e.to_string())?;
    boot_mode(state, node)?;
    if interface == BootInterface::RedfishVirtualMedia {
        let supported = state.drivers.get(&node.driver).is_some_and(|d| d.supports_virtual_media());
        crate::boot::virtual_media_iso(
            &node.driver,
            supported,
            &node.driver_info,
            state.config.deploy.deploy_iso.as_deref(),
            &state.config.public_url(),
            &state.config.image_dir(),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(interface)
}

/// Per-interface validation, without touching the BMC: the driver checks `driver_info`
/// (power, management), the boot interface needs a deploy kernel and ramdisk (iPXE) or a
/// deploy ISO and a driver that does virtual media (`redfish-virtual-media`), the deploy
/// interface an image; interfaces Ferric does not implement are "not supported".
fn validate_node(state: &ApiState, node: &Node) -> ValidateResult {
    let driver_check = match state.drivers.get(&node.driver) {
        None => InterfaceValidation::failed(format!("Cannot load hardware type {}", node.driver)),
        Some(driver) => match driver.validate(&node.driver_info) {
            Ok(()) => InterfaceValidation::ok(),
            Err(err) => InterfaceValidation::failed(err.to_string()),
        },
    };
    let has = |key: &str, default: &Option<String>| {
        node.driver_info.get(key).is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            || default.as_ref().is_some_and(|d| !d.is_empty())
    };
    let mut missing_boot = Vec::new();
    if !has("deploy_kernel", &state.config.deploy.deploy_kernel) {
        missing_boot.push("driver_info.deploy_kernel");
    }
    if !has("deploy_ramdisk", &state.config.deploy.deploy_ramdisk) {
        missing_boot.push("driver_info.deploy_ramdisk");
    }
    let boot = match check_ramdisk_boot(state, node) {
        Err(reason) => InterfaceValidation::failed(reason),
        Ok(BootInterface::RedfishVirtualMedia | BootInterface::Fake) => InterfaceValidation::ok(),
        Ok(BootInterface::Ipxe | BootInterface::Pxe) if missing_boot.is_empty() => {
            InterfaceValidation::ok()
        }
        Ok(BootInterface::Ipxe | BootInterface::Pxe) => InterfaceValidation::failed(format!(
            "Some parameters were missing in node's driver_info and no default is configured. \
             Missing are: {}",
            missing_boot.join(", ")
        )),
    };
    let has_image = node
        .instance_info
        .get("image_source")
        .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()));
    let deploy = if has_image {
        InterfaceValidation::ok()
    } else {
        InterfaceValidation::failed(format!(
            "Node {} failed to validate deploy image info. Some parameters were missing. \
             Missing are: ['instance_info.image_source']",
            node.uuid
        ))
    };
    VALIDATED_INTERFACES
        .iter()
        .map(|name| {
            let result = match *name {
                "power" | "management" => driver_check.clone(),
                "boot" => boot.clone(),
                "deploy" => deploy.clone(),
                "network" | "storage" => InterfaceValidation::ok(),
                _ => InterfaceValidation::unsupported("not supported"),
            };
            ((*name).to_owned(), result)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(value: Value) -> ProvisionRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn provision_body_rules() {
        let v = |minor| RequestVersion(ApiVersion::new(1, minor));
        let table: Vec<(Value, u32, Option<u16>)> = vec![
            (json!({"target": "manage"}), 110, None),
            (json!({"target": "clean"}), 110, Some(400)),
            (json!({"target": "clean", "clean_steps": []}), 110, None),
            (json!({"target": "provide", "clean_steps": []}), 110, Some(400)),
            (json!({"target": "active", "configdrive": "H4sI"}), 110, None),
            (json!({"target": "manage", "configdrive": "H4sI"}), 110, Some(400)),
            (json!({"target": "active", "configdrive": {"meta_data": {}}}), 55, Some(406)),
            (json!({"target": "active", "configdrive": {"meta_data": {}}}), 56, None),
            (json!({"target": "active", "configdrive": {"meta_data": {}, "x": 1}}), 56, Some(400)),
            (json!({"target": "active", "configdrive": {"meta_data": []}}), 56, Some(400)),
            (json!({"target": "active", "configdrive": {"user_data": 1}}), 56, Some(400)),
            (json!({"target": "active", "configdrive": {"user_data": "#!"}}), 56, None),
            (json!({"target": "active", "configdrive": {"vendor_data": {}}}), 58, Some(406)),
            (json!({"target": "active", "configdrive": {"vendor_data": {}}}), 59, None),
            (json!({"target": "deploy", "deploy_steps": []}), 68, Some(406)),
            (json!({"target": "deploy", "deploy_steps": []}), 69, None),
            (json!({"target": "provide", "deploy_steps": []}), 110, Some(400)),
            (json!({"target": "rescue"}), 110, Some(400)),
            (json!({"target": "rescue", "rescue_password": " "}), 110, Some(400)),
            (json!({"target": "rescue", "rescue_password": "pw"}), 110, None),
            (json!({"target": "service"}), 110, Some(400)),
            (json!({"target": "clean", "clean_steps": [], "disable_ramdisk": true}), 69, Some(406)),
            (json!({"target": "manage", "disable_ramdisk": true}), 110, Some(400)),
            (json!({"target": "manage", "runbook": "r"}), 110, Some(400)),
        ];
        for (body, minor, want) in table {
            let got = check_provision_body(&req(body.clone()), v(minor))
                .err()
                .map(|e| e.status().as_u16());
            assert_eq!(got, want, "{body} at 1.{minor}");
        }
    }
}
