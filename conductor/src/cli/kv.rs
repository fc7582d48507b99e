//! Parsers for the operator's `KEY=VALUE` arguments and for JSON arguments that may also
//! name a file (`--clean-steps @steps.json`, `--config-drive path`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Why a command-line argument could not be turned into request data.
#[derive(Debug, thiserror::Error)]
pub enum ArgumentError {
    #[error("{option}: expected KEY=VALUE, got {text:?}")]
    MissingEquals { option: &'static str, text: String },
    #[error("{option}: the key of {text:?} is empty")]
    EmptyKey { option: &'static str, text: String },
    #[error("{option}: {text:?} looks like JSON but does not parse")]
    BadJson {
        option: &'static str,
        text: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{option}: expected {expected}")]
    WrongShape { option: &'static str, expected: &'static str },
    #[error("{option}: cannot read {path}")]
    ReadFile {
        option: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{option}: {path} is a directory; build the configuration drive image first")]
    Directory { option: &'static str, path: PathBuf },
}

/// One `KEY=VALUE` argument, split at the first `=`.
///
/// Unlike the `baremetal` CLI, which JSON-decodes every value (so `ipmi_port=623` arrives as
/// the number 623), values stay strings: Ironic's driver fields expect strings, and a BMC
/// password or serial number that happens to look like a number must not change type.
/// Only a value that starts with `{` or `[` is decoded, because structured fields such as
/// `root_device={"serial": "…"}` or `capabilities` need objects; such a value must then be
/// valid JSON.
pub fn parse_key_value(option: &'static str, text: &str) -> Result<(String, Value), ArgumentError> {
    let (key, raw) = text
        .split_once('=')
        .ok_or_else(|| ArgumentError::MissingEquals { option, text: text.to_owned() })?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ArgumentError::EmptyKey { option, text: text.to_owned() });
    }
    Ok((key.to_owned(), structured_or_string(option, raw)?))
}

fn structured_or_string(option: &'static str, raw: &str) -> Result<Value, ArgumentError> {
    let trimmed = raw.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(raw).map_err(|source| ArgumentError::BadJson {
            option,
            text: raw.to_owned(),
            source,
        })
    } else {
        Ok(Value::String(raw.to_owned()))
    }
}

/// Repeated `KEY=VALUE` arguments as one JSON object; a later key replaces an earlier one.
pub fn key_values_to_object(
    option: &'static str,
    items: &[String],
) -> Result<Map<String, Value>, ArgumentError> {
    let mut object = Map::new();
    for item in items {
        let (key, value) = parse_key_value(option, item)?;
        object.insert(key, value);
    }
    Ok(object)
}

/// Parses a JSON argument given inline, as `@FILE`, or as `-` (standard input has already
/// been read by the caller into `stdin`).
pub fn json_argument(
    option: &'static str,
    text: &str,
    stdin: impl FnOnce() -> std::io::Result<String>,
) -> Result<Value, ArgumentError> {
    let (source, origin) =
        if let Some(path) = text.strip_prefix('@') {
            let path = PathBuf::from(path);
            let body = std::fs::read_to_string(&path)
                .map_err(|source| ArgumentError::ReadFile { option, path: path.clone(), source })?;
            (body, path.display().to_string())
        } else if text == "-" {
            let body = stdin().map_err(|source| ArgumentError::ReadFile {
                option,
                path: PathBuf::from("-"),
                source,
            })?;
            (body, "-".to_owned())
        } else {
            (text.to_owned(), text.to_owned())
        };
    serde_json::from_str(&source).map_err(|source| ArgumentError::BadJson {
        option,
        text: origin,
        source,
    })
}

/// `--clean-steps`: a JSON list of step objects (inline, `@FILE` or `-`).
pub fn clean_steps_argument(
    text: &str,
    stdin: impl FnOnce() -> std::io::Result<String>,
) -> Result<Value, ArgumentError> {
    const OPTION: &str = "--clean-steps";
    let steps = json_argument(OPTION, text, stdin)?;
    let valid = steps.as_array().is_some_and(|list| {
        list.iter().all(|step| {
            step.get("interface").is_some_and(Value::is_string)
                && step.get("step").is_some_and(Value::is_string)
        })
    });
    if valid {
        Ok(steps)
    } else {
        Err(ArgumentError::WrongShape {
            option: OPTION,
            expected: "a JSON list of {\"interface\": …, \"step\": …, \"args\": {…}} objects",
        })
    }
}

/// `--config-drive`: a JSON object (`{"meta_data": …, "user_data": …}`), the path of a
/// file whose content is sent as is (a base64 gzipped ISO), or any other string (a URL or
/// an already encoded image) sent verbatim.
pub fn config_drive_argument(text: &str) -> Result<Value, ArgumentError> {
    const OPTION: &str = "--config-drive";
    if text.trim_start().starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|source| ArgumentError::BadJson {
            option: OPTION,
            text: text.to_owned(),
            source,
        })?;
        return Ok(value);
    }
    let path = Path::new(text);
    if path.is_dir() {
        return Err(ArgumentError::Directory { option: OPTION, path: path.to_path_buf() });
    }
    if path.is_file() {
        let body = std::fs::read_to_string(path).map_err(|source| ArgumentError::ReadFile {
            option: OPTION,
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(Value::String(body.trim_end().to_owned()));
    }
    Ok(Value::String(text.to_owned()))
}

/// The JSON-Patch `path` for `KEY` under a top-level field: `/driver_info/ipmi_address`.
/// `/` inside KEY addresses nested keys (`root_device/size`); `~` is escaped as RFC 6901
/// requires.
pub fn patch_path(field: &str, key: &str) -> String {
    let escaped: Vec<String> =
        key.split('/').map(|part| part.replace('~', "~0")).collect::<Vec<_>>();
    format!("/{field}/{}", escaped.join("/"))
}

/// Builds the RFC 6902 operations of `node set` / `node unset` in argument order.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<Value>,
}

impl PatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// `add` replaces an existing member and creates a missing one, which is what "set"
    /// means for both.
    pub fn set(&mut self, path: String, value: Value) {
        self.ops.push(serde_json::json!({"op": "add", "path": path, "value": value}));
    }

