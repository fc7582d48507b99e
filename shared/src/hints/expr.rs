//! The operator language of hint values (the oslo.utils "specs matcher" grammar).
//!
//! A hint value is `"[<op>] <operand>"`. The text is trimmed and lowercased before the
//! operator is recognised, so operators are case-insensitive. String operands and device
//! values are compared after the same normalisation (lowercase, then URL-quote), which
//! makes the default `s==` a case-insensitive exact match.

use super::{HintError, HintKey, HintValueProblem};

/// A numeric comparison between a device's size in GiB and the hint's operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericOp {
    /// `==` (also what a bare number means).
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`, and also the legacy `=`.
    Ge,
}

impl NumericOp {
    fn holds(self, device: f64, operand: f64) -> bool {
        match self {
            NumericOp::Eq => device == operand,
            NumericOp::Ne => device != operand,
            NumericOp::Lt => device < operand,
            NumericOp::Le => device <= operand,
            NumericOp::Gt => device > operand,
            NumericOp::Ge => device >= operand,
        }
    }
}

/// Whether a `<range-in>` bound includes its end point (`[`/`]`) or not (`(`/`)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Inclusive,
    Exclusive,
}

/// A parsed `size` hint. Operands are whole GiB; the device side is `bytes / 2^30` as a
/// float, so `== 100` does not match a disk of 100.5 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeHint {
    /// `<op> <gib>`.
    Compare { op: NumericOp, gib: u64 },
    /// `<range-in> [ low high ]`, each end inclusive or exclusive.
    Range { low: u64, low_bound: Bound, high: u64, high_bound: Bound },
}

const GIB: f64 = (1u64 << 30) as f64;

impl SizeHint {
    /// Whether a device of `size_bytes` satisfies this hint.
    pub fn matches_bytes(&self, size_bytes: u64) -> bool {
        let gib = size_bytes as f64 / GIB;
        match *self {
            SizeHint::Compare { op, gib: operand } => op.holds(gib, operand as f64),
            SizeHint::Range { low, low_bound, high, high_bound } => {
                let above = match low_bound {
                    Bound::Inclusive => gib >= low as f64,
                    Bound::Exclusive => gib > low as f64,
                };
                let below = match high_bound {
                    Bound::Inclusive => gib <= high as f64,
                    Bound::Exclusive => gib < high as f64,
                };
                above && below
            }
        }
    }
}

/// A lexicographic comparison between normalised strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringOp {
    /// `s==` (also what a value without an operator means).
    Eq,
    /// `s!=`
    Ne,
    /// `s<`
    Lt,
    /// `s<=`
    Le,
    /// `s>`
    Gt,
    /// `s>=`
    Ge,
}

/// A parsed string hint. Every operand is stored normalised: lowercased, then URL-quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringHint {
    /// `s== x`, `s!= x`, `s< x`, ... or a bare value (`s==`).
    Compare { op: StringOp, operand: String },
    /// `<in> x`: the operand is a substring of the device value.
    Contains(String),
    /// `<or> a <or> b ...`: the device value equals one of the alternatives. Alternatives
    /// are separated by `<or>` and may contain spaces.
    AnyOf(Vec<String>),
    /// `<all-in> a b ...`: every whitespace-separated token is a substring of the device
    /// value.
    AllIn(Vec<String>),
}

impl StringHint {
    /// Whether a raw device value (not yet normalised) satisfies this hint. An empty
    /// device value never matches, whatever the operator.
    pub fn matches(&self, device_value: &str) -> bool {
        let value = normalize(device_value);
        if value.is_empty() {
            return false;
        }
        match self {
            StringHint::Compare { op, operand } => {
                let (v, o) = (value.as_str(), operand.as_str());
                match op {
                    StringOp::Eq => v == o,
                    StringOp::Ne => v != o,
                    StringOp::Lt => v < o,
                    StringOp::Le => v <= o,
                    StringOp::Gt => v > o,
                    StringOp::Ge => v >= o,
                }
            }
            StringHint::Contains(needle) => value.contains(needle.as_str()),
            StringHint::AnyOf(alternatives) => alternatives.contains(&value),
            StringHint::AllIn(tokens) => tokens.iter().all(|t| value.contains(t.as_str())),
        }
    }
}

/// Every operator of the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Numeric(NumericOp),
    Str(StringOp),
    In,
    Or,
    AllIn,
    RangeIn,
}

