//! The command handlers: each turns parsed arguments into API calls and prints the result.

use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use ferric_shared::api_version::ApiVersion;
use ferric_shared::states::{PowerTarget, ProvisionVerb};
use reqwest::{Method, Url};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::client::{ApiClient, ApiClientError, Need};
use super::kv::{self, ArgumentError, PatchBuilder};
use super::table::{self, Table};
use super::wait::{self, NodeStates, WaitOutcome, Waiter};
use super::*;

/// The microversion the CLI normally sends: new enough for `deploy`/`undeploy` semantics
/// and every field the commands print.
pub const PREFERRED_VERSION: ApiVersion = ApiVersion::new(1, 73);
/// `?fields=` on node reads.
const FIELDS_VERSION: ApiVersion = ApiVersion::new(1, 8);
/// Soft power targets and `timeout` on power requests.
const SOFT_POWER_VERSION: ApiVersion = ApiVersion::new(1, 27);
/// `configdrive` given as a JSON object.
const CONFIGDRIVE_DICT_VERSION: ApiVersion = ApiVersion::new(1, 56);
/// `vendor_data` inside a configdrive object.
const CONFIGDRIVE_VENDOR_DATA_VERSION: ApiVersion = ApiVersion::new(1, 59);
/// `resource_class` on nodes.
const RESOURCE_CLASS_VERSION: ApiVersion = ApiVersion::new(1, 21);
/// `*_interface` fields on nodes.
const INTERFACES_VERSION: ApiVersion = ApiVersion::new(1, 31);
/// `GET /v1/nodes/{node}/inventory`.
const INVENTORY_VERSION: ApiVersion = ApiVersion::new(1, 81);
/// Aborting a deployment that waits for its agent.
const ABORT_DEPLOY_WAIT_VERSION: ApiVersion = ApiVersion::new(1, 110);

fn need(minimum: ApiVersion) -> Need {
    Need::new(PREFERRED_VERSION.max(minimum), minimum)
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Argument(#[from] ArgumentError),
    #[error(transparent)]
    Api(#[from] ApiClientError),
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    #[error("nothing to change: give at least one field option")]
    NothingToChange,
    #[error("node {node} ended in {state}{}", last_error_suffix(last_error))]
    WaitFailed { node: String, state: String, last_error: Option<String> },
    #[error(
        "gave up waiting for node {node} after {}: it is in {state}, not {goal}",
        wait::format_duration(*waited)
    )]
    WaitTimedOut { node: String, state: String, goal: String, waited: Duration },
    #[error("{failed} of {total} deletions failed")]
    DeleteFailed { failed: usize, total: usize },
    #[error("{field} in the API reply is missing or not {expected}")]
    ReplyShape { field: &'static str, expected: &'static str },
    #[error("configuration")]
    Config(#[from] crate::config::ConfigError),
    #[error("conductor service")]
    Service(#[from] crate::service::ServiceError),
    #[error("reconciler status")]
    Status(#[from] crate::periodic::StatusFileError),
}

fn last_error_suffix(last_error: &Option<String>) -> String {
    match last_error {
        Some(text) if !text.is_empty() => format!(": {text}"),
        _ => " (no last_error recorded)".to_owned(),
    }
}

/// Where commands print: `out` gets results (tables, JSON), `status` gets progress and
/// per-item messages; `live` makes `--wait` redraw one line instead of printing one line
/// per poll (set when `status` is a terminal).
pub struct Console<'a> {
    pub out: &'a mut dyn Write,
    pub status: &'a mut dyn Write,
    pub live: bool,
}

impl std::fmt::Debug for Console<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("live", &self.live).finish_non_exhaustive()
    }
}

impl Console<'_> {
    /// Whether the process's standard error is a terminal.
    pub fn stderr_is_tty() -> bool {
        std::io::stderr().is_terminal()
    }
}

struct Ctx<'c, 'a> {
    api: ApiClient,
    format: Format,
    poll: Duration,
    console: &'c mut Console<'a>,
}

impl Ctx<'_, '_> {
    fn print(&mut self, text: &str) -> Result<(), CliError> {
        self.console.out.write_all(text.as_bytes()).map_err(CliError::Output)
    }

