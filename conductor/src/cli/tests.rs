//! Argument parsing of every subcommand.

use clap::Parser;

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("ferric").chain(args.iter().copied()))
}

fn node(args: &[&str]) -> NodeCommand {
    match parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}")).command {
        Command::Node(command) => *command,
        other => panic!("{args:?} parsed as {other:?}"),
    }
}

fn port(args: &[&str]) -> PortCommand {
    match parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}")).command {
        Command::Port(command) => command,
        other => panic!("{args:?} parsed as {other:?}"),
    }
}

#[test]
fn global_options() {
    let cli = parse(&["--url", "http://10.0.0.1:6385", "node", "list", "-f", "json"]).unwrap();
    assert_eq!(cli.url, "http://10.0.0.1:6385");
    assert_eq!(cli.format, Format::Json);
    assert_eq!(cli.poll_interval_ms, 2000);
    let cli = parse(&["node", "list"]).unwrap();
    assert_eq!(cli.format, Format::Table);
    assert!(parse(&["-f", "yaml", "node", "list"]).is_err());
    assert!(parse(&["node"]).is_err());
    assert!(parse(&["chassis", "list"]).is_err());
}

#[test]
fn url_defaults_to_the_local_api() {
    // FERRIC_URL is read from the environment; the end-to-end tests in `ferric-tests` set it
    // on a child process, which keeps this process's environment untouched.
    if std::env::var_os("FERRIC_URL").is_none() {
        assert_eq!(parse(&["node", "list"]).unwrap().url, DEFAULT_URL);
    }
    assert_eq!(parse(&["--url", "http://x", "node", "list"]).unwrap().url, "http://x");
}

#[test]
fn node_create_options() {
    let NodeCommand::Create(c) = node(&[
        "node",
        "create",
        "--driver",
        "fake-hardware",
        "--name",
        "n1",
        "--driver-info",
        "ipmi_address=10.0.0.5",
        "--driver-info",
        "ipmi_port=623",
        "--property",
        "cpus=4",
        "--instance-info",
        "image_source=http://i/x.img",
        "--extra",
        "rack=7",
        "--resource-class",
        "baremetal",
        "--uuid",
        "4c2f6ab5-0c5e-4b5a-8d2a-0f3d7c9a1e11",
        "--deploy-interface",
        "direct",
    ]) else {
        panic!("not create")
    };
    assert_eq!(c.driver, "fake-hardware");
    assert_eq!(c.name.as_deref(), Some("n1"));
    assert_eq!(c.driver_info, ["ipmi_address=10.0.0.5", "ipmi_port=623"]);
    assert_eq!(c.properties, ["cpus=4"]);
    assert_eq!(c.instance_info, ["image_source=http://i/x.img"]);
    assert_eq!(c.extra, ["rack=7"]);
    assert_eq!(c.resource_class.as_deref(), Some("baremetal"));
    assert_eq!(c.deploy_interface.as_deref(), Some("direct"));
    assert!(parse(&["node", "create", "--name", "n1"]).is_err(), "--driver is required");
}

#[test]
fn node_list_options() {
    let NodeCommand::List(l) = node(&[
        "node",
        "list",
        "--long",
        "--provision-state",
        "available",
        "--maintenance",
        "--driver",
        "ipmi",
        "--resource-class",
        "gold",
        "--limit",
        "5",
        "--marker",
        "m",
        "--sort",
        "name:desc",
    ]) else {
        panic!("not list")
    };
    assert!(l.long && l.maintenance && !l.no_maintenance);
    assert_eq!(l.provision_state.as_deref(), Some("available"));
    assert_eq!(l.limit, Some(5));
    assert_eq!(l.sort.as_deref(), Some("name:desc"));
    assert!(parse(&["node", "list", "--maintenance", "--no-maintenance"]).is_err());
    assert!(parse(&["node", "list", "--limit", "many"]).is_err());
}

