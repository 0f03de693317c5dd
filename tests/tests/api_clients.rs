//! Third-party ComfyUI API clients against `cretok serve`: comfy-api-simplified
//! (PyPI, pinned in `.ci/test`, installed into the repository's `.venv`).

use std::process::Command;

use cretok_tests::{repo_root, Server};

/// The `.venv` python when `module` imports there; `None` (or a panic under
/// `CI=true`) when it cannot.
fn venv_python_with(module: &str) -> Option<std::path::PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    let imports = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if imports {
        return Some(python);
    }
    let why = format!("{module} is not installed in .venv (see .ci/test)");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    None
}

#[tokio::test]
async fn comfy_api_simplified_gets_the_saved_image() -> anyhow::Result<()> {
    let Some(python) = venv_python_with("comfy_api_simplified") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let server = Server::start_on_tiny_checkpoint(dir.path(), &[]).await?;
    // Load the checkpoint first: its summary goes out as a binary text frame,
    // which this client would take for an image if it connected in time.
    let workflow_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join("workflows/sd3_txt2img.json"),
    )?)?;
    let warm_up = server.queue(&workflow_json, "warm-up").await?;
    server.wait_history(&warm_up).await?;

    let received = dir.path().join("received.png");
    let script = repo_root().join("tests/clients/comfy_api_simplified_txt2img.py");
    let workflow = repo_root().join("workflows/sd3_txt2img.json");
    let url = server.url("");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(url.trim_end_matches('/'))
        .arg(workflow)
        .arg(&received)
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let name = String::from_utf8(out.stdout)?.trim().to_owned();
    assert!(
        name.starts_with("txt2img_") && name.ends_with(".png"),
        "{name}"
    );
    let saved = server.data_dir.join("output/sd3").join(&name);
    assert_eq!(std::fs::read(&received)?, std::fs::read(&saved)?);
    server.stop().await
}
