//! Conversions between domain values and their portable column forms.

use std::str::FromStr;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use time::OffsetDateTime;

use super::{JsonMap, StoreError};

/// Now, truncated to microseconds so that a value read back equals the value written.
pub(super) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let micros = now.microsecond();
    now.replace_microsecond(micros).unwrap_or(now)
}

pub(super) fn to_micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

pub(super) fn opt_micros(at: Option<OffsetDateTime>) -> Option<i64> {
    at.map(to_micros)
}

/// Reads columns of one row, naming the row in errors.
pub(super) struct Cols<'r> {
    pub row: &'r SqliteRow,
    pub uuid: String,
}

impl Cols<'_> {
    pub fn get<'a, T>(&'a self, column: &'static str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'a, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        self.row.try_get(column).map_err(|err| self.corrupt(column, err.to_string()))
    }

    pub fn corrupt(&self, column: &'static str, reason: String) -> StoreError {
        StoreError::Corrupt { uuid: self.uuid.clone(), column, reason }
    }

    pub fn time(&self, column: &'static str) -> Result<OffsetDateTime, StoreError> {
        let micros: i64 = self.get(column)?;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .map_err(|err| self.corrupt(column, err.to_string()))
    }

    pub fn opt_time(&self, column: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
        let micros: Option<i64> = self.get(column)?;
        micros
            .map(|m| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1000)
                    .map_err(|err| self.corrupt(column, err.to_string()))
            })
            .transpose()
    }

    pub fn map(&self, column: &'static str) -> Result<JsonMap, StoreError> {
        let text: String = self.get(column)?;
        serde_json::from_str(&text).map_err(|err| self.corrupt(column, err.to_string()))
    }

    pub fn list(&self, column: &'static str) -> Result<Vec<String>, StoreError> {
        let text: String = self.get(column)?;
        serde_json::from_str(&text).map_err(|err| self.corrupt(column, err.to_string()))
    }

    pub fn parse<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let text: String = self.get(column)?;
        text.parse().map_err(|err: T::Err| self.corrupt(column, err.to_string()))
    }

    pub fn opt_parse<T>(&self, column: &'static str) -> Result<Option<T>, StoreError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let text: Option<String> = self.get(column)?;
        text.map(|t| t.parse().map_err(|err: T::Err| self.corrupt(column, err.to_string())))
            .transpose()
    }
}

pub(super) fn json_text(map: &JsonMap) -> String {
    serde_json::Value::Object(map.clone()).to_string()
}

pub(super) fn list_text(list: &[String]) -> String {
    serde_json::Value::from(list.to_vec()).to_string()
}

/// Validates a MAC address (six hexadecimal pairs separated by `:` or `-`) and returns it
/// in Ironic's form: lowercase, colon-separated.
pub fn normalize_mac(mac: &str) -> Result<String, StoreError> {
    let invalid = || StoreError::InvalidMac(mac.to_owned());
    let pairs: Vec<&str> = mac.split([':', '-']).collect();
    let separators_consistent = !(mac.contains(':') && mac.contains('-'));
    if pairs.len() != 6 || !separators_consistent {
        return Err(invalid());
    }
    let mut out = String::with_capacity(17);
    for (index, pair) in pairs.iter().enumerate() {
        if pair.len() != 2 || !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        if index > 0 {
            out.push(':');
        }
        out.push_str(&pair.to_ascii_lowercase());
    }
    Ok(out)
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`] naming the field;
/// `fields` pairs the `table.column` the database names with the field and its value.
pub(super) fn conflict_or(
    err: sqlx::Error,
    kind: &'static str,
    fields: &[(&'static str, &'static str, &str)],
) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            let message = db.message();
            for (column, field, value) in fields {
                if message.contains(column) {
                    return StoreError::Conflict { kind, field, value: (*value).to_owned() };
                }
            }
        }
    }
    StoreError::Database(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_are_validated_and_normalised() {
        let good = [
            ("52:54:00:12:34:56", "52:54:00:12:34:56"),
            ("52:54:00:AB:cd:EF", "52:54:00:ab:cd:ef"),
            ("52-54-00-AB-CD-EF", "52:54:00:ab:cd:ef"),
        ];
        for (input, expected) in good {
            assert_eq!(normalize_mac(input).unwrap(), expected, "{input}");
        }
        let bad = [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5g",
            "525400123456",
            "52:54:00:12:34:5",
            "52:54:00:12:34:567",
            "52:54-00:12:34:56",
            " 52:54:00:12:34:56",
            "52:54:00:12:34:é6",
        ];
        for input in bad {
            assert!(
                matches!(normalize_mac(input), Err(StoreError::InvalidMac(ref m)) if m == input),
                "{input:?}"
            );
        }
    }

    #[test]
    fn timestamps_round_trip_through_micros() {
        let at = now();
        let micros = to_micros(at);
        let back = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap();
        assert_eq!(back, at);
    }
}
