//! The executor through the real server: event sequences, order, caching,
//! interruption, failing nodes, per-client routing and websocket commands.

use std::time::Duration;

use cretok_tests::{types, Server, WsClient};
use serde_json::{json, Value};

/// A server on a fresh data folder (kept while the returned guard lives) and
/// a websocket client `client_id` of it.
async fn server_with_client(
    client_id: &str,
) -> anyhow::Result<(tempfile::TempDir, Server, WsClient)> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let ws = server.connect(client_id).await?;
    Ok((dir, server, ws))
}

fn blend_prompt(second: &str) -> Value {
    json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "a creative mixture of"}},
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": second, "delimiter": " "}},
        "3": {"class_type": "SaveText", "inputs": {"text": ["2", 0], "filename_prefix": "blend"}}
    })
}

fn slow_prompt(ms: i64) -> Value {
    json!({
        "1": {"class_type": "Delay", "inputs": {"text": "slow", "milliseconds": ms}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": "slow"}}
    })
}

/// The event types of a three-node prompt up to its last node's start, then `ending`.
fn three_node_events<'a>(ending: &[&'a str]) -> Vec<&'a str> {
    let mut events = vec![
        "status",
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "executing",
    ];
    events.extend_from_slice(ending);
    events
}

fn executing_nodes(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["type"] == "executing" && !m["data"]["node"].is_null())
        .map(|m| m["data"]["node"].as_str().unwrap().to_owned())
        .collect()
}

/// The nodes the `execution_cached` message lists.
fn cached_nodes(messages: &[Value]) -> Value {
    let cached = messages.iter().find(|m| m["type"] == "execution_cached");
    cached.expect("an execution_cached message")["data"]["nodes"].clone()
}

