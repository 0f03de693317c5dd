//! Throughput and per-prompt latency of cheap prompts through the embedded
//! queue and through Redis with one and two workers, all on loopback.
//!
//! `cargo build --release -p cretok && cargo run --release -p cretok-tests
//! --example queue_bench -- [PROMPTS]` (the results table is in docs/scaleout.md).

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use cretok_tests::{RedisServer, Server, Worker, WsClient};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};

/// HTTP submissions in flight at once (several clients).
const SUBMITTERS: usize = 8;
/// Rounds per setup; the best is reported (the machine may be shared).
const ROUNDS: usize = 3;
/// Prompts run one at a time, each queued when the last ended, for the latency.
const ONE_BY_ONE: usize = 30;

/// Simulated GPU time per prompt of the "busy" column (a `Delay` node).
const WORK_MS: i64 = 20;

/// Three string nodes and a saved text file: the queue's cost, not a model's.
fn cheap_prompt(n: usize) -> Value {
    json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "bench"}},
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": format!("prompt {n}"), "delimiter": " "}},
        "3": {"class_type": "SaveText", "inputs": {"text": ["2", 0], "filename_prefix": "bench"}}
    })
}

/// A cheap prompt that also waits `WORK_MS`, as a model would compute.
fn busy_prompt(n: usize) -> Value {
    let mut prompt = cheap_prompt(n);
    prompt["4"] =
        json!({"class_type": "Delay", "inputs": {"text": ["2", 0], "milliseconds": WORK_MS}});
    prompt["3"]["inputs"]["text"] = json!(["4", 0]);
    prompt
}

async fn wait_done(ws: &mut WsClient, ids: &mut HashSet<String>) -> Result<()> {
    while !ids.is_empty() {
        let m = ws.next_json().await?;
        if m["type"] == "executing" && m["data"]["node"].is_null() {
            ids.remove(m["data"]["prompt_id"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Measured {
    throughput: f64,
    latency_ms: f64,
    busy_throughput: f64,
}

impl Measured {
    fn best(self, other: Measured) -> Measured {
        Measured {
            throughput: self.throughput.max(other.throughput),
            latency_ms: self.latency_ms.min(other.latency_ms),
            busy_throughput: self.busy_throughput.max(other.busy_throughput),
        }
    }
}

/// Prompts per second for `count` prompts submitted by several clients at once.
async fn rate(
    front: &Server,
    ws: &mut WsClient,
    prompts: impl Iterator<Item = Value>,
    count: usize,
) -> Result<f64> {
    let start = Instant::now();
    let mut ids: HashSet<String> = stream::iter(prompts)
        .map(|prompt| async move { front.queue(&prompt, "bench").await })
        .buffer_unordered(SUBMITTERS)
        .try_collect()
        .await?;
    wait_done(ws, &mut ids).await?;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// Cheap prompts submitted by several clients at once until all ran
/// (throughput), then one at a time (latency), then busy prompts at once.
/// Every prompt is new: no cache hits.
async fn measure(front: &Server, prompts: usize, round: usize) -> Result<Measured> {
    let mut ws = front.connect("bench").await?;
    let base = round * (2 * prompts + ONE_BY_ONE + 1);
    let mut warm = HashSet::from([front.queue(&cheap_prompt(base), "bench").await?]);
    wait_done(&mut ws, &mut warm).await?;

    let cheap = (1..=prompts).map(|n| cheap_prompt(base + n));
    let throughput = rate(front, &mut ws, cheap, prompts).await?;

    let start = Instant::now();
    for n in 0..ONE_BY_ONE {
        let prompt = cheap_prompt(base + prompts + 1 + n);
        let mut one = HashSet::from([front.queue(&prompt, "bench").await?]);
        wait_done(&mut ws, &mut one).await?;
    }
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0 / ONE_BY_ONE as f64;

    let busy_count = prompts / 2;
    let busy = (0..busy_count).map(|n| busy_prompt(base + prompts + ONE_BY_ONE + 1 + n));
    let busy_throughput = rate(front, &mut ws, busy, busy_count).await?;
    Ok(Measured {
        throughput,
        latency_ms,
        busy_throughput,
    })
}

async fn best_of_rounds(front: &Server, prompts: usize) -> Result<Measured> {
    let mut best = measure(front, prompts, 0).await?;
    for round in 1..ROUNDS {
        best = best.best(measure(front, prompts, round).await?);
    }
    Ok(best)
}

async fn redis_run(
    redis: &RedisServer,
    dir: &Path,
    workers: usize,
    prompts: usize,
) -> Result<Measured> {
    redis.cli(&["FLUSHALL"])?;
    let front = Server::start(dir, &["--redis", &redis.url]).await?;
    let mut running = Vec::new();
    for w in 0..workers {
        running.push(Worker::start(&redis.url, dir, &format!("bench-{w}"), &[]).await?);
    }
    best_of_rounds(&front, prompts).await
}

#[tokio::main]
async fn main() -> Result<()> {
    let prompts: usize = std::env::args().nth(1).map_or(Ok(200), |a| a.parse())?;
    let redis = RedisServer::start()
        .await?
        .context("the benchmark needs redis-server")?;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "{prompts} cheap prompts (3 string nodes, one saved text file) from {SUBMITTERS} \
         submitters, {profile} build, loopback, best of {ROUNDS} rounds"
    );
    println!(
        "| queue | cheap prompts/s | ms per cheap prompt, one at a time | prompts/s with {WORK_MS} ms of work each ({} prompts) |",
        prompts / 2
    );
    println!("|---|---|---|---|");
    let report = |name: &str, m: &Measured| {
        println!(
            "| {name} | {:.0} | {:.2} | {:.1} |",
            m.throughput, m.latency_ms, m.busy_throughput
        )
    };

    let dir = tempfile::tempdir()?;
    let embedded = best_of_rounds(&Server::start(dir.path(), &[]).await?, prompts).await?;
    report("embedded (no --redis)", &embedded);
    for workers in [1, 2] {
        let dir = tempfile::tempdir()?;
        let m = redis_run(&redis, dir.path(), workers, prompts).await?;
        let plural = if workers > 1 { "s" } else { "" };
        report(&format!("Redis, {workers} worker{plural}"), &m);
        if workers == 1 {
            println!(
                "(queue overhead of Redis per prompt: {:.2} ms)",
                m.latency_ms - embedded.latency_ms
            );
        }
    }
    Ok(())
}