#[test]
fn node_show_set_unset_delete() {
    let NodeCommand::Show(s) = node(&["node", "show", "n1", "--field", "uuid", "--field", "name"])
    else {
        panic!("not show")
    };
    assert_eq!((s.node.as_str(), s.fields.len()), ("n1", 2));
    let NodeCommand::Set(s) = node(&[
        "node",
        "set",
        "n1",
        "--property",
        "cpus=8",
        "--driver-info",
        "a=b",
        "--name",
        "n2",
        "--instance-info",
        "image_source=x",
        "--extra",
        "k=v",
        "--resource-class",
        "c",
        "--driver",
        "ipmi",
    ]) else {
        panic!("not set")
    };
    assert_eq!(s.properties, ["cpus=8"]);
    assert_eq!(s.name.as_deref(), Some("n2"));
    assert_eq!(s.driver.as_deref(), Some("ipmi"));
    let NodeCommand::Unset(u) =
        node(&["node", "unset", "n1", "--property", "cpus", "--name", "--extra", "k"])
    else {
        panic!("not unset")
    };
    assert!(u.name && !u.resource_class);
    assert_eq!(
        (u.properties.as_slice(), u.extra.as_slice()),
        (&["cpus".to_owned()][..], &["k".to_owned()][..])
    );
    let NodeCommand::Delete(d) = node(&["node", "delete", "a", "b"]) else { panic!("not delete") };
    assert_eq!(d.nodes, ["a", "b"]);
    assert!(parse(&["node", "delete"]).is_err());
    assert!(parse(&["node", "set"]).is_err());
}

#[test]
fn provisioning_verbs_and_wait() {
    for verb in ["manage", "provide", "undeploy", "inspect"] {
        let command = node(&["node", verb, "n1"]);
        let (name, wait) = match &command {
            NodeCommand::Manage(a)
            | NodeCommand::Provide(a)
            | NodeCommand::Undeploy(a)
            | NodeCommand::Inspect(a) => (a.node.clone(), a.wait.wait),
            other => panic!("{verb}: {other:?}"),
        };
        assert_eq!((name.as_str(), wait), ("n1", None), "{verb}");
    }
    let NodeCommand::Provide(p) = node(&["node", "provide", "n1", "--wait"]) else { panic!() };
    assert_eq!(p.wait.wait, Some(0), "bare --wait waits for ever");
    let NodeCommand::Manage(m) = node(&["node", "manage", "n1", "--wait", "90"]) else { panic!() };
    assert_eq!(m.wait.wait, Some(90));
    let NodeCommand::Manage(m) = node(&["node", "manage", "--wait=30", "n1"]) else { panic!() };
    assert_eq!((m.node.as_str(), m.wait.wait), ("n1", Some(30)));
    assert!(parse(&["node", "manage", "n1", "--wait", "soon"]).is_err());

    let NodeCommand::Deploy(d) =
        node(&["node", "deploy", "n1", "--config-drive", "{\"meta_data\": {}}", "--wait", "600"])
    else {
        panic!()
    };
    assert_eq!(d.config_drive.as_deref(), Some("{\"meta_data\": {}}"));
    assert_eq!(d.wait.wait, Some(600));
    let NodeCommand::Rebuild(r) = node(&["node", "rebuild", "n1"]) else { panic!() };
    assert_eq!((r.node.as_str(), r.config_drive.as_deref()), ("n1", None));

    let NodeCommand::Clean(c) = node(&["node", "clean", "n1", "--clean-steps", "@steps.json"])
    else {
        panic!()
    };
    assert_eq!(c.clean_steps, "@steps.json");
    assert!(parse(&["node", "clean", "n1"]).is_err(), "--clean-steps is required");
    let NodeCommand::Abort(a) = node(&["node", "abort", "n1"]) else { panic!() };
    assert_eq!(a.node, "n1");
    assert!(parse(&["node", "abort", "n1", "--wait"]).is_err());
    let NodeCommand::Validate(v) = node(&["node", "validate", "n1"]) else { panic!() };
    assert_eq!(v.node, "n1");
}

