//! The routes and the embedded executor loop in process
//! (`router(state).oneshot(request)`): protocol checks that need no spawned binary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cretok_host::app::{AppState, EmbeddedWorker};
use cretok_host::backend::{BackendResult, HistoryPage, HistoryStore, QueuedPrompt};
use cretok_host::executor::Outcome;
use cretok_host::history::{History, HistoryRecord, JobState, MAX_HISTORY};
use cretok_host::protocol::{FailedNode, ServerMessage};
use cretok_host::queue::PromptQueue;
use cretok_host::server::ServerState;
use cretok_nodes::{Paths, PreviewMethod, Registry};
use serde_json::{json, Value};

mod common;

/// An embedded host on a temporary data directory, its executor loop running.
struct Host {
    server: Arc<ServerState>,
    worker: Option<EmbeddedWorker>,
    dir: tempfile::TempDir,
}

impl Host {
    /// A host whose queue nobody runs, over `history`.
    fn over_history(history: Arc<dyn HistoryStore>) -> Host {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let paths = Arc::new(Paths::new(dir.path(), None));
        let app = AppState::with_backend(
            paths,
            Registry::new(),
            Arc::new(PromptQueue::new()),
            history,
        );
        Host::serving(app, None, dir)
    }

    /// The server of `app`, without a frontend, over `dir`.
    fn serving(app: Arc<AppState>, worker: Option<EmbeddedWorker>, dir: tempfile::TempDir) -> Host {
        let server = Arc::new(ServerState {
            app,
            frontend_dir: None,
            reload_nodes: Box::new(Vec::<String>::new),
        });
        Host {
            server,
            worker,
            dir,
        }
    }

    fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

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
        Host::serving(app, Some(worker), dir)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        common::call(&self.server, method, path, body).await
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
async fn partial_execution_targets_run_only_the_chosen_outputs() {
    let host = Host::start();
    let save = |text: &str| json!({"class_type": "SaveText", "inputs": {"text": text, "filename_prefix": "partial"}});
    let prompt = json!({
        "1": save("chosen"),
        "2": {"class_type": "SaveText", "inputs": {"text": "no prefix"}},
        "3": save("not chosen")
    });
    let submit = json!({"prompt": prompt, "partial_execution_targets": ["1"]});
    let (status, body) = host.call("POST", "/prompt", Some(submit)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["node_errors"],
        json!({}),
        "errors outside the targets are ignored"
    );
    let entry = host.history(body["prompt_id"].as_str().unwrap()).await;
    let outputs: Vec<&String> = entry["outputs"].as_object().unwrap().keys().collect();
    assert_eq!(outputs, ["1"], "{entry}");
    assert_eq!(entry["prompt"][4], json!(["1"]));

    let bad = json!({"prompt": {"1": save("x")}, "partial_execution_targets": "1"});
    let (status, body) = host.call("POST", "/prompt", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
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

/// History that remembers the most records one call handed out.
#[derive(Default)]
struct CountingHistory {
    inner: History,
    most_read: AtomicUsize,
}

impl CountingHistory {
    fn read<T>(&self, records: &[T]) {
        self.most_read.fetch_max(records.len(), Ordering::SeqCst);
    }
}

impl HistoryStore for CountingHistory {
    fn get(&self, prompt_id: &str) -> BackendResult<Option<Arc<HistoryRecord>>> {
        self.inner.get(prompt_id)
    }
    fn list(
        &self,
        max_items: Option<usize>,
        offset: Option<usize>,
    ) -> BackendResult<Vec<Arc<HistoryRecord>>> {
        let records = self.inner.list(max_items, offset)?;
        self.read(&records);
        Ok(records)
    }
    fn newest(
        &self,
        wanted: &[JobState],
        offset: usize,
        limit: usize,
    ) -> BackendResult<HistoryPage> {
        let page = self.inner.newest(wanted, offset, limit)?;
        self.read(&page.records);
        Ok(page)
    }
    fn delete(&self, prompt_ids: &[String]) -> BackendResult<()> {
        self.inner.delete(prompt_ids)
    }
    fn clear(&self) -> BackendResult<()> {
        self.inner.clear()
    }
}

/// Finished prompt `i`: every seventh failed, with start and end times.
fn finished(i: usize) -> HistoryRecord {
    let prompt_id = format!("p{i}");
    let end = if i.is_multiple_of(7) {
        ServerMessage::ExecutionError {
            failed: FailedNode {
                prompt_id: prompt_id.clone(),
                node_id: "1".into(),
                node_type: "Delay".into(),
                executed: vec![],
            },
            exception_message: format!("failure {i}"),
            exception_type: "RuntimeError".into(),
            traceback: vec![],
            current_inputs: json!({}),
            current_outputs: vec![],
            timestamp: 2000 + i as u64,
        }
    } else {
        ServerMessage::ExecutionSuccess {
            prompt_id: prompt_id.clone(),
            timestamp: 2000 + i as u64,
        }
    };
    HistoryRecord {
        prompt: QueuedPrompt {
            prompt_id: prompt_id.clone(),
            number: i as i64,
            prompt: json!({"1": {"class_type": "Delay", "inputs": {"text": i.to_string()}}}),
            extra_data: json!({"create_time": 1000 + i}),
            outputs: vec!["1".into()],
            client_id: None,
        },
        outcome: if i.is_multiple_of(7) {
            Outcome::Error
        } else {
            Outcome::Success
        },
        outputs: [(
            "1".to_owned(),
            json!({"images": [{"filename": format!("{i}.png"), "subfolder": "", "type": "output"}]}),
        )]
        .into(),
        events: vec![
            ServerMessage::ExecutionStart {
                prompt_id,
                timestamp: 1500 + i as u64,
            },
            end,
        ],
    }
}

fn ids(jobs: &Value) -> Vec<&str> {
    jobs["jobs"]
        .as_array()
        .expect("a job list")
        .iter()
        .map(|j| j["id"].as_str().expect("an id"))
        .collect()
}

#[tokio::test]
async fn jobs_and_history_page_over_a_full_history_reading_only_the_page() {
    let history = Arc::new(CountingHistory::default());
    for i in 0..MAX_HISTORY {
        history.inner.insert(finished(i));
    }
    let host = Host::over_history(Arc::clone(&history) as _);

    let (status, jobs) = host.call("GET", "/api/jobs?limit=3&offset=2", None).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    assert_eq!(ids(&jobs), ["p9997", "p9996", "p9995"]);
    assert_eq!(
        jobs["pagination"],
        json!({"offset": 2, "limit": 3, "total": MAX_HISTORY, "has_more": true})
    );
    let newest = &jobs["jobs"][0];
    assert_eq!(newest["status"], "completed", "{newest}");
    assert_eq!(
        (
            &newest["execution_start_time"],
            &newest["execution_end_time"]
        ),
        (&json!(1500 + 9997), &json!(2000 + 9997))
    );
    assert_eq!(newest["preview_output"]["filename"], "9997.png");

    let (_, last) = host.call("GET", "/jobs?offset=9998", None).await;
    assert_eq!(ids(&last), ["p1", "p0"]);
    assert_eq!(last["pagination"]["has_more"], false);

    let (_, failed) = host
        .call("GET", "/jobs?status=failed&limit=2&offset=1", None)
        .await;
    assert_eq!(ids(&failed), ["p9989", "p9982"]);
    assert_eq!(failed["pagination"]["total"], MAX_HISTORY.div_ceil(7));
    assert_eq!(
        failed["jobs"][0]["execution_error"]["exception_message"],
        "failure 9989"
    );
    let (_, pending) = host.call("GET", "/jobs?status=pending", None).await;
    assert_eq!(pending["pagination"]["total"], 0, "{pending}");

    let (_, page) = host
        .call("GET", "/history?max_items=2&offset=5", None)
        .await;
    let keys: Vec<&String> = page.as_object().expect("entries").keys().collect();
    assert_eq!(keys, ["p5", "p6"]);
    assert_eq!(page["p5"]["prompt"][1], "p5");

    let (status, detail) = host.call("GET", "/jobs/p42", None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["workflow"]["extra_data"]["create_time"], 1042);
    assert_eq!(detail["execution_status"]["status_str"], "error");
    assert_eq!(detail["outputs"]["1"]["images"][0]["filename"], "42.png");
    let (status, _) = host.call("GET", "/jobs/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert!(
        history.most_read.load(Ordering::SeqCst) <= 3,
        "a route read {} history records for a page of at most 3",
        history.most_read.load(Ordering::SeqCst)
    );
}

/// A `multipart/form-data` upload of `image` as `name`, with text `fields`.
fn upload(name: &str, image: &[u8], fields: &[(&str, &str)]) -> Request<Body> {
    const BOUNDARY: &str = "cretok-test-boundary";
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(image);
    for (field, value) in fields {
        body.extend_from_slice(
            format!(
                "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Request::builder()
        .method("POST")
        .uri("/upload/image")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body))
        .expect("request")
}

/// Files of the data folder whose name starts with `.tmp` (unfinished uploads).
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("the data folder")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(".tmp"))
        .collect()
}

#[tokio::test]
async fn uploads_stream_to_their_folder_and_oversized_ones_leave_nothing() {
    let host = Host::start();
    let image: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (status, body) = common::send(
        &host.server,
        upload("cat.png", &image, &[("subfolder", "pets")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"name": "cat.png", "subfolder": "pets", "type": "input"})
    );
    let stored = host.data_dir().join("input/pets/cat.png");
    assert!(std::fs::read(&stored).expect("the uploaded file") == image);

    let (_, again) = common::send(
        &host.server,
        upload("cat.png", b"second", &[("subfolder", "pets")]),
    )
    .await;
    assert_eq!(again["name"], "cat (1).png", "{again}");
    let fields = [("subfolder", "pets"), ("overwrite", "true")];
    let (_, replaced) = common::send(&host.server, upload("cat.png", b"third", &fields)).await;
    assert_eq!(replaced["name"], "cat.png", "{replaced}");
    assert_eq!(std::fs::read(&stored).expect("the replaced file"), b"third");

    let (status, refused) = common::send(&host.server, upload("../x.png", b"x", &[])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");

    let oversized = vec![0u8; cretok_host::server::MAX_UPLOAD_BYTES + 1];
    let (status, refused) = common::send(&host.server, upload("big.png", &oversized, &[])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{refused}");
    assert_eq!(refused["error"]["type"], "upload_too_large", "{refused}");
    assert!(!host.data_dir().join("input/big.png").exists());
    assert_eq!(leftovers(host.data_dir()), Vec::<String>::new());
}
