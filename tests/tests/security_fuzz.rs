//! A seeded, bounded fuzz test against the real server (docs/security.md):
//! 5,000 mutated prompts and 1,000 mutated websocket frames. Every request is
//! answered without a 5xx or a dropped connection, and the server still
//! answers after every batch. The seed is fixed, so a failure reproduces.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cretok_tests::{files_under, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

const SEED: u64 = 0x5EC0_F022;
const BATCHES: usize = 10;
const PROMPTS_PER_BATCH: usize = 500;
const FRAMES_PER_BATCH: usize = 100;
const CONCURRENCY: usize = 4;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A small valid prompt of cheap nodes.
fn base_prompt() -> Value {
    json!({
        "1": {"class_type": "StringConcatenate", "inputs": {"string_a": "a", "string_b": "b", "delimiter": "-"}},
        "2": {"class_type": "StringTransform", "inputs": {"string": ["1", 0], "operation": "uppercase"}},
        "3": {"class_type": "Delay", "inputs": {"text": ["2", 0], "milliseconds": 1}},
        "4": {"class_type": "SaveText", "inputs": {"text": ["3", 0], "filename_prefix": "fuzz/t"}},
    })
}

/// A value of a surprising type or size.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => json!(null),
        1 => json!(true),
        2 => json!(1e308),
        3 => json!(-1),
        4 => json!(i64::MAX),
        5 => json!(u64::MAX),
        6 => json!(-0.000001),
        7 => json!("ß漢字🙂\u{202e}\r\n\u{0}"),
        8 => json!("x".repeat(rng.below(2000))),
        9 => nested(rng.below(100)),
        10 => json!(["99", 0]),
        11 => json!(["1", 7]),
        12 => json!([["1", 0], 0, {"a": []}]),
        _ => json!({"class_type": "StringConcatenate"}),
    }
}

/// Arrays nested `depth` deep (inside serde's recursion limit).
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(0), |inner, _| json!([inner]))
}

/// One random change to a copy of the base prompt.
fn mutate(rng: &mut Rng) -> Value {
    let mut prompt = base_prompt();
    for _ in 0..=rng.below(3) {
        let nodes = prompt.as_object_mut().expect("object");
        let id = rng.pick(&["1", "2", "3", "4", "5"]).to_string();
        match rng.below(7) {
            0 => {
                let input = rng
                    .pick(&[
                        "string_a",
                        "string_b",
                        "text",
                        "string",
                        "operation",
                        "milliseconds",
                        "filename_prefix",
                        "delimiter",
                        "unknown",
                    ])
                    .to_string();
                let value = odd_value(rng);
                if let Some(inputs) = nodes
                    .get_mut(&id)
                    .and_then(|n| n.get_mut("inputs"))
                    .and_then(Value::as_object_mut)
                {
                    inputs.insert(input, value);
                }
            }
            1 => {
                nodes.remove(&id);
            }
            2 => {
                let class = rng.pick(&["NoSuchNode", "", "SaveImage", "KSampler", "🙂"]);
                nodes.insert(id, json!({"class_type": class, "inputs": {}}));
            }
            3 => {
                nodes.insert(id, odd_value(rng));
            }
            4 => {
                if let Some(node) = nodes.get_mut(&id).and_then(Value::as_object_mut) {
                    node.insert("inputs".to_owned(), odd_value(rng));
                }
            }
            5 => {
                let prefix = rng.pick(&["../x", "/etc/x", "a/../../b", "", "a\\b", "c:x", "ok/🙂"]);
                if let Some(inputs) = nodes
                    .get_mut("4")
                    .and_then(|n| n.get_mut("inputs"))
                    .and_then(Value::as_object_mut)
                {
                    inputs.insert("filename_prefix".to_owned(), json!(prefix));
                }
            }
            _ => {
                nodes.insert(
                    format!("{}", rng.next()),
                    json!({"class_type": "StringConcatenate", "inputs": {"string_a": ["4", 0], "string_b": ["1", 0], "delimiter": ""}}),
                );
            }
        }
    }
    prompt
}

