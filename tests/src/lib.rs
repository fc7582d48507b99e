pub mod fake_conductor;
