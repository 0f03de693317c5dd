//! One front and two workers sharing a real Redis: prompts from several
//! clients split across workers with per-client events, a killed worker's
//! prompt finishing exactly once elsewhere, history surviving a front
//! restart, `/queue` and `/interrupt` across workers (docs/scaleout.md).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use cretok_tests::{RedisServer, Server, Worker, WsClient, TIMEOUT};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn delayed_text(text: &str, ms: i64, prefix: &str) -> Value {
    json!({
        "1": {"class_type": "Delay", "inputs": {"text": text, "milliseconds": ms}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": prefix}}
    })
}

/// One front and two workers on a fresh data directory.
async fn cluster(
    redis: &RedisServer,
    dir: &Path,
    worker_args: &[&str],
) -> Result<(Server, [Worker; 2])> {
    let front = Server::start(dir, &["--redis", &redis.url]).await?;
    let a = Worker::start(&redis.url, dir, "worker-a", worker_args).await?;
    let b = Worker::start(&redis.url, dir, "worker-b", worker_args).await?;
    Ok((front, [a, b]))
}

/// Every message up to the final `executing` of each of `ids`.
async fn until_all_done(ws: &mut WsClient, ids: &HashSet<String>) -> Result<Vec<Value>> {
    let mut left = ids.clone();
    let mut seen = Vec::new();
    while !left.is_empty() {
        let m = ws.next_json().await?;
        if m["type"] == "executing" && m["data"]["node"].is_null() {
            left.remove(m["data"]["prompt_id"].as_str().unwrap_or_default());
        }
        seen.push(m);
    }
    Ok(seen)
}

fn count(messages: &[Value], kind: &str, prompt_id: &str) -> usize {
    messages
        .iter()
        .filter(|m| m["type"] == kind && m["data"]["prompt_id"] == prompt_id)
        .count()
}

/// The history order list in Redis: every finished prompt once.
fn history_order(redis: &RedisServer) -> Result<Vec<String>> {
    redis.cli(&["LRANGE", "cretok:history:order", "0", "-1"])
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn twenty_prompts_from_four_clients_split_across_two_workers() -> Result<()> {
    let Some(redis) = RedisServer::start().await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let (front, workers) = cluster(&redis, dir.path(), &[]).await?;
    let mut clients = Vec::new();
    for c in 0..4 {
        clients.push(front.connect(&format!("client{c}")).await?);
    }
    let mut mine: Vec<HashSet<String>> = vec![HashSet::new(); 4];
    let mut texts = BTreeSet::new();
    for i in 0..5 {
        for (c, ids) in mine.iter_mut().enumerate() {
            let text = format!("client {c} prompt {i}");
            let id = front
                .queue(&delayed_text(&text, 60, "scale"), &format!("client{c}"))
                .await?;
            ids.insert(id);
            texts.insert(text);
        }
    }
    let all: HashSet<String> = mine.iter().flatten().cloned().collect();
    assert_eq!(all.len(), 20);

    for (ws, ids) in clients.iter_mut().zip(&mine) {
        let messages = until_all_done(ws, ids).await?;
        for m in &messages {
            if let Some(id) = m["data"]["prompt_id"].as_str() {
                assert!(ids.contains(id), "a client got another client's event {m}");
            }
        }
        for id in ids {
            assert_eq!(
                count(&messages, "execution_success", id),
                1,
                "{messages:#?}"
            );
            assert_eq!(count(&messages, "executed", id), 1, "{messages:#?}");
        }
    }

    let by_a: HashSet<String> = workers[0].prompts("finished").into_iter().collect();
    let by_b: HashSet<String> = workers[1].prompts("finished").into_iter().collect();
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "not split: {} / {}",
        by_a.len(),
        by_b.len()
    );
    assert!(by_a.is_disjoint(&by_b), "a prompt ran on both workers");
    assert_eq!(&by_a | &by_b, all);

    // Outputs land in the shared folder, one file each, none overwritten.
    let mut saved = BTreeSet::new();
    for entry in std::fs::read_dir(dir.path().join("output"))? {
        let path = entry?.path();
        saved.insert(std::fs::read_to_string(path)?);
    }
    assert_eq!(saved, texts);

    let (_, queue) = front.get("/queue").await?;
    assert_eq!(queue, json!({"queue_running": [], "queue_pending": []}));
    assert_eq!(history_order(&redis)?.len(), 20);

    // A new front sees the same history.
    front.stop().await?;
    let front = Server::start(dir.path(), &["--redis", &redis.url]).await?;
    let (_, history) = front.get("/history").await?;
    let history = history.as_object().cloned().unwrap_or_default();
    assert_eq!(history.keys().cloned().collect::<HashSet<_>>(), all);
    for entry in history.values() {
        assert_eq!(entry["status"]["status_str"], "success", "{entry}");
        assert_eq!(
            entry["outputs"]["2"]["text"].as_array().map(Vec::len),
            Some(1),
            "{entry}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_killed_worker_s_prompt_finishes_on_the_other_worker_exactly_once() -> Result<()> {
    let Some(redis) = RedisServer::start().await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let (front, mut workers) = cluster(&redis, dir.path(), &["--claim-after-ms", "1500"]).await?;
    let mut ws = front.connect("k").await?;
    let slow = front
        .queue(&delayed_text("slow", 2500, "slow"), "k")
        .await?;
    wait_until("the slow prompt to start", || {
        workers.iter().any(|w| w.prompts("started").contains(&slow))
    })
    .await?;
    let (victim, survivor) = if workers[0].prompts("started").contains(&slow) {
        (0, 1)
    } else {
        (1, 0)
    };
    workers[victim].kill().await?;
    let mut quick = HashSet::new();
    for i in 0..3 {
        quick.insert(
            front
                .queue(&delayed_text(&format!("quick {i}"), 10, "quick"), "k")
                .await?,
        );
    }

    let mut ids = quick.clone();
    ids.insert(slow.clone());
    let mut messages = until_all_done(&mut ws, &ids).await?;
    // Any second report would come right after the first.
    while let Some(cretok_tests::Frame::Json(m)) = ws.quiet_for(Duration::from_millis(1500)).await {
        messages.push(m);
    }
    assert_eq!(
        count(&messages, "execution_success", &slow),
        1,
        "{messages:#?}"
    );
    assert!(workers[survivor]
        .lines()
        .contains(&format!("finished {slow} success")));
    assert!(!workers[victim].prompts("finished").contains(&slow));

    let order = history_order(&redis)?;
    assert_eq!(order.len(), 4, "{order:?}");
    assert_eq!(order.iter().cloned().collect::<HashSet<_>>(), ids);
    let entry = front.wait_history(&slow).await?;
    assert_eq!(entry["status"]["status_str"], "success");
    let slow_files = std::fs::read_dir(dir.path().join("output"))?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("slow"))
        })
        .count();
    assert_eq!(slow_files, 1);
    let (_, queue) = front.get("/queue").await?;
    assert_eq!(queue, json!({"queue_running": [], "queue_pending": []}));
    Ok(())
}

