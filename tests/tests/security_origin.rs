//! The origin and host policy (docs/security.md): no web page on another
//! origin and no DNS-rebinding host can drive the server, read what it holds or
//! open its websocket; the CLI, scripts, our own pages and the front ends
//! allowed with `--allow-origin` work as before.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use cretok_tests::{files_under, Server};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const FRONT_END: &str = "http://front.example:5173";
const PROXY_NAME: &str = "studio.example";

/// A request body as a page could send it.
#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Upload,
}

struct Call {
    method: Method,
    path: &'static str,
    body: Body,
}

fn call(method: Method, path: &'static str, body: Body) -> Call {
    Call { method, path, body }
}

fn prompt(text: &str) -> Value {
    json!({
        "1": {"class_type": "StringConcatenate", "inputs": {"string_a": text, "string_b": "!", "delimiter": ""}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": "origin/t"}},
    })
}

/// Every route that changes something, and the GETs that give data away
/// (the move and delete last, so that each pass finds the workflow to read).
fn routes() -> Vec<Call> {
    use Body::*;
    vec![
        call(
            Method::POST,
            "/prompt",
            Json(json!({"prompt": prompt("pwned")})),
        ),
        call(
            Method::POST,
            "/api/prompt",
            Json(json!({"prompt": prompt("pwned")})),
        ),
        call(
            Method::POST,
            "/userdata/workflows%2Fkeep.json",
            Json(json!("pwned")),
        ),
        call(Method::POST, "/settings", Json(json!({"Comfy.X": "pwned"}))),
        call(Method::POST, "/api/settings/Comfy.X", Json(json!("pwned"))),
        call(Method::POST, "/upload/image", Upload),
        call(Method::POST, "/interrupt", Json(json!({}))),
        call(Method::POST, "/free", Json(json!({"unload_models": true}))),
        call(Method::POST, "/queue", Json(json!({"clear": true}))),
        call(Method::POST, "/history", Json(json!({"clear": true}))),
        call(Method::POST, "/jobs/cancel", Json(json!({"job_ids": []}))),
        call(Method::POST, "/custom_nodes/reload", None),
        call(Method::GET, "/history", None),
        call(Method::GET, "/api/history", None),
        call(Method::GET, "/system_stats", None),
        call(Method::GET, "/queue", None),
        call(Method::GET, "/jobs", None),
        call(Method::GET, "/settings", None),
        call(Method::GET, "/userdata?dir=workflows", None),
        call(Method::GET, "/userdata/workflows%2Fkeep.json", None),
        call(Method::GET, "/view?filename=seen.txt&type=output", None),
        call(Method::GET, "/object_info", None),
        call(Method::GET, "/", None),
        call(
            Method::POST,
            "/api/userdata/workflows%2Fkeep.json/move/workflows%2Fmoved.json?overwrite=true",
            None,
        ),
        call(Method::DELETE, "/userdata/workflows%2Fkeep.json", None),
    ]
}

/// The headers of one kind of request a hostile page (or rebinding name) sends.
fn attacks(port: u16) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let evil = || ("origin", "http://evil.example".to_owned());
    vec![
        ("foreign Origin", vec![evil()]),
        ("Origin: null", vec![("origin", "null".to_owned())]),
        (
            "text/plain from a foreign Origin",
            vec![
                evil(),
                ("content-type", "text/plain;charset=UTF-8".to_owned()),
            ],
        ),
        (
            "form from a foreign Origin",
            vec![
                evil(),
                (
                    "content-type",
                    "application/x-www-form-urlencoded".to_owned(),
                ),
            ],
        ),
        (
            "Sec-Fetch-Site: cross-site",
            vec![("sec-fetch-site", "cross-site".to_owned())],
        ),
        (
            "our own Origin marked cross-site",
            vec![
                ("origin", format!("http://127.0.0.1:{port}")),
                ("sec-fetch-site", "cross-site".to_owned()),
            ],
        ),
        (
            "a foreign origin on our port",
            vec![("origin", format!("http://evil.example:{port}"))],
        ),
        (
            "DNS rebinding Host",
            vec![("host", format!("rebind.example:{port}"))],
        ),
        (
            "rebinding Host with the matching Origin",
            vec![
                ("host", format!("rebind.example:{port}")),
                ("origin", format!("http://rebind.example:{port}")),
            ],
        ),
    ]
}

