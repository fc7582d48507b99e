//! LLDP TLVs as the agent reports them (`lldp_raw`), parsed.
