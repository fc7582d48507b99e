pub mod agent_process;
pub mod baremetal;
pub mod conductor;
pub mod fake_conductor;
pub mod workspace_bin;
