//! Throughput and per-prompt latency of cheap prompts through the embedded
//! queue and through Redis with one and two workers, all on loopback.
//!
//! `cargo build --release -p cretok-host && cargo run --release -p cretok-tests
//! --example queue_bench -- [PROMPTS]` (the results table is in docs/scaleout.md).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cretok_tests::{RedisServer, Server, Worker, WsClient};
use serde_json::{json, Value};

/// Three string nodes and a saved text file: the queue's cost, not a model's.
fn cheap_prompt(n: usize) -> Value {
    json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "bench"}},
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": format!("prompt {n}"), "delimiter": " "}},
        "3": {"class_type": "SaveText", "inputs": {"text": ["2", 0], "filename_prefix": "bench"}}
    })
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

struct Measured {
    throughput: f64,
    latency_ms: f64,
}

/// `prompts` queued at once (throughput), then 30 one at a time (latency).
async fn measure(front: &Server, prompts: usize) -> Result<Measured> {
    let mut ws = front.connect("bench").await?;
    let mut serial = 0;
    let mut next = || {
        serial += 1;
        cheap_prompt(serial)
    };
    let mut warm = HashSet::from([front.queue(&next(), "bench").await?]);
    wait_done(&mut ws, &mut warm).await?;

    let start = Instant::now();
    let mut ids = HashSet::new();
    for _ in 0..prompts {
        ids.insert(front.queue(&next(), "bench").await?);
    }
    wait_done(&mut ws, &mut ids).await?;
    let throughput = prompts as f64 / start.elapsed().as_secs_f64();

    const ONE_BY_ONE: u32 = 30;
    let start = Instant::now();
    for _ in 0..ONE_BY_ONE {
        let mut one = HashSet::from([front.queue(&next(), "bench").await?]);
        wait_done(&mut ws, &mut one).await?;
    }
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(ONE_BY_ONE);
    Ok(Measured {
        throughput,
        latency_ms,
    })
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
    measure(&front, prompts).await
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
        "{prompts} cheap prompts (3 string nodes, one saved text file), {profile} build, loopback"
    );
    println!("| queue | prompts/s | ms per prompt, one at a time |");
    println!("|---|---|---|");
    let report = |name: &str, m: &Measured| {
        println!("| {name} | {:.0} | {:.2} |", m.throughput, m.latency_ms)
    };

    let dir = tempfile::tempdir()?;
    let embedded = measure(&Server::start(dir.path(), &[]).await?, prompts).await?;
    report("embedded (no --redis)", &embedded);
    for workers in [1, 2] {
        let dir = tempfile::tempdir()?;
        let m = redis_run(&redis, dir.path(), workers, prompts).await?;
        report(
            &format!(
                "Redis, {workers} worker{}",
                if workers > 1 { "s" } else { "" }
            ),
            &m,
        );
        if workers == 1 {
            println!(
                "(queue overhead of Redis per prompt: {:.2} ms)",
                m.latency_ms - embedded.latency_ms
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
