//! RFC 6902 JSON patch, restricted as Ironic restricts it: only `add`, `replace` and
//! `remove`; only on fields a client may change; read-only fields are refused naming the
//! path. The patch is applied to a copy of the resource's JSON, so a failing operation
//! leaves nothing half-applied; the caller then re-reads the patched copy into its typed
//! form, which catches values of the wrong type.

use ferric_shared::node::{PatchOp, PatchOperation};
use serde_json::{Map, Value};

/// What `remove` on a whole top-level field leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    Null,
    EmptyObject,
    False,
    EmptyString,
    True,
}

impl Reset {
    fn value(self) -> Value {
        match self {
            Reset::Null => Value::Null,
            Reset::EmptyObject => Value::Object(Map::new()),
            Reset::False => Value::Bool(false),
            Reset::True => Value::Bool(true),
            Reset::EmptyString => Value::String(String::new()),
        }
    }
}

/// Which top-level fields of a resource a patch may touch.
#[derive(Debug, Clone, Copy)]
pub struct PatchRules {
    /// Fields a client may change, with what `remove` resets each to.
    pub patchable: &'static [(&'static str, Reset)],
    /// Fields the server maintains; patching them is refused as Ironic refuses it.
    pub internal: &'static [&'static str],
}

/// Why a patch was refused; the message is the faultstring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// Applies `ops` in order to `doc`, all or nothing.
pub fn apply(
    doc: &Map<String, Value>,
    ops: &[PatchOperation],
    rules: &PatchRules,
) -> Result<Map<String, Value>, PatchError> {
    if ops.is_empty() {
        return Err(PatchError("The patch is empty: expected a list of operations.".into()));
    }
    let mut out = doc.clone();
    for op in ops {
        apply_one(&mut out, op, rules)?;
    }
    Ok(out)
}

fn op_name(op: PatchOp) -> &'static str {
    match op {
        PatchOp::Add => "add",
        PatchOp::Replace => "replace",
        PatchOp::Remove => "remove",
    }
}

fn apply_one(
    doc: &mut Map<String, Value>,
    op: &PatchOperation,
    rules: &PatchRules,
) -> Result<(), PatchError> {
    let path = &op.path;
    let tokens = parse_pointer(path)?;
    let (first, rest) = tokens.split_first().ok_or_else(|| {
        PatchError(format!("Invalid patch path '{path}': the root cannot be patched."))
    })?;
    if rules.internal.contains(&first.as_str()) {
        return Err(PatchError(format!(
            "'/{first}' is an internal attribute and can not be updated"
        )));
    }
    let Some(&(_, reset)) = rules.patchable.iter().find(|(name, _)| name == first) else {
        return Err(PatchError(match op.op {
            PatchOp::Add => format!(
                "Adding a new attribute (/{first}) to the root of the resource is not allowed"
            ),
            _ => format!("Can't {} non-existent attribute '/{first}'", op_name(op.op)),
        }));
    };
    let value = match (op.op, &op.value) {
        (PatchOp::Add | PatchOp::Replace, Some(v)) => Some(v.clone()),
        (PatchOp::Add | PatchOp::Replace, None) => {
            return Err(PatchError(format!(
                "'add' and 'replace' operations need a value (path '{path}')"
            )))
        }
        (PatchOp::Remove, Some(_)) => {
            return Err(PatchError(format!("'remove' operation takes no value (path '{path}')")))
        }
        (PatchOp::Remove, None) => None,
    };
    let Some((last, middle)) = rest.split_last() else {
        doc.insert(first.clone(), value.unwrap_or_else(|| reset.value()));
        return Ok(());
    };
    let missing =
        || PatchError(format!("Can't {} non-existent attribute '{path}'", op_name(op.op)));
    let mut node = doc.get_mut(first.as_str()).ok_or_else(missing)?;
    for token in middle {
        node = match node {
            Value::Object(map) => map.get_mut(token.as_str()).ok_or_else(missing)?,
            Value::Array(items) => {
                let index = array_index(token, items.len(), false).ok_or_else(missing)?;
                items.get_mut(index).ok_or_else(missing)?
            }
            _ => return Err(missing()),
        };
    }
    match node {
        Value::Object(map) => match value {
            Some(v) => {
                if op.op == PatchOp::Replace && !map.contains_key(last.as_str()) {
                    return Err(missing());
                }
                map.insert(last.clone(), v);
            }
            None => {
                map.remove(last.as_str()).ok_or_else(missing)?;
            }
        },
        Value::Array(items) => {
            let len = items.len();
            match (op.op, value) {
                (PatchOp::Add, Some(v)) => {
                    let index = array_index(last, len, true).ok_or_else(missing)?;
                    items.insert(index, v);
                }
                (PatchOp::Replace, Some(v)) => {
                    let index = array_index(last, len, false).ok_or_else(missing)?;
                    if let Some(slot) = items.get_mut(index) {
                        *slot = v;
                    }
                }
                _ => {
                    let index = array_index(last, len, false).ok_or_else(missing)?;
                    items.remove(index);
                }
            }
        }
        _ => return Err(missing()),
    }
    Ok(())
}

/// An array position: a decimal index below `len` (or equal to it, or `-`, when adding).
fn array_index(token: &str, len: usize, adding: bool) -> Option<usize> {
    if adding && token == "-" {
        return Some(len);
    }
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if token.len() > 1 && token.starts_with('0') {
        return None;
    }
    let index: usize = token.parse().ok()?;
    let limit = if adding { len } else { len.checked_sub(1)? };
    (index <= limit).then_some(index)
}