#[tokio::test]
async fn queue_shows_every_worker_s_prompt_and_interrupt_reaches_it() -> Result<()> {
    let Some(redis) = RedisServer::start().await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    // A short claim time: only the heartbeat keeps a busy worker's prompt its own.
    let (front, workers) = cluster(&redis, dir.path(), &["--claim-after-ms", "400"]).await?;
    let mut ws = front.connect("q").await?;
    let long = [
        front
            .queue(&delayed_text("long 1", 60_000, "long"), "q")
            .await?,
        front
            .queue(&delayed_text("long 2", 60_000, "long"), "q")
            .await?,
    ];
    wait_until("both workers to start a prompt", || {
        workers.iter().all(|w| !w.prompts("started").is_empty())
    })
    .await?;
    let waiting = front
        .queue(&delayed_text("after", 10, "after"), "q")
        .await?;

    let (_, queue) = front.get("/queue").await?;
    let ids = |key: &str| -> HashSet<String> {
        queue[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t[1].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        ids("queue_running"),
        long.iter().cloned().collect(),
        "{queue}"
    );
    assert_eq!(
        ids("queue_pending"),
        HashSet::from([waiting.clone()]),
        "{queue}"
    );
    let (_, prompt) = front.get("/prompt").await?;
    assert_eq!(prompt["exec_info"]["queue_remaining"], 3);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut statuses = HashMap::new();
    for id in &long {
        let (status, _) = front.post("/interrupt", &json!({"prompt_id": id})).await?;
        assert_eq!(status, 200);
        let m = tokio::time::timeout(
            Duration::from_secs(10),
            ws.wait_for("execution_interrupted"),
        )
        .await??;
        statuses.insert(
            m["data"]["prompt_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            m,
        );
    }
    assert_eq!(
        statuses.keys().cloned().collect::<HashSet<_>>(),
        long.iter().cloned().collect()
    );
    let after = front.wait_history(&waiting).await?;
    assert_eq!(after["status"]["status_str"], "success");
    for id in &long {
        let entry = front.wait_history(id).await?;
        assert_eq!(entry["status"]["status_str"], "error", "{entry}");
    }
    // A freed worker took the waiting prompt, not the other worker's live one.
    let mut started: Vec<String> = workers.iter().flat_map(|w| w.prompts("started")).collect();
    started.sort();
    let mut expected = vec![long[0].clone(), long[1].clone(), waiting];
    expected.sort();
    assert_eq!(started, expected);
    Ok(())
}

#[tokio::test]
async fn with_redis_down_the_front_refuses_prompts_clearly_and_keeps_serving() -> Result<()> {
    let Some(mut redis) = RedisServer::start().await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let front = Server::start(dir.path(), &["--redis", &redis.url]).await?;
    redis.stop().await?;
    let (status, body) = front
        .post("/prompt", &json!({"prompt": delayed_text("x", 0, "down")}))
        .await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["type"], "queue_unavailable", "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    let (status, _) = front.get("/object_info/Delay").await?;
    assert_eq!(status, 200);
    for route in ["/queue", "/history", "/jobs"] {
        let (status, body) = front.get(route).await?;
        assert_eq!(status, 503, "{route}: {body}");
        assert_eq!(
            body["error"]["type"], "queue_unavailable",
            "{route}: {body}"
        );
    }
    // A new websocket cannot be told the queue status: it is closed with 1013 (try again later).
    let url = front
        .url("/ws?clientId=late")
        .replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let first = tokio::time::timeout(TIMEOUT, ws.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the socket ended without a frame"))??;
    let Message::Close(Some(close)) = first else {
        bail!("expected a close frame, got {first:?}");
    };
    assert_eq!(u16::from(close.code), 1013, "{close:?}");
    Ok(())
}

#[tokio::test]
async fn a_prompt_whose_workers_keep_dying_is_dead_lettered_after_three_deliveries() -> Result<()> {
    let Some(redis) = RedisServer::start().await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let args = ["--claim-after-ms", "400"];
    let (front, mut workers) = cluster(&redis, dir.path(), &args).await?;
    let mut ws = front.connect("p").await?;
    let (status, body) = front
        .post(
            "/prompt",
            &json!({"prompt": delayed_text("poison", 60_000, "poison"), "client_id": "p", "prompt_id": "poison"}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = front
        .post(
            "/prompt",
            &json!({"prompt": delayed_text("again", 0, "x"), "prompt_id": "poison"}),
        )
        .await?;
    assert_eq!(
        (status, &body["error"]["type"]),
        (400, &json!("duplicate_prompt_id"))
    );

    // Each worker that takes the prompt dies running it and is replaced.
    for death in 0..3 {
        wait_until("a worker to take the poisonous prompt", || {
            workers
                .iter()
                .any(|w| w.prompts("started").contains(&"poison".to_owned()))
        })
        .await?;
        let victim = workers
            .iter()
            .position(|w| w.prompts("started").contains(&"poison".to_owned()))
            .unwrap_or_default();
        workers[victim].kill().await?;
        let name = format!("replacement-{death}");
        workers[victim] = Worker::start(&redis.url, dir.path(), &name, &args).await?;
    }

    let entry = front.wait_history("poison").await?;
    assert_eq!(entry["status"]["status_str"], "error", "{entry}");
    let error = ws.wait_for("execution_error").await?;
    assert_eq!(error["data"]["prompt_id"], "poison");
    assert_eq!(error["data"]["exception_type"], "dead_letter");
    let reason = error["data"]["exception_message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("delivered 3 times") && reason.contains("cretok:dead-letters"),
        "{reason}"
    );
    assert_eq!(redis.cli(&["XLEN", "cretok:dead-letters"])?, ["1"]);
    let dead = redis.cli(&["XRANGE", "cretok:dead-letters", "-", "+"])?;
    assert!(
        dead.iter().any(|l| l.contains("delivered 3 times")),
        "{dead:?}"
    );
    assert!(workers.iter_mut().all(Worker::alive));
    assert!(
        workers
            .iter()
            .all(|w| !w.prompts("started").contains(&"poison".to_owned())),
        "a fourth delivery ran the prompt"
    );

    let next = front
        .queue(&delayed_text("after", 10, "after"), "p")
        .await?;
    let entry = front.wait_history(&next).await?;
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    assert!(workers.iter_mut().all(Worker::alive));
    let (_, queue) = front.get("/queue").await?;
    assert_eq!(queue, json!({"queue_running": [], "queue_pending": []}));
    Ok(())
}

#[tokio::test]
async fn while_redis_hangs_prompts_get_503_and_other_routes_keep_answering() -> Result<()> {
    let Some(redis) = RedisServer::start().await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let front = Server::start(dir.path(), &["--redis", &redis.url]).await?;
    redis.signal("STOP")?;
    // More waiting submissions than the runtime has worker threads.
    let waiting: Vec<_> = (0..8)
        .map(|i| {
            let (http, url) = (front.http.clone(), front.url("/prompt"));
            let body = json!({"prompt": delayed_text(&format!("hung {i}"), 0, "hung")});
            tokio::spawn(async move {
                let response = http.post(url).body(body.to_string()).send().await?;
                let status = response.status().as_u16();
                anyhow::Ok((status, response.json::<Value>().await?))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let asked = tokio::time::Instant::now();
        let (status, _) = front.get("/object_info/Delay").await?;
        assert_eq!(status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "a route waited {:?} behind the hung queue",
            asked.elapsed()
        );
    }
    for answer in waiting {
        let (status, body) = answer.await??;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["type"], "queue_unavailable", "{body}");
    }
    redis.signal("CONT")?;
    let (status, body) = front
        .post(
            "/prompt",
            &json!({"prompt": delayed_text("back", 0, "back")}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}