#[test]
fn power_maintenance_boot_device() {
    let NodeCommand::Power(PowerCommand::On(p)) = node(&["node", "power", "on", "n1"]) else {
        panic!()
    };
    assert_eq!((p.node.as_str(), p.power_timeout), ("n1", None));
    let NodeCommand::Power(PowerCommand::Off(p)) =
        node(&["node", "power", "off", "n1", "--soft", "--power-timeout", "30"])
    else {
        panic!()
    };
    assert!(p.soft);
    assert_eq!(p.power_timeout, Some(30));
    assert!(parse(&["node", "power", "off", "n1", "--power-timeout", "0"]).is_err());
    assert!(parse(&["node", "power", "on", "n1", "--soft"]).is_err());
    let NodeCommand::Power(PowerCommand::Reboot(r)) = node(&["node", "power", "reboot", "n1"])
    else {
        panic!()
    };
    assert!(!r.soft);
    let NodeCommand::Reboot(r) = node(&["node", "reboot", "n1", "--soft"]) else { panic!() };
    assert!(r.soft);

    let NodeCommand::Maintenance(MaintenanceCommand::Set(m)) =
        node(&["node", "maintenance", "set", "n1", "--reason", "disk swap"])
    else {
        panic!()
    };
    assert_eq!(m.reason.as_deref(), Some("disk swap"));
    let NodeCommand::Maintenance(MaintenanceCommand::Unset(m)) =
        node(&["node", "maintenance", "unset", "n1"])
    else {
        panic!()
    };
    assert_eq!(m.node, "n1");

    let NodeCommand::BootDevice(BootDeviceCommand::Set(b)) =
        node(&["node", "boot-device", "set", "n1", "pxe", "--persistent"])
    else {
        panic!()
    };
    assert_eq!((b.device, b.persistent), (BootDevice::Pxe, true));
    for device in ["disk", "cdrom", "bios", "safe"] {
        assert!(parse(&["node", "boot-device", "set", "n1", device]).is_ok(), "{device}");
    }
    assert!(parse(&["node", "boot-device", "set", "n1", "floppy"]).is_err());
}

#[test]
fn port_commands() {
    let PortCommand::Create(c) = port(&[
        "port",
        "create",
        "52:54:00:12:34:56",
        "--node",
        "n1",
        "--extra",
        "switch=sw1",
        "--pxe-enabled",
        "false",
    ]) else {
        panic!()
    };
    assert_eq!((c.address.as_str(), c.node.as_str()), ("52:54:00:12:34:56", "n1"));
    assert_eq!((c.extra.len(), c.pxe_enabled), (1, Some(false)));
    assert!(parse(&["port", "create", "52:54:00:12:34:56"]).is_err(), "--node is required");
    let PortCommand::List(l) = port(&["port", "list", "--node", "n1", "--long"]) else { panic!() };
    assert!(l.long);
    assert_eq!(l.node.as_deref(), Some("n1"));
    let PortCommand::Show(s) = port(&["port", "show", "p1"]) else { panic!() };
    assert_eq!(s.port, "p1");
    let PortCommand::Delete(d) = port(&["port", "delete", "p1", "p2"]) else { panic!() };
    assert_eq!(d.ports, ["p1", "p2"]);
}

#[test]
fn clap_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

mod requests {
    use ferric_shared::api_version::ApiVersion;
    use ferric_shared::states::{PowerTarget, ProvisionVerb};
    use serde_json::{json, Map, Value};

    use super::super::commands::*;
    use super::*;