async fn send(server: &Server, c: &Call, headers: &[(&str, String)]) -> Result<(u16, HeaderMap)> {
    let mut request = server.http.request(c.method.clone(), server.url(c.path));
    request = match &c.body {
        Body::None => request,
        Body::Json(v) => request.body(v.to_string()),
        Body::Upload => {
            let part = reqwest::multipart::Part::bytes(b"fake png".to_vec()).file_name("up.png");
            request.multipart(reqwest::multipart::Form::new().part("image", part))
        }
    };
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.headers().clone()))
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_default();
            (path.display().to_string(), bytes)
        })
        .collect()
}

async fn state(server: &Server) -> Result<(Value, Value, BTreeMap<String, Vec<u8>>)> {
    let (_, queue) = server.get("/queue").await?;
    let (_, history) = server.get("/history").await?;
    Ok((queue, history, snapshot(&server.data_dir)))
}

fn port(server: &Server) -> u16 {
    server
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in the base URL")
}

async fn start() -> Result<(tempfile::TempDir, Server)> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(
        dir.path(),
        &["--allow-origin", FRONT_END, "--allow-host", PROXY_NAME],
    )
    .await?;
    Ok((dir, server))
}

/// A finished prompt in history, one running for a long time, one waiting,
/// settings and a saved workflow: what an attack could change.
async fn populate(server: &Server) -> Result<()> {
    let done = server.queue(&prompt("first"), "t").await?;
    server.wait_history(&done).await?;
    let slow = json!({
        "1": {"class_type": "Delay", "inputs": {"text": "x", "milliseconds": 120000}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": "slow"}},
    });
    server.queue(&slow, "t").await?;
    server.queue(&prompt("waiting"), "t").await?;
    let (status, _) = server
        .post("/settings", &json!({"Comfy.X": "mine"}))
        .await?;
    assert_eq!(status, 200);
    let (status, _) = server
        .post("/userdata/workflows%2Fkeep.json", &json!({"nodes": []}))
        .await?;
    assert_eq!(status, 200);
    std::fs::write(server.data_dir.join("output/seen.txt"), "output file")?;
    Ok(())
}

#[tokio::test]
async fn hostile_requests_are_refused_and_change_nothing() -> Result<()> {
    let (_dir, server) = start().await?;
    populate(&server).await?;
    let before = state(&server).await?;
    for (attack, headers) in attacks(port(&server)) {
        for c in routes() {
            let (status, response) = send(&server, &c, &headers).await?;
            assert_eq!(status, 403, "{attack}: {} {}", c.method, c.path);
            assert!(
                !response.contains_key("access-control-allow-origin"),
                "{attack}: {} {} got CORS headers",
                c.method,
                c.path
            );
        }
    }
    let after = state(&server).await?;
    assert_eq!(before.0, after.0, "the queue changed");
    assert_eq!(before.1, after.1, "the history changed");
    assert!(before.2 == after.2, "files in the data directory changed");
    let running = after.0["queue_running"].as_array().map_or(0, Vec::len);
    assert_eq!(running, 1, "the slow prompt was interrupted");
    server.post("/interrupt", &json!({})).await?;
    Ok(())
}

#[tokio::test]
async fn clients_without_origin_and_our_own_pages_work() -> Result<()> {
    let (_dir, server) = start().await?;
    populate(&server).await?;
    let port = port(&server);
    let own = [
        vec![],
        vec![
            ("origin", format!("http://127.0.0.1:{port}")),
            ("sec-fetch-site", "same-origin".to_owned()),
        ],
        vec![("origin", format!("http://localhost:{port}"))],
        vec![("host", format!("localhost:{port}"))],
        vec![("host", format!("[::1]:{port}"))],
        vec![("host", PROXY_NAME.to_owned())],
        vec![
            ("host", PROXY_NAME.to_owned()),
            ("origin", format!("https://{PROXY_NAME}")),
        ],
    ];
    for headers in &own {
        for c in routes() {
            let (status, _) = send(&server, &c, headers).await?;
            let expected_missing = c.method != Method::GET && status == 404;
            assert!(
                status < 400 || expected_missing,
                "{headers:?}: {} {} answered {status}",
                c.method,
                c.path
            );
        }
    }
    // The writes of the last pass really happened.
    let (_, settings) = server.get("/settings").await?;
    assert_eq!(settings["Comfy.X"], "pwned");
    assert!(server.data_dir.join("input/up.png").is_file());
    Ok(())
}

#[tokio::test]
async fn allowed_front_end_gets_cors_and_preflight_answers() -> Result<()> {
    let (_dir, server) = start().await?;
    let preflight = |origin: &str| {
        server
            .http
            .request(Method::OPTIONS, server.url("/prompt"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let answer = preflight(FRONT_END).await?;
    assert_eq!(answer.status().as_u16(), 204);
    let headers = answer.headers();
    assert_eq!(headers["access-control-allow-origin"], FRONT_END);
    assert!(headers["access-control-allow-methods"]
        .to_str()?
        .contains("POST"));
    assert_eq!(headers["access-control-allow-headers"], "content-type");

    let refused = preflight("http://evil.example").await?;
    assert_eq!(refused.status().as_u16(), 403);
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));

    let posted = server
        .http
        .post(server.url("/prompt"))
        .header("origin", FRONT_END)
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/json")
        .body(json!({"prompt": prompt("from the front end")}).to_string())
        .send()
        .await?;
    assert_eq!(posted.status().as_u16(), 200);
    assert_eq!(posted.headers()["access-control-allow-origin"], FRONT_END);
    assert_eq!(posted.headers()["vary"], "Origin");

    let plain = server.http.get(server.url("/queue")).send().await?;
    assert!(!plain.headers().contains_key("access-control-allow-origin"));
    Ok(())
}

/// Opens the websocket with extra handshake headers; returns the HTTP status
/// of a refusal, or 101 when it opened and sent its first status message.
async fn ws_status(server: &Server, headers: &[(&'static str, String)]) -> Result<u16> {
    let url = format!(
        "{}/ws?clientId=o",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse()?);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut stream, _)) => {
            use futures_util::StreamExt;
            let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await?;
            match first {
                Some(Ok(message)) if message.to_text()?.contains("\"status\"") => Ok(101),
                other => bail!("unexpected first message {other:?}"),
            }
        }
        Err(WsError::Http(response)) => Ok(response.status().as_u16()),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn websocket_upgrade_follows_the_same_policy() -> Result<()> {
    let (_dir, server) = start().await?;
    let port = port(&server);
    for (attack, headers) in attacks(port) {
        assert_eq!(ws_status(&server, &headers).await?, 403, "{attack}");
    }
    for headers in [
        vec![],
        vec![("origin", format!("http://127.0.0.1:{port}"))],
        vec![("origin", format!("http://localhost:{port}"))],
        vec![("origin", FRONT_END.to_owned())],
        vec![("host", PROXY_NAME.to_owned())],
    ] {
        assert_eq!(ws_status(&server, &headers).await?, 101, "{headers:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_wildcard_allow_origin_is_refused_at_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let started = Server::start(dir.path(), &["--allow-origin", "*"]).await;
    assert!(started.is_err(), "a wildcard origin was accepted");
    Ok(())
}
