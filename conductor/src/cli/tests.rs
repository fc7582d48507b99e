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
fn url_comes_from_the_environment_or_the_default() {
    // Both cases in one test: the environment is process-wide.
    std::env::remove_var("FERRIC_URL");
    assert_eq!(parse(&["node", "list"]).unwrap().url, DEFAULT_URL);
    std::env::set_var("FERRIC_URL", "http://192.0.2.7:6385");
    assert_eq!(parse(&["node", "list"]).unwrap().url, "http://192.0.2.7:6385");
    assert_eq!(parse(&["--url", "http://x", "node", "list"]).unwrap().url, "http://x");
    std::env::remove_var("FERRIC_URL");
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
