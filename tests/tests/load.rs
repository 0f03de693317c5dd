//! Load: 20 websocket clients each queue 5 small prompts at once on one
//! loopback server. Every prompt finishes, each client hears only its own
//! prompts, history holds all 100 and every output file is whole. Asserts
//! correctness only; it prints prompts/s and p95 queue-to-done for
//! docs/performance.md (`-- --nocapture`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cretok_tests::{Server, WsClient};
use futures_util::future::try_join_all;
use serde_json::{json, Value};

const CLIENTS: usize = 20;
const PROMPTS_PER_CLIENT: usize = 5;
/// The whole run, generously: it takes about a second.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The text prompt `k` of client `c` saves (unique, so nothing is served from the cache).
fn text_of(client: usize, k: usize) -> String {
    format!("client {client} prompt {k}: a lettuce and a mantis")
}

fn prompt(client: usize, k: usize) -> Value {
    json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": format!("client {client}")}},
        "2": {"class_type": "StringConcatenate", "inputs": {
            "string_a": ["1", 0], "string_b": format!("prompt {k}: a lettuce and a mantis"), "delimiter": " "}},
        "3": {"class_type": "SaveText", "inputs": {"text": ["2", 0], "filename_prefix": "load/blend"}}
    })
}

/// One prompt's timing, from just before `POST /prompt` to its `execution_success`.
struct Timing {
    queued: Instant,
    done: Instant,
}

/// Client `c`: queues its prompts at once, then reads its websocket until all
/// of them succeeded, failing on any event of a prompt that is not its own.
async fn run_client(server: &Server, mut ws: WsClient, client: usize) -> Result<Vec<Timing>> {
    let client_id = format!("client-{client}");
    let queued = Instant::now();
    let ids: Vec<String> = try_join_all((0..PROMPTS_PER_CLIENT).map(|k| {
        let client_id = &client_id;
        async move { server.queue(&prompt(client, k), client_id).await }
    }))
    .await?;
    let mut done: HashMap<String, Instant> = HashMap::new();
    while done.len() < ids.len() {
        let message = ws.next_json().await?;
        let Some(id) = message["data"]["prompt_id"].as_str() else {
            continue; // queue status, broadcast to every client
        };
        if !ids.iter().any(|mine| mine == id) {
            bail!("{client_id} received another client's event: {message}");
        }
        match message["type"].as_str() {
            Some("execution_success") => {
                done.insert(id.to_owned(), Instant::now());
            }
            Some("execution_error" | "execution_interrupted") => bail!("{id} failed: {message}"),
            _ => {}
        }
    }
    Ok(ids
        .iter()
        .map(|id| Timing {
            queued,
            done: done[id],
        })
        .collect())
}

/// Prints prompts/s and the 95th percentile of queue-to-done.
fn report(timings: &[Timing], started: Instant) {
    let finished = timings.iter().map(|t| t.done).max().unwrap_or(started);
    let seconds = finished.duration_since(started).as_secs_f64();
    let mut latencies: Vec<Duration> = timings.iter().map(|t| t.done - t.queued).collect();
    latencies.sort();
    let p95 = latencies[(latencies.len() * 95).div_ceil(100) - 1];
    println!(
        "load: {} prompts from {CLIENTS} clients in {seconds:.2} s: {:.1} prompts/s, p95 queue-to-done {} ms",
        timings.len(),
        timings.len() as f64 / seconds,
        p95.as_millis()
    );
}

/// `/history` holds every prompt, successful, its SaveText output naming a
/// file in `output/load/` that holds exactly its text.
async fn check_history(server: &Server) -> Result<()> {
    let (_, history) = server.get("/history").await?;
    let history = history.as_object().context("history is an object")?;
    let mut expected: BTreeSet<String> = (0..CLIENTS)
        .flat_map(|c| (0..PROMPTS_PER_CLIENT).map(move |k| text_of(c, k)))
        .collect();
    assert_eq!(history.len(), CLIENTS * PROMPTS_PER_CLIENT);
    for (id, entry) in history {
        assert_eq!(entry["status"]["status_str"], "success", "{id}: {entry}");
        let output = &entry["outputs"]["3"];
        let text = output["text"][0].as_str().context("SaveText's text")?;
        assert!(
            expected.remove(text),
            "{id}: unexpected or repeated text {text:?}"
        );
        let file = output["files"][0]["filename"].as_str().context("file")?;
        let written = std::fs::read_to_string(server.data_dir.join("output/load").join(file))?;
        assert_eq!(written, text, "{file} does not hold what {id} saved");
    }
    assert!(expected.is_empty(), "missing: {expected:?}");
    Ok(())
}

/// `output/load/` holds exactly one whole file per prompt and no temporary files.
fn check_output_folder(server: &Server) -> Result<()> {
    let mut contents = BTreeSet::new();
    for entry in std::fs::read_dir(server.data_dir.join("output/load"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        assert!(
            name.starts_with("blend_") && name.ends_with("_.txt"),
            "stray file {name}"
        );
        contents.insert(std::fs::read_to_string(&path)?);
    }
    let expected: BTreeSet<String> = (0..CLIENTS)
        .flat_map(|c| (0..PROMPTS_PER_CLIENT).map(move |k| text_of(c, k)))
        .collect();
    assert_eq!(contents, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_queueing_five_prompts_each_all_get_their_own_results() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let clients = try_join_all((0..CLIENTS).map(|c| {
        let server = &server;
        async move { server.connect(&format!("client-{c}")).await }
    }))
    .await?;

    let started = Instant::now();
    let runs = clients
        .into_iter()
        .enumerate()
        .map(|(c, ws)| run_client(&server, ws, c));
    let timings: Vec<Timing> = tokio::time::timeout(RUN_LIMIT, try_join_all(runs))
        .await
        .context("the load run took too long")??
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(timings.len(), CLIENTS * PROMPTS_PER_CLIENT);
    report(&timings, started);

    check_history(&server).await?;
    check_output_folder(&server)?;
    Ok(())
}
