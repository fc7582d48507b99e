//! The processing hooks.

use serde_json::Value;

use super::{InspectionError, InspectionOutcome};
use crate::config::InspectorConfig;
use crate::store::{Node, Port};

/// Runs the configured hooks, in order, over an inspection report.
pub fn process(
    _config: &InspectorConfig,
    _node: &Node,
    _ports: &[Port],
    _data: &Value,
) -> Result<InspectionOutcome, InspectionError> {
    Ok(InspectionOutcome::default())
}
