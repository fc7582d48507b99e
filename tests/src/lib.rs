pub mod agent_process;
pub mod baremetal;
pub mod bmc_sim;
pub mod conductor;
pub mod conductor_process;
pub mod fake_conductor;
pub mod qemu;
pub mod workspace_bin;
