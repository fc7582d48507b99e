//! Every error reply of the agent API, and its mapping to HTTP: the status code and the
//! ironic-python-agent fault body `{"faultcode": ..., "faultstring": ...}`.
//!
//! The `Display` text of each variant is the fault string, worded as
//! ironic-python-agent words it, because Ironic matches on some of them (e.g. "agent is
//! busy").

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_shared::command::{AgentFault, FaultCode};

use crate::commands::CommandParseError;
use crate::executor::SubmitError;

/// A request the API refuses.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("401 Unauthorized: Token invalid.")]
    Unauthorized,
    #[error("400 Bad Request: Failed to decode JSON object: {0}")]
    MalformedJson(String),
    #[error(
        "413 Request Entity Too Large: The data value transmitted exceeds the capacity limit."
    )]
    PayloadTooLarge,
    #[error("400 Bad Request: The request body could not be read.")]
    BodyRead,
    #[error("Invalid request body: Missing or invalid name or params")]
    InvalidContent,
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("Not found: Command Result with id {0} not found.")]
    UnknownCommandId(String),
    #[error(
        "404 Not Found: The requested URL was not found on the server. If you entered the \
         URL manually please check your spelling and try again."
    )]
    NoRoute,
    #[error("405 Method Not Allowed: The method is not allowed for the requested URL.")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MalformedJson(_) | ApiError::BodyRead | ApiError::InvalidContent => {
                StatusCode::BAD_REQUEST
            }
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Submit(SubmitError::Busy(_)) => StatusCode::CONFLICT,
            ApiError::Submit(SubmitError::Stopped) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Submit(SubmitError::Parse(p)) => match p {
                CommandParseError::UnknownExtension(_) => StatusCode::NOT_FOUND,
                CommandParseError::MalformedName
                | CommandParseError::UnknownCommand(_)
                | CommandParseError::InvalidParams(_) => StatusCode::BAD_REQUEST,
            },
            ApiError::UnknownCommandId(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The fault body for this error.
    pub fn fault(&self) -> AgentFault {
        AgentFault {
            faultcode: FaultCode::for_status(self.status().as_u16()),
            faultstring: self.to_string(),
        }
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
        (status, Json(self.fault())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_fault_strings() {
        let table: Vec<(ApiError, u16, FaultCode, &str)> = vec![
            (ApiError::Unauthorized, 401, FaultCode::Client, "401 Unauthorized: Token invalid."),
            (
                ApiError::Submit(SubmitError::Busy("execute_clean_step".into())),
                409,
                FaultCode::Client,
                "Agent is busy: executing command execute_clean_step",
            ),
            (
                ApiError::Submit(SubmitError::Parse(CommandParseError::UnknownExtension(
                    "bogus".into(),
                ))),
                404,
                FaultCode::Client,
                "Not found: Extension with id bogus not found.",
            ),
            (
                ApiError::Submit(SubmitError::Parse(CommandParseError::UnknownCommand("x".into()))),
                400,
                FaultCode::Client,
                "Invalid command: Unknown command: x",
            ),
            (
                ApiError::Submit(SubmitError::Stopped),
                503,
                FaultCode::Server,
                "Agent is shutting down: the command executor has stopped",
            ),
            (
                ApiError::UnknownCommandId("abc".into()),
                404,
                FaultCode::Client,
                "Not found: Command Result with id abc not found.",
            ),
        ];
        for (err, code, faultcode, text) in table {
            assert_eq!(err.status().as_u16(), code, "{err}");
            let fault = err.fault();
            assert_eq!(fault.faultcode, faultcode);
            assert_eq!(fault.faultstring, text);
        }
    }
}
