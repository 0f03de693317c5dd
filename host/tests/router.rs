//! The routes and the embedded executor loop in process
//! (`router(state).oneshot(request)`): protocol checks that need no spawned binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cretok_host::app::{AppState, EmbeddedWorker};
use cretok_host::server::{router, OriginPolicy, ServerState};
use cretok_nodes::{Paths, PreviewMethod, Registry};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The address the routes are told they are served on.
const LISTEN: &str = "127.0.0.1:8188";

/// An embedded host on a temporary data directory, its executor loop running.
struct Host {
    server: Arc<ServerState>,
    worker: Option<EmbeddedWorker>,
    _dir: tempfile::TempDir,
}

impl Host {
    fn start() -> Host {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let paths = Arc::new(Paths::new(dir.path(), None));
        std::fs::create_dir_all(paths.output_dir()).expect("output folder");
        let mut registry = Registry::new();
        cretok_nodes::builtin::register_all(&mut registry, Arc::clone(&paths));
        let app = AppState::new(paths, registry);
        let worker = app
            .spawn_worker(PreviewMethod::None)
            .expect("executor thread");
        let server = Arc::new(ServerState {
            app,
            frontend_dir: None,
            reload_nodes: Box::new(Vec::<String>::new),
        });
        Host {
            server,
            worker: Some(worker),
            _dir: dir,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, LISTEN)
            .body(body)
            .expect("request");
        let policy = OriginPolicy::new(LISTEN.parse().expect("address"), &[], &[])
            .expect("the default policy");
        let response = router(Arc::clone(&self.server), Arc::new(policy))
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

    async fn history(&self, prompt_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = self
                .call("GET", &format!("/history/{prompt_id}"), None)
                .await;
            if let Some(entry) = body.get(prompt_id) {
                return entry.clone();
            }
            assert!(Instant::now() < deadline, "{prompt_id} never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
    }
}

fn joined(text: &str) -> Value {
    json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "in process:"}},
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": text, "delimiter": " "}},
        "3": {"class_type": "SaveText", "inputs": {"text": ["2", 0], "filename_prefix": "router"}}
    })
}

#[tokio::test]
async fn a_posted_prompt_runs_on_the_executor_loop_into_history() {
    let host = Host::start();
    let (status, body) = host
        .call("POST", "/api/prompt", Some(json!({"prompt": joined("ok")})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["prompt_id"].as_str().expect("a prompt id").to_owned();
    let entry = host.history(&id).await;
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    assert_eq!(entry["outputs"]["3"]["text"], json!(["in process: ok"]));
    assert_eq!(entry["prompt"][1], id.as_str());
    let (_, queue) = host.call("GET", "/queue", None).await;
    assert_eq!(queue, json!({"queue_running": [], "queue_pending": []}));
    let (_, jobs) = host.call("GET", "/jobs", None).await;
    assert_eq!(jobs["jobs"][0]["id"], id.as_str(), "{jobs}");
    assert_eq!(jobs["jobs"][0]["status"], "completed", "{jobs}");
}

#[tokio::test]
async fn a_taken_prompt_id_gets_400_in_comfyui_s_error_shape() {
    let host = Host::start();
    let submit = json!({"prompt": joined("first"), "prompt_id": "mine"});
    let (status, _) = host.call("POST", "/prompt", Some(submit.clone())).await;
    assert_eq!(status, StatusCode::OK);
    host.history("mine").await;
    let (status, body) = host.call("POST", "/prompt", Some(submit)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["type"], "duplicate_prompt_id", "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("'mine'")),
        "{body}"
    );
    assert_eq!(body["node_errors"], json!({}));
}

#[tokio::test]
async fn invalid_prompts_and_bodies_get_400_and_nothing_runs() {
    let host = Host::start();
    let unknown = json!({"prompt": {"1": {"class_type": "Nope", "inputs": {}}}});
    let (status, body) = host.call("POST", "/prompt", Some(unknown)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["type"], "invalid_prompt", "{body}");
    let (status, body) = host.call("POST", "/prompt", Some(json!({}))).await;
    assert_eq!(
        (status, &body["error"]["type"]),
        (StatusCode::BAD_REQUEST, &json!("no_prompt"))
    );
    let (_, history) = host.call("GET", "/history", None).await;
    assert_eq!(history, json!({}));
}