    fn create(args: &[&str]) -> NodeCreate {
        let mut full = vec!["node", "create"];
        full.extend_from_slice(args);
        match node(&full) {
            NodeCommand::Create(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_bodies_and_versions() {
        let (body, version) = node_create_body(&create(&[
            "--driver",
            "ipmi",
            "--name",
            "n1",
            "--driver-info",
            "ipmi_port=623",
            "--driver-info",
            "ipmi_address=10.0.0.5",
            "--property",
            "cpus=4",
            "--property",
            r#"capabilities={"boot_mode": "uefi"}"#,
        ]))
        .unwrap();
        assert_eq!(
            body,
            json!({"driver": "ipmi", "name": "n1",
                   "driver_info": {"ipmi_port": "623", "ipmi_address": "10.0.0.5"},
                   "properties": {"cpus": "4", "capabilities": {"boot_mode": "uefi"}}})
        );
        assert_eq!(version, ApiVersion::MINIMUM);
        let (_, version) =
            node_create_body(&create(&["--driver", "ipmi", "--resource-class", "gold"])).unwrap();
        assert_eq!(version, ApiVersion::new(1, 21));
        let (body, version) =
            node_create_body(&create(&["--driver", "ipmi", "--boot-interface", "ipxe"])).unwrap();
        assert_eq!(
            (body["boot_interface"].clone(), version),
            (json!("ipxe"), ApiVersion::new(1, 31))
        );
        assert!(node_create_body(&create(&["--driver", "x", "--extra", "novalue"])).is_err());
    }

    #[test]
    fn list_queries() {
        let NodeCommand::List(plain) = node(&["node", "list"]) else { panic!() };
        assert_eq!(
            node_list_query(&plain),
            [("fields", "uuid,name,instance_uuid,power_state,provision_state,maintenance".into())]
        );
        let NodeCommand::List(long) = node(&[
            "node",
            "list",
            "--long",
            "--no-maintenance",
            "--provision-state",
            "active",
            "--sort",
            "name:desc",
            "--limit",
            "10",
        ]) else {
            panic!()
        };
        assert_eq!(
            node_list_query(&long),
            [
                ("provision_state", "active".to_owned()),
                ("maintenance", "false".to_owned()),
                ("sort_key", "name".to_owned()),
                ("sort_dir", "desc".to_owned()),
                ("limit", "10".to_owned()),
            ]
        );
    }

    #[test]
    fn next_markers() {
        let table = [
            (json!({"nodes": [], "next": "http://h/v1/nodes?limit=2&marker=abc"}), Some("abc")),
            (json!({"nodes": [], "next": "http://h/v1/nodes?marker=a%20b"}), Some("a b")),
            (json!({"nodes": [], "next": "not a url"}), None),
            (json!({"nodes": [], "next": "http://h/v1/nodes?limit=2"}), None),
            (json!({"nodes": []}), None),
            (json!({"nodes": [], "next": 7}), None),
        ];
        for (reply, marker) in table {
            assert_eq!(next_marker(&reply).as_deref(), marker, "{reply}");
        }
    }

    #[test]
    fn power_bodies() {
        let table = [
            (PowerTarget::On, None, json!({"target": "power on"}), ApiVersion::MINIMUM),
            (PowerTarget::Rebooting, None, json!({"target": "rebooting"}), ApiVersion::MINIMUM),
            (
                PowerTarget::Off,
                Some(30),
                json!({"target": "power off", "timeout": 30}),
                ApiVersion::new(1, 27),
            ),
            (
                PowerTarget::SoftPowerOff,
                None,
                json!({"target": "soft power off"}),
                ApiVersion::new(1, 27),
            ),
        ];
        for (target, timeout, body, version) in table {
            assert_eq!(power_body(target, timeout), (body, version), "{target}");
        }
    }

    #[test]
    fn provision_bodies_and_versions() {
        let (body, need) = provision_body(ProvisionVerb::Manage, Map::new());
        assert_eq!(body, json!({"target": "manage"}));
        assert_eq!((need.preferred, need.minimum), (PREFERRED_VERSION, ApiVersion::new(1, 4)));

        let mut extra = Map::new();
        extra.insert("configdrive".into(), json!({"meta_data": {}}));
        let (body, need) = provision_body(ProvisionVerb::Active, extra);
        assert_eq!(body, json!({"target": "active", "configdrive": {"meta_data": {}}}));
        assert_eq!(need.minimum, ApiVersion::new(1, 56));
        let mut extra = Map::new();
        extra.insert("configdrive".into(), json!({"meta_data": {}, "vendor_data": {"a": 1}}));
        let (_, need) = provision_body(ProvisionVerb::Active, extra);
        assert_eq!(need.minimum, ApiVersion::new(1, 59));

        let mut extra = Map::new();
        extra.insert("configdrive".into(), Value::String("H4sI".into()));
        let (_, need) = provision_body(ProvisionVerb::Rebuild, extra);
        assert_eq!(need.minimum, ApiVersion::MINIMUM);

        let (_, need) = provision_body(ProvisionVerb::Abort, Map::new());
        assert_eq!(
            (need.preferred, need.minimum),
            (ApiVersion::new(1, 110), ApiVersion::new(1, 13))
        );
        let (_, need) = provision_body(ProvisionVerb::Clean, Map::new());
        assert_eq!(need.minimum, ApiVersion::new(1, 15));
    }

    #[test]
    fn set_and_unset_patches() {
        let NodeCommand::Set(set) = node(&[
            "node",
            "set",
            "n1",
            "--name",
            "n2",
            "--resource-class",
            "gold",
            "--instance-info",
            "image_source=http://i/x.raw",
            "--extra",
            "a/b=1",
        ]) else {
            panic!()
        };
        let (patch, version) = node_set_patch(&set).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "add", "path": "/name", "value": "n2"},
                {"op": "add", "path": "/resource_class", "value": "gold"},
                {"op": "add", "path": "/instance_info/image_source", "value": "http://i/x.raw"},
                {"op": "add", "path": "/extra/a/b", "value": "1"},
            ])
        );
        assert_eq!(version, ApiVersion::new(1, 21));
        let NodeCommand::Set(empty) = node(&["node", "set", "n1"]) else { panic!() };
        assert!(matches!(node_set_patch(&empty), Err(CliError::NothingToChange)));

