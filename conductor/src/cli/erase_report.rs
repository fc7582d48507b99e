//! `ferric node show`'s view of the erase report the conductor keeps in
//! `driver_internal_info.clean_erase_report` (`{<step>: {<device>: <disk report>}}`): one
//! row per step and disk with the method, time, bytes and how the result was checked.

use serde_json::Value;

use super::table::{cell, Table};
use crate::orchestrate::clean::ERASE_REPORT_KEY;

/// The entry of a step result that lists the devices the step did not erase.
const SKIPPED_KEY: &str = "skipped_devices";

/// Bytes in binary units, with the exact count when rounded.
fn bytes_text(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    format!("{} ({bytes})", super::inventory::human_bytes(bytes))
}

/// A disk report's `verification` in words.
fn verification_text(v: Option<&Value>) -> String {
    let Some(v) = v.filter(|v| v.is_object()) else { return cell(v) };
    let field = |k: &str| v.get(k);
    match field("outcome").and_then(Value::as_str) {
        Some("verified") => {
            let samples = cell(field("samples"));
            match field("bytes_checked").and_then(Value::as_u64) {
                Some(b) => format!("verified: {samples} samples, {}", bytes_text(b)),
                None => format!("verified: {samples} samples"),
            }
        }
        Some("not_applicable") => format!("not applicable: {}", cell(field("reason"))),
        Some("failed") => {
            format!("FAILED at byte {}: {}", cell(field("offset")), cell(field("detail")))
        }
        _ => cell(Some(v)),
    }
}

/// The report as a table, or `None` when the node has none.
pub fn erase_report_table(report: &Value) -> Option<Table> {
    let steps = report.as_object().filter(|m| !m.is_empty())?;
    let mut table = Table::new(&["Step", "Device", "Method", "Duration", "Bytes", "Verification"]);
    for (step, devices) in steps {
        let Some(devices) = devices.as_object() else {
            table.push(vec![step.clone(), String::new(), cell(Some(devices))]);
            continue;
        };
        for (device, disk) in devices {
            if device == SKIPPED_KEY {
                // `{<device>: <reason>}` of the devices the step left alone.
                for (name, reason) in disk.as_object().into_iter().flatten() {
                    let why = format!("skipped: {}", cell(Some(reason)));
                    table.push(vec![step.clone(), name.clone(), why]);
                }
                continue;
            }
            let field = |k: &str| disk.get(k);
            let mut method = cell(field("method"));
            if let Some(passes) = field("passes").and_then(Value::as_u64).filter(|p| *p > 1) {
                method.push_str(&format!(" ({passes} passes)"));
            }
            if let Some(fallbacks) = field("fallbacks").and_then(Value::as_array) {
                for fallback in fallbacks {
                    method.push_str(&format!("\n  passed over: {}", cell(Some(fallback))));
                }
            }
            let duration = match field("duration_s").and_then(Value::as_f64) {
                Some(s) => format!("{s:.1} s"),
                None => cell(field("duration_s")),
            };
            let bytes = match field("bytes").and_then(Value::as_u64) {
                Some(b) => bytes_text(b),
                None => cell(field("bytes")),
            };
            table.push(vec![
                step.clone(),
                device.clone(),
                method,
                duration,
                bytes,
                verification_text(field("verification")),
            ]);
        }
    }
    Some(table)
}

/// For the table view: the erase report drawn as an `erase_report` row, when the node
/// holds one. The JSON view stays the API's object.
pub fn add_erase_report_row(node: &mut Value) {
    let text = node
        .get("driver_internal_info")
        .and_then(|info| info.get(ERASE_REPORT_KEY))
        .and_then(erase_report_table)
        .map(|t| t.render());
    if let (Some(text), Some(map)) = (text, node.as_object_mut()) {
        map.insert("erase_report".into(), Value::String(text.trim_end().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_read_in_binary_units() {
        for (bytes, text) in [
            (512, "512 B"),
            (1536, "1.5 KiB (1536)"),
            (8 << 30, "8.0 GiB (8589934592)"),
            (3 << 40, "3.0 TiB (3298534883328)"),
        ] {
            assert_eq!(bytes_text(bytes), text);
        }
    }

    #[test]
    fn the_report_becomes_one_row_per_step_and_disk() {
        let mut node = json!({"uuid": "u", "driver_internal_info": {"clean_erase_report": {
            "erase_devices": {
                "/dev/sda": {"device": "/dev/sda", "method": "overwrite", "duration_s": 1.23,
                             "bytes": 8589934592u64, "passes": 2,
                             "verification": {"outcome": "verified", "samples": 258,
                                              "bytes_checked": 270532608},
                             "fallbacks": ["nvme_user_data_erase: not an NVMe disk"]},
                "/dev/sdb": {"device": "/dev/sdb", "method": "nvme_crypto_erase",
                             "duration_s": 0.5, "bytes": 1024, "passes": 1,
                             "verification": {"outcome": "not_applicable",
                                              "reason": "crypto erase leaves no zeros"}}},
            "erase_devices_metadata": {
                "/dev/sdc": {"device": "/dev/sdc", "method": "metadata", "duration_s": 0.01,
                             "bytes": 69632, "passes": 3,
                             "verification": {"outcome": "failed", "offset": 512,
                                              "detail": "GPT header left"}},
                "skipped_devices": {"/dev/sr0": "read-only"}}}}});
        add_erase_report_row(&mut node);
        let text = node["erase_report"].as_str().unwrap();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["Step", "Device", "Method", "Duration", "Bytes", "Verification"],
                vec![
                    "erase_devices",
                    "/dev/sda",
                    "overwrite (2 passes)",
                    "1.2 s",
                    "8.0 GiB (8589934592)",
                    "verified: 258 samples, 258.0 MiB (270532608)"
                ],
                vec!["", "", "passed over: nvme_user_data_erase: not an NVMe disk", "", "", ""],
                vec![
                    "erase_devices",
                    "/dev/sdb",
                    "nvme_crypto_erase",
                    "0.5 s",
                    "1.0 KiB (1024)",
                    "not applicable: crypto erase leaves no zeros"
                ],
                vec![
                    "erase_devices_metadata",
                    "/dev/sdc",
                    "metadata (3 passes)",
                    "0.0 s",
                    "68.0 KiB (69632)",
                    "FAILED at byte 512: GPT header left"
                ],
                vec!["erase_devices_metadata", "/dev/sr0", "skipped: read-only", "", "", ""],
            ],
            "{text}"
        );
        let shown = super::super::table::show_table(&node).render();
        assert!(shown.contains("| erase_report "), "{shown}");

        // No report, or an empty one: no row.
        for info in [json!({}), json!({"clean_erase_report": {}})] {
            let mut node = json!({"uuid": "u", "driver_internal_info": info});
            let before = node.clone();
            add_erase_report_row(&mut node);
            assert_eq!(node, before);
        }
    }
}
