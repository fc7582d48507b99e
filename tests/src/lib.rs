pub mod agent_process;
pub mod fake_conductor;
