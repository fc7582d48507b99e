//! Root-device hints: which local disk receives the image.
//!
//! Ironic sends hints as a JSON object in `instance_info.root_device` (preferred) or
//! `properties.root_device`, e.g. `{"size": ">= 100", "model": "Samsung SSD",
//! "rotational": false}`. [`RootDeviceHints::from_json`] validates such an object into a
//! typed form; [`find_root_device`] applies it to a device list, and [`SkipList`] applies
//! `properties.skip_block_devices`.
//!
//! Semantics follow ironic-python-agent so that a node configured for Ironic picks the
//! same disk here:
//! - every hint must match (AND); with hints, the first matching device in list order
//!   wins; without hints, the smallest device of at least 4 GiB (ties by name);
//! - string hints and device values are both trimmed, lowercased and URL-quoted before
//!   comparison, so a bare value is a case-insensitive exact match;
//! - `size` is whole GiB, compared against `bytes / 2^30` as a float, so a bare `100`
//!   only matches a disk of exactly 100 GiB, and the legacy `=` means `>=`;
//! - `rotational` is a boolean, also accepted in the string forms Ironic accepts.
//!
//! Two deliberate additions to what ironic-python-agent accepts: `<range-in>` works on
//! `size` (IPA rejects it there), and `<all-in>` means "every token is a substring of
//! the device value" (IPA's version fails on any string device value). Operators that
//! cannot apply to a hint (a numeric `>=` on `model`, `s==` on `size`) are rejected
//! when parsing instead of failing later during matching.

mod device;
mod expr;
#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::{Map, Value};

pub use device::{
    find_root_device, AttrValues, HintDevice, HintTarget, SkipList, MIN_DEFAULT_ROOT_BYTES,
};
pub use expr::{Bound, NumericOp, SizeHint, StringHint, StringOp};

/// The name of one root-device hint, as spelled on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HintKey {
    Size,
    Model,
    Vendor,
    Serial,
    Wwn,
    WwnWithExtension,
    WwnVendorExtension,
    Name,
    Hctl,
    ByPath,
    Tran,
    Rotational,
}

impl HintKey {
    /// Every hint Ironic accepts.
    pub const ALL: [HintKey; 12] = [
        HintKey::Size,
        HintKey::Model,
        HintKey::Vendor,
        HintKey::Serial,
        HintKey::Wwn,
        HintKey::WwnWithExtension,
        HintKey::WwnVendorExtension,
        HintKey::Name,
        HintKey::Hctl,
        HintKey::ByPath,
        HintKey::Tran,
        HintKey::Rotational,
    ];

    /// The wire spelling, e.g. `wwn_with_extension`.
    pub fn as_str(self) -> &'static str {
        match self {
            HintKey::Size => "size",
            HintKey::Model => "model",
            HintKey::Vendor => "vendor",
            HintKey::Serial => "serial",
            HintKey::Wwn => "wwn",
            HintKey::WwnWithExtension => "wwn_with_extension",
            HintKey::WwnVendorExtension => "wwn_vendor_extension",
            HintKey::Name => "name",
            HintKey::Hctl => "hctl",
            HintKey::ByPath => "by_path",
            HintKey::Tran => "tran",
            HintKey::Rotational => "rotational",
        }
    }

    /// The key for a wire spelling; exact and case-sensitive, as Ironic's check is.
    pub fn from_wire(key: &str) -> Option<HintKey> {
        HintKey::ALL.into_iter().find(|k| k.as_str() == key)
    }
}

impl fmt::Display for HintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with a hint value whose type was right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintValueProblem {
    /// Blank text.
    Empty,
    /// A size (or range end) that is not a whole number of GiB above zero.
    NotPositiveInteger,
    /// An operator with nothing after it.
    MissingOperand,
    /// `<range-in>` not followed by `[`/`(`, two numbers, `]`/`)`.
    MalformedRange,
    /// `<range-in>` whose lower end is above its upper end.
    RangeReversed,
    /// Not one of true/false, yes/no, on/off, 1/0, t/f, y/n.
    NotBoolean,
}