    fn status(&mut self, line: &str) -> Result<(), CliError> {
        writeln!(self.console.status, "{line}").map_err(CliError::Output)
    }

    fn print_json(&mut self, value: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        self.print(&format!("{text}\n"))
    }

    /// One object: `Field | Value` table or JSON.
    fn print_object(&mut self, value: &Value) -> Result<(), CliError> {
        match self.format {
            Format::Json => self.print_json(value),
            Format::Table => self.print(&table::show_table(value).render()),
        }
    }

    fn print_table_or_json(&mut self, table: Table, value: &Value) -> Result<(), CliError> {
        match self.format {
            Format::Json => self.print_json(value),
            Format::Table => self.print(&table.render()),
        }
    }

    fn url(&self, segments: &[&str]) -> Result<Url, CliError> {
        Ok(self.api.url(segments)?)
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli, console: &mut Console<'_>) -> Result<(), CliError> {
    if let Command::Conductor(args) = &cli.command {
        if let Some(ConductorAction::Status(status)) = &args.action {
            return conductor_status(status, cli.format, console);
        }
        let overrides =
            crate::config::ConfigOverrides { data_dir: args.data_dir.clone(), listen: args.listen };
        let config = crate::config::ConductorConfig::load_with(args.config.as_deref(), &overrides)?;
        return Ok(crate::service::run(config).await?);
    }
    let api = ApiClient::new(&cli.url, cli.cacert.as_deref())?;
    let mut ctx =
        Ctx { api, format: cli.format, poll: Duration::from_millis(cli.poll_interval_ms), console };
    match cli.command {
        Command::Node(command) => node_command(&mut ctx, *command).await,
        Command::Port(command) => port_command(&mut ctx, command).await,
        Command::Conductor(_) => Ok(()),
    }
}

/// `ferric conductor status`: the last run of each reconciler, from the status file the
/// service writes into its data directory.
fn conductor_status(
    args: &ConductorStatusArgs,
    format: Format,
    console: &mut Console<'_>,
) -> Result<(), CliError> {
    let overrides =
        crate::config::ConfigOverrides { data_dir: args.data_dir.clone(), listen: None };
    let config = crate::config::ConductorConfig::load_with(args.config.as_deref(), &overrides)?;
    let file =
        crate::periodic::StatusFile::read(&crate::periodic::status_file_path(&config.data_dir))?;
    let text = match format {
        Format::Json => {
            let json = serde_json::to_string_pretty(&file)
                .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
            format!("{json}\n")
        }
        Format::Table => {
            let mut rows = Table::new(&["Reconciler", "Started", "Took", "Outcome", "Runs"]);
            for run in &file.reconcilers {
                let outcome =
                    if run.ok { run.outcome.clone() } else { format!("FAILED: {}", run.outcome) };
                rows.push(vec![
                    run.name.clone(),
                    run.started_at.clone(),
                    format!("{:.3}s", run.took_seconds),
                    outcome,
                    run.runs.to_string(),
                ]);
            }
            format!(
                "Conductor {} (pid {}), status written at {}\n{}",
                file.conductor,
                file.pid,
                file.written_at,
                rows.render()
            )
        }
    };
    console.out.write_all(text.as_bytes()).map_err(CliError::Output)
}

async fn node_command(ctx: &mut Ctx<'_, '_>, command: NodeCommand) -> Result<(), CliError> {
    match command {
        NodeCommand::Create(args) => node_create(ctx, args).await,
        NodeCommand::List(args) => node_list(ctx, args).await,
        NodeCommand::Show(args) => node_show(ctx, args).await,
        NodeCommand::Set(args) => node_set(ctx, args).await,
        NodeCommand::Unset(args) => node_unset(ctx, args).await,
        NodeCommand::Delete(args) => node_delete(ctx, args).await,
        NodeCommand::Manage(a) => {
            provision(ctx, &a.node, ProvisionVerb::Manage, Map::new(), a.wait).await
        }
        NodeCommand::Provide(a) => {
            provision(ctx, &a.node, ProvisionVerb::Provide, Map::new(), a.wait).await
        }
        NodeCommand::Inspect(a) => {
            provision(ctx, &a.node, ProvisionVerb::Inspect, Map::new(), a.wait).await
        }
        // `active` and `deleted` are the spellings every microversion accepts; `deploy` /
        // `undeploy` (1.73) mean the same.
        NodeCommand::Undeploy(a) => {
            provision(ctx, &a.node, ProvisionVerb::Deleted, Map::new(), a.wait).await
        }
        NodeCommand::Deploy(a) => deploy(ctx, ProvisionVerb::Active, a).await,
        NodeCommand::Rebuild(a) => deploy(ctx, ProvisionVerb::Rebuild, a).await,
        NodeCommand::Clean(a) => {
            let steps = kv::clean_steps_argument(&a.clean_steps, read_stdin)?;
            let mut extra = Map::new();
            extra.insert("clean_steps".into(), steps);
            provision(ctx, &a.node, ProvisionVerb::Clean, extra, a.wait).await
        }
        NodeCommand::Abort(a) => {
            provision(ctx, &a.node, ProvisionVerb::Abort, Map::new(), WaitArg { wait: None }).await
        }
        NodeCommand::Unhold(a) => {
            provision(ctx, &a.node, ProvisionVerb::Unhold, Map::new(), WaitArg { wait: None }).await
        }
        NodeCommand::Validate(a) => node_validate(ctx, &a.node).await,
        NodeCommand::Inventory(a) => node_inventory(ctx, &a.node).await,
        NodeCommand::Power(PowerCommand::On(a)) => {
            power(ctx, &a.node, PowerTarget::On, a.power_timeout).await
        }
        NodeCommand::Power(PowerCommand::Off(a)) => {
            let target = if a.soft { PowerTarget::SoftPowerOff } else { PowerTarget::Off };
            power(ctx, &a.node, target, a.power_timeout).await
        }
        NodeCommand::Power(PowerCommand::Reboot(a)) | NodeCommand::Reboot(a) => {
            let target = if a.soft { PowerTarget::SoftRebooting } else { PowerTarget::Rebooting };
            power(ctx, &a.node, target, a.power_timeout).await
        }
        NodeCommand::Maintenance(MaintenanceCommand::Set(a)) => {
            let url = ctx.url(&["v1", "nodes", &a.node, "maintenance"])?;
            let body = match &a.reason {
                Some(reason) => json!({"reason": reason}),
                None => json!({}),
            };
            ctx.api.send(Method::PUT, url, Some(&body), need(ApiVersion::MINIMUM)).await?;
            Ok(())
        }
        NodeCommand::Maintenance(MaintenanceCommand::Unset(a)) => {
            let url = ctx.url(&["v1", "nodes", &a.node, "maintenance"])?;
            ctx.api.send(Method::DELETE, url, None, need(ApiVersion::MINIMUM)).await?;
            Ok(())
        }
        NodeCommand::BootDevice(BootDeviceCommand::Set(a)) => {
            let url = ctx.url(&["v1", "nodes", &a.node, "management", "boot_device"])?;
            let body = json!({"boot_device": a.device.as_str(), "persistent": a.persistent});
            ctx.api.send(Method::PUT, url, Some(&body), need(ApiVersion::MINIMUM)).await?;
            Ok(())
        }
    }
}

fn read_stdin() -> std::io::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    Ok(text)
}