        let NodeCommand::Unset(unset) =
            node(&["node", "unset", "n1", "--driver-info", "ipmi_password", "--name"])
        else {
            panic!()
        };
        let (patch, _) = node_unset_patch(&unset).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "remove", "path": "/name"},
                {"op": "remove", "path": "/driver_info/ipmi_password"},
            ])
        );
        let NodeCommand::Unset(empty) = node(&["node", "unset", "n1"]) else { panic!() };
        assert!(matches!(node_unset_patch(&empty), Err(CliError::NothingToChange)));
    }

    #[test]
    fn wait_errors_read_well() {
        let failed = CliError::WaitFailed {
            node: "n1".into(),
            state: "deploy failed".into(),
            last_error: Some("Timeout reached while waiting for callback".into()),
        };
        assert_eq!(
            failed.to_string(),
            "node n1 ended in deploy failed: Timeout reached while waiting for callback"
        );
        let silent =
            CliError::WaitFailed { node: "n1".into(), state: "enroll".into(), last_error: None };
        assert_eq!(silent.to_string(), "node n1 ended in enroll (no last_error recorded)");
    }
}

#[test]
fn node_show_table_adds_the_image_progress_in_words() {
    use serde_json::json;
    let mut node = json!({"uuid": "u", "driver_internal_info": {"deploy_step_progress": {
        "phase": "downloading", "bytes_done": 1048576, "bytes_total": 4194304,
        "rate_bytes_per_second": 1048576.0, "eta_seconds": 3.0}}});
    commands::add_deploy_progress_row(&mut node);
    assert_eq!(
        node["deploy_progress"],
        "writing image (downloading): 1.0 MiB of 4.0 MiB (25%), 1.0 MiB/s, ETA 3s"
    );
    let rendered = table::show_table(&node).render();
    assert!(rendered.contains("| deploy_progress "), "{rendered}");

    let mut idle = json!({"uuid": "u", "driver_internal_info": {}});
    commands::add_deploy_progress_row(&mut idle);
    assert_eq!(idle, json!({"uuid": "u", "driver_internal_info": {}}));
}
