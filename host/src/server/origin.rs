//! Which web pages and host names may talk to the server: one middleware in
//! front of every route and the websocket upgrade (see docs/security.md).
//!
//! - `Host` must name this server: the listen address, a loopback name, or a
//!   name given with `--allow-host` (refuses DNS rebinding).
//! - A request carrying `Origin` must come from the server's own origin (its
//!   loopback aliases included) or one given with `--allow-origin`; `Origin: null`
//!   and `Sec-Fetch-Site: cross-site` are refused (refuses cross-site requests).
//! - Requests without `Origin` (the CLI, scripts, API clients) pass.
//!
//! Allowed origins get CORS headers and preflight answers; nobody else does.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// An `--allow-origin` value that is not a plain `scheme://host[:port]`.
#[derive(Debug, thiserror::Error)]
#[error("--allow-origin '{0}' is not an origin like https://studio.example.com or http://localhost:5173 (no path, no wildcard)")]
pub struct BadOrigin(String);

/// The access policy of one listening server.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    listen: SocketAddr,
    /// `--allow-host` names, lower case.
    hosts: Vec<String>,
    /// `--allow-origin` origins, normalised (`scheme://host[:port]`, default port dropped).
    origins: Vec<String>,
}

impl OriginPolicy {
    /// The policy for a server bound to `listen` (the real port, after binding).
    pub fn new(
        listen: SocketAddr,
        allow_hosts: &[String],
        allow_origins: &[String],
    ) -> Result<Self, BadOrigin> {
        let origins = allow_origins
            .iter()
            .map(|o| {
                Authority::of_origin(o)
                    .map(|a| a.origin())
                    .ok_or_else(|| BadOrigin(o.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(OriginPolicy {
            listen,
            hosts: allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            origins,
        })
    }

    /// Whether `Host` names this server.
    fn host_allowed(&self, host: &Authority) -> bool {
        if self.hosts.contains(&host.host) {
            return true;
        }
        if host.port.unwrap_or(80) != self.listen.port() {
            return false;
        }
        match host.ip() {
            // DNS rebinding needs a name: an address literal is what it says.
            Some(ip) => {
                ip == self.listen.ip() || ip.is_loopback() || self.listen.ip().is_unspecified()
            }
            None => host.host == "localhost",
        }
    }

    /// The `--allow-origin` entry `origin` matches, if any.
    fn listed(&self, origin: &Authority) -> Option<String> {
        let origin = origin.origin();
        self.origins.contains(&origin).then_some(origin)
    }
}

/// `host[:port]` of a `Host` header or an origin, lower case; `scheme` is empty
/// for `Host`. An origin's port is `None` when it is its scheme's default, as a
/// `Host` header's is when the URL had none.
#[derive(Debug, PartialEq)]
struct Authority {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn of_host(value: &str) -> Option<Self> {
        Self::parse("", value)
    }

    fn of_origin(origin: &str) -> Option<Self> {
        let (scheme, rest) = origin.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let mut origin = Self::parse(&scheme, rest.strip_suffix('/').unwrap_or(rest))?;
        if origin.port == Some(default_port) {
            origin.port = None;
        }
        Some(origin)
    }

    fn parse(scheme: &str, authority: &str) -> Option<Self> {
        let authority = authority.to_ascii_lowercase();
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, Some(port.parse().ok()?)),
            _ => (authority.as_str(), None),
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || ".-_[]:".contains(c);
        if host.is_empty() || !host.chars().all(plain) {
            return None;
        }
        Some(Authority {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            port,
        })
    }

    fn ip(&self) -> Option<IpAddr> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse().ok()
    }

    fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.ip().is_some_and(|ip| ip.is_loopback())
    }

    /// Same server as `host`: same name and port, or loopback names on the same port.
    fn same_server(&self, host: &Authority) -> bool {
        self.port == host.port
            && (self.host == host.host || (self.is_loopback() && host.is_loopback()))
    }

    fn origin(&self) -> String {
        match self.port {
            None => format!("{}://{}", self.scheme, self.host),
            Some(port) => format!("{}://{}:{}", self.scheme, self.host, port),
        }
    }
}

fn refuse(reason: String) -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Request refused by the origin policy",
        format!("{reason} (see docs/security.md: --allow-origin, --allow-host)"),
    )
    .into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// What to do with a request: refuse it, or pass it on with CORS headers for