fn output_files(server: &Server) -> usize {
    std::fs::read_dir(server.data_dir.join("output")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn successful_prompt_sends_the_comfyui_event_sequence() -> anyhow::Result<()> {
    let (_dir, server, mut ws) = server_with_client("alice").await?;
    let id = server
        .queue(&blend_prompt("a lettuce and a mantis"), "alice")
        .await?;
    let messages = ws.until_done(&id).await?;
    let kinds = types(&messages);
    assert_eq!(
        kinds,
        three_node_events(&["executed", "execution_success", "status", "executing"]),
        "{messages:#?}"
    );
    assert_eq!(
        messages[0]["data"]["status"]["exec_info"]["queue_remaining"],
        1
    );
    assert_eq!(messages[2]["data"]["nodes"], json!([]));
    // Dependency order: the primitive, the join, then the output node.
    assert_eq!(executing_nodes(&messages), ["1", "2", "3"]);
    let executed = &messages[6]["data"];
    assert_eq!(executed["node"], "3");
    assert_eq!(executed["prompt_id"], id.as_str());
    assert_eq!(
        executed["output"]["text"],
        json!(["a creative mixture of a lettuce and a mantis"])
    );
    assert_eq!(
        messages[8]["data"]["status"]["exec_info"]["queue_remaining"],
        0
    );

    let entry = server.wait_history(&id).await?;
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(entry["status"]["completed"], true);
    assert_eq!(entry["prompt"][1], id.as_str());
    let file = &entry["outputs"]["3"]["files"][0];
    let text = std::fs::read_to_string(
        server
            .data_dir
            .join("output")
            .join(file["filename"].as_str().unwrap()),
    )?;
    assert_eq!(text, "a creative mixture of a lettuce and a mantis");
    Ok(())
}

#[tokio::test]
async fn failing_node_reports_execution_error_and_the_server_goes_on() -> anyhow::Result<()> {
    let (_dir, mut server, mut ws) = server_with_client("bob").await?;
    let mut bad = blend_prompt("x");
    bad["3"]["inputs"]["filename_prefix"] = json!("../../escape");
    let id = server.queue(&bad, "bob").await?;
    let messages = ws.until_done(&id).await?;
    assert_eq!(
        types(&messages),
        three_node_events(&["execution_error", "status", "executing"])
    );
    let error = &messages[6]["data"];
    assert_eq!(error["node_id"], "3");
    assert_eq!(error["node_type"], "SaveText");
    assert_eq!(error["executed"], json!(["1", "2"]));
    assert_eq!(error["exception_type"], "ValueError");
    let text = error["exception_message"].as_str().unwrap();
    assert!(
        text.contains("SaveText")
            && text.contains("filename_prefix")
            && text.contains("leaves its folder"),
        "{text}"
    );
    assert_eq!(
        error["current_inputs"]["filename_prefix"],
        json!(["../../escape"])
    );
    let entry = server.wait_history(&id).await?;
    assert_eq!(entry["status"]["status_str"], "error");

    // The next prompt runs normally.
    let ok = server.queue(&blend_prompt("y"), "bob").await?;
    let messages = ws.until_done(&ok).await?;
    assert!(types(&messages).contains(&"execution_success".to_owned()));
    assert!(server.alive());
    Ok(())
}

#[tokio::test]
async fn unchanged_subgraphs_are_cached_across_prompts() -> anyhow::Result<()> {
    let (_dir, server, mut ws) = server_with_client("c").await?;
    let first = server.queue(&blend_prompt("a bee and a frog"), "c").await?;
    ws.until_done(&first).await?;
    assert_eq!(output_files(&server), 1);

    // Same prompt: everything cached, nothing re-run, the cached output replayed.
    let second = server.queue(&blend_prompt("a bee and a frog"), "c").await?;
    let messages = ws.until_done(&second).await?;
    assert_eq!(cached_nodes(&messages), json!(["1", "2", "3"]));
    assert!(executing_nodes(&messages).is_empty(), "{messages:#?}");
    assert!(
        types(&messages).contains(&"executed".to_owned()),
        "cached output nodes replay `executed`"
    );
    assert_eq!(
        output_files(&server),
        1,
        "a cached SaveText must not write again"
    );

    // Change one input: only what depends on it runs.
    let third = server
        .queue(&blend_prompt("a giraffe and a peacock"), "c")
        .await?;
    let messages = ws.until_done(&third).await?;
    assert_eq!(cached_nodes(&messages), json!(["1"]));
    assert_eq!(executing_nodes(&messages), ["2", "3"]);
    assert_eq!(output_files(&server), 2);
    Ok(())
}

#[tokio::test]
async fn interrupt_stops_a_slow_node_and_the_next_prompt_runs() -> anyhow::Result<()> {
    let (_dir, server, mut ws) = server_with_client("d").await?;
    let slow = server.queue(&slow_prompt(60_000), "d").await?;
    let progress = ws.wait_for("progress").await?;
    assert_eq!(progress["data"]["node"], "1");
    assert_eq!(progress["data"]["max"], 60_000);
    let started = std::time::Instant::now();
    let (status, _) = server.post("/interrupt", &json!({})).await?;
    assert_eq!(status, 200);
    let interrupted = ws.wait_for("execution_interrupted").await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "interruption took {:?}",
        started.elapsed()
    );
    assert_eq!(interrupted["data"]["node_id"], "1");
    assert_eq!(interrupted["data"]["node_type"], "Delay");
    assert_eq!(interrupted["data"]["prompt_id"], slow.as_str());
    let entry = server.wait_history(&slow).await?;
    assert_eq!(entry["status"]["completed"], false);

    let next = server.queue(&slow_prompt(10), "d").await?;
    let messages = ws.until_done(&next).await?;
    assert!(
        types(&messages).contains(&"execution_success".to_owned()),
        "{messages:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn events_go_only_to_the_prompt_owner() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let mut alice = server.connect("alice").await?;
    let mut eve = server.connect("eve").await?;
    let id = server
        .queue(&blend_prompt("a fox and a teapot"), "alice")
        .await?;
    alice.until_done(&id).await?;
    // Eve sees queue status (for everyone) but none of Alice's execution events.
    while let Some(frame) = eve.quiet_for(Duration::from_millis(300)).await {
        match frame {
            cretok_tests::Frame::Json(m) => assert_eq!(m["type"], "status", "eve got {m}"),
            cretok_tests::Frame::Binary(b) => panic!("eve got a binary frame of {} bytes", b.len()),
        }
    }
    Ok(())
}

#[tokio::test]
async fn websocket_commands_queue_and_interrupt_with_replies() -> anyhow::Result<()> {
    let (_dir, _server, mut ws) = server_with_client("cmd").await?;
    ws.send(&json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}}))
        .await?;
    let flags = ws.wait_for("feature_flags").await?;
    assert_eq!(flags["data"]["supports_preview_metadata"], true);

    ws.send(
        &json!({"type": "queue_prompt", "request_id": 7, "data": {"prompt": slow_prompt(60_000)}}),
    )
    .await?;
    let reply = ws.wait_for("reply").await?;
    assert_eq!(reply["data"]["request_id"], 7);
    let id = reply["data"]["result"]["prompt_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ws.wait_for("progress").await?;
    ws.send(&json!({"type": "interrupt", "request_id": "stop"}))
        .await?;
    let reply = ws.wait_for("reply").await?;
    assert_eq!(reply["data"]["request_id"], "stop");
    assert_eq!(reply["data"]["result"]["interrupted"], true);
    let interrupted = ws.wait_for("execution_interrupted").await?;
    assert_eq!(interrupted["data"]["prompt_id"], id.as_str());

    // An invalid prompt gets the validation body as the reply's error.
    ws.send(&json!({"type": "queue_prompt", "request_id": 8, "data": {"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}}))
        .await?;
    let reply = ws.wait_for("reply").await?;
    assert_eq!(reply["data"]["request_id"], 8);
    assert_eq!(reply["data"]["error"]["error"]["type"], "invalid_prompt");
    Ok(())
}

#[tokio::test]
async fn front_prompts_jump_the_queue() -> anyhow::Result<()> {
    let (_dir, server, mut ws) = server_with_client("q").await?;
    let blocker = server.queue(&slow_prompt(60_000), "q").await?;
    ws.wait_for("progress").await?;
    let back = server.queue(&blend_prompt("back"), "q").await?;
    let (_, body) = server
        .post(
            "/prompt",
            &json!({"prompt": blend_prompt("front"), "client_id": "q", "front": true}),
        )
        .await?;
    let front = body["prompt_id"].as_str().unwrap().to_owned();
    let (_, queue) = server.get("/queue").await?;
    assert_eq!(queue["queue_running"][0][1], blocker.as_str());
    let pending: Vec<&str> = queue["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap())
        .collect();
    assert_eq!(pending, [front.as_str(), back.as_str()]);
    server.post("/interrupt", &json!({})).await?;
    let first = ws.wait_for("execution_success").await?;
    assert_eq!(first["data"]["prompt_id"], front.as_str());
    let second = ws.wait_for("execution_success").await?;
    assert_eq!(second["data"]["prompt_id"], back.as_str());
    let (_, history) = server.get("/history?max_items=2").await?;
    assert_eq!(history.as_object().unwrap().len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_prompt_id_already_queued_running_or_finished_is_refused() -> anyhow::Result<()> {
    let (_dir, server, mut ws) = server_with_client("dup").await?;
    let submit =
        |id: &str, prompt: Value| json!({"prompt": prompt, "client_id": "dup", "prompt_id": id});
    let (status, body) = server
        .post("/prompt", &submit("running", slow_prompt(60_000)))
        .await?;
    assert_eq!((status, body["prompt_id"].clone()), (200, json!("running")));
    ws.wait_for("progress").await?;
    let (status, _) = server
        .post("/prompt", &submit("waiting", blend_prompt("kept")))
        .await?;
    assert_eq!(status, 200);
    for taken in ["running", "waiting"] {
        let (status, body) = server
            .post("/prompt", &submit(taken, blend_prompt("replacement")))
            .await?;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "duplicate_prompt_id", "{body}");
        let details = body["error"]["details"].as_str().unwrap_or_default();
        assert!(details.contains(taken), "{body}");
        assert_eq!(body["node_errors"], json!({}), "{body}");
    }
    server.post("/interrupt", &json!({})).await?;
    let finished = server.wait_history("waiting").await?;
    let (status, body) = server
        .post("/prompt", &submit("waiting", blend_prompt("replacement")))
        .await?;
    assert_eq!(
        (status, &body["error"]["type"]),
        (400, &json!("duplicate_prompt_id"))
    );
    // The refused prompts changed nothing: one history entry each, as first run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, history) = server.get("/history").await?;
    assert_eq!(history.as_object().map(|h| h.len()), Some(2), "{history}");
    assert_eq!(history["waiting"], finished);
    assert_eq!(
        finished["outputs"]["3"]["text"],
        json!(["a creative mixture of kept"])
    );
    Ok(())
}

#[tokio::test]
async fn every_websocket_close_is_answered_with_a_close_frame() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    for round in 0..5 {
        let mut clients = Vec::new();
        for c in 0..20 {
            clients.push(server.connect(&format!("closer-{round}-{c}")).await?);
        }
        // Events in flight while the clients close.
        for _ in 0..3 {
            server.queue(&slow_prompt(5), "nobody").await?;
        }
        let closing = clients
            .into_iter()
            .map(|c| tokio::spawn(c.close_handshake()));
        for (c, closed) in futures_util::future::join_all(closing)
            .await
            .into_iter()
            .enumerate()
        {
            closed?.map_err(|e| anyhow::anyhow!("round {round}, client {c}: {e:#}"))?;
        }
    }
    Ok(())
}

/// A single-file checkpoint with the SD3 marker tensor and nothing else: the
/// loader fails inside candle, which appends a backtrace under `RUST_BACKTRACE`.
fn truncated_checkpoint(models: &std::path::Path) -> anyhow::Result<()> {
    let folder = models.join("checkpoints");
    std::fs::create_dir_all(&folder)?;
    let marker =
        candle_core::Tensor::zeros((6, 2), candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let tensors = std::collections::HashMap::from([(
        "joint_blocks.0.x_block.attn.qkv.weight".to_owned(),
        marker,
    )]);
    candle_core::safetensors::save(&tensors, folder.join("tiny-sd3.safetensors"))?;
    Ok(())
}

#[tokio::test]
async fn clients_get_no_backtraces_or_build_paths_even_with_rust_backtrace() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let models = dir.path().join("models");
    truncated_checkpoint(&models)?;
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &["--models", models.to_str().unwrap()],
        &[("RUST_BACKTRACE", "1")],
    )
    .await?;
    let mut ws = server.connect("bt").await?;
    let workflow =
        std::fs::read_to_string(cretok_tests::repo_root().join("workflows/sd3_txt2img.json"))?;
    let id = server
        .queue(&serde_json::from_str(&workflow)?, "bt")
        .await?;
    let messages = ws.until_done(&id).await?;
    let error = messages
        .iter()
        .find(|m| m["type"] == "execution_error")
        .unwrap_or_else(|| panic!("no execution_error in {messages:#?}"));
    let text = error["data"]["exception_message"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("is missing"), "{text}");
    assert_eq!(error["data"]["traceback"], json!([]));
    let entry = server.wait_history(&id).await?;
    for (what, shown) in [
        ("websocket", serde_json::to_string(&messages)?),
        ("history", entry.to_string()),
    ] {
        for leak in ["backtrace", ".rs:", "/src/", "/.cargo/", "/rustc/"] {
            assert!(!shown.contains(leak), "{what} shows {leak:?}: {shown}");
        }
    }
    Ok(())
}