/// RFC 6901 pointer → unescaped tokens (`~1` is `/`, `~0` is `~`).
fn parse_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    let invalid = || PatchError(format!("Invalid patch path '{path}': it must start with '/'."));
    let rest = path.strip_prefix('/').ok_or_else(invalid)?;
    if rest.is_empty() {
        return Err(invalid());
    }
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(PatchError(format!(
                            "Invalid patch path '{path}': '~' must be followed by 0 or 1."
                        )))
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULES: PatchRules = PatchRules {
        patchable: &[
            ("name", Reset::Null),
            ("extra", Reset::EmptyObject),
            ("driver_info", Reset::EmptyObject),
            ("maintenance", Reset::False),
        ],
        internal: &["uuid", "provision_state", "driver_internal_info"],
    };

    fn doc() -> Map<String, Value> {
        json!({
            "uuid": "u", "name": "n1", "extra": {"a": 1, "list": [1, 2]},
            "driver_info": {"ipmi_address": "10.0.0.1", "x/y": 1, "t~": 2},
            "maintenance": false, "provision_state": "enroll", "driver_internal_info": {}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn op(value: Value) -> Vec<PatchOperation> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn successful_patches() {
        let table: Vec<(Value, &str, Value)> = vec![
            (json!([{"op": "replace", "path": "/name", "value": "n2"}]), "/name", json!("n2")),
            (json!([{"op": "add", "path": "/name", "value": "n3"}]), "/name", json!("n3")),
            (json!([{"op": "remove", "path": "/name"}]), "/name", Value::Null),
            (json!([{"op": "remove", "path": "/extra"}]), "/extra", json!({})),
            (
                json!([{"op": "add", "path": "/extra/foo", "value": {"b": 2}}]),
                "/extra/foo",
                json!({"b": 2}),
            ),
            (json!([{"op": "replace", "path": "/extra/a", "value": 5}]), "/extra/a", json!(5)),
            (json!([{"op": "remove", "path": "/extra/a"}]), "/extra", json!({"list": [1, 2]})),
            (
                json!([{"op": "add", "path": "/extra/list/-", "value": 3}]),
                "/extra/list",
                json!([1, 2, 3]),
            ),
            (
                json!([{"op": "add", "path": "/extra/list/0", "value": 0}]),
                "/extra/list",
                json!([0, 1, 2]),
            ),
            (json!([{"op": "remove", "path": "/extra/list/1"}]), "/extra/list", json!([1])),
            (
                json!([{"op": "replace", "path": "/driver_info/x~1y", "value": 9}]),
                "/driver_info/x~1y",
                json!(9),
            ),
            (
                json!([{"op": "remove", "path": "/driver_info/t~0"}]),
                "/driver_info/t~0",
                Value::Null,
            ),
            (
                json!([{"op": "add", "path": "/maintenance", "value": true}]),
                "/maintenance",
                json!(true),
            ),
            (
                json!([{"op": "add", "path": "/extra/x", "value": 1},
                    {"op": "replace", "path": "/extra/x", "value": 2}]),
                "/extra/x",
                json!(2),
            ),
        ];
        for (ops, pointer, want) in table {
            let out = Value::Object(apply(&doc(), &op(ops.clone()), &RULES).unwrap());
            assert_eq!(out.pointer(pointer).cloned().unwrap_or(Value::Null), want, "{ops}");
        }
    }

    #[test]
    fn refused_patches_name_the_path() {
        let table: Vec<(Value, &str)> = vec![
            (
                json!([{"op": "replace", "path": "/uuid", "value": "x"}]),
                "'/uuid' is an internal attribute",
            ),
            (
                json!([{"op": "replace", "path": "/provision_state", "value": "active"}]),
                "'/provision_state' is an internal attribute",
            ),
            (
                json!([{"op": "add", "path": "/driver_internal_info/x", "value": 1}]),
                "'/driver_internal_info' is an internal attribute",
            ),
            (
                json!([{"op": "add", "path": "/colour", "value": 1}]),
                "Adding a new attribute (/colour)",
            ),
            (json!([{"op": "remove", "path": "/colour"}]), "Can't remove non-existent"),
            (
                json!([{"op": "replace", "path": "/extra/nope", "value": 1}]),
                "Can't replace non-existent attribute '/extra/nope'",
            ),
            (json!([{"op": "remove", "path": "/extra/nope"}]), "'/extra/nope'"),
            (json!([{"op": "add", "path": "/extra/nope/deeper", "value": 1}]), "non-existent"),
            (json!([{"op": "add", "path": "/extra/list/7", "value": 1}]), "non-existent"),
            (json!([{"op": "remove", "path": "/extra/list/01"}]), "non-existent"),
            (json!([{"op": "add", "path": "/name"}]), "need a value"),
            (json!([{"op": "remove", "path": "/name", "value": 1}]), "takes no value"),
            (json!([{"op": "add", "path": "name", "value": 1}]), "must start with '/'"),
            (json!([{"op": "add", "path": "/", "value": 1}]), "must start with '/'"),
            (json!([{"op": "add", "path": "/extra/a~2", "value": 1}]), "'~' must be followed"),
            (json!([]), "empty"),
        ];
        for (ops, fragment) in table {
            let err = apply(&doc(), &op(ops.clone()), &RULES).unwrap_err();
            assert!(err.0.contains(fragment), "{ops}: {err}");
        }
    }

    #[test]
    fn a_failing_operation_applies_nothing() {
        let original = doc();
        let ops = op(json!([
            {"op": "replace", "path": "/name", "value": "changed"},
            {"op": "replace", "path": "/uuid", "value": "x"}
        ]));
        assert!(apply(&original, &ops, &RULES).is_err());
        assert_eq!(original, doc());
    }
}