/// Operator spellings, ordered so that no entry is shadowed by an earlier prefix of it
/// (`<in>` before `<`, `==` before `=`, `s<=` before `s<`, ...).
const OPERATORS: &[(&str, Operator)] = &[
    ("<range-in>", Operator::RangeIn),
    ("<all-in>", Operator::AllIn),
    ("<or>", Operator::Or),
    ("<in>", Operator::In),
    ("s==", Operator::Str(StringOp::Eq)),
    ("s!=", Operator::Str(StringOp::Ne)),
    ("s<=", Operator::Str(StringOp::Le)),
    ("s<", Operator::Str(StringOp::Lt)),
    ("s>=", Operator::Str(StringOp::Ge)),
    ("s>", Operator::Str(StringOp::Gt)),
    ("==", Operator::Numeric(NumericOp::Eq)),
    ("!=", Operator::Numeric(NumericOp::Ne)),
    (">=", Operator::Numeric(NumericOp::Ge)),
    ("<=", Operator::Numeric(NumericOp::Le)),
    // The legacy single `=` has always meant "at least" in this grammar.
    ("=", Operator::Numeric(NumericOp::Ge)),
    (">", Operator::Numeric(NumericOp::Gt)),
    ("<", Operator::Numeric(NumericOp::Lt)),
];

/// Splits a trimmed, lowercased expression into its leading operator (with its spelling)
/// and the rest of the text.
fn split_operator(expr: &str) -> Option<(&'static str, Operator, &str)> {
    OPERATORS
        .iter()
        .find_map(|&(spelling, op)| expr.strip_prefix(spelling).map(|rest| (spelling, op, rest)))
}

/// Python `urllib.parse.quote(s)` with its default `safe='/'`: unreserved characters and
/// `/` stay, every other byte of the UTF-8 encoding becomes `%XX`.
pub(crate) fn url_quote(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// The form both sides of a string comparison take: trimmed, lowercased, URL-quoted.
pub(crate) fn normalize(s: &str) -> String {
    url_quote(&s.trim().to_lowercase())
}

fn malformed(key: HintKey, raw: &str, problem: HintValueProblem) -> HintError {
    HintError::Malformed { hint: key, value: raw.to_owned(), problem }
}

fn not_allowed(key: HintKey, raw: &str, operator: &'static str) -> HintError {
    HintError::OperatorNotAllowed { hint: key, operator, value: raw.to_owned() }
}

/// Parses a size operand: a positive whole number of GiB.
fn positive_gib(key: HintKey, raw: &str, text: &str) -> Result<u64, HintError> {
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(malformed(key, raw, HintValueProblem::NotPositiveInteger)),
    }
}

/// Parses the text of a `size` hint given as a string, e.g. `"100"`, `">= 100"`,
/// `"<range-in> [ 10 20 )"`.
pub(crate) fn parse_size_expr(key: HintKey, raw: &str) -> Result<SizeHint, HintError> {
    let expr = raw.trim().to_lowercase();
    if expr.is_empty() {
        return Err(malformed(key, raw, HintValueProblem::Empty));
    }
    match split_operator(&expr) {
        None => Ok(SizeHint::Compare { op: NumericOp::Eq, gib: positive_gib(key, raw, &expr)? }),
        Some((_, Operator::Numeric(op), rest)) => {
            if rest.trim().is_empty() {
                return Err(malformed(key, raw, HintValueProblem::MissingOperand));
            }
            Ok(SizeHint::Compare { op, gib: positive_gib(key, raw, rest)? })
        }
        Some((_, Operator::RangeIn, rest)) => parse_range(key, raw, rest),
        Some((spelling, _, _)) => Err(not_allowed(key, raw, spelling)),
    }
}

/// Splits a bracket off one end of `word` (which end depends on `strip`).
fn peel<'w>(
    word: &'w str,
    strip: fn(&'w str, &'static str) -> Option<&'w str>,
) -> (Option<&'static str>, &'w str) {
    for bracket in ["[", "(", "]", ")"] {
        if let Some(body) = strip(word, bracket) {
            return (Some(bracket), body);
        }
    }
    (None, word)
}

