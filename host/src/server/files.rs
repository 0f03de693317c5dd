//! `/view` and `/upload/image`: files in the output, input and temp folders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Multipart, Query, State};
use axum::http::header;
use axum::response::Response;
use axum::Json;
use cretok_nodes::fsutil::{atomic_write, safe_join};
use serde_json::{json, Value as Json_};

use super::error::ApiError;
use super::Shared;

/// The folder behind a `type` parameter.
fn folder(s: &Shared, kind: &str) -> Result<PathBuf, ApiError> {
    match kind {
        "output" => Ok(s.app.paths.output_dir()),
        "input" => Ok(s.app.paths.input_dir()),
        "temp" => Ok(s.app.paths.temp_dir()),
        other => Err(ApiError::bad_request(
            "Unknown type",
            format!("type '{other}' is not output, input or temp"),
        )),
    }
}

/// A plain file name: no separators, no `..`, not empty.
fn check_file_name(name: &str) -> Result<&str, ApiError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.contains(':')
    {
        return Err(ApiError::forbidden(format!(
            "'{name}' is not a plain file name"
        )));
    }
    Ok(name)
}

fn resolve(s: &Shared, kind: &str, subfolder: &str, filename: &str) -> Result<PathBuf, ApiError> {
    let root = folder(s, kind)?;
    let dir = safe_join(&root, subfolder).map_err(|e| ApiError::forbidden(e.to_string()))?;
    Ok(dir.join(check_file_name(filename)?))
}

fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("safetensors") => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

pub async fn view(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let filename = params
        .get("filename")
        .ok_or_else(|| ApiError::bad_request("Missing filename", ""))?;
    let kind = params.get("type").map_or("output", String::as_str);
    let subfolder = params.get("subfolder").map_or("", String::as_str);
    let path = resolve(&s, kind, subfolder, filename)?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::not_found(format!("{kind}/{subfolder}/{filename}")))?;
    Response::builder()
        .header(header::CONTENT_TYPE, content_type(&path))
        .header(
            header::CONTENT_DISPOSITION,
            format!("filename=\"{filename}\""),
        )
        .body(Body::from(bytes))
        .map_err(ApiError::internal)
}

/// A name not taken yet in `dir`: `name.png`, `name (1).png`, ...
fn free_name(dir: &Path, name: &str) -> String {
    if !dir.join(name).exists() {
        return name.to_owned();
    }
    let (stem, ext) = name
        .rsplit_once('.')
        .map_or((name, String::new()), |(s, e)| (s, format!(".{e}")));
    (1..)
        .map(|i| format!("{stem} ({i}){ext}"))
        .find(|n| !dir.join(n).exists())
        .unwrap_or_else(|| name.to_owned())
}

pub async fn upload_image(
    State(s): State<Shared>,
    mut multipart: Multipart,
) -> Result<Json<Json_>, ApiError> {
    let mut image: Option<(String, Vec<u8>)> = None;
    let mut kind = "input".to_owned();
    let mut subfolder = String::new();
    let mut overwrite = false;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request("Malformed upload", e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "image" => {
                let file_name = field.file_name().unwrap_or_default().to_owned();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| ApiError::bad_request("Malformed upload", e.body_text()))?;
                image = Some((file_name, bytes.to_vec()));
            }
            "type" | "subfolder" | "overwrite" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| ApiError::bad_request("Malformed upload", e.body_text()))?;
                match name.as_str() {
                    "type" => kind = text,
                    "subfolder" => subfolder = text,
                    _ => overwrite = matches!(text.as_str(), "true" | "1"),
                }
            }
            _ => {}
        }
    }
    let (file_name, bytes) =
        image.ok_or_else(|| ApiError::bad_request("Missing the 'image' field", ""))?;
    let root = folder(&s, &kind)?;
    let dir = safe_join(&root, &subfolder).map_err(|e| ApiError::forbidden(e.to_string()))?;
    let file_name = check_file_name(&file_name)?;
    let name = if overwrite {
        file_name.to_owned()
    } else {
        free_name(&dir, file_name)
    };
    atomic_write(&dir.join(&name), &bytes).map_err(ApiError::internal)?;
    Ok(Json(
        json!({"name": name, "subfolder": subfolder, "type": kind}),
    ))
}
