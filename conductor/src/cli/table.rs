//! Tables for people, drawn the way the `baremetal` CLI draws them (cliff's table
//! formatter): a header row between `+---+` rules, every column padded to its widest
//! cell. Values print as Python would show them (`None`, `True`, `False`) so output reads
//! the same as the tool operators already know.

use serde_json::Value;

/// A table of text cells; every row has as many cells as there are headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are blank and extra cells are dropped, so a row never
    /// breaks the table's shape.
    pub fn push(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                for line in cell.lines() {
                    *w = (*w).max(width(line));
                }
            }
        }
        let rule = {
            let mut s = String::from("+");
            for w in &widths {
                s.push_str(&"-".repeat(w + 2));
                s.push('+');
            }
            s.push('\n');
            s
        };
        let mut out = String::new();
        out.push_str(&rule);
        push_row(&mut out, &widths, &self.headers);
        out.push_str(&rule);
        for row in &self.rows {
            push_row(&mut out, &widths, row);
        }
        if !self.rows.is_empty() {
            out.push_str(&rule);
        }
        out
    }
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// One logical row; a cell with several lines makes the row that many lines tall.
fn push_row(out: &mut String, widths: &[usize], cells: &[String]) {
    let split: Vec<Vec<&str>> = cells.iter().map(|c| c.lines().collect()).collect();
    let height = split.iter().map(Vec::len).max().unwrap_or(0).max(1);
    for line in 0..height {
        out.push('|');
        for (w, cell) in widths.iter().zip(&split) {
            let text = cell.get(line).copied().unwrap_or("");
            out.push(' ');
            out.push_str(text);
            out.push_str(&" ".repeat(w - width(text)));
            out.push_str(" |");
        }
        out.push('\n');
    }
}

/// A JSON value as a table cell: strings bare, `null` as `None`, booleans as `True` /
/// `False`, numbers as written, objects and lists as compact JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "None".to_owned(),
        Some(Value::Bool(true)) => "True".to_owned(),
        Some(Value::Bool(false)) => "False".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    }
}

/// Columns of `node list`: header and wire field.
pub const NODE_LIST_COLUMNS: &[(&str, &str)] = &[
    ("UUID", "uuid"),
    ("Name", "name"),
    ("Instance UUID", "instance_uuid"),
    ("Power State", "power_state"),
    ("Provisioning State", "provision_state"),
    ("Maintenance", "maintenance"),
];

/// Extra columns of `node list --long`.
pub const NODE_LONG_EXTRA_COLUMNS: &[(&str, &str)] = &[
    ("Driver", "driver"),
    ("Resource Class", "resource_class"),
    ("Target Provision State", "target_provision_state"),
    ("Last Error", "last_error"),
];

/// Columns of `port list`.
pub const PORT_LIST_COLUMNS: &[(&str, &str)] = &[("UUID", "uuid"), ("Address", "address")];

/// Extra columns of `port list --long`.
pub const PORT_LONG_EXTRA_COLUMNS: &[(&str, &str)] =
    &[("Node UUID", "node_uuid"), ("PXE boot enabled", "pxe_enabled"), ("Extra", "extra")];

/// A list of API objects as a table with the given columns.
pub fn list_table(columns: &[(&str, &str)], items: &[Value]) -> Table {
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let mut table = Table::new(&headers);
    for item in items {
        table.push(columns.iter().map(|(_, field)| cell(item.get(field))).collect());
    }
    table
}

/// Fields never shown by `show`: navigation links, not data.
const HIDDEN_FIELDS: &[&str] = &["links", "ports", "portgroups", "states", "volume"];

/// One API object as a `Field | Value` table, fields in name order.
pub fn show_table(object: &Value) -> Table {
    let mut table = Table::new(&["Field", "Value"]);
    if let Some(map) = object.as_object() {
        let mut fields: Vec<(&String, &Value)> =
            map.iter().filter(|(k, _)| !HIDDEN_FIELDS.contains(&k.as_str())).collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (field, value) in fields {
            table.push(vec![field.clone(), cell(Some(value))]);
        }
    }
    table
}

