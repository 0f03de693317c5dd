//! Helpers shared by the end-to-end tests: start the real `cretok` binary,
//! talk to it over HTTP and websockets.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The `cretok` binary next to the test executables (`cargo test --workspace` builds it), built
/// first with the test's own cargo and profile when it is missing or older than the sources it
/// is built from: an end-to-end test never runs a stale binary.
pub fn cretok_bin() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED.get_or_init(fresh_binary).clone()
}

/// What the binary is built from.
const BINARY_SOURCES: [&str; 10] = [
    "host/src",
    "host/Cargo.toml",
    "host/cli/src",
    "host/cli/Cargo.toml",
    "nodes/src",
    "nodes/Cargo.toml",
    "nodes/api/src",
    "nodes/support/src",
    "nodes/model/src",
    "wit/since_v0.1.0",
];

fn fresh_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = profile_dir.join(format!("cretok{}", std::env::consts::EXE_SUFFIX));
    if let Some(why) = stale(&bin) {
        build_binary(profile_dir, &format!("{} is {why}", bin.display()));
    }
    bin
}

/// Why `bin` must be built before it runs (missing, or older than a source), if it must.
fn stale(bin: &Path) -> Option<String> {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return Some("missing".into());
    };
    let root = repo_root();
    BINARY_SOURCES
        .iter()
        .find_map(|s| changed_after(&root.join(s), built))
        .map(|source| format!("older than {}", source.display()))
}

/// `cargo build -p cretok` into the target directory that holds `profile_dir`, with its profile.
/// Cargo decides what is out of date from there on.
fn build_binary(profile_dir: &Path, why: &str) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("{}: not a profile directory", profile_dir.display()),
    };
    let target_dir = profile_dir.parent().expect("target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("{why}: cargo build -p cretok --profile {profile}");
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "-p",
            "cretok",
            "--bin",
            "cretok",
            "--profile",
            profile,
        ])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(repo_root())
        .status()
        .expect("running cargo");
    assert!(status.success(), "{why}, and building it failed");
}

/// A file at or under `path` changed after `time`, if any.
fn changed_after(path: &Path, time: std::time::SystemTime) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta
            .modified()
            .is_ok_and(|m| m > time)
            .then(|| path.to_path_buf());
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .find_map(|entry| changed_after(&entry.path(), time))
}

/// Builds example guest components from `wit/examples` (shared with the host's
/// sandbox tests, so each is compiled once) and returns the folder holding
/// `<crate name>.wasm`. `target_tmp` is the test's `CARGO_TARGET_TMPDIR`.
pub fn example_components(target_tmp: &Path, crates: &[&str]) -> PathBuf {
    let root = target_tmp.join("wasm-guests");
    let out = root.join("components");
    let crates: Vec<String> = crates.iter().map(|c| c.to_string()).collect();
    cretok_componentize::build_workspace(
        &repo_root().join("wit/examples"),
        &root.join("target"),
        &out,
        &crates,
    )
    .unwrap_or_else(|e| panic!("building the guest nodes {crates:?}: {e}"));
    out
}

