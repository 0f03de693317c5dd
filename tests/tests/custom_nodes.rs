//! Sandboxed custom nodes come and go while the server runs: installing a
//! component and asking for a reload shows it in `/object_info`; removing it
//! hides it again, and a prompt that still uses it gets a validation error.

use std::path::Path;
use std::time::Duration;

use cretok_tests::{example_components, Server};
use serde_json::json;

#[path = "../../host/tests/sandbox/forge.rs"]
#[allow(dead_code)]
mod forge;

use forge::{Guest, Image, Port, Run, STR};

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

fn text_prompt(class: &str, prefix: &str) -> serde_json::Value {
    json!({
        "1": {"class_type": class, "inputs": {}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": prefix}}
    })
}

/// Replacing a component under the same id and reloading runs the new one:
/// its content hash is part of the cache signature.
#[tokio::test]
async fn a_replaced_guest_serves_its_new_output() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let custom = dir.path().join("custom_nodes");
    std::fs::create_dir_all(&custom)?;
    Guest::text("Swap", "old").write(&custom, "swap.wasm");
    let server = Server::start(dir.path(), &["--custom-nodes", custom.to_str().unwrap()]).await?;
    let mut ws = server.connect("r").await?;
    let prompt = text_prompt("Swap", "swap");
    let id = server.queue(&prompt, "r").await?;
    ws.until_done(&id).await?;
    assert_eq!(
        server.wait_history(&id).await?["outputs"]["2"]["text"][0],
        "old"
    );

    Guest::text("Swap", "new").write(&custom, "swap.wasm");
    let (_, reload) = server.post("/api/custom_nodes/reload", &json!({})).await?;
    assert_eq!(reload["errors"], json!([]));
    let id = server.queue(&prompt, "r").await?;
    let messages = ws.until_done(&id).await?;
    let cached = messages.iter().find(|m| m["type"] == "execution_cached");
    assert!(
        cached.is_none_or(|m| !m["data"]["nodes"].as_array().unwrap().contains(&json!("1"))),
        "the replaced node was served from the cache: {messages:#?}"
    );
    assert_eq!(
        server.wait_history(&id).await?["outputs"]["2"]["text"][0],
        "new"
    );
    Ok(())
}

/// A folder of hostile guests: each is refused with a clear error, the server
/// stays small and serves the well-behaved node; `/interrupt` stops a running
/// guest and is reported as an interruption.
#[tokio::test]
async fn hostile_guests_are_refused_or_bounded_by_the_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let custom = dir.path().join("custom_nodes");
    std::fs::create_dir_all(&custom)?;
    Guest::text("Good", "good").write(&custom, "good.wasm");
    // Five schema alias bombs: 60 tooltips aliasing one 8 MiB buffer each.
    for i in 0..5 {
        let mut image = Image::default();
        let bomb = image.zeros(8 << 20);
        let ports: Vec<Port> = (0..60)
            .map(|p| Port {
                name: image.str(&format!("p{p}")),
                kind: STR,
                description: bomb,
            })
            .collect();
        let inputs = image.ports(&ports);
        let (id, empty) = (image.str(&format!("Bomb{i}")), image.str(""));
        let outputs = image.ports(&[]);
        let schema = image.schema(id, empty, empty, inputs, outputs);
        Guest::new(image, schema, Run::Spin).write(&custom, &format!("bomb{i}.wasm"));
    }
    Guest::text("Template", "shadow").write(&custom, "shadow_Template.wasm");
    Guest::text("Template", "real").write(&custom, "template.wasm");
    Guest::text("ksampler", "x").write(&custom, "ksampler.wasm");
    std::fs::File::create(custom.join("huge.wasm"))?.set_len(3 << 30)?;
    let mut image = Image::default();
    let schema = image.text_node("Spin");
    Guest::new(image, schema, Run::Spin).write(&custom, "spin.wasm");

    let mut server = Server::start(
        dir.path(),
        &[
            "--custom-nodes",
            custom.to_str().unwrap(),
            "--wasm-deadline-ms",
            "20000",
        ],
    )
    .await?;
    let (_, reload) = server.post("/api/custom_nodes/reload", &json!({})).await?;
    let errors: Vec<&str> = reload["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 9, "{errors:#?}");
    for (file, problem) in [
        ("bomb0.wasm", "copy budget of 65536 bytes"),
        ("huge.wasm", "more than the 16777216 bytes"),
        ("ksampler.wasm", "taken by the built-in node 'KSampler'"),
        ("shadow_Template.wasm", "also declared by template.wasm"),
        ("template.wasm", "also declared by shadow_Template.wasm"),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(file) && e.contains(problem)),
            "{file}: {errors:#?}"
        );
    }
    let (_, info) = server.get("/object_info").await?;
    assert!(info.get("Good").is_some() && info.get("Spin").is_some());
    assert!(info.get("Template").is_none() && info.get("ksampler").is_none());
    let rss = server.rss_bytes()?;
    assert!(rss < 400 << 20, "the server holds {} MiB", rss >> 20);

    let mut ws = server.connect("h").await?;
    let id = server.queue(&text_prompt("Spin", "spin"), "h").await?;
    ws.wait_for("executing").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    server.post("/interrupt", &json!({})).await?;
    let messages = ws.until_done(&id).await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        messages
            .iter()
            .any(|m| m["type"] == "execution_interrupted"),
        "{messages:#?}"
    );
    assert!(
        !messages.iter().any(|m| m["type"] == "execution_error"),
        "{messages:#?}"
    );

    let id = server.queue(&text_prompt("Good", "good"), "h").await?;
    ws.until_done(&id).await?;
    assert_eq!(
        server.wait_history(&id).await?["outputs"]["2"]["text"][0],
        "good"
    );
    assert!(server.alive());
    Ok(())
}