impl fmt::Display for HintValueProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HintValueProblem::Empty => "the value is empty",
            HintValueProblem::NotPositiveInteger => "expected a positive whole number of GiB",
            HintValueProblem::MissingOperand => "the operator has no operand",
            HintValueProblem::MalformedRange => {
                "expected `<range-in> [ low high ]` with [ or ( and ] or )"
            }
            HintValueProblem::RangeReversed => "the range's lower end is above its upper end",
            HintValueProblem::NotBoolean => "expected true/false, yes/no, on/off or 1/0",
        })
    }
}

/// Why a root-device hint object (or a skip list) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    #[error("root device hints must be a JSON object, got {found}")]
    NotAnObject { found: &'static str },
    #[error("unknown root device hint {key:?}; valid hints are: {}", valid_hint_list())]
    UnknownHint { key: String },
    #[error("root device hint \"{hint}\" must be {expected}, got {value}")]
    WrongType {
        hint: HintKey,
        expected: &'static str,
        /// The offending value, rendered as JSON.
        value: String,
    },
    #[error("root device hint \"{hint}\" has invalid value {value:?}: {problem}")]
    Malformed { hint: HintKey, value: String, problem: HintValueProblem },
    #[error(
        "root device hint \"{hint}\" does not support operator {operator:?} (value {value:?})"
    )]
    OperatorNotAllowed { hint: HintKey, operator: &'static str, value: String },
    #[error("skip_block_devices must be a JSON list, got {found}")]
    SkipListNotAList { found: &'static str },
    #[error("skip_block_devices entry {index} must be a JSON object, got {found}")]
    SkipEntryNotAnObject { index: usize, found: &'static str },
    #[error("skip_block_devices entry {index} has no hints and would skip every device")]
    EmptySkipEntry { index: usize },
}

impl HintError {
    /// The hint key the error is about, when it is about one key.
    pub fn hint(&self) -> Option<&str> {
        match self {
            HintError::UnknownHint { key } => Some(key),
            HintError::WrongType { hint, .. }
            | HintError::Malformed { hint, .. }
            | HintError::OperatorNotAllowed { hint, .. } => Some(hint.as_str()),
            HintError::NotAnObject { .. }
            | HintError::SkipListNotAList { .. }
            | HintError::SkipEntryNotAnObject { .. }
            | HintError::EmptySkipEntry { .. } => None,
        }
    }
}

fn valid_hint_list() -> String {
    HintKey::ALL.map(HintKey::as_str).join(", ")
}

/// A validated set of root-device hints. Absent fields impose no constraint.
///
/// Build it with [`RootDeviceHints::from_json`] / [`RootDeviceHints::from_map`]: string
/// operands inside are stored normalised (lowercased, URL-quoted) and matching relies
/// on that.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RootDeviceHints {
    pub size: Option<SizeHint>,
    pub model: Option<StringHint>,
    pub vendor: Option<StringHint>,
    pub serial: Option<StringHint>,
    pub wwn: Option<StringHint>,
    pub wwn_with_extension: Option<StringHint>,
    pub wwn_vendor_extension: Option<StringHint>,
    pub name: Option<StringHint>,
    pub hctl: Option<StringHint>,
    pub by_path: Option<StringHint>,
    pub tran: Option<StringHint>,
    pub rotational: Option<bool>,
}

impl RootDeviceHints {
    /// Parses a `root_device` value. `null` and `{}` mean "no hints" (`Ok(None)`), as
    /// in Ironic, so the default rule applies.
    pub fn from_json(value: &Value) -> Result<Option<Self>, HintError> {
        match value {
            Value::Null => Ok(None),
            Value::Object(map) => {
                let hints = RootDeviceHints::from_map(map)?;
                Ok((!hints.is_empty()).then_some(hints))
            }
            other => Err(HintError::NotAnObject { found: json_kind(other) }),
        }
    }

    /// Parses a hint object. Unknown keys and badly typed or malformed values are
    /// errors naming the key.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, HintError> {
        let mut hints = RootDeviceHints::default();
        for (key, value) in map {
            let Some(hint) = HintKey::from_wire(key) else {
                return Err(HintError::UnknownHint { key: key.clone() });
            };
            match hint {
                HintKey::Size => hints.size = Some(parse_size(value)?),
                HintKey::Rotational => hints.rotational = Some(parse_bool(hint, value)?),
                _ => {
                    let Value::String(text) = value else {
                        return Err(HintError::WrongType {
                            hint,
                            expected: "a string",
                            value: value.to_string(),
                        });
                    };
                    let parsed = expr::parse_string_expr(hint, text)?;
                    if let Some(slot) = hints.string_slot(hint) {
                        *slot = Some(parsed);
                    }
                }
            }
        }
        Ok(hints)
    }

    /// The hints that apply to a node: `instance_info.root_device` when it is set and
    /// non-empty, else `properties.root_device`. Pass the two node fields as received.
    pub fn for_node(instance_info: &Value, properties: &Value) -> Result<Option<Self>, HintError> {
        let from_instance = instance_info.get("root_device").filter(|v| is_truthy(v));
        match from_instance.or_else(|| properties.get("root_device")) {
            Some(value) => RootDeviceHints::from_json(value),
            None => Ok(None),
        }
    }

    /// True when no hint is set.
    pub fn is_empty(&self) -> bool {
        self.size.is_none() && self.rotational.is_none() && self.string_hints().next().is_none()
    }

    fn string_slot(&mut self, key: HintKey) -> Option<&mut Option<StringHint>> {
        Some(match key {
            HintKey::Model => &mut self.model,
            HintKey::Vendor => &mut self.vendor,
            HintKey::Serial => &mut self.serial,
            HintKey::Wwn => &mut self.wwn,
            HintKey::WwnWithExtension => &mut self.wwn_with_extension,
            HintKey::WwnVendorExtension => &mut self.wwn_vendor_extension,
            HintKey::Name => &mut self.name,
            HintKey::Hctl => &mut self.hctl,
            HintKey::ByPath => &mut self.by_path,
            HintKey::Tran => &mut self.tran,
            HintKey::Size | HintKey::Rotational => return None,
        })
    }

    /// The string hints that are set, with their keys.
    fn string_hints(&self) -> impl Iterator<Item = (HintKey, &StringHint)> {
        [
            (HintKey::Model, &self.model),
            (HintKey::Vendor, &self.vendor),
            (HintKey::Serial, &self.serial),
            (HintKey::Wwn, &self.wwn),
            (HintKey::WwnWithExtension, &self.wwn_with_extension),
            (HintKey::WwnVendorExtension, &self.wwn_vendor_extension),
            (HintKey::Name, &self.name),
            (HintKey::Hctl, &self.hctl),
            (HintKey::ByPath, &self.by_path),
            (HintKey::Tran, &self.tran),
        ]
        .into_iter()
        .filter_map(|(key, hint)| hint.as_ref().map(|h| (key, h)))
    }
}

