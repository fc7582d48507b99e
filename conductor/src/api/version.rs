//! Microversion negotiation: which `1.NN` a request speaks, and the version headers every
//! response carries.
//!
//! # The maximum Ferric advertises: 1.110
//!
//! A server must advertise the newest version whose behaviour it implements, because a
//! client that asks for more is told the maximum and then relies on everything up to it.
//! Ferric implements the verbs and fields the provisioning flows need through 1.110: agent
//! tokens (1.62), `agent_verify_ca` (1.68), `agent_status` (1.72), `deploy`/`undeploy`
//! (1.73), `continue_inspection` (1.84), `unhold` (1.85) and aborting a deployment that
//! waits for its agent (1.110). Versions after 1.110 add features Ferric does not have,
//! so it does not claim them. The `baremetal` CLI asks for 1.115 first, gets `406` with
//! these headers, and retries with 1.110 — every command it needs exists well below that.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferric_shared::api_version::{
    ApiVersion, MAX_VERSION_HEADER, MIN_VERSION_HEADER, VERSION_HEADER,
};

use super::error::ApiError;

/// The oldest version served; also what a request without a version header gets.
pub const MIN_VERSION: ApiVersion = ApiVersion::MINIMUM;
/// The newest version served (see the module documentation for why this one).
pub const MAX_VERSION: ApiVersion = ApiVersion::new(1, 110);

/// The generic microversion header: `OpenStack-API-Version: baremetal 1.NN`.
pub const GENERIC_VERSION_HEADER: &str = "OpenStack-API-Version";
/// The service type used in [`GENERIC_VERSION_HEADER`].
const SERVICE_TYPE: &str = "baremetal";

/// The microversion of the request being handled, as an extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestVersion(pub ApiVersion);

impl RequestVersion {
    pub fn at_least(self, minor: u32) -> bool {
        self.0 >= ApiVersion::new(1, minor)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestVersion {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<RequestVersion>() {
            Some(v) => Ok(*v),
            None => negotiate(&parts.headers).map(RequestVersion),
        }
    }
}

/// The version a request asks for: the generic header's `baremetal` entry first, then the
/// Ironic header; none means [`MIN_VERSION`]; `latest` means [`MAX_VERSION`]. Anything
/// unparsable or outside the served range is `406`.
pub fn negotiate(headers: &HeaderMap) -> Result<ApiVersion, ApiError> {
    let Some(requested) = requested_version(headers)? else {
        return Ok(MIN_VERSION);
    };
    if requested.eq_ignore_ascii_case("latest") {
        return Ok(MAX_VERSION);
    }
    let version: ApiVersion = requested.parse().map_err(|_| {
        ApiError::NotAcceptable(format!("Invalid value for {VERSION_HEADER} header: {requested}"))
    })?;
    if version.major != 1 {
        return Err(ApiError::NotAcceptable(format!(
            "Mutually exclusive versions requested. Version {version} requested but not \
             supported by this service. The supported version range is: [{MIN_VERSION}, \
             {MAX_VERSION}]."
        )));
    }
    if version < MIN_VERSION || version > MAX_VERSION {
        return Err(ApiError::NotAcceptable(format!(
            "Version {version} was requested but the minor version is not supported by this \
             service. The supported version range is: [{MIN_VERSION}, {MAX_VERSION}]."
        )));
    }
    Ok(version)
}

fn requested_version(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let unreadable =
        |name: &str| ApiError::NotAcceptable(format!("Invalid value for {name} header"));
    for value in headers.get_all(GENERIC_VERSION_HEADER) {
        let text = value.to_str().map_err(|_| unreadable(GENERIC_VERSION_HEADER))?;
        for entry in text.split(',') {
            let mut words = entry.split_whitespace();
            if words.next().is_some_and(|s| s.eq_ignore_ascii_case(SERVICE_TYPE)) {
                return match (words.next(), words.next()) {
                    (Some(v), None) => Ok(Some(v.to_owned())),
                    _ => Err(unreadable(GENERIC_VERSION_HEADER)),
                };
            }
        }
    }
    match headers.get(VERSION_HEADER) {
        Some(value) => {
            let text = value.to_str().map_err(|_| unreadable(VERSION_HEADER))?;
            Ok(Some(text.trim().to_owned()))
        }
        None => Ok(None),
    }
}

/// Middleware: negotiates the version (refusing the request with `406` when it cannot),
/// makes it available as [`RequestVersion`], and stamps the version headers on every
/// response, errors included.
pub async fn version_layer(mut request: Request, next: Next) -> Response {
    let negotiated = negotiate(request.headers());
    let (mut response, used) = match negotiated {
        Ok(version) => {
            request.extensions_mut().insert(RequestVersion(version));
            (next.run(request).await, Some(version))
        }
        Err(err) => (err.into_response(), None),
    };
    let headers = response.headers_mut();
    headers.insert(MIN_VERSION_HEADER, header_value(&MIN_VERSION.to_string()));
    headers.insert(MAX_VERSION_HEADER, header_value(&MAX_VERSION.to_string()));
    if let Some(version) = used {
        headers.insert(VERSION_HEADER, header_value(&version.to_string()));
        headers.insert(
            HeaderName::from_static("openstack-api-version"),
            header_value(&format!("{SERVICE_TYPE} {version}")),
        );
        headers.append(
            axum::http::header::VARY,
            HeaderValue::from_static("X-OpenStack-Ironic-API-Version, OpenStack-API-Version"),
        );
    }
    response
}

fn header_value(text: &str) -> HeaderValue {
    // Versions are digits and dots; the fallback only keeps this total.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("1.1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    /// Request headers, and the version negotiated (`Err(())`: refused with 406).
    type Case<'a> = (&'a [(&'a str, &'a str)], Result<ApiVersion, ()>);