/// Runs `cretok ARGS` from the repository root and fails the test unless it
/// succeeds.
pub fn cretok_ok(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(cretok_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("cretok runs");
    assert_succeeded(&out, args);
    out
}

/// Runs `cretok ARGS --data-dir DATA_DIR` from the repository root.
pub fn cretok_with_data(args: &[&str], data_dir: &Path) -> std::process::Output {
    std::process::Command::new(cretok_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(repo_root())
        .output()
        .expect("cretok runs")
}

/// [`cretok_with_data`] that fails the test unless it succeeds; its stdout.
pub fn cretok_with_data_ok(args: &[&str], data_dir: &Path) -> String {
    let out = cretok_with_data(args, data_dir);
    assert_succeeded(&out, args);
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Fails the test with `cretok ARGS` and its stderr unless `out` is a success.
pub fn assert_succeeded(out: &std::process::Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "cretok {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The paths that `cretok run` printed as `wrote PATH` lines.
pub fn written_paths(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("wrote "))
        .collect()
}

/// Runs a workflow with its data in `data_dir`; returns the one file it wrote.
pub fn run_one(workflow: &Path, data_dir: &Path) -> PathBuf {
    let out = cretok_with_data_ok(&["run", workflow.to_str().unwrap(), "--quiet"], data_dir);
    let written = written_paths(&out);
    assert_eq!(written.len(), 1, "{out}");
    PathBuf::from(written[0])
}

/// Writes the tiny checkpoint into `models/checkpoints/`.
pub fn tiny_checkpoint(models: &Path) {
    let out = cretok_ok(&[
        "dev",
        "tiny-checkpoint",
        "--models",
        models.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let file = models.join("checkpoints").join("tiny-sd3.safetensors");
    assert!(file.is_file(), "{stdout}");
    assert!(
        stdout.contains(&format!("wrote {}", file.display())),
        "{stdout}"
    );
}

/// `cretok run WORKFLOW` headless on these folders (and `extra` arguments);
/// the image it saved, from its `wrote PATH` line.
pub fn run_headless(workflow: &Path, models: &Path, data: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "run",
        workflow.to_str().unwrap(),
        "--quiet",
        "--models",
        models.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = cretok_ok(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = written_paths(&stdout).first().copied();
    PathBuf::from(path.unwrap_or_else(|| panic!("prints the image path: {stdout}")))
}

/// The repository root (for workflow files).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The rest of a child's stdout, line by line.
type StdoutLines = Lines<BufReader<ChildStdout>>;

/// Starts `cretok ARGS --data-dir DATA_DIR EXTRA_ARGS` with `envs` set (killed on drop) and reads its
/// stdout until `ready` recognises a line, within [`TIMEOUT`]; `state` names what it
/// waits for in errors ("listening"). Returns the child, what `ready` found and the
/// rest of stdout, which the caller must keep draining.
async fn spawn_cretok<T>(
    args: &[&str],
    data_dir: &Path,
    extra_args: &[&str],
    envs: &[(&str, &str)],
    state: &str,
    ready: impl Fn(&str) -> Option<T>,
) -> Result<(Child, T, StdoutLines)> {
    let what = format!("cretok {}", args[0]);
    let mut child = Command::new(cretok_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(found) = ready(&line) {
                return Ok(found);
            }
        }
        bail!("{what} exited before {state}")
    })
    .await
    .with_context(|| format!("waiting for {what}"))??;
    Ok((child, found, lines))
}

/// A running `cretok serve` on a free loopback port, killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts a server on a fresh data directory inside `data_dir`.
    pub async fn start(data_dir: &Path, extra_args: &[&str]) -> Result<Self> {
        Self::start_with_env(data_dir, extra_args, &[]).await
    }

    /// Writes the tiny checkpoint into `dir/models` and starts a server on it
    /// with its data in `dir/data`.
    pub async fn start_on_tiny_checkpoint(dir: &Path, extra_args: &[&str]) -> Result<Self> {
        let models = dir.join("models");
        tiny_checkpoint(&models);
        let mut args = vec!["--models", models.to_str().unwrap()];
        args.extend_from_slice(extra_args);
        Self::start(&dir.join("data"), &args).await
    }

    /// [`Server::start`] with environment variables set for the server.
    pub async fn start_with_env(
        data_dir: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let (child, base, mut lines) = spawn_cretok(
            &["serve", "--port", "0"],
            data_dir,
            extra_args,
            envs,
            "listening",
            |line| {
                let url = line.split_whitespace().find(|w| w.starts_with("http://"));
                url.map(str::to_owned)
            },
        )
        .await?;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child,
            base,
            data_dir: data_dir.to_path_buf(),
            http: fresh_client(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let r = self.http.get(self.url(path)).send().await?;
        status_and_body(r).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.post_raw(path, body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<(u16, Value)> {
        let r = self.http.post(self.url(path)).body(body).send().await?;
        status_and_body(r).await
    }

    /// Queues a prompt for `client_id`; returns the prompt id.
    pub async fn queue(&self, prompt: &Value, client_id: &str) -> Result<String> {
        let (status, body) = self
            .post(
                "/prompt",
                &json!({"prompt": prompt, "client_id": client_id}),
            )
            .await?;
        if status != 200 {
            bail!("POST /prompt answered {status}: {body}");
        }
        body["prompt_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no prompt_id in {body}"))
    }

    /// Polls history until the prompt is there.
    pub async fn wait_history(&self, prompt_id: &str) -> Result<Value> {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let (_, body) = self.get(&format!("/history/{prompt_id}")).await?;
                if let Some(entry) = body.get(prompt_id) {
                    return Ok(entry.clone());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .context("waiting for history")?
    }

    /// A line of the server's `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> Result<u64> {
        let pid = self.child.id().context("the server has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in /proc/{pid}/status"))
    }

    /// The server's resident memory in bytes (`VmRSS` of /proc/PID/status).
    pub fn rss_bytes(&self) -> Result<u64> {
        Ok(self.memory_kib("VmRSS")? * 1024)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    pub async fn connect(&self, client_id: &str) -> Result<WsClient> {
        let url = format!(
            "{}/ws?clientId={client_id}",
            self.base.replacen("http://", "ws://", 1)
        );
        let (stream, _) = tokio_tungstenite::connect_async(url).await?;
        let mut client = WsClient { stream };
        let hello = client.next_json().await?;
        if hello["type"] != "status" || hello["data"]["sid"] != client_id {
            bail!("unexpected first websocket message {hello}");
        }
        Ok(client)
    }
}

/// A websocket client of the server.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// One frame received from the server.
#[derive(Debug, Clone)]
pub enum Frame {
    Json(Value),
    Binary(Vec<u8>),
}

impl WsClient {
    pub async fn send(&mut self, message: &Value) -> Result<()> {
        self.stream
            .send(Message::Text(message.to_string().into()))
            .await?;
        Ok(())
    }

    pub async fn next_frame(&mut self) -> Result<Frame> {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.stream.next())
                .await
                .context("waiting for a websocket message")?
                .ok_or_else(|| anyhow!("websocket closed"))??;
            match message {
                Message::Text(t) => return Ok(Frame::Json(serde_json::from_str(&t)?)),
                Message::Binary(b) => return Ok(Frame::Binary(b.to_vec())),
                _ => continue,
            }
        }
    }

    pub async fn next_json(&mut self) -> Result<Value> {
        loop {
            if let Frame::Json(v) = self.next_frame().await? {
                return Ok(v);
            }
        }
    }

    /// Every JSON message up to and including the final `executing` (node null) of `prompt_id`.
    pub async fn until_done(&mut self, prompt_id: &str) -> Result<Vec<Value>> {
        let mut seen = Vec::new();
        loop {
            let m = self.next_json().await?;
            let done = m["type"] == "executing"
                && m["data"]["node"].is_null()
                && m["data"]["prompt_id"] == prompt_id;
            seen.push(m);
            if done {
                return Ok(seen);
            }
        }
    }

    /// Waits for a message of type `kind`, returning it.
    pub async fn wait_for(&mut self, kind: &str) -> Result<Value> {
        loop {
            let m = self.next_json().await?;
            if m["type"] == kind {
                return Ok(m);
            }
        }
    }

    /// Sends a close frame and waits for the server's: fails when the
    /// connection ends without one (an abnormal closure, 1006).
    pub async fn close_handshake(mut self) -> Result<()> {
        self.stream.close(None).await?;
        tokio::time::timeout(TIMEOUT, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => bail!("the connection ended without a close frame: {e}"),
                    None => bail!("the connection ended without a close frame"),
                }
            }
        })
        .await
        .context("waiting for the server's close frame")?
    }

    /// Whether any message arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, self.next_frame())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// An answer's status and its body: JSON when it parses, else the text.
async fn status_and_body(answer: reqwest::Response) -> Result<(u16, Value)> {
    let status = answer.status().as_u16();
    let text = answer.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Every file under `dir`, in its subfolders too (none when `dir` cannot be read).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Message types in order, for comparing event sequences.
pub fn types(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// An HTTP client that opens a connection per request, so a connection the
/// server closed (after refusing a huge body) is never reused.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

/// A throwaway `redis-server` on a free loopback port (no persistence), killed on drop.
pub struct RedisServer {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
}

impl RedisServer {
    /// Starts one; `None` (with a message) when `redis-server` is not installed,
    /// except under `CI=true`, where a missing server is an error.
    pub async fn start() -> Result<Option<Self>> {
        let installed = std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok();
        if !installed {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                bail!("redis-server is not installed; .ci/test installs it (apt-get install redis-server)");
            }
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return Ok(None);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server")?;
        tokio::time::timeout(TIMEOUT, async {
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .context("waiting for redis-server")?;
        Ok(Some(RedisServer {
            child,
            _dir: dir,
            port,
            url: format!("redis://127.0.0.1:{port}/0"),
        }))
    }

    /// Kills the server (Redis going down under a running deployment).
    pub async fn stop(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Sends `SIGNAL` (`STOP`, `CONT`) to the server: a stopped Redis accepts
    /// connections and never answers, as a hung one does.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.child.id().context("redis-server has exited")?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    /// Runs `redis-cli` against this server; returns its output lines.
    pub fn cli(&self, args: &[&str]) -> Result<Vec<String>> {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .context("running redis-cli")?;
        if !out.status.success() {
            bail!(
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?
            .lines()
            .map(str::to_owned)
            .collect())
    }
}

/// A running `cretok worker`, killed on drop; keeps every line it prints.
pub struct Worker {
    child: Child,
    pub name: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Worker {
    /// Starts a worker named `name` and waits until it takes prompts.
    pub async fn start(
        redis_url: &str,
        data_dir: &Path,
        name: &str,
        extra_args: &[&str],
    ) -> Result<Self> {
        let (child, (), mut lines) = spawn_cretok(
            &["worker", "--redis", redis_url, "--name", name],
            data_dir,
            extra_args,
            &[],
            "taking prompts",
            |line| line.contains("is waiting for prompts").then_some(()),
        )
        .await?;
        let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&kept);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Ok(Worker {
            child,
            name: name.to_owned(),
            lines: kept,
        })
    }

    /// Every line printed so far (`started ID`, `finished ID success`, ...).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Prompt ids this worker reported with `word` (`started`, `finished`).
    pub fn prompts(&self, word: &str) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|l| {
                l.strip_prefix(word)?
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: the worker dies at once, mid-prompt.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
