//! Static files: the ComfyUI web frontend when one is installed, else a small
//! built-in page that can queue a workflow file and show its progress and images.
//! With the frontend comes our one extension ([`DEFAULT_WORKFLOW_JS`]): the
//! editor opens a gallery workflow (setting `CreTok.DefaultWorkflow`) wherever
//! it would open ComfyUI's default graph, in every browser without a workflow
//! of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use cretok_node_api::fsutil::safe_join;

use super::templates;
use super::Shared;

const BUILTIN_PAGE: &str = include_str!("builtin_page.html");

/// Where the frontend imports our extension from (listed by `/api/extensions`).
pub const DEFAULT_WORKFLOW_JS: &str = "/extensions/cretok/default_workflow.js";

/// The extension's source, with the gallery's names put in.
fn default_workflow_js() -> String {
    let names = serde_json::to_string(&templates::names()).unwrap_or_else(|_| "[]".into());
    include_str!("default_workflow.js").replace("__WORKFLOWS__", &names)
}

/// The frontend folder: `--front-end-root` if given, else the `static/` folder of
/// an installed `comfyui_frontend_package` (a `.venv` in the working directory
/// first, then the `python3` on the PATH).
pub fn find_frontend(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.to_path_buf());
    }
    [".venv/bin/python", "python3"]
        .into_iter()
        .find_map(|python| {
            let out = Command::new(python)
                .args([
                    "-c",
                    "import comfyui_frontend_package as p, os; print(os.path.dirname(p.__file__))",
                ])
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("static");
            dir.join("index.html").is_file().then_some(dir)
        })
}

fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
    {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

pub async fn serve(State(s): State<Shared>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let Some(root) = &s.frontend_dir else {
        return if path.is_empty() || path == "index.html" {
            Html(BUILTIN_PAGE).into_response()
        } else {
            StatusCode::NOT_FOUND.into_response()
        };
    };
    if uri.path() == DEFAULT_WORKFLOW_JS {
        let js = "text/javascript; charset=utf-8";
        return ([(header::CONTENT_TYPE, js)], default_workflow_js()).into_response();
    }
    let relative = if path.is_empty() { "index.html" } else { path };
    let Ok(file) = safe_join(root, relative) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, content_type(&file))],
            Body::from(bytes),
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_names_the_gallery_with_the_default_first() {
        let js = default_workflow_js();
        assert!(!js.contains("__WORKFLOWS__"));
        assert!(js.contains(r#"const WORKFLOWS = ["blend_pair","#), "{js}");
        assert!(js.contains("\"hello_text\""));
    }
}