/// Parses `[ low high ]` (either bracket may be `(`/`)`). Brackets may also touch the
/// numbers (`[10 20)`).
fn parse_range(key: HintKey, raw: &str, rest: &str) -> Result<SizeHint, HintError> {
    let mut tokens: Vec<&str> = Vec::new();
    for word in rest.split_whitespace() {
        let (open, word) = peel(word, str::strip_prefix);
        let (close, word) = peel(word, str::strip_suffix);
        tokens.extend(open);
        if !word.is_empty() {
            tokens.push(word);
        }
        tokens.extend(close);
    }
    let [open, low, high, close] = tokens.as_slice() else {
        return Err(malformed(key, raw, HintValueProblem::MalformedRange));
    };
    let low_bound = match *open {
        "[" => Bound::Inclusive,
        "(" => Bound::Exclusive,
        _ => return Err(malformed(key, raw, HintValueProblem::MalformedRange)),
    };
    let high_bound = match *close {
        "]" => Bound::Inclusive,
        ")" => Bound::Exclusive,
        _ => return Err(malformed(key, raw, HintValueProblem::MalformedRange)),
    };
    let low = positive_gib(key, raw, low)?;
    let high = positive_gib(key, raw, high)?;
    if low > high {
        return Err(malformed(key, raw, HintValueProblem::RangeReversed));
    }
    Ok(SizeHint::Range { low, low_bound, high, high_bound })
}

/// Parses the text of a string hint. `name` operands that are not absolute paths get a
/// `/dev/` prefix so that `sda` means `/dev/sda`; this applies to the whole-value
/// operators only, since prefixing a substring (`<in> sd`) would change its meaning.
pub(crate) fn parse_string_expr(key: HintKey, raw: &str) -> Result<StringHint, HintError> {
    let expr = raw.trim().to_lowercase();
    if expr.is_empty() {
        return Err(malformed(key, raw, HintValueProblem::Empty));
    }
    let whole = |operand: &str| -> String {
        if key == HintKey::Name && !operand.starts_with('/') {
            url_quote(&format!("/dev/{operand}"))
        } else {
            url_quote(operand)
        }
    };
    let hint = match split_operator(&expr) {
        None => StringHint::Compare { op: StringOp::Eq, operand: whole(&expr) },
        Some((_, Operator::Str(op), rest)) => {
            let operand = rest.trim();
            if operand.is_empty() {
                return Err(malformed(key, raw, HintValueProblem::MissingOperand));
            }
            StringHint::Compare { op, operand: whole(operand) }
        }
        Some((_, Operator::In, rest)) => {
            let operand = rest.trim();
            if operand.is_empty() {
                return Err(malformed(key, raw, HintValueProblem::MissingOperand));
            }
            StringHint::Contains(url_quote(operand))
        }
        Some((_, Operator::Or, rest)) => {
            // Empty alternatives (`<or> a <or>`) are dropped, as Ironic does.
            let alternatives: Vec<String> =
                rest.split("<or>").map(str::trim).filter(|a| !a.is_empty()).map(whole).collect();
            if alternatives.is_empty() {
                return Err(malformed(key, raw, HintValueProblem::MissingOperand));
            }
            StringHint::AnyOf(alternatives)
        }
        Some((_, Operator::AllIn, rest)) => {
            let tokens: Vec<String> = rest.split_whitespace().map(url_quote).collect();
            if tokens.is_empty() {
                return Err(malformed(key, raw, HintValueProblem::MissingOperand));
            }
            StringHint::AllIn(tokens)
        }
        Some((spelling, Operator::Numeric(_) | Operator::RangeIn, _)) => {
            return Err(not_allowed(key, raw, spelling));
        }
    };
    Ok(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_quote_follows_python_quote() {
        let cases = [
            ("abcXYZ019", "abcXYZ019"),
            ("_.-~/", "_.-~/"),
            ("a b", "a%20b"),
            ("a:b", "a%3Ab"),
            ("<or>", "%3Cor%3E"),
            ("100%", "100%25"),
            ("é", "%C3%A9"),
            ("a+b=c&d", "a%2Bb%3Dc%26d"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(url_quote(input), want, "quote({input:?})");
        }
    }

    #[test]
    fn normalize_trims_lowercases_and_quotes() {
        assert_eq!(normalize("  Samsung SSD 860 "), "samsung%20ssd%20860");
        assert_eq!(normalize("/dev/SDA"), "/dev/sda");
    }

    #[test]
    fn every_operator_spelling_is_recognised_as_itself() {
        for &(spelling, op) in OPERATORS {
            let expr = format!("{spelling} 5");
            let (found, parsed, rest) = split_operator(&expr).unwrap();
            assert_eq!((found, parsed, rest), (spelling, op, " 5"), "{expr:?}");
        }
    }
}
