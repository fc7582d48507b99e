//! The reqwest client behind image downloads, built from [`HttpOptions`].

use std::error::Error as _;
use std::sync::Arc;

use reqwest::header::HeaderValue;
use reqwest::{redirect, NoProxy, Proxy, Url};

use crate::image::source::{HttpOptions, SourceError};
use crate::tls;

/// Redirects followed before giving up (a loop, or a misconfigured mirror).
pub(crate) const MAX_REDIRECTS: usize = 10;

/// Parses an image URL; only `http` and `https` are served here.
pub(crate) fn parse_url(url: &str) -> Result<Url, SourceError> {
    let parsed = Url::parse(url)
        .map_err(|e| SourceError::InvalidUrl { url: redact_text(url), reason: e.to_string() })?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(SourceError::InvalidUrl {
            url: redact(&parsed),
            reason: format!("scheme {other:?} is not http or https"),
        }),
    }
}

/// The URL as it may appear in logs and errors: no user or password, and no query
/// string (pre-signed URLs carry their signature there).
pub(crate) fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    // Both only fail for URLs that cannot carry credentials at all.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        shown.set_query(Some("redacted"));
    }
    shown.to_string()
}

/// [`redact`] for URL text; best effort for text that does not even parse as a URL: drop
/// everything up to an `@` after the scheme, and any query.
pub fn redact_text(url: &str) -> String {
    if let Ok(parsed) = Url::parse(url) {
        return redact(&parsed);
    }
    let without_query = url.split('?').next().unwrap_or_default();
    match (without_query.find("://"), without_query.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}{}", &without_query[..scheme_end + 3], &without_query[at + 1..])
        }
        _ => without_query.to_owned(),
    }
}

/// The `Authorization` value sent with every request: `authorization` wins over
/// `basic_auth`, as in ironic-python-agent.
pub(crate) fn authorization(opts: &HttpOptions) -> Result<Option<HeaderValue>, SourceError> {
    use base64::Engine as _;
    let value = match (&opts.authorization, &opts.basic_auth) {
        (Some(full), _) => full.clone(),
        (None, Some((user, password))) => {
            let pair = format!("{user}:{password}");
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        }
        (None, None) => return Ok(None),
    };
    let mut header = HeaderValue::from_str(&value)
        .map_err(|_| SourceError::InvalidOption { what: "authorization value" })?;
    header.set_sensitive(true);
    Ok(Some(header))
}

/// Builds the client: TLS from `ca_file`/`insecure` (ring provider), proxies only as
/// configured (the environment's proxy variables are ignored so that what the node's
/// `image_info` says is what happens), bounded redirects, a connect timeout equal to
/// the stall timeout. Must be called within the runtime that will drive it.
pub(crate) fn build(opts: &HttpOptions) -> Result<reqwest::Client, SourceError> {
    let tls = match tls::client_config(opts.ca_file.as_deref(), opts.insecure)
        .map_err(SourceError::Tls)?
    {
        Some(config) => Arc::unwrap_or_clone(config),
        // No CA bundle in the ramdisk: plain HTTP still works, HTTPS fails verification.
        None => empty_roots().map_err(|e| SourceError::Tls(tls::TlsError::ClientConfig(e)))?,
    };
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(redirect::Policy::limited(MAX_REDIRECTS))
        .connect_timeout(opts.stall_timeout)
        .no_proxy();
    let no_proxy = opts.no_proxy.as_deref().and_then(NoProxy::from_string);
    for (url, https) in [(&opts.proxies.http, false), (&opts.proxies.https, true)] {
        let Some(url) = url.as_deref().filter(|u| !u.is_empty()) else { continue };
        let proxy = if https { Proxy::https(url) } else { Proxy::http(url) };
        let proxy = proxy
            .map_err(|source| SourceError::Proxy { url: redact_text(url), source })?
            .no_proxy(no_proxy.clone());
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(SourceError::Client)
}

fn empty_roots() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// Whether a request error is a rejected server certificate: retrying cannot help.
pub(crate) fn is_certificate_error(err: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = cause {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        // io::Error skips its own payload in `source()`; step into the payload instead.
        cause = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        let table = [
            ("http://u:p@host/a/img.raw", "http://host/a/img.raw"),
            ("https://host:8443/img?X-Sig=secret&e=1", "https://host:8443/img?redacted"),
            ("http://host/img", "http://host/img"),
        ];
        for (url, want) in table {
            assert_eq!(redact(&Url::parse(url).unwrap()), want);
        }
        assert_eq!(redact_text("http://u:p@ho st/x?s=1"), "http://ho st/x");
        assert_eq!(redact_text("not a url"), "not a url");
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(parse_url("https://h/i").is_ok());
        for bad in ["ftp://h/i", "file:///i", "h/i", ""] {
            let err = parse_url(bad).unwrap_err();
            assert!(matches!(err, SourceError::InvalidUrl { .. }), "{bad}: {err}");
        }
        let err = parse_url("ftp://user:secret@h/i").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn authorization_prefers_the_full_header_value() {
        let mut opts = HttpOptions {
            basic_auth: Some(("user".into(), "pass".into())),
            ..HttpOptions::default()
        };
        let basic = authorization(&opts).unwrap().unwrap();
        // base64("user:pass")
        assert_eq!(basic.to_str().unwrap(), "Basic dXNlcjpwYXNz");
        assert!(basic.is_sensitive());
        opts.authorization = Some("Bearer tok".into());
        assert_eq!(authorization(&opts).unwrap().unwrap(), "Bearer tok");
        opts.authorization = Some("bad\nvalue".into());
        assert!(matches!(authorization(&opts), Err(SourceError::InvalidOption { .. })));
        assert_eq!(authorization(&HttpOptions::default()).unwrap(), None);
    }
}
