//! Every error reply of the conductor's API and its one mapping to HTTP: a status code and
//! Ironic's body, `{"error_message": "<JSON string with faultcode, faultstring,
//! debuginfo>"}`.
//!
//! The `Display` text of each variant is the faultstring, worded as Ironic words it where
//! clients are known to read it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_shared::error_body::IronicErrorBody;

use crate::store::StoreError;

/// A request the API refuses, or could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: malformed JSON, unknown fields, invalid values, forbidden patches.
    #[error("{0}")]
    Invalid(String),
    /// The body is not JSON at all.
    #[error("Malformed JSON in request body: {0}")]
    MalformedJson(String),
    #[error("The request body is larger than this endpoint accepts.")]
    PayloadTooLarge,
    #[error("The request body could not be read.")]
    BodyRead,
    #[error("Node {0} could not be found.")]
    NodeNotFound(String),
    #[error("Port {0} could not be found.")]
    PortNotFound(String),
    /// Any other missing resource or route.
    #[error("{0}")]
    NotFound(String),
    #[error("The method is not allowed for the requested URL.")]
    MethodNotAllowed,
    /// Unsupported microversion, or a feature newer than the requested one.
    #[error("{0}")]
    NotAcceptable(String),
    /// A verb that is not valid in the node's provision state. Ironic's wording.
    #[error(
        "The requested action \"{action}\" can not be performed on node \"{node}\" while it is \
         in state \"{state}\"."
    )]
    InvalidStateRequested { action: String, node: String, state: String },
    /// The node is locked by a conductor, or a unique value is taken.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// The conductor cannot accept more work right now.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed on our side; the detail is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_)
            | ApiError::MalformedJson(_)
            | ApiError::BodyRead
            | ApiError::InvalidStateRequested { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NodeNotFound(_) | ApiError::PortNotFound(_) | ApiError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body this error is sent with.
    pub fn body(&self) -> IronicErrorBody {
        IronicErrorBody::new(self.status().as_u16(), self.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "request refused");
        }
        (status, Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NodeNotFound(ident) => ApiError::NodeNotFound(ident),
            StoreError::PortNotFound(ident) => ApiError::PortNotFound(ident),
            StoreError::MarkerNotFound(marker) => {
                ApiError::NotFound(format!("Marker {marker} could not be found."))
            }
            StoreError::Conflict { kind, field, value } => {
                ApiError::Conflict(match (kind, field) {
                    ("node", "name") => format!("A node with name {value} already exists."),
                    ("port", "address") => {
                        format!("A port with MAC address {value} already exists.")
                    }
                    _ => format!("A {kind} with {field} {value} already exists."),
                })
            }
            StoreError::Stale { kind, uuid } => ApiError::Conflict(format!(
                "The {kind} {uuid} was modified by another request; retry."
            )),
            StoreError::Locked { uuid, holder } => ApiError::Conflict(format!(
                "Node {uuid} is locked by host {holder}, please retry after the current \
                 operation is completed."
            )),
            StoreError::InvalidState { uuid, current, event } => ApiError::InvalidStateRequested {
                action: event.to_string(),
                node: uuid.to_string(),
                state: current.to_string(),
            },
            err @ StoreError::InvalidTarget { .. } => ApiError::Invalid(err.to_string()),
            StoreError::InvalidMac(mac) => {
                ApiError::Invalid(format!("Expected a MAC address but received {mac}."))
            }
            other => {
                tracing::error!(error = %ErrorChain(&other), "store operation failed");
                ApiError::Internal("The conductor's database failed; see its log.".into())
            }
        }
    }
}

/// Displays an error with its whole source chain, for logs.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_shared::error_body::FaultCode;

    #[test]
    fn codes_and_fault_strings() {
        let table: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::Invalid("bad".into()), 400, "bad"),
            (ApiError::NodeNotFound("n1".into()), 404, "Node n1 could not be found."),
            (ApiError::PortNotFound("p".into()), 404, "Port p could not be found."),
            (ApiError::NotAcceptable("v".into()), 406, "v"),
            (ApiError::Conflict("locked".into()), 409, "locked"),
            (
                ApiError::InvalidStateRequested {
                    action: "provide".into(),
                    node: "n1".into(),
                    state: "enroll".into(),
                },
                400,
                "The requested action \"provide\" can not be performed on node \"n1\" while \
                 it is in state \"enroll\".",
            ),
            (
                ApiError::PayloadTooLarge,
                413,
                "The request body is larger than this endpoint \
                accepts.",
            ),
            (ApiError::Internal("db".into()), 500, "db"),
        ];
        for (err, code, text) in table {
            assert_eq!(err.status().as_u16(), code, "{err}");
            let fault = err.body().fault().expect("error_message holds a fault");
            assert_eq!(fault.faultstring, text);
            let want = if code >= 500 { FaultCode::Server } else { FaultCode::Client };
            assert_eq!(fault.faultcode, want);
        }
    }
}
