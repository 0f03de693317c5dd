//! The Redis backend in process: a `cretok worker` loop and a front over a
//! real `redis-server` (skipped with a message when none is installed, an
//! error under `CI=true`).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use cretok_host::app::{AppState, PromptRequest};
use cretok_host::backend::{HistoryStore, QueueBackend};
use cretok_host::executor::Outcome;
use cretok_host::history::{HistoryRecord, JobState};
use cretok_host::protocol::ServerMessage;
use cretok_host::redis_queue::{RedisQueue, RedisWorker, WorkerSettings};
use cretok_host::server::ServerState;
use cretok_nodes::{Paths, PreviewMethod, Registry};
use serde_json::{json, Value};

mod common;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` on a free port, killed on drop.
struct Redis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "redis-server is not installed; .ci/test installs it"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("a Redis folder");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let deadline = Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
            _dir: dir,
        })
    }

    /// Kills the server (Redis going down under a running front).
    fn stop(&mut self) {
        self.child.kill().expect("killing redis-server");
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn builtin_registry(paths: &Arc<Paths>) -> Registry {
    let mut registry = Registry::new();
    cretok_nodes::builtin::register_all(&mut registry, Arc::clone(paths));
    registry
}

/// A front (routes over the Redis queue and history), its data directory shared with workers.
struct Front {
    server: Arc<ServerState>,
    redis: Arc<RedisQueue>,
    paths: Arc<Paths>,
    _dir: tempfile::TempDir,
}

impl Front {
    fn connect(redis: &Redis) -> Front {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let paths = Arc::new(Paths::new(dir.path(), None));
        std::fs::create_dir_all(paths.output_dir()).expect("output folder");
        let shared = Arc::new(RedisQueue::connect(&redis.url).expect("the front connects"));
        let app = AppState::with_backend(
            Arc::clone(&paths),
            builtin_registry(&paths),
            Arc::clone(&shared) as _,
            Arc::clone(&shared) as _,
        );
        let server = Arc::new(ServerState {
            app,
            frontend_dir: None,
            reload_nodes: Box::new(Vec::<String>::new),
        });
        Front {
            server,
            redis: shared,
            paths,
            _dir: dir,
        }
    }

    fn submit(&self, prompt: Value) -> String {
        let request = PromptRequest {
            prompt,
            client_id: Some("alice".into()),
            extra_data: json!({"extra_pnginfo": {"workflow": {"id": "wf"}}}),
            ..PromptRequest::default()
        };
        match self.server.app.submit(request) {
            Ok(submitted) => submitted.prompt_id,
            Err(refused) => panic!("refused: {:?}", refused.failure().to_json()),
        }
    }

    fn finished(&self, prompt_id: &str) -> Arc<HistoryRecord> {
        wait_for(&format!("{prompt_id} in history"), || {
            self.redis.get(prompt_id).expect("Redis answers")
        })
    }
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `cretok worker` loop on a thread, stopped on drop.
struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(redis: &Redis, paths: &Arc<Paths>) -> Worker {
        let settings = WorkerSettings {
            name: "in-process".into(),
            claim_after: Duration::from_secs(30),
            max_deliveries: 3,
            previews: PreviewMethod::None,
        };
        let worker = RedisWorker::connect(
            &redis.url,
            settings,
            Arc::clone(paths),
            builtin_registry(paths),
        )
        .expect("the worker connects");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || worker.run(&flag).expect("the worker runs"));
        Worker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn delayed_text(text: &str, ms: u64) -> Value {
    json!({
        "1": {"class_type": "Delay", "inputs": {"text": text, "milliseconds": ms}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": "redis"}}
    })
}

fn event_names(record: &HistoryRecord) -> Vec<String> {
    record.events.iter().map(|e| e.name_and_data().0).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_typed_history_record_round_trips_through_redis() {
    let Some(redis) = Redis::start() else { return };
    let front = Front::connect(&redis);
    let _worker = Worker::start(&redis, &front.paths);

    let done = front.submit(delayed_text("through redis", 0));
    let record = front.finished(&done);
    assert_eq!(record.outcome, Outcome::Success);
    assert_eq!(record.prompt.prompt_id, done);
    assert_eq!(record.prompt.client_id.as_deref(), Some("alice"));
    assert_eq!(record.prompt.outputs, ["2"]);
    assert_eq!(record.prompt.prompt["1"]["inputs"]["text"], "through redis");
    assert_eq!(record.outputs["2"]["text"], json!(["through redis"]));
    assert_eq!(
        event_names(&record),
        ["execution_start", "execution_cached", "execution_success"]
    );
    let (started, ended) = (record.started_at(), record.ended_at());
    assert!(
        started.is_some() && started <= ended,
        "{started:?} {ended:?}"
    );

    let long = front.submit(delayed_text("never", 60_000));
    wait_for("the long prompt to run", || {
        let running = front.redis.running().expect("Redis answers");
        running.iter().any(|p| p.prompt_id == long).then_some(())
    });
    assert!(front.redis.interrupt(Some(&long)).expect("Redis answers"));
    let cancelled = front.finished(&long);
    assert_eq!(cancelled.job_state(), JobState::Cancelled);
    assert!(matches!(
        cancelled.events.last(),
        Some(ServerMessage::ExecutionInterrupted { .. })
    ));

    let page = front.redis.newest(&JobState::ALL, 0, 1).expect("a page");
    assert_eq!(page.total, 2);
    assert_eq!(page.records, [Arc::clone(&cancelled)]);
    let completed = front
        .redis
        .newest(&[JobState::Completed], 0, 10)
        .expect("a page");
    assert_eq!((completed.total, completed.records), (1, vec![record]));

    let (status, jobs) =
        common::call(&front.server, "GET", "/api/jobs?limit=1&offset=1", None).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    assert_eq!(jobs["jobs"][0]["id"], done.as_str(), "{jobs}");
    assert_eq!(jobs["jobs"][0]["workflow_id"], "wf", "{jobs}");
    assert_eq!(jobs["pagination"]["total"], 2, "{jobs}");
    let (_, entry) = common::call(&front.server, "GET", &format!("/history/{long}"), None).await;
    assert_eq!(entry[&long]["status"]["status_str"], "error", "{entry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_queue_and_history_routes_answer_503_with_the_cause() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let front = Front::connect(&redis);
    let (status, _) = common::call(&front.server, "GET", "/history", None).await;
    assert_eq!(status, StatusCode::OK);
    redis.stop();
    let reads = [
        "/queue",
        "/prompt",
        "/history",
        "/history/x",
        "/jobs",
        "/jobs/x",
    ];
    let writes = [
        ("/history", json!({"clear": true})),
        ("/queue", json!({"delete": ["x"]})),
        ("/interrupt", json!({})),
        ("/free", json!({})),
        ("/jobs/x/cancel", json!({})),
    ];
    let calls = reads.into_iter().map(|path| ("GET", path, None)).chain(
        writes
            .into_iter()
            .map(|(path, body)| ("POST", path, Some(body))),
    );
    for (method, path, body) in calls {
        let (status, answer) = common::call(&front.server, method, path, body).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {answer}"
        );
        assert_eq!(
            answer["error"]["type"], "queue_unavailable",
            "{path}: {answer}"
        );
        let details = answer["error"]["details"].as_str().unwrap_or_default();
        assert!(details.starts_with("Redis "), "{path}: {answer}");
    }
    let (status, _) = common::call(&front.server, "GET", "/object_info/Delay", None).await;
    assert_eq!(status, StatusCode::OK);
}
