//! The peer's own setup. The `baremetal` and `ferric` CLIs are tested against the real
//! conductor in `tests/tests/baremetal_conductor.rs`, `ferric_cli.rs` and
//! `conductor_flows.rs`.

use super::*;

#[test]
fn a_missing_venv_is_an_error_that_says_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = baremetal_binary_in(&dir.path().join("no-venv")).unwrap_err().to_string();
    assert!(err.contains("tests/peers/setup-venv.sh"), "{err}");
    assert!(err.contains(VENV_ENV), "{err}");
    assert!(err.contains("no-venv"), "{err}");
}
