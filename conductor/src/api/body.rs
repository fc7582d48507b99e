//! Request bodies: read within the size limit, parsed as JSON into a strict type, and
//! every failure turned into a `400` (or `413`) whose faultstring says what was wrong.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body parsed into `T`. An empty body is refused.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// A JSON body parsed into `T`, or `T::default()` when the body is empty (Ironic allows
/// e.g. `PUT …/maintenance` without one).
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::Invalid(
                "The request body is empty; a JSON body is required.".into(),
            ));
        }
        parse(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse(&bytes).map(OptionalJsonBody)
    }
}

async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BodyRead
        }
    })
}

/// Parses `bytes` as `T`: syntax errors are "malformed JSON", shape errors (unknown
/// fields, wrong types, missing fields) are "invalid request body"; both name the place.
///
/// String values quoted by the parser are replaced with `******`: the message is logged,
/// and the value may be a password sent in the wrong place.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::Invalid(format!("Invalid request body: {}", redact_strings(&e.to_string())))
        }
        _ => ApiError::MalformedJson(e.to_string()),
    })
}

/// `invalid type: string "hunter2", expected …` → `invalid type: string "******", expected …`.
fn redact_strings(message: &str) -> String {
    const OPEN: &str = "string \"";
    const CLOSE: &str = "\", expected";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(OPEN) {
        let value_start = start + OPEN.len();
        let Some(len) = rest.get(value_start..).and_then(|tail| tail.find(CLOSE)) else {
            break;
        };
        out.push_str(rest.get(..value_start).unwrap_or_default());
        out.push_str("******");
        rest = rest.get(value_start + len..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_shared::node::NodeCreate;

    #[test]
    fn parse_errors_name_the_problem() {
        let table: &[(&str, u16, &str)] = &[
            ("{", 400, "Malformed JSON"),
            ("{\"driver\": }", 400, "Malformed JSON"),
            ("[1]", 400, "Invalid request body"),
            ("{\"driver\": \"x\", \"colour\": 1}", 400, "unknown field `colour`"),
            ("{\"name\": \"n\"}", 400, "missing field `driver`"),
            ("{\"driver\": 5}", 400, "invalid type"),
        ];
        for (body, code, fragment) in table {
            let err = parse::<NodeCreate>(body.as_bytes()).unwrap_err();
            assert_eq!(err.status().as_u16(), *code, "{body}");
            assert!(err.to_string().contains(fragment), "{body}: {err}");
        }
        assert_eq!(parse::<NodeCreate>(b"{\"driver\": \"x\"}").unwrap().driver, "x");
    }

    #[test]
    fn string_values_are_not_echoed() {
        let err = parse::<NodeCreate>(br#"{"driver": "x", "driver_info": "hunter2"}"#)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("string \"******\", expected"), "{err}");
        for (message, want) in [
            ("no strings here", "no strings here"),
            (
                "string \"a\", expected x; string \"b\", expected y",
                "string \"******\", expected x; string \"******\", expected y",
            ),
            ("string \"unterminated", "string \"unterminated"),
        ] {
            assert_eq!(redact_strings(message), want);
        }
    }
}