    pub fn remove(&mut self, path: String) {
        self.ops.push(serde_json::json!({"op": "remove", "path": path}));
    }

    /// Every `KEY=VALUE` of `items` as an `add` under `field`.
    pub fn set_all(
        &mut self,
        option: &'static str,
        field: &str,
        items: &[String],
    ) -> Result<(), ArgumentError> {
        for item in items {
            let (key, value) = parse_key_value(option, item)?;
            self.set(patch_path(field, &key), value);
        }
        Ok(())
    }

    /// Every KEY of `keys` as a `remove` under `field`.
    pub fn remove_all(&mut self, field: &str, keys: &[String]) {
        for key in keys {
            self.remove(patch_path(field, key));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn into_value(self) -> Value {
        Value::Array(self.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_stdin() -> std::io::Result<String> {
        panic!("standard input must not be read")
    }

    #[test]
    fn key_value_table() {
        let table: &[(&str, &str, Value)] = &[
            ("ipmi_address=10.0.0.5", "ipmi_address", json!("10.0.0.5")),
            ("ipmi_port=623", "ipmi_port", json!("623")),
            ("cpus=4", "cpus", json!("4")),
            ("enabled=true", "enabled", json!("true")),
            ("nothing=null", "nothing", json!("null")),
            ("password=a=b=c", "password", json!("a=b=c")),
            ("empty=", "empty", json!("")),
            (" spaced =x ", "spaced", json!("x ")),
            (r#"root_device={"size": 40}"#, "root_device", json!({"size": 40})),
            (r#"tags=["a","b"]"#, "tags", json!(["a", "b"])),
            ("quoted=\"x\"", "quoted", json!("\"x\"")),
        ];
        for (text, key, value) in table {
            let (k, v) = parse_key_value("--property", text).unwrap();
            assert_eq!((k.as_str(), &v), (*key, value), "{text}");
        }
    }

    #[test]
    fn key_value_errors_name_the_option() {
        let err = parse_key_value("--driver-info", "ipmi_address").unwrap_err();
        assert!(matches!(err, ArgumentError::MissingEquals { .. }));
        assert_eq!(err.to_string(), "--driver-info: expected KEY=VALUE, got \"ipmi_address\"");
        assert!(matches!(
            parse_key_value("--extra", "=v").unwrap_err(),
            ArgumentError::EmptyKey { option: "--extra", .. }
        ));
        assert!(matches!(
            parse_key_value("--property", "root_device={size: 4}").unwrap_err(),
            ArgumentError::BadJson { option: "--property", .. }
        ));
    }

    #[test]
    fn later_keys_win() {
        let items = vec!["a=1".to_owned(), "b=2".to_owned(), "a=3".to_owned()];
        let object = key_values_to_object("--extra", &items).unwrap();
        assert_eq!(Value::Object(object), json!({"a": "3", "b": "2"}));
    }

    #[test]
    fn clean_steps_inline_file_and_stdin() {
        let steps = r#"[{"interface": "deploy", "step": "erase_devices_metadata", "args": {}}]"#;
        let expected: Value = serde_json::from_str(steps).unwrap();
        assert_eq!(clean_steps_argument(steps, no_stdin).unwrap(), expected);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("steps.json");
        std::fs::write(&file, steps).unwrap();
        let at = format!("@{}", file.display());
        assert_eq!(clean_steps_argument(&at, no_stdin).unwrap(), expected);
        assert_eq!(clean_steps_argument("-", || Ok(steps.to_owned())).unwrap(), expected);

        let missing = format!("@{}", dir.path().join("nope.json").display());
        assert!(matches!(
            clean_steps_argument(&missing, no_stdin).unwrap_err(),
            ArgumentError::ReadFile { .. }
        ));
        for bad in [r#"{"interface": "deploy"}"#, r#"[{"interface": "deploy"}]"#, "[1]"] {
            assert!(
                matches!(
                    clean_steps_argument(bad, no_stdin).unwrap_err(),
                    ArgumentError::WrongShape { .. }
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            clean_steps_argument("[", no_stdin).unwrap_err(),
            ArgumentError::BadJson { .. }
        ));
    }

    #[test]
    fn config_drive_forms() {
        assert_eq!(
            config_drive_argument(r#"{"meta_data": {"hostname": "h"}}"#).unwrap(),
            json!({"meta_data": {"hostname": "h"}})
        );
        assert_eq!(
            config_drive_argument("http://images/cd.iso").unwrap(),
            json!("http://images/cd.iso")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cd.b64");
        std::fs::write(&file, "H4sIAAAA\n").unwrap();
        assert_eq!(config_drive_argument(file.to_str().unwrap()).unwrap(), json!("H4sIAAAA"));
        assert!(matches!(
            config_drive_argument(dir.path().to_str().unwrap()).unwrap_err(),
            ArgumentError::Directory { .. }
        ));
        assert!(matches!(config_drive_argument("{").unwrap_err(), ArgumentError::BadJson { .. }));
    }

    #[test]
    fn patches_for_set_and_unset() {
        let mut patch = PatchBuilder::new();
        assert!(patch.is_empty());
        patch
            .set_all("--driver-info", "driver_info", &["ipmi_port=623".into(), "a/b=c".into()])
            .unwrap();
        patch.remove_all("properties", &["root_device".into(), "x~y".into()]);
        patch.set("/name".into(), json!("n1"));
        assert_eq!(
            patch.into_value(),
            json!([
                {"op": "add", "path": "/driver_info/ipmi_port", "value": "623"},
                {"op": "add", "path": "/driver_info/a/b", "value": "c"},
                {"op": "remove", "path": "/properties/root_device"},
                {"op": "remove", "path": "/properties/x~0y"},
                {"op": "add", "path": "/name", "value": "n1"},
            ])
        );
    }
}