    #[test]
    fn negotiation_table() {
        let ok = |minor| Ok::<_, ()>(ApiVersion::new(1, minor));
        let table: &[Case] = &[
            (&[], ok(1)),
            (&[(VERSION_HEADER, "1.68")], ok(68)),
            (&[(VERSION_HEADER, " 1.22 ")], ok(22)),
            (&[(VERSION_HEADER, "latest")], ok(110)),
            (&[(VERSION_HEADER, "LATEST")], ok(110)),
            (&[(VERSION_HEADER, "1.110")], ok(110)),
            (&[(VERSION_HEADER, "1.111")], Err(())),
            (&[(VERSION_HEADER, "1.115")], Err(())),
            (&[(VERSION_HEADER, "1.0")], Err(())),
            (&[(VERSION_HEADER, "2.1")], Err(())),
            (&[(VERSION_HEADER, "one")], Err(())),
            (&[(VERSION_HEADER, "")], Err(())),
            (&[("OpenStack-API-Version", "baremetal 1.73")], ok(73)),
            (&[("OpenStack-API-Version", "compute 2.1, baremetal 1.62")], ok(62)),
            (&[("OpenStack-API-Version", "baremetal latest")], ok(110)),
            (&[("OpenStack-API-Version", "baremetal 1.999")], Err(())),
            (&[("OpenStack-API-Version", "baremetal")], Err(())),
            (&[("OpenStack-API-Version", "compute 2.1")], ok(1)),
            (&[("OpenStack-API-Version", "baremetal 1.50"), (VERSION_HEADER, "1.9")], ok(50)),
            (&[("OpenStack-API-Version", "compute 2.1"), (VERSION_HEADER, "1.9")], ok(9)),
        ];
        for (pairs, want) in table {
            let got = negotiate(&headers(pairs));
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(g, *w, "{pairs:?}"),
                (Err(()), Err(e)) => assert_eq!(e.status().as_u16(), 406, "{pairs:?}"),
                (w, g) => panic!("{pairs:?}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn out_of_range_message_names_the_range() {
        let err = negotiate(&headers(&[(VERSION_HEADER, "1.115")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("1.115") && text.contains("[1.1, 1.110]"), "{text}");
    }
}