/// The body of `POST /v1/nodes` for `node create`, and the microversion it needs.
pub fn node_create_body(args: &NodeCreate) -> Result<(Value, ApiVersion), ArgumentError> {
    let mut body = Map::new();
    let mut minimum = ApiVersion::MINIMUM;
    body.insert("driver".into(), json!(args.driver));
    for (key, value) in [("name", &args.name), ("uuid", &args.uuid)] {
        if let Some(value) = value {
            body.insert(key.into(), json!(value));
        }
    }
    if let Some(class) = &args.resource_class {
        body.insert("resource_class".into(), json!(class));
        minimum = minimum.max(RESOURCE_CLASS_VERSION);
    }
    for (option, field, items) in [
        ("--driver-info", "driver_info", &args.driver_info),
        ("--property", "properties", &args.properties),
        ("--instance-info", "instance_info", &args.instance_info),
        ("--extra", "extra", &args.extra),
    ] {
        if !items.is_empty() {
            body.insert(field.into(), Value::Object(kv::key_values_to_object(option, items)?));
        }
    }
    for (field, value) in [
        ("boot_interface", &args.boot_interface),
        ("deploy_interface", &args.deploy_interface),
        ("management_interface", &args.management_interface),
        ("power_interface", &args.power_interface),
    ] {
        if let Some(value) = value {
            body.insert(field.into(), json!(value));
            minimum = minimum.max(INTERFACES_VERSION);
        }
    }
    Ok((Value::Object(body), minimum))
}

