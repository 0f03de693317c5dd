//! ComfyUI's official SD3.5 template, `sd3.5_simple_example.json` from the PyPI
//! package `comfyui-workflow-templates-json` (pinned in `.ci/test`, installed into
//! the repository's `.venv`), run unchanged on a tiny checkpoint saved under the
//! template's file name: headless, and through the server as the editor would
//! queue it. 20 steps at 1024², so the tiny checkpoint gets a 64-patch position
//! table (`--max-size 1024`). Also `sd3.5_large_depth.json`, whose subgraph
//! converts to `<instance>:<inner>` nodes (it needs nodes we lack to run).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cretok_tests::{cretok_bin, cretok_ok, repo_root, run_headless, Server};
use serde_json::Value;

const TEMPLATE: &str = "sd3.5_simple_example.json";
const DEPTH_TEMPLATE: &str = "sd3.5_large_depth.json";
const CHECKPOINT: &str = "sd3.5_large_fp8_scaled.safetensors";

/// The template's path in `.venv`; `None` (a panic under `CI=true`) without the package.
fn template(name: &str) -> Option<PathBuf> {
    let found = Command::new(repo_root().join(".venv/bin/python"))
        .args([
            "-c",
            "import comfyui_workflow_templates_json as t, pathlib; \
             print(pathlib.Path(t.__file__).parent / 'templates')",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join(name))
        .filter(|p| p.is_file());
    if found.is_none() {
        let why = "comfyui-workflow-templates-json is not installed in .venv (see .ci/test)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

fn tiny_checkpoint(models: &Path) {
    let models = models.to_str().unwrap();
    cretok_ok(&[
        "dev",
        "tiny-checkpoint",
        "--models",
        models,
        "--name",
        CHECKPOINT,
        "--max-size",
        "1024",
    ]);
}

/// The size of a PNG.
fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let info = decoder.read_info().unwrap();
    (info.info().width, info.info().height)
}

#[test]
fn the_official_sd35_template_runs_unchanged_headless() {
    let Some(template) = template(TEMPLATE) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (models, data) = (dir.path().join("models"), dir.path().join("data"));
    tiny_checkpoint(&models);
    let path = run_headless(&template, &models, &data, &[]);
    assert!(path.ends_with("ComfyUI_00001_.png"), "{path:?}");
    assert_eq!(png_size(&path), (1024, 1024));
}

#[tokio::test]
async fn the_official_sd35_template_runs_unchanged_through_the_server() -> anyhow::Result<()> {
    let Some(template) = template(TEMPLATE) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let models = dir.path().join("models");
    tiny_checkpoint(&models);
    // What the editor queues: the API form of the file it opened.
    let api: Value =
        serde_json::from_slice(&cretok_ok(&["convert", template.to_str().unwrap()]).stdout)?;
    let server = Server::start(
        &dir.path().join("data"),
        &["--models", models.to_str().unwrap()],
    )
    .await?;
    let prompt_id = server.queue(&api, "template-test").await?;
    let entry = tokio::time::timeout(Duration::from_secs(1200), async {
        loop {
            let (_, body) = server.get(&format!("/history/{prompt_id}")).await?;
            if let Some(entry) = body.get(&prompt_id) {
                return anyhow::Ok(entry.clone());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await??;
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    let image = &entry["outputs"]["9"]["images"][0];
    let saved = dir
        .path()
        .join("data/output")
        .join(image["filename"].as_str().unwrap());
    assert_eq!(png_size(&saved), (1024, 1024));
    Ok(())
}

#[test]
fn the_official_depth_template_flattens_its_subgraph() {
    let Some(template) = template(DEPTH_TEMPLATE) else {
        return;
    };
    let out = Command::new(cretok_bin())
        .args(["convert", template.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = err.lines().skip(1).map(str::trim).collect();
    // Node 68 is the subgraph instance: its inner nodes are `68:<id>`, and only
    // the node types we do not have are left.
    assert_eq!(
        problems,
        [
            "unknown node type 'ControlNetApplyAdvanced' (node 61): no installed node provides it",
            "unknown node type 'ControlNetLoader' (node 46): no installed node provides it",
            "unknown node type 'LotusConditioning' (node 68:96): no installed node provides it",
            "unknown node type 'SetFirstSigma' (node 68:101): no installed node provides it",
        ],
        "{err}"
    );
}
