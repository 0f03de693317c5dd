//! `/view` and `/upload/image`: files in the output, input and temp folders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{Multipart, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cretok_node_api::fsutil::{confined_join, temp_file_in};
use serde_json::{json, Value as Json_};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;

use super::error::ApiError;
use super::{Shared, MAX_UPLOAD_BYTES};

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

/// `relative` under the folder of `kind`, links followed and confined to it.
fn confined(s: &Shared, kind: &str, relative: &str) -> Result<PathBuf, ApiError> {
    confined_join(&folder(s, kind)?, relative).map_err(|e| ApiError::forbidden(format!("{e:#}")))
}

/// The file `subfolder/filename` in the folder of `kind`.
fn resolve(s: &Shared, kind: &str, subfolder: &str, filename: &str) -> Result<PathBuf, ApiError> {
    let name = check_file_name(filename)?;
    if subfolder.is_empty() {
        confined(s, kind, name)
    } else {
        confined(s, kind, &format!("{subfolder}/{name}"))
    }
}

/// The type a served file is sent as, and whether a browser may show it inline.
/// Only media, JSON and plain text are inline; anything that could run script in
/// our origin (HTML, SVG, unknown types) is an attachment.
fn content_type(path: &Path) -> (&'static str, bool) {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let inline = match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("avif") => "image/avif",
        Some("bmp") => "image/bmp",
        Some("mp3") => "audio/mpeg",
        Some("wav") => "audio/wav",
        Some("flac") => "audio/flac",
        Some("ogg" | "opus") => "audio/ogg",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => return ("application/octet-stream", false),
    };
    (inline, true)
}

/// `Content-Disposition` for `name`: a quoted ASCII fallback (control characters,
/// quotes and non-ASCII replaced, so CR/LF cannot break the header) plus the
/// exact name percent-encoded (RFC 6266).
fn disposition(name: &str, inline: bool) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// A stored file as a response: typed by its extension, never sniffed, and
/// active content downloaded rather than rendered.
pub(super) fn file_response(path: &Path, bytes: Vec<u8>) -> Response {
    let (content_type, inline) = content_type(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CONTENT_DISPOSITION, disposition(&name, inline)),
        ],
        Body::from(bytes),
    )
        .into_response()
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
    Ok(file_response(&path, bytes))
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

/// An uploaded image on its way to disk: streamed into a temporary file of
/// the data folder as it arrives, then moved into place.
struct Upload {
    file_name: String,
    file: NamedTempFile,
}

/// Streams the `image` field into a temporary file, refusing more than
/// [`MAX_UPLOAD_BYTES`] (the body limit stops a longer body first).
async fn receive_image(s: &Shared, mut field: Field<'_>) -> Result<Upload, ApiError> {
    let file_name = field.file_name().unwrap_or_default().to_owned();
    let data_dir = s.app.paths.data_dir.clone();
    let file = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&data_dir)?;
        temp_file_in(&data_dir)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(format!("creating an upload file: {e}")))?;
    let mut writer =
        tokio::fs::File::from_std(file.as_file().try_clone().map_err(ApiError::internal)?);
    let mut received = 0usize;
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        received += chunk.len();
        if received > MAX_UPLOAD_BYTES {
            return Err(too_large());
        }
        writer.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    writer.flush().await.map_err(ApiError::internal)?;
    Ok(Upload { file_name, file })
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        "The upload is too large",
        format!("uploads are limited to {MAX_UPLOAD_BYTES} bytes"),
    )
}

fn malformed(e: MultipartError) -> ApiError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        status => ApiError::new(status, "bad_request", "Malformed upload", e.body_text()),
    }
}

/// Syncs the upload and renames it to `path`; copies it into `path`'s folder
/// first when the data folder is on another file system.
fn move_into_place(upload: NamedTempFile, path: &Path) -> anyhow::Result<()> {
    upload.as_file().sync_all()?;
    let Err(across) = upload.persist(path) else {
        return Ok(());
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut copy = temp_file_in(dir)?;
    std::io::copy(&mut across.file.reopen()?, &mut copy)?;
    copy.as_file().sync_all()?;
    copy.persist(path)
        .map_err(|e| anyhow::anyhow!("renaming into {}: {}", path.display(), e.error))?;
    Ok(())
}

/// Moves an upload to `subfolder` of the folder of `kind`; returns its name
/// there (a free one unless `overwrite`).
fn store_upload(
    s: &Shared,
    upload: Upload,
    kind: &str,
    subfolder: &str,
    overwrite: bool,
) -> Result<String, ApiError> {
    let dir = confined(s, kind, subfolder)?;
    let file_name = check_file_name(&upload.file_name)?;
    let name = if overwrite {
        file_name.to_owned()
    } else {
        free_name(&dir, file_name)
    };
    let path = resolve(s, kind, subfolder, &name)?;
    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
    move_into_place(upload.file, &path).map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(name)
}

pub async fn upload_image(
    State(s): State<Shared>,
    mut multipart: Multipart,
) -> Result<Json<Json_>, ApiError> {
    let mut image: Option<Upload> = None;
    let mut kind = "input".to_owned();
    let mut subfolder = String::new();
    let mut overwrite = false;
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "image" => image = Some(receive_image(&s, field).await?),
            "type" | "subfolder" | "overwrite" => {
                let text = field.text().await.map_err(malformed)?;
                match name.as_str() {
                    "type" => kind = text,
                    "subfolder" => subfolder = text,
                    _ => overwrite = matches!(text.as_str(), "true" | "1"),
                }
            }
            _ => {}
        }
    }
    let upload = image.ok_or_else(|| ApiError::bad_request("Missing the 'image' field", ""))?;
    let (state, destination) = (Arc::clone(&s), (kind.clone(), subfolder.clone()));
    let name = tokio::task::spawn_blocking(move || {
        let (kind, subfolder) = destination;
        store_upload(&state, upload, &kind, &subfolder, overwrite)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(
        json!({"name": name, "subfolder": subfolder, "type": kind}),
    ))
}
