//! Per-user data the editor stores on the server: settings and files such as
//! saved workflows, under `<data dir>/user/default/`. Writes are atomic.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cretok_node_api::fsutil::{atomic_write, confined_join};
use serde_json::{json, Map, Value as Json_};

use super::error::{ApiError, JsonBody};
use super::files::file_response;
use super::Shared;

const SETTINGS_FILE: &str = "comfy.settings.json";

/// Settings served until the editor saves its own. With the tutorial marked done, a browser
/// without a workflow of its own opens the default workflow (our extension replaces ComfyUI's
/// default graph, see `frontend.rs`) instead of ComfyUI's first-run screen.
const SETTING_DEFAULTS: &[(&str, bool)] = &[("Comfy.TutorialCompleted", true)];

fn user_root(s: &Shared) -> PathBuf {
    s.app.paths.user_dir().join("default")
}

/// A user-given path in the user folder, links followed and confined to it.
fn user_path(s: &Shared, relative: &str) -> Result<PathBuf, ApiError> {
    if relative.is_empty() {
        return Err(ApiError::forbidden("empty path"));
    }
    confined_join(&user_root(s), relative).map_err(|e| ApiError::forbidden(format!("{e:#}")))
}

pub async fn users() -> Json<Json_> {
    Json(json!({"storage": "server", "migrated": true}))
}

fn load_settings(s: &Shared) -> Map<String, Json_> {
    let mut settings: Map<String, Json_> = user_path(s, SETTINGS_FILE)
        .ok()
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    for (id, value) in SETTING_DEFAULTS {
        settings.entry(*id).or_insert(Json_::Bool(*value));
    }
    settings
}

fn save_settings(s: &Shared, settings: &Map<String, Json_>) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec_pretty(settings).map_err(ApiError::internal)?;
    atomic_write(&user_path(s, SETTINGS_FILE)?, &bytes).map_err(ApiError::internal)
}

pub async fn get_settings(State(s): State<Shared>) -> Json<Json_> {
    Json(Json_::Object(load_settings(&s)))
}

pub async fn post_settings(
    State(s): State<Shared>,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let Json_::Object(update) = body else {
        return Err(ApiError::bad_request("Settings must be a JSON object", ""));
    };
    let mut settings = load_settings(&s);
    settings.extend(update);
    save_settings(&s, &settings)?;
    Ok(StatusCode::OK)
}

pub async fn get_setting(State(s): State<Shared>, Path(id): Path<String>) -> Json<Json_> {
    Json(load_settings(&s).remove(&id).unwrap_or(Json_::Null))
}

pub async fn post_setting(
    State(s): State<Shared>,
    Path(id): Path<String>,
    JsonBody(value): JsonBody,
) -> Result<StatusCode, ApiError> {
    let mut settings = load_settings(&s);
    settings.insert(id, value);
    save_settings(&s, &settings)?;
    Ok(StatusCode::OK)
}

fn flag(params: &HashMap<String, String>, key: &str, default: bool) -> bool {
    params.get(key).map_or(default, |v| v == "true" || v == "1")
}

fn file_info(root: &FsPath, path: &FsPath) -> Json_ {
    let meta = std::fs::metadata(path).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    json!({
        "path": relative(root, path),
        "size": meta.map_or(0, |m| m.len()),
        "modified": modified,
    })
}

fn relative(root: &FsPath, path: &FsPath) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The files under `dir`. Links are skipped, not followed: a listing never
/// leaves the folder and never loops.
fn walk(dir: &FsPath, recurse: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if recurse {
                walk(&entry.path(), recurse, out);
            }
        } else if kind.is_file() && !entry.file_name().to_string_lossy().starts_with(".tmp") {
            out.push(entry.path());
        }
    }
}

/// `GET /userdata?dir=workflows&recurse=true&full_info=true&split=false`.
pub async fn list(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let dir_param = params
        .get("dir")
        .ok_or_else(|| ApiError::bad_request("Missing dir", ""))?;
    let dir = user_path(&s, dir_param)?;
    if !dir.is_dir() {
        return Err(ApiError::not_found(format!("no folder '{dir_param}'")));
    }
    let mut files = Vec::new();
    walk(&dir, flag(&params, "recurse", false), &mut files);
    files.sort();
    let items: Vec<Json_> = if flag(&params, "full_info", false) {
        files.iter().map(|f| file_info(&dir, f)).collect()
    } else if flag(&params, "split", false) {
        files
            .iter()
            .map(|f| {
                let rel = relative(&dir, f);
                let mut parts: Vec<Json_> = vec![json!(rel)];
                parts.extend(rel.split('/').map(|p| json!(p)));
                json!(parts)
            })
            .collect()
    } else {
        files.iter().map(|f| json!(relative(&dir, f))).collect()
    };
    Ok(Json(json!(items)).into_response())
}

pub async fn read(State(s): State<Shared>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let path = user_path(&s, &file)?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::not_found(file.clone()))?;
    Ok(file_response(&path, bytes))
}

pub async fn write(
    State(s): State<Shared>,
    Path(file): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = user_path(&s, &file)?;
    if !flag(&params, "overwrite", true) && path.exists() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "File exists",
            file,
        ));
    }
    atomic_write(&path, &body).map_err(ApiError::internal)?;
    respond_written(&s, &path, &params)
}

fn respond_written(
    s: &Shared,
    path: &FsPath,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let root = confined_join(&user_root(s), "").map_err(ApiError::internal)?;
    if flag(params, "full_info", false) {
        Ok(Json(file_info(&root, path)).into_response())
    } else {
        Ok(Json(json!(relative(&root, path))).into_response())
    }
}

pub async fn delete(
    State(s): State<Shared>,
    Path(file): Path<String>,
) -> Result<StatusCode, ApiError> {
    let path = user_path(&s, &file)?;
    tokio::fs::remove_file(&path)
        .await
        .map_err(|_| ApiError::not_found(file))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn move_file(
    State(s): State<Shared>,
    Path((file, dest)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let from = user_path(&s, &file)?;
    let to = user_path(&s, &dest)?;
    if !from.is_file() {
        return Err(ApiError::not_found(file));
    }
    if !flag(&params, "overwrite", false) && to.exists() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "File exists",
            dest,
        ));
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(ApiError::internal)?;
    }
    std::fs::rename(&from, &to).map_err(ApiError::internal)?;
    respond_written(&s, &to, &params)
}
