//! Bounded work on the real server: prompts built to exhaust memory or the
//! stack are refused at validation in ComfyUI's error shape, the server's
//! memory stays under a stated bound, the next prompt succeeds, and a finished
//! prompt's memory is returned after `/free`.

use cretok_nodes::test_prompts::{add_placeholder_checkpoint, concat_chain, sd3_prompt};
use cretok_tests::Server;
use serde_json::{json, Value};

/// Every server here runs with this budget, so the bombs are refused on any machine.
const BUDGET_ARGS: [&str; 2] = ["--max-memory-gb", "4"];

/// The server's peak RSS while refusing every bomb (a 30 MB body is parsed and
/// copied a few times; nothing the bombs ask for is ever allocated).
const PEAK_RSS_BOUND_KIB: u64 = 1024 * 1024;

/// POSTs a prompt that must be refused; returns the 400 body.
async fn refused(server: &mut Server, prompt: &Value) -> anyhow::Result<Value> {
    let (status, body) = server.post("/prompt", &json!({"prompt": prompt})).await?;
    assert_eq!(status, 400, "{body}");
    assert!(server.alive(), "the server died");
    let (_, queue) = server.get("/queue").await?;
    assert_eq!(queue["queue_running"], json!([]), "nothing may run");
    assert_eq!(queue["queue_pending"], json!([]), "nothing may be queued");
    Ok(body)
}

fn node_error_type(body: &Value, id: &str) -> Value {
    body["node_errors"][id]["errors"][0]["type"].clone()
}

async fn small_prompt_succeeds(server: &Server, text: &str) -> anyhow::Result<()> {
    let prompt = json!({
        "1": {"class_type": "StringConcatenate", "inputs": {"string_a": text, "string_b": "ok", "delimiter": " "}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": "next"}}
    });
    let id = server.queue(&prompt, "limits").await?;
    let entry = server.wait_history(&id).await?;
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    assert_eq!(entry["outputs"]["2"]["text"], json!([format!("{text} ok")]));
    Ok(())
}

#[tokio::test]
async fn bombs_are_refused_at_validation_and_the_server_survives() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    add_placeholder_checkpoint(dir.path())?;
    let mut server = Server::start(dir.path(), &BUDGET_ARGS).await?;

    let body = refused(&mut server, &sd3_prompt(16384, 16384, 64, "a cat", 1.0)).await?;
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(node_error_type(&body, "2"), "memory_budget_exceeded");
    let details = body["node_errors"]["2"]["errors"][0]["details"]
        .as_str()
        .unwrap_or_default();
    assert!(
        details.contains("4.00 GB") && details.contains("--max-memory-gb"),
        "{details}"
    );
    small_prompt_succeeds(&server, "after the latent").await?;

    let text = "a lettuce mantis ".repeat(30 * 1024 * 1024 / 17);
    let body = refused(&mut server, &sd3_prompt(1024, 1024, 1, &text, 1.0)).await?;
    assert_eq!(node_error_type(&body, "3"), "input_too_large");
    small_prompt_succeeds(&server, "after the text").await?;

    let body = refused(&mut server, &concat_chain("x", 40, true, false)).await?;
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    let (_, errors) = body["node_errors"]
        .as_object()
        .and_then(|m| m.iter().next())
        .expect("a node error");
    assert_eq!(errors["errors"][0]["type"], "memory_budget_exceeded");
    small_prompt_succeeds(&server, "after the doubling").await?;

    let body = refused(&mut server, &sd3_prompt(1024, 1024, 1, "a cat", 1e-12)).await?;
    assert_eq!(node_error_type(&body, "4"), "input_too_large");
    small_prompt_succeeds(&server, "after the denoise").await?;

    let body = refused(&mut server, &concat_chain("x", 50_000, false, false)).await?;
    assert_eq!(body["error"]["type"], "invalid_prompt");
    assert_eq!(body["error"]["message"], "Prompt has too many nodes");
    small_prompt_succeeds(&server, "after the chain").await?;

    let peak = server.memory_kib("VmHWM")?;
    assert!(
        peak < PEAK_RSS_BOUND_KIB,
        "peak RSS {peak} KiB, over the bound {PEAK_RSS_BOUND_KIB} KiB"
    );
    server.stop().await
}

#[tokio::test]
async fn a_long_chain_runs_under_a_raised_node_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let args = ["--max-nodes", "40000", BUDGET_ARGS[0], BUDGET_ARGS[1]];
    let mut server = Server::start(dir.path(), &args).await?;
    let id = server
        .queue(&concat_chain("x", 30_000, false, false), "limits")
        .await?;
    let entry = server.wait_history(&id).await?;
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    assert!(server.alive());
    server.stop().await
}

/// RSS after a prompt that held ~0.5 GB, `/free` and a small prompt (which
/// drops the cache) returns to near where it started.
#[tokio::test]
async fn memory_of_a_finished_prompt_is_returned_after_free() -> anyhow::Result<()> {
    const HELD_KIB: u64 = 300 * 1024;
    const RETURNED_SLACK_KIB: u64 = 100 * 1024;
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &BUDGET_ARGS).await?;
    small_prompt_succeeds(&server, "warm up").await?;
    let baseline = server.memory_kib("VmRSS")?;

    // 1 MiB of spaces doubled 8 times: 511 MiB of text held by the cache, stripped to "".
    let big = concat_chain(&" ".repeat(1 << 20), 8, true, true);
    let id = server.queue(&big, "limits").await?;
    let entry = server.wait_history(&id).await?;
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    let held = server.memory_kib("VmRSS")?;
    assert!(
        held > baseline + HELD_KIB,
        "the cache should hold the chain: {held} KiB vs baseline {baseline} KiB"
    );

    let (status, _) = server
        .post(
            "/free",
            &json!({"unload_models": true, "free_memory": true}),
        )
        .await?;
    assert_eq!(status, 200);
    small_prompt_succeeds(&server, "after free").await?;
    let after = server.memory_kib("VmRSS")?;
    assert!(
        after < baseline + RETURNED_SLACK_KIB,
        "RSS {after} KiB after /free, baseline {baseline} KiB"
    );
    server.stop().await
}