/// `node validate`: one row per interface, in name order.
pub fn validate_table(reply: &Value) -> Table {
    let mut table = Table::new(&["Interface", "Result", "Reason"]);
    if let Some(map) = reply.as_object() {
        let mut interfaces: Vec<(&String, &Value)> = map.iter().collect();
        interfaces.sort_by(|a, b| a.0.cmp(b.0));
        for (interface, verdict) in interfaces {
            table.push(vec![
                interface.clone(),
                cell(verdict.get("result")),
                cell(verdict.get("reason")),
            ]);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_list_golden() {
        let nodes = vec![
            json!({"uuid": "4c2f6ab5-0c5e-4b5a-8d2a-0f3d7c9a1e11", "name": "rack1-u07",
                   "instance_uuid": null, "power_state": "power off",
                   "provision_state": "available", "maintenance": false}),
            json!({"uuid": "9b7e1d3c-2a4f-4e8b-b6c1-5d0a8f2e7c33", "name": null,
                   "instance_uuid": "1f0e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
                   "power_state": null, "provision_state": "wait call-back",
                   "maintenance": true}),
        ];
        let expected = "\
+--------------------------------------+-----------+--------------------------------------+-------------+--------------------+-------------+
| UUID                                 | Name      | Instance UUID                        | Power State | Provisioning State | Maintenance |
+--------------------------------------+-----------+--------------------------------------+-------------+--------------------+-------------+
| 4c2f6ab5-0c5e-4b5a-8d2a-0f3d7c9a1e11 | rack1-u07 | None                                 | power off   | available          | False       |
| 9b7e1d3c-2a4f-4e8b-b6c1-5d0a8f2e7c33 | None      | 1f0e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b | None        | wait call-back     | True        |
+--------------------------------------+-----------+--------------------------------------+-------------+--------------------+-------------+
";
        assert_eq!(list_table(NODE_LIST_COLUMNS, &nodes).render(), expected);
    }

    #[test]
    fn empty_list_is_just_the_header() {
        let expected = "\
+------+---------+
| UUID | Address |
+------+---------+
";
        assert_eq!(list_table(PORT_LIST_COLUMNS, &[]).render(), expected);
    }

    #[test]
    fn show_golden_sorted_hidden_and_multiline() {
        let node = json!({
            "uuid": "u-1", "name": "n", "maintenance": false, "links": [{"href": "x"}],
            "driver_info": {"ipmi_port": "623", "ipmi_password": "******"},
            "last_error": "line one\nline two", "properties": {}, "cpus": 4,
        });
        let expected = r#"+-------------+----------------------------------------------+
| Field       | Value                                        |
+-------------+----------------------------------------------+
| cpus        | 4                                            |
| driver_info | {"ipmi_password":"******","ipmi_port":"623"} |
| last_error  | line one                                     |
|             | line two                                     |
| maintenance | False                                        |
| name        | n                                            |
| properties  | {}                                           |
| uuid        | u-1                                          |
+-------------+----------------------------------------------+
"#;
        assert_eq!(show_table(&node).render(), expected);
    }

    #[test]
    fn validate_golden() {
        let reply = json!({
            "power": {"result": true, "reason": null},
            "deploy": {"result": false, "reason": "Missing instance_info/image_source"},
            "console": {"result": null, "reason": "not supported"},
        });
        let expected = "\
+-----------+--------+------------------------------------+
| Interface | Result | Reason                             |
+-----------+--------+------------------------------------+
| console   | None   | not supported                      |
| deploy    | False  | Missing instance_info/image_source |
| power     | True   | None                               |
+-----------+--------+------------------------------------+
";
        assert_eq!(validate_table(&reply).render(), expected);
    }

    #[test]
    fn ragged_rows_keep_the_shape_and_wide_chars_count_once() {
        let mut table = Table::new(&["A", "B"]);
        table.push(vec!["é".into()]);
        table.push(vec!["x".into(), "y".into(), "dropped".into()]);
        let expected = "\
+---+---+
| A | B |
+---+---+
| é |   |
| x | y |
+---+---+
";
        assert_eq!(table.render(), expected);
    }
}