/// this allowed origin (if any).
fn decide(policy: &OriginPolicy, headers: &HeaderMap) -> Result<Option<String>, String> {
    let host_value = header_str(headers, &header::HOST).unwrap_or_default();
    let host = Authority::of_host(host_value)
        .filter(|h| policy.host_allowed(h))
        .ok_or_else(|| format!("Host '{host_value}' is not this server"))?;
    let Some(origin_value) = header_str(headers, &header::ORIGIN) else {
        return match header_str(headers, &SEC_FETCH_SITE) {
            Some("cross-site") => Err("cross-site request".to_owned()),
            _ => Ok(None),
        };
    };
    let origin = Authority::of_origin(origin_value)
        .ok_or_else(|| format!("Origin '{origin_value}' is not allowed"))?;
    if let Some(listed) = policy.listed(&origin) {
        return Ok(Some(listed));
    }
    let cross_site = header_str(headers, &SEC_FETCH_SITE) == Some("cross-site");
    if origin.same_server(&host) && !cross_site {
        Ok(None)
    } else {
        Err(format!("Origin '{origin_value}' is not allowed"))
    }
}

const SEC_FETCH_SITE: header::HeaderName = header::HeaderName::from_static("sec-fetch-site");

/// The middleware: refuses with 403 before any handler runs, answers CORS
/// preflights for allowed origins, and adds CORS headers to their responses.
pub async fn enforce(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let cors_origin = match decide(&policy, request.headers()) {
        Ok(origin) => origin,
        Err(reason) => {
            tracing::warn!(
                "refused {} {}: {reason}",
                request.method(),
                request.uri().path()
            );
            return refuse(reason);
        }
    };
    let Some(origin) = cors_origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        preflight_answer(request.headers())
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

fn preflight_answer(request: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(listen: &str) -> OriginPolicy {
        OriginPolicy::new(
            listen.parse().unwrap(),
            &["studio.example.com".to_owned()],
            &["https://Front.Example.com/".to_owned()],
        )
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn hosts() {
        let local = policy("127.0.0.1:8188");
        for good in [
            "127.0.0.1:8188",
            "localhost:8188",
            "[::1]:8188",
            "studio.example.com",
        ] {
            assert!(
                decide(&local, &headers(&[("host", good)])).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "evil.example:8188",
            "127.0.0.1:8189",
            "localhost",
            "",
            "a b:8188",
        ] {
            assert!(decide(&local, &headers(&[("host", bad)])).is_err(), "{bad}");
        }
        let lan = policy("0.0.0.0:8188");
        assert!(decide(&lan, &headers(&[("host", "192.168.1.20:8188")])).is_ok());
        assert!(decide(&lan, &headers(&[("host", "rebind.example:8188")])).is_err());
    }

    #[test]
    fn origins() {
        let p = policy("127.0.0.1:8188");
        let ask = |origin: &str, site: &str| {
            let mut h = headers(&[("host", "127.0.0.1:8188"), ("origin", origin)]);
            if !site.is_empty() {
                h.insert("sec-fetch-site", site.parse().unwrap());
            }
            decide(&p, &h)
        };
        assert_eq!(ask("http://127.0.0.1:8188", "same-origin"), Ok(None));
        assert_eq!(ask("http://localhost:8188", ""), Ok(None));
        assert_eq!(
            ask("https://front.example.com", "cross-site"),
            Ok(Some("https://front.example.com".to_owned()))
        );
        for bad in [
            "null",
            "http://evil.example",
            "http://127.0.0.1:8189",
            "http://localhost:8188.evil.example",
            "file://",
            "https://front.example.com:8443",
        ] {
            assert!(ask(bad, "").is_err(), "{bad}");
        }
        assert!(ask("http://127.0.0.1:8188", "cross-site").is_err());
        let no_origin = headers(&[("host", "127.0.0.1:8188"), ("sec-fetch-site", "cross-site")]);
        assert!(decide(&p, &no_origin).is_err());
    }

    #[test]
    fn allow_origin_must_be_an_origin() {
        let addr = "127.0.0.1:8188".parse().unwrap();
        for bad in [
            "*",
            "front.example.com",
            "https://a.example/path",
            "ftp://a",
        ] {
            assert!(
                OriginPolicy::new(addr, &[], &[bad.to_owned()]).is_err(),
                "{bad}"
            );
        }
    }
}