async fn node_create(ctx: &mut Ctx<'_, '_>, args: NodeCreate) -> Result<(), CliError> {
    let (body, minimum) = node_create_body(&args)?;
    let url = ctx.url(&["v1", "nodes"])?;
    let node = ctx.api.json(Method::POST, url, Some(&body), need(minimum)).await?;
    ctx.print_object(&node)
}

/// The query of `GET /v1/nodes` for `node list` (without paging).
pub fn node_list_query(args: &NodeList) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if !args.long {
        let fields: Vec<&str> = table::NODE_LIST_COLUMNS.iter().map(|(_, f)| *f).collect();
        query.push(("fields", fields.join(",")));
    }
    if let Some(state) = &args.provision_state {
        query.push(("provision_state", state.clone()));
    }
    if args.maintenance {
        query.push(("maintenance", "true".into()));
    } else if args.no_maintenance {
        query.push(("maintenance", "false".into()));
    }
    if let Some(driver) = &args.driver {
        query.push(("driver", driver.clone()));
    }
    if let Some(class) = &args.resource_class {
        query.push(("resource_class", class.clone()));
    }
    if let Some(sort) = &args.sort {
        let (key, dir) = sort.split_once(':').unwrap_or((sort.as_str(), ""));
        query.push(("sort_key", key.to_owned()));
        if !dir.is_empty() {
            query.push(("sort_dir", dir.to_owned()));
        }
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    query
}

/// The `marker` of a `next` link, which is how the API pages lists.
pub fn next_marker(reply: &Value) -> Option<String> {
    let next = reply.get("next")?.as_str()?;
    let url = Url::parse(next).ok()?;
    let marker = url.query_pairs().find(|(k, _)| k == "marker").map(|(_, v)| v.into_owned());
    marker
}

