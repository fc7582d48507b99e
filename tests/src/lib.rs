pub mod agent_process;
pub mod baremetal;
pub mod fake_conductor;
pub mod workspace_bin;
