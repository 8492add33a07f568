//! Who may talk to the local API (DESIGN §7): the `Host`, and the host of an absolute-form target,
//! must name loopback or a configured name (a DNS-rebinding page cannot pass), an `Origin` must be
//! on the allow-list (CORS, never `*`), and, when a local token is configured, every write must
//! carry it. A request with two `Host` or two `Origin` headers is refused.
//!
//! `check` runs before every route, inside the API's one middleware. It also answers CORS
//! preflights, so an allowed dashboard can call `POST /sync` under Chrome's Private Network Access
//! rules.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Default allowed CORS origin: the Gradata dashboard.
pub const DEFAULT_CORS_ORIGIN: &str = "https://app.gradata.ai";

/// The local API token (from `api.token_file`). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalToken(String);

impl LocalToken {
    /// Wraps a token read from a file (trimmed); `None` if empty.
    pub fn new(token: &str) -> Option<LocalToken> {
        let token = token.trim();
        (!token.is_empty()).then(|| LocalToken(token.to_owned()))
    }

    /// Constant-time comparison with a presented bearer token.
    fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for LocalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalToken(<redacted>)")
    }
}

/// The access rules, built from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Guards {
    /// Host names accepted besides loopback addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// Origins allowed to call the API from a browser (exact match, scheme included).
    pub cors_origins: Vec<String>,
    /// Required on writes when set.
    pub token: Option<LocalToken>,
}

/// Host, Origin and token checks, and CORS preflights, around the rest of the request (`next`).
pub(super) async fn check(guards: &Guards, request: Request, next: Next) -> Response {
    if let Err(err) = check_host(guards, &request) {
        return err.into_response();
    }
    let origin = match allowed_origin(guards, request.headers()) {
        Ok(origin) => origin,
        Err(err) => return err.into_response(),
    };
    if request.method() == Method::OPTIONS {
        return preflight(request.headers(), origin.as_ref());
    }
    let is_write = !matches!(*request.method(), Method::GET | Method::HEAD);
    if let (true, Some(token)) = (is_write, &guards.token) {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_start().split_once(' '))
            // The scheme is case-insensitive (RFC 9110 §11.1): some clients send `bearer`.
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
            .map(|(_, credentials)| credentials);
        if !presented.is_some_and(|p| token.matches(p.trim())) {
            return with_cors(ApiError::unauthorized().into_response(), origin.as_ref());
        }
    }
    with_cors(next.run(request).await, origin.as_ref())
}

/// The `Host` header (at most one), and the authority of an absolute-form request target
/// (`GET http://name/health`), which RFC 9112 §3.2.2 makes the one that counts: each present must
/// name loopback or an allowed host.
fn check_host(guards: &Guards, request: &Request) -> Result<(), ApiError> {
    if let Some(authority) = request.uri().authority() {
        check_host_name(guards, authority.as_str())?;
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    // No Host at all (HTTP/1.0, some unix-socket clients) cannot come from a browser page.
    let Some(host) = hosts.next() else {
        return Ok(());
    };
    // Which of two would count is anyone's guess; RFC 9112 §3.2 has such a request refused.
    if hosts.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the request has more than one Host header",
        ));
    }
    let host = host.to_str().map_err(|_| {
        ApiError::forbidden("host_not_allowed", "the Host header is not valid text")
    })?;
    check_host_name(guards, host)
}

/// `host` (`name` or `name:port`) names loopback or an allowed host.
fn check_host_name(guards: &Guards, host: &str) -> Result<(), ApiError> {
    let name = strip_port(host);
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback
        || guards
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "host_not_allowed",
            format!(
                "Host {host:?} is not loopback nor in api.allowed_hosts (DNS-rebinding protection)"
            ),
        ))
    }
}

/// `127.0.0.1:8765` → `127.0.0.1`, `[::1]:8765` → `::1`, `localhost` → `localhost`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The request's `Origin`, if it is allowed; an `Origin` that is not allowed is refused.
fn allowed_origin(guards: &Guards, headers: &HeaderMap) -> Result<Option<HeaderValue>, ApiError> {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = origins.next() else {
        return Ok(None);
    };
    // A browser sends one; a second makes the first's allowance meaningless.
    if origins.next().is_some() {
        return Err(ApiError::forbidden(
            "origin_not_allowed",
            "the request has more than one Origin header",
        ));
    }
    let text = origin.to_str().unwrap_or("");
    if guards.cors_origins.iter().any(|allowed| allowed == text) {
        Ok(Some(origin.clone()))
    } else {
        Err(ApiError::forbidden(
            "origin_not_allowed",
            format!("Origin {text:?} is not in api.cors_origins"),
        ))
    }
}

fn preflight(headers: &HeaderMap, origin: Option<&HeaderValue>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(
        header::ALLOW,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    if origin.is_some() {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Authorization"),
        );
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        // Private Network Access: only for an allowed origin that asks for it.
        if headers
            .get("access-control-request-private-network")
            .is_some()
        {
            out.insert(
                "access-control-allow-private-network",
                HeaderValue::from_static("true"),
            );
        }
    }
    with_cors(response, origin)
}

fn with_cors(mut response: Response, origin: Option<&HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, host: Option<&str>) -> Request {
        let mut request = Request::builder().uri(target);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        request.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn host_names() {
        let guards = Guards {
            allowed_hosts: vec!["gradata.internal".to_owned()],
            ..Guards::default()
        };
        for (host, allowed) in [
            ("127.0.0.1:8765", true),
            ("127.1.2.3", true),
            ("localhost:8765", true),
            ("LOCALHOST", true),
            ("[::1]:8765", true),
            ("gradata.internal:8765", true),
            ("evil.example:8765", false),
            ("127.0.0.1.evil.example", false),
            ("192.168.1.10:8765", false),
        ] {
            let in_header = check_host(&guards, &request("/health", Some(host))).is_ok();
            assert_eq!(in_header, allowed, "Host: {host}");
            // The same name as an absolute-form target's authority, with a loopback Host.
            let target = format!("http://{host}/health");
            let in_target = check_host(&guards, &request(&target, Some("127.0.0.1"))).is_ok();
            assert_eq!(in_target, allowed, "{target}");
        }
        assert!(check_host(&guards, &request("/health", None)).is_ok());
        let mut two_hosts = request("/health", Some("127.0.0.1"));
        two_hosts
            .headers_mut()
            .append(header::HOST, HeaderValue::from_static("evil.example"));
        assert!(check_host(&guards, &two_hosts).is_err());
        let userinfo = request("http://127.0.0.1@evil.example/health", Some("127.0.0.1"));
        assert!(check_host(&guards, &userinfo).is_err());
    }

    #[test]
    fn token_comparison() {
        let token = LocalToken::new(" secret\n").unwrap();
        assert!(token.matches("secret"));
        assert!(!token.matches("secreT"));
        assert!(!token.matches("secret2"));
        assert_eq!(format!("{token:?}"), "LocalToken(<redacted>)");
    }
}