/// Fetches `segments` with `query`, following `next` links unless `single_page`.
async fn fetch_list(
    ctx: &Ctx<'_, '_>,
    segments: &[&str],
    key: &'static str,
    query: &[(&'static str, String)],
    mut marker: Option<String>,
    single_page: bool,
    minimum: ApiVersion,
) -> Result<Vec<Value>, CliError> {
    let mut items = Vec::new();
    loop {
        let mut url = ctx.url(segments)?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            if let Some(marker) = &marker {
                pairs.append_pair("marker", marker);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let reply = ctx.api.json(Method::GET, url, None, need(minimum)).await?;
        let page = reply
            .get(key)
            .and_then(Value::as_array)
            .ok_or(CliError::ReplyShape { field: key, expected: "a list" })?;
        items.extend(page.iter().cloned());
        match next_marker(&reply) {
            Some(next) if !single_page && !page.is_empty() && Some(&next) != marker.as_ref() => {
                marker = Some(next);
            }
            _ => return Ok(items),
        }
    }
}

async fn node_list(ctx: &mut Ctx<'_, '_>, args: NodeList) -> Result<(), CliError> {
    let query = node_list_query(&args);
    let segments: &[&str] = if args.long { &["v1", "nodes", "detail"] } else { &["v1", "nodes"] };
    let minimum =
        if args.resource_class.is_some() { RESOURCE_CLASS_VERSION } else { FIELDS_VERSION };
    let nodes = fetch_list(
        ctx,
        segments,
        "nodes",
        &query,
        args.marker.clone(),
        args.limit.is_some(),
        minimum,
    )
    .await?;
    let columns: Vec<(&str, &str)> = if args.long {
        table::NODE_LIST_COLUMNS.iter().chain(table::NODE_LONG_EXTRA_COLUMNS).copied().collect()
    } else {
        table::NODE_LIST_COLUMNS.to_vec()
    };
    let rendered = table::list_table(&columns, &nodes);
    ctx.print_table_or_json(rendered, &Value::Array(nodes))
}

async fn node_show(ctx: &mut Ctx<'_, '_>, args: NodeShow) -> Result<(), CliError> {
    let mut url = ctx.url(&["v1", "nodes", &args.node])?;
    let mut minimum = ApiVersion::MINIMUM;
    if !args.fields.is_empty() {
        url.query_pairs_mut().append_pair("fields", &args.fields.join(","));
        minimum = FIELDS_VERSION;
    }
    let mut node = ctx.api.json(Method::GET, url, None, need(minimum)).await?;
    if ctx.format == Format::Table {
        add_deploy_progress_row(&mut node);
        super::erase_report::add_erase_report_row(&mut node);
    }
    ctx.print_object(&node)
}

/// For the table view: the image write's progress in words, as a `deploy_progress` row,
/// when the conductor holds one. The JSON view stays the API's object.
pub fn add_deploy_progress_row(node: &mut Value) {
    let text = node
        .get("driver_internal_info")
        .and_then(wait::ImageProgress::from_driver_internal_info)
        .map(|p| wait::image_progress_text(&p));
    if let (Some(text), Some(map)) = (text, node.as_object_mut()) {
        map.insert("deploy_progress".into(), Value::String(text));
    }
}

/// `node inventory`: the API's reply as JSON, or a summary with the node's ports (for
/// the switch ports LLDP did not report).
async fn node_inventory(ctx: &mut Ctx<'_, '_>, node: &str) -> Result<(), CliError> {
    let url = ctx.url(&["v1", "nodes", node, "inventory"])?;
    let reply = ctx.api.json(Method::GET, url, None, need(INVENTORY_VERSION)).await?;
    if ctx.format == Format::Json {
        return ctx.print_json(&reply);
    }
    let url = ctx.url(&["v1", "nodes", node, "ports", "detail"])?;
    let ports = ctx.api.json(Method::GET, url, None, need(ApiVersion::MINIMUM)).await?;
    let ports = ports.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    ctx.print(&super::inventory::summary(&reply, &ports))
}

/// The JSON patch of `node set`.
pub fn node_set_patch(args: &NodeSet) -> Result<(Value, ApiVersion), CliError> {
    let mut patch = PatchBuilder::new();
    let mut minimum = ApiVersion::MINIMUM;
    if let Some(name) = &args.name {
        patch.set("/name".into(), json!(name));
    }
    if let Some(driver) = &args.driver {
        patch.set("/driver".into(), json!(driver));
    }
    if let Some(class) = &args.resource_class {
        patch.set("/resource_class".into(), json!(class));
        minimum = RESOURCE_CLASS_VERSION;
    }
    patch.set_all("--driver-info", "driver_info", &args.driver_info)?;
    patch.set_all("--property", "properties", &args.properties)?;
    patch.set_all("--instance-info", "instance_info", &args.instance_info)?;
    patch.set_all("--extra", "extra", &args.extra)?;
    if patch.is_empty() {
        return Err(CliError::NothingToChange);
    }
    Ok((patch.into_value(), minimum))
}

/// The JSON patch of `node unset`.
pub fn node_unset_patch(args: &NodeUnset) -> Result<(Value, ApiVersion), CliError> {
    let mut patch = PatchBuilder::new();
    let mut minimum = ApiVersion::MINIMUM;
    if args.name {
        patch.remove("/name".into());
    }
    if args.resource_class {
        patch.remove("/resource_class".into());
        minimum = RESOURCE_CLASS_VERSION;
    }
    patch.remove_all("driver_info", &args.driver_info);
    patch.remove_all("properties", &args.properties);
    patch.remove_all("instance_info", &args.instance_info);
    patch.remove_all("extra", &args.extra);
    if patch.is_empty() {
        return Err(CliError::NothingToChange);
    }
    Ok((patch.into_value(), minimum))
}

async fn node_set(ctx: &mut Ctx<'_, '_>, args: NodeSet) -> Result<(), CliError> {
    let (patch, minimum) = node_set_patch(&args)?;
    patch_node(ctx, &args.node, &patch, minimum).await
}

async fn node_unset(ctx: &mut Ctx<'_, '_>, args: NodeUnset) -> Result<(), CliError> {
    let (patch, minimum) = node_unset_patch(&args)?;
    patch_node(ctx, &args.node, &patch, minimum).await
}

async fn patch_node(
    ctx: &mut Ctx<'_, '_>,
    node: &str,
    patch: &Value,
    minimum: ApiVersion,
) -> Result<(), CliError> {
    let url = ctx.url(&["v1", "nodes", node])?;
    let updated = ctx.api.json(Method::PATCH, url, Some(patch), need(minimum)).await?;
    // Like `baremetal node set`, a person gets no output; a script gets the new node.
    if ctx.format == Format::Json {
        ctx.print_json(&updated)?;
    }
    Ok(())
}

async fn node_delete(ctx: &mut Ctx<'_, '_>, args: NodeDelete) -> Result<(), CliError> {
    let mut failed = 0;
    for node in &args.nodes {
        let url = ctx.url(&["v1", "nodes", node])?;
        match ctx.api.send(Method::DELETE, url, None, need(ApiVersion::MINIMUM)).await {
            Ok(_) => ctx.status(&format!("Deleted node {node}"))?,
            Err(error) => {
                failed += 1;
                ctx.status(&format!("Failed to delete node {node}: {error}"))?;
            }
        }
    }
    if failed > 0 {
        return Err(CliError::DeleteFailed { failed, total: args.nodes.len() });
    }
    Ok(())
}

async fn node_validate(ctx: &mut Ctx<'_, '_>, node: &str) -> Result<(), CliError> {
    let url = ctx.url(&["v1", "nodes", node, "validate"])?;
    let reply = ctx.api.json(Method::GET, url, None, need(ApiVersion::MINIMUM)).await?;
    let rendered = table::validate_table(&reply);
    ctx.print_table_or_json(rendered, &reply)
}

/// The body of `PUT …/states/power` and the microversion it needs.
pub fn power_body(target: PowerTarget, timeout: Option<u64>) -> (Value, ApiVersion) {
    let mut body = json!({"target": target.as_str()});
    let mut minimum = target.min_version();
    if let Some(timeout) = timeout {
        body["timeout"] = json!(timeout);
        minimum = minimum.max(SOFT_POWER_VERSION);
    }
    (body, minimum)
}

async fn power(
    ctx: &mut Ctx<'_, '_>,
    node: &str,
    target: PowerTarget,
    timeout: Option<u64>,
) -> Result<(), CliError> {
    let (body, minimum) = power_body(target, timeout);
    let url = ctx.url(&["v1", "nodes", node, "states", "power"])?;
    ctx.api.send(Method::PUT, url, Some(&body), need(minimum)).await?;
    Ok(())
}

async fn deploy(
    ctx: &mut Ctx<'_, '_>,
    verb: ProvisionVerb,
    args: DeployArgs,
) -> Result<(), CliError> {
    let mut extra = Map::new();
    if let Some(text) = &args.config_drive {
        extra.insert("configdrive".into(), kv::config_drive_argument(text)?);
    }
    provision(ctx, &args.node, verb, extra, args.wait).await
}

/// The body of `PUT …/states/provision` and the microversions it may be sent with.
pub fn provision_body(verb: ProvisionVerb, extra: Map<String, Value>) -> (Value, Need) {
    let mut minimum = verb.min_version();
    if let Some(Value::Object(drive)) = extra.get("configdrive") {
        minimum = minimum.max(CONFIGDRIVE_DICT_VERSION);
        if drive.contains_key("vendor_data") {
            minimum = minimum.max(CONFIGDRIVE_VENDOR_DATA_VERSION);
        }
    }
    let mut preferred = PREFERRED_VERSION.max(minimum);
    if verb == ProvisionVerb::Abort {
        // Aborting `wait call-back` needs 1.110; other aborts work from 1.13.
        preferred = preferred.max(ABORT_DEPLOY_WAIT_VERSION);
    }
    let mut body = extra;
    body.insert("target".into(), json!(verb.as_str()));
    (Value::Object(body), Need::new(preferred, minimum))
}

async fn read_states(ctx: &Ctx<'_, '_>, node: &str) -> Result<NodeStates, CliError> {
    let url = ctx.url(&["v1", "nodes", node, "states"])?;
    let reply = ctx.api.json(Method::GET, url, None, need(ApiVersion::MINIMUM)).await?;
    serde_json::from_value(reply).map_err(|_| CliError::ReplyShape {
        field: "states",
        expected: "an object of state strings",
    })
}

/// The age of the agent's last heartbeat and the image write's progress, from
/// `driver_internal_info`.
async fn agent_facts(
    ctx: &Ctx<'_, '_>,
    node: &str,
) -> (Option<Duration>, Option<wait::ImageProgress>) {
    let Ok(mut url) = ctx.url(&["v1", "nodes", node]) else { return (None, None) };
    url.query_pairs_mut().append_pair("fields", "driver_internal_info");
    let Ok(reply) = ctx.api.json(Method::GET, url, None, need(FIELDS_VERSION)).await else {
        return (None, None);
    };
    let Some(info) = reply.get("driver_internal_info") else { return (None, None) };
    let heartbeat = info
        .get("agent_last_heartbeat")
        .and_then(Value::as_str)
        .and_then(|at| wait::heartbeat_age(at, OffsetDateTime::now_utc()));
    (heartbeat, wait::ImageProgress::from_driver_internal_info(info))
}

async fn provision(
    ctx: &mut Ctx<'_, '_>,
    node: &str,
    verb: ProvisionVerb,
    extra: Map<String, Value>,
    wait_arg: WaitArg,
) -> Result<(), CliError> {
    let goal = wait_arg.wait.and(wait::wait_goal(verb));
    let before = match goal {
        Some(_) => Some(read_states(ctx, node).await?),
        None => None,
    };
    let (body, need) = provision_body(verb, extra);
    let url = ctx.url(&["v1", "nodes", node, "states", "provision"])?;
    ctx.api.send(Method::PUT, url, Some(&body), need).await?;
    let (Some(goal), Some(before)) = (goal, before) else {
        return Ok(());
    };
    let timeout = wait_arg.wait.filter(|s| *s > 0).map(Duration::from_secs);
    let waiter = Waiter::new(goal, before, timeout);
    wait_loop(ctx, node, waiter).await
}

async fn wait_loop(ctx: &mut Ctx<'_, '_>, node: &str, mut waiter: Waiter) -> Result<(), CliError> {
    let started = Instant::now();
    let mut last_printed: Option<Instant> = None;
    let live = ctx.console.live;
    loop {
        let states = read_states(ctx, node).await?;
        let elapsed = started.elapsed();
        let outcome = waiter.observe(elapsed, &states);
        let (heartbeat, image) = agent_facts(ctx, node).await;
        let mut line = wait::progress_line(node, &states, elapsed, heartbeat);
        // Only while the image is being written: the conductor keeps the last report.
        let writing = states.provision_state.as_deref() == Some("wait call-back");
        if let (Some(image), true, None) = (image, writing, &outcome) {
            line.push_str(&format!(", {}", wait::image_progress_text(&image)));
        }
        let due = live
            || outcome.is_some()
            || last_printed.is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
        if due {
            let text = wait::progress_output(live, &line, outcome.is_some());
            ctx.console.status.write_all(text.as_bytes()).map_err(CliError::Output)?;
            ctx.console.status.flush().map_err(CliError::Output)?;
            last_printed = Some(Instant::now());
        }
        if let Some(outcome) = outcome {
            if ctx.format == Format::Json {
                ctx.print_json(&json!({
                    "provision_state": states.provision_state,
                    "target_provision_state": states.target_provision_state,
                    "last_error": states.last_error,
                    "power_state": states.power_state,
                }))?;
            }
            return match outcome {
                WaitOutcome::Reached { .. } => Ok(()),
                WaitOutcome::Failed { state, last_error } => {
                    Err(CliError::WaitFailed { node: node.to_owned(), state, last_error })
                }
                WaitOutcome::TimedOut { state, waited } => Err(CliError::WaitTimedOut {
                    node: node.to_owned(),
                    state,
                    goal: waiter.goal().to_string(),
                    waited,
                }),
            };
        }
        tokio::time::sleep(ctx.poll).await;
    }
}

async fn port_command(ctx: &mut Ctx<'_, '_>, command: PortCommand) -> Result<(), CliError> {
    match command {
        PortCommand::Create(args) => {
            let node_uuid = resolve_node_uuid(ctx, &args.node).await?;
            let mut body = json!({"address": args.address, "node_uuid": node_uuid});
            if !args.extra.is_empty() {
                body["extra"] = Value::Object(kv::key_values_to_object("--extra", &args.extra)?);
            }
            let mut minimum = ApiVersion::MINIMUM;
            if let Some(pxe) = args.pxe_enabled {
                body["pxe_enabled"] = json!(pxe);
                minimum = ApiVersion::new(1, 19);
            }
            let url = ctx.url(&["v1", "ports"])?;
            let port = ctx.api.json(Method::POST, url, Some(&body), need(minimum)).await?;
            ctx.print_object(&port)
        }
        PortCommand::List(args) => {
            let segments: Vec<&str> = match (&args.node, args.long) {
                (Some(node), false) => vec!["v1", "nodes", node, "ports"],
                (Some(node), true) => vec!["v1", "nodes", node, "ports", "detail"],
                (None, false) => vec!["v1", "ports"],
                (None, true) => vec!["v1", "ports", "detail"],
            };
            let ports =
                fetch_list(ctx, &segments, "ports", &[], None, false, ApiVersion::MINIMUM).await?;
            let columns: Vec<(&str, &str)> = if args.long {
                table::PORT_LIST_COLUMNS
                    .iter()
                    .chain(table::PORT_LONG_EXTRA_COLUMNS)
                    .copied()
                    .collect()
            } else {
                table::PORT_LIST_COLUMNS.to_vec()
            };
            let rendered = table::list_table(&columns, &ports);
            ctx.print_table_or_json(rendered, &Value::Array(ports))
        }
        PortCommand::Show(args) => {
            let url = ctx.url(&["v1", "ports", &args.port])?;
            let port = ctx.api.json(Method::GET, url, None, need(ApiVersion::MINIMUM)).await?;
            ctx.print_object(&port)
        }
        PortCommand::Delete(args) => {
            let mut failed = 0;
            for port in &args.ports {
                let url = ctx.url(&["v1", "ports", port])?;
                match ctx.api.send(Method::DELETE, url, None, need(ApiVersion::MINIMUM)).await {
                    Ok(_) => ctx.status(&format!("Deleted port {port}"))?,
                    Err(error) => {
                        failed += 1;
                        ctx.status(&format!("Failed to delete port {port}: {error}"))?;
                    }
                }
            }
            if failed > 0 {
                return Err(CliError::DeleteFailed { failed, total: args.ports.len() });
            }
            Ok(())
        }
    }
}

/// Ports need the node's UUID (`node_uuid`); a name is looked up first.
async fn resolve_node_uuid(ctx: &Ctx<'_, '_>, node: &str) -> Result<String, CliError> {
    if uuid::Uuid::parse_str(node).is_ok() {
        return Ok(node.to_owned());
    }
    let mut url = ctx.url(&["v1", "nodes", node])?;
    url.query_pairs_mut().append_pair("fields", "uuid");
    let reply = ctx.api.json(Method::GET, url, None, need(FIELDS_VERSION)).await?;
    reply
        .get("uuid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(CliError::ReplyShape { field: "uuid", expected: "a string" })
}