/// `size` arrives as a JSON integer or as a string that may carry an operator.
fn parse_size(value: &Value) -> Result<SizeHint, HintError> {
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(gib) if gib > 0 => Ok(SizeHint::Compare { op: NumericOp::Eq, gib }),
            _ => Err(HintError::Malformed {
                hint: HintKey::Size,
                value: n.to_string(),
                problem: HintValueProblem::NotPositiveInteger,
            }),
        },
        Value::String(text) => expr::parse_size_expr(HintKey::Size, text),
        other => Err(HintError::WrongType {
            hint: HintKey::Size,
            expected: "an integer or a string expression",
            value: other.to_string(),
        }),
    }
}

/// A boolean in any form oslo's strict `bool_from_string` accepts: JSON `true`/`false`,
/// or (case-insensitive, trimmed) `1 t true on y yes` / `0 f false off n no`, including
/// the JSON numbers 1 and 0.
fn parse_bool(hint: HintKey, value: &Value) -> Result<bool, HintError> {
    let text = match value {
        Value::Bool(b) => return Ok(*b),
        Value::String(s) => s.trim().to_lowercase(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(HintError::WrongType {
                hint,
                expected: "a boolean",
                value: other.to_string(),
            })
        }
    };
    match text.as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err(HintError::Malformed {
            hint,
            value: match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            problem: HintValueProblem::NotBoolean,
        }),
    }
}

/// Python truthiness, which decides whether `instance_info.root_device` is "set".
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A JSON value's kind, for messages ("a string", "a list", ...).
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
