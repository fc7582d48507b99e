-- Ferric's store. Portable SQL: plain column types, JSON kept as TEXT, timestamps as
-- microseconds since the Unix epoch (BIGINT), booleans as BOOLEAN.

CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    name TEXT UNIQUE,
    driver TEXT NOT NULL,
    driver_info TEXT NOT NULL,
    driver_internal_info TEXT NOT NULL,
    properties TEXT NOT NULL,
    instance_info TEXT NOT NULL,
    instance_uuid TEXT UNIQUE,
    extra TEXT NOT NULL,
    resource_class TEXT,
    provision_state TEXT NOT NULL,
    target_provision_state TEXT,
    provision_updated_at BIGINT,
    power_state TEXT,
    target_power_state TEXT,
    maintenance BOOLEAN NOT NULL,
    maintenance_reason TEXT,
    fault TEXT,
    last_error TEXT,
    reservation TEXT,
    clean_step TEXT NOT NULL,
    deploy_step TEXT NOT NULL,
    automated_clean BOOLEAN,
    console_enabled BOOLEAN NOT NULL,
    boot_mode TEXT,
    secure_boot BOOLEAN,
    bios_interface TEXT,
    boot_interface TEXT,
    console_interface TEXT,
    deploy_interface TEXT,
    firmware_interface TEXT,
    inspect_interface TEXT,
    management_interface TEXT,
    network_interface TEXT,
    power_interface TEXT,
    raid_interface TEXT,
    rescue_interface TEXT,
    storage_interface TEXT,
    vendor_interface TEXT,
    owner TEXT,
    lessee TEXT,
    description TEXT,
    conductor_group TEXT NOT NULL,
    protected BOOLEAN NOT NULL,
    protected_reason TEXT,
    retired BOOLEAN NOT NULL,
    retired_reason TEXT,
    traits TEXT NOT NULL,
    network_data TEXT NOT NULL,
    inspection_started_at BIGINT,
    inspection_finished_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT,
    version BIGINT NOT NULL
);

CREATE INDEX nodes_provision_state ON nodes (provision_state);
CREATE INDEX nodes_reservation ON nodes (reservation);

CREATE TABLE ports (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL UNIQUE,
    node_uuid TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    pxe_enabled BOOLEAN NOT NULL,
    local_link_connection TEXT NOT NULL,
    physical_network TEXT,
    extra TEXT NOT NULL,
    internal_info TEXT NOT NULL,
    is_smartnic BOOLEAN NOT NULL,
    portgroup_uuid TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT,
    version BIGINT NOT NULL
);

CREATE INDEX ports_node_uuid ON ports (node_uuid);

CREATE TABLE inspection_data (
    node_uuid TEXT PRIMARY KEY NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
