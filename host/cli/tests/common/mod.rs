//! What the in-process route tests share: one request through the whole
//! router, as a client on the default address sends it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cretok_host::server::{router, OriginPolicy, ServerState};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The address the routes are told they are served on.
const LISTEN: &str = "127.0.0.1:8188";

/// Sends `method path` with an optional JSON body; answers the status and the
/// body as JSON (or as a JSON string when it is not JSON).
pub async fn call(
    server: &Arc<ServerState>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(body)
        .expect("request");
    send(server, request).await
}

/// Sends `request` (its `Host` set to the default address).
pub async fn send(server: &Arc<ServerState>, mut request: Request<Body>) -> (StatusCode, Value) {
    request
        .headers_mut()
        .insert(header::HOST, header::HeaderValue::from_static(LISTEN));
    let policy =
        OriginPolicy::new(LISTEN.parse().expect("address"), &[], &[]).expect("the default policy");
    let response = router(Arc::clone(server), Arc::new(policy))
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, json)
}
