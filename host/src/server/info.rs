//! Read-only information routes: node schemas, system, models, features.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use cretok_node_api::Registry;
use serde_json::{json, Value as Json_};

use super::error::ApiError;
use super::{Shared, MAX_UPLOAD_BYTES};
use crate::app::CATALOG_PATIENCE;

pub async fn object_info(State(s): State<Shared>) -> Json<Json_> {
    Json(settled_registry(&s).await.object_info())
}

pub async fn object_info_class(State(s): State<Shared>, Path(class): Path<String>) -> Json<Json_> {
    let registry = settled_registry(&s).await;
    Json(match registry.get(&class) {
        Some(node) => json!({ class: node.schema().to_object_info() }),
        None => json!({}),
    })
}

/// The node types once custom nodes compiling at start-up are ready (the
/// editor reads them once, when it opens).
async fn settled_registry(s: &Shared) -> Arc<Registry> {
    let catalog = Arc::clone(&s.app.catalog);
    tokio::task::spawn_blocking(move || catalog.settled_snapshot(CATALOG_PATIENCE))
        .await
        .unwrap_or_else(|_| s.app.catalog.snapshot())
}

/// Reloads custom nodes without a restart.
pub async fn reload_nodes(State(s): State<Shared>) -> Json<Json_> {
    let state = s.clone();
    let problems = tokio::task::spawn_blocking(move || (state.reload_nodes)())
        .await
        .unwrap_or_default();
    let count = s.app.catalog.snapshot().names().count();
    Json(json!({"nodes": count, "errors": problems}))
}

/// (total, available) bytes of memory, from /proc/meminfo where it exists.
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

pub async fn system_stats() -> Json<Json_> {
    let (total, free) = memory();
    Json(json!({
        "system": {
            "os": std::env::consts::OS,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": format!("cretok {}", env!("CARGO_PKG_VERSION")),
            "required_frontend_version": "",
            "python_version": "none (Rust host)",
            "pytorch_version": "none (candle)",
            "embedded_python": false,
            "argv": std::env::args().collect::<Vec<_>>(),
        },
        "devices": [{
            "name": "cpu", "type": "cpu", "index": 0,
            "vram_total": total, "vram_free": free,
            "torch_vram_total": 0, "torch_vram_free": 0,
        }],
    }))
}

pub async fn embeddings(State(s): State<Shared>) -> Json<Json_> {
    let names: Vec<String> = s
        .app
        .paths
        .list_models("embeddings", false)
        .into_iter()
        .map(|f| {
            f.rsplit_once('.')
                .map_or(f.clone(), |(stem, _)| stem.to_owned())
        })
        .collect();
    Json(json!(names))
}

/// Our one editor extension (`frontend.rs`), whatever the page: the frontend imports each.
pub async fn extensions() -> Json<Json_> {
    Json(json!([super::frontend::DEFAULT_WORKFLOW_JS]))
}

pub async fn features() -> Json<Json_> {
    Json(json!({"supports_preview_metadata": true, "max_upload_size": MAX_UPLOAD_BYTES}))
}

pub async fn model_folders(State(s): State<Shared>) -> Json<Json_> {
    Json(json!(s.app.paths.model_folders()))
}

fn models(s: &Shared, folder: &str) -> Result<Vec<String>, ApiError> {
    if !s.app.paths.model_folders().iter().any(|f| f == folder) {
        return Err(ApiError::not_found(format!("no model folder '{folder}'")));
    }
    Ok(s.app.paths.list_models(folder, folder == "checkpoints"))
}

pub async fn models_in_folder(
    State(s): State<Shared>,
    Path(folder): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    Ok(Json(json!(models(&s, &folder)?)))
}

pub async fn experiment_model_folders(State(s): State<Shared>) -> Json<Json_> {
    let root = s.app.paths.models_dir.display().to_string();
    let folders: Vec<Json_> = s
        .app
        .paths
        .model_folders()
        .into_iter()
        .map(|name| json!({"name": name, "folders": [format!("{root}/{name}")]}))
        .collect();
    Json(json!(folders))
}

pub async fn experiment_models_in_folder(
    State(s): State<Shared>,
    Path(folder): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let files: Vec<Json_> = models(&s, &folder)?
        .into_iter()
        .map(|name| json!({"name": name, "pathIndex": 0}))
        .collect();
    Ok(Json(json!(files)))
}

pub async fn empty_object() -> Json<Json_> {
    Json(json!({}))
}