/// A request body: usually a mutated prompt, sometimes a mangled one.
fn body(rng: &mut Rng) -> Vec<u8> {
    let prompt = mutate(rng);
    let wrapped = match rng.below(6) {
        0 => json!({"prompt": prompt, "client_id": odd_value(rng)}),
        1 => json!({"prompt": prompt, "front": odd_value(rng), "number": odd_value(rng)}),
        2 => json!({"prompt": prompt, "extra_data": odd_value(rng)}),
        _ => json!({"prompt": prompt}),
    };
    let mut bytes = wrapped.to_string().into_bytes();
    if rng.below(8) == 0 && !bytes.is_empty() {
        for _ in 0..=rng.below(4) {
            let i = rng.below(bytes.len());
            bytes[i] = rng.next() as u8;
        }
    }
    bytes
}

/// A websocket frame a client could send.
fn frame(rng: &mut Rng) -> Message {
    match rng.below(4) {
        0 => Message::Binary((0..rng.below(512)).map(|_| rng.next() as u8).collect()),
        1 => Message::Text(odd_value(rng).to_string().into()),
        2 => Message::Text(
            json!({"type": "feature_flags", "data": odd_value(rng)})
                .to_string()
                .into(),
        ),
        _ => Message::Text(
            json!({"type": odd_value(rng), "data": Value::Object(Map::new())})
                .to_string()
                .into(),
        ),
    }
}

async fn post_all(server: &Server, bodies: Vec<Vec<u8>>) -> Result<()> {
    let statuses: Vec<Result<u16>> = futures_util::stream::iter(bodies)
        .map(|b| async move { Ok(server.post_raw("/prompt", b).await?.0) })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for status in statuses {
        let status = status.context("a request got no answer")?;
        if status >= 500 {
            bail!("POST /prompt answered {status}");
        }
    }
    Ok(())
}

async fn send_frames(server: &Server, frames: Vec<Message>) -> Result<()> {
    let url = format!(
        "{}/ws?clientId=fuzz",
        server.base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    for message in frames {
        if ws.send(message).await.is_err() {
            // The server may close on garbage; it must take a new client at once.
            (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        }
    }
    ws.close(None).await.ok();
    Ok(())
}

async fn still_serving(server: &mut Server, batch: usize) -> Result<()> {
    server.post("/interrupt", &json!({})).await?;
    server.post("/queue", &json!({"clear": true})).await?;
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), server.get("/system_stats"))
        .await
        .with_context(|| format!("no answer after batch {batch}"))??;
    if status != 200 || !server.alive() {
        bail!("server not serving after batch {batch} ({status})");
    }
    Ok(())
}

/// Every `.txt` file under `dir`.
fn text_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = files_under(dir);
    found.retain(|path| path.extension().is_some_and(|e| e == "txt"));
    found
}

#[tokio::test]
async fn mutated_prompts_and_frames_never_crash_the_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]).await?;
    let mut rng = Rng(SEED);
    for batch in 0..BATCHES {
        let bodies = (0..PROMPTS_PER_BATCH).map(|_| body(&mut rng)).collect();
        let frames = (0..FRAMES_PER_BATCH).map(|_| frame(&mut rng)).collect();
        let (posted, sent) = tokio::join!(post_all(&server, bodies), send_frames(&server, frames));
        posted.with_context(|| format!("batch {batch}"))?;
        sent.with_context(|| format!("batch {batch}"))?;
        still_serving(&mut server, batch).await?;
    }
    // Nothing escaped the output folder: the only text files written are under output/.
    let root: Vec<_> = std::fs::read_dir(dir.path())?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(root, ["data"], "files written next to the data dir");
    let written = text_files(&data);
    assert!(!written.is_empty(), "no mutated prompt ran");
    let escaped: Vec<_> = written
        .iter()
        .filter(|p| !p.starts_with(data.join("output")))
        .collect();
    assert!(escaped.is_empty(), "written outside output/: {escaped:?}");
    Ok(())
}
