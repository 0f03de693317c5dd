//! Sandboxed custom nodes come and go while the server runs: installing a
//! component and asking for a reload shows it in `/object_info`; removing it
//! hides it again, and a prompt that still uses it gets a validation error.

use std::path::Path;

use cretok_tests::{example_components, Server};
use serde_json::json;

fn template_prompt() -> serde_json::Value {
    json!({
        "1": {"class_type": "Template", "inputs": {"template": "a creative mixture of a {var_0} and a {var_1}", "vars.var_0": "lettuce", "vars.var_1": "mantis"}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": "templated"}}
    })
}

#[tokio::test]
async fn install_reload_run_remove() -> anyhow::Result<()> {
    let component = example_components(Path::new(env!("CARGO_TARGET_TMPDIR")), &["template"])
        .join("template.wasm");
    let dir = tempfile::tempdir()?;
    let custom = dir.path().join("custom_nodes");
    std::fs::create_dir_all(&custom)?;
    let server = Server::start(dir.path(), &["--custom-nodes", custom.to_str().unwrap()]).await?;
    let (_, info) = server.get("/object_info/Template").await?;
    assert_eq!(info, json!({}), "not installed yet");

    std::fs::copy(&component, custom.join("template.wasm"))?;
    let (status, reload) = server.post("/api/custom_nodes/reload", &json!({})).await?;
    assert_eq!(status, 200);
    assert_eq!(reload["errors"], json!([]));
    let (_, info) = server.get("/object_info").await?;
    let template = &info["Template"];
    assert!(
        template["category"]
            .as_str()
            .unwrap()
            .starts_with("templates"),
        "{template}"
    );
    assert_eq!(template["output"][0], "STRING");

    let mut ws = server.connect("t").await?;
    let id = server.queue(&template_prompt(), "t").await?;
    ws.until_done(&id).await?;
    let entry = server.wait_history(&id).await?;
    assert_eq!(
        entry["outputs"]["2"]["text"][0], "a creative mixture of a lettuce and a mantis",
        "{entry}"
    );

    std::fs::remove_file(custom.join("template.wasm"))?;
    server.post("/api/custom_nodes/reload", &json!({})).await?;
    let (_, info) = server.get("/object_info").await?;
    assert!(info.get("Template").is_none());
    let (status, body) = server
        .post("/prompt", &json!({"prompt": template_prompt()}))
        .await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_prompt");
    assert_eq!(
        body["error"]["message"],
        "Cannot execute because node Template does not exist."
    );

    // A broken component is reported by the reload and does not hide the rest.
    std::fs::write(custom.join("broken.wasm"), b"not wasm at all")?;
    let (_, reload) = server.post("/api/custom_nodes/reload", &json!({})).await?;
    let errors = reload["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].as_str().unwrap().contains("broken.wasm"),
        "{reload}"
    );
    let (_, info) = server.get("/object_info/SaveText").await?;
    assert!(info.get("SaveText").is_some());
    Ok(())
}

/// Each limit a hostile custom node hits ends its prompt with an
/// `execution_error` naming the node and the limit; the server then runs a
/// normal prompt.
#[tokio::test]
async fn hostile_nodes_end_in_execution_errors_and_the_server_goes_on() -> anyhow::Result<()> {
    let components =
        example_components(Path::new(env!("CARGO_TARGET_TMPDIR")), &["hostile-runtime"]);
    let dir = tempfile::tempdir()?;
    let custom = dir.path().join("custom_nodes");
    std::fs::create_dir_all(&custom)?;
    std::fs::copy(
        components.join("hostile-runtime.wasm"),
        custom.join("hostile-runtime.wasm"),
    )?;
    let mut server = Server::start(
        dir.path(),
        &[
            "--custom-nodes",
            custom.to_str().unwrap(),
            "--wasm-deadline-ms",
            "300",
        ],
    )
    .await?;
    let mut ws = server.connect("h").await?;
    let attack = |kind: &str| {
        json!({
            "1": {"class_type": "Hostile", "inputs": {"attack": kind}},
            "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": "hostile"}}
        })
    };
    for (kind, expected) in [
        ("spin", "deadline"),
        ("memory", "memory"),
        ("recursion", "stack"),
        ("panic", "panic"),
        ("wrong-type", "text"),
    ] {
        let id = server.queue(&attack(kind), "h").await?;
        let messages = ws.until_done(&id).await?;
        let error = messages
            .iter()
            .find(|m| m["type"] == "execution_error")
            .unwrap_or_else(|| panic!("{kind}: no execution_error in {messages:#?}"));
        assert_eq!(error["data"]["node_id"], "1");
        assert_eq!(error["data"]["node_type"], "Hostile");
        let text = error["data"]["exception_message"]
            .as_str()
            .unwrap()
            .to_lowercase();
        assert!(
            text.contains("hostile") && text.contains(expected),
            "{kind}: {text}"
        );

        let ok = server.queue(&attack("none"), "h").await?;
        let messages = ws.until_done(&ok).await?;
        assert!(
            messages.iter().any(|m| m["type"] == "execution_success"),
            "{kind}: the next prompt failed: {messages:#?}"
        );
        assert!(server.alive());
    }
    Ok(())
}
