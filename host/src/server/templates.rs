//! The gallery (`workflows/`) as the editor's workflow templates, built into
//! the binary. The ComfyUI frontend lists its core templates from
//! `/templates/index.json` and opens `/templates/NAME.json`, which must be in
//! the editor's UI format: those are `workflows/ui/NAME.json`, laid out and
//! saved by the real frontend (`tests/browser/export_ui_workflows.mjs`). The
//! API-format `workflows/NAME.json` stays the source; the node whose `_meta`
//! has a `description` describes the template card.
//!
//! On first start (no settings saved yet) the editor opens [`FIRST_WORKFLOW`]
//! through the frontend's own `?template=` link instead of ComfyUI's default graph.

use axum::extract::Path;
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;

/// One gallery workflow: its name (file stem) and both of its forms.
struct GalleryWorkflow {
    name: &'static str,
    api: &'static str,
    ui: &'static str,
}

macro_rules! gallery_workflow {
    ($name:literal) => {
        GalleryWorkflow {
            name: $name,
            api: include_str!(concat!("../../../workflows/", $name, ".json")),
            ui: include_str!(concat!("../../../workflows/ui/", $name, ".json")),
        }
    };
}

/// The gallery's workflows, in the order the editor lists them. `template_blend`
/// and `pairs_sweep` need the example custom nodes (`wit/examples`) installed.
const GALLERY: &[GalleryWorkflow] = &[
    gallery_workflow!("blend_pair"),
    gallery_workflow!("blend_three"),
    gallery_workflow!("blend_style"),
    gallery_workflow!("strength_sweep"),
    gallery_workflow!("template_blend"),
    gallery_workflow!("pairs_sweep"),
    gallery_workflow!("cretok_train_and_blend"),
    gallery_workflow!("sd3_txt2img"),
    gallery_workflow!("hello_text"),
];

/// The workflow the editor opens on first start.
pub const FIRST_WORKFLOW: &str = "blend_pair";

fn find(name: &str) -> Option<&'static GalleryWorkflow> {
    GALLERY.iter().find(|w| w.name == name)
}

/// The card's title: the file name in words ("blend_pair" -> "Blend pair").
fn title(workflow: &GalleryWorkflow) -> String {
    let words = workflow.name.replace('_', " ");
    let mut chars = words.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A template card: the title, and the description one of its nodes carries in `_meta`.
fn card(workflow: &GalleryWorkflow) -> Value {
    let title = title(workflow);
    let api: Value = serde_json::from_str(workflow.api).unwrap_or_default();
    let description = api
        .as_object()
        .and_then(|nodes| {
            nodes
                .values()
                .find_map(|node| node["_meta"]["description"].as_str())
        })
        .unwrap_or(&title)
        .to_owned();
    json!({
        "name": workflow.name,
        "title": title,
        "description": description,
        "mediaType": "image",
        "mediaSubtype": "svg",
    })
}

fn index() -> Value {
    json!([{
        "moduleName": "default",
        "title": "CreTok Studio",
        "type": "image",
        "templates": GALLERY.iter().map(card).collect::<Vec<_>>(),
    }])
}

/// The card image: the title on a plain tile (`NAME-1.svg`).
fn thumbnail(workflow: &GalleryWorkflow) -> String {
    let escaped = title(workflow)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512" viewBox="0 0 512 512"><rect width="512" height="512" fill="#1e293b"/><text x="256" y="256" fill="#e2e8f0" font-family="sans-serif" font-size="28" text-anchor="middle">{escaped}</text></svg>"##
    )
}

/// `GET /templates/{file}`: `index.json`, `NAME.json` (UI format) or `NAME-1.svg`.
pub async fn file(Path(file): Path<String>) -> Result<Response, ApiError> {
    if file == "index.json" {
        return Ok(Json(index()).into_response());
    }
    let not_found = || ApiError::not_found(format!("no template '{file}'"));
    if let Some(name) = file.strip_suffix(".json") {
        let workflow = find(name).ok_or_else(not_found)?;
        return Ok(([(header::CONTENT_TYPE, "application/json")], workflow.ui).into_response());
    }
    if let Some(name) = file.strip_suffix("-1.svg") {
        let workflow = find(name).ok_or_else(not_found)?;
        return Ok((
            [(header::CONTENT_TYPE, "image/svg+xml")],
            thumbnail(workflow),
        )
            .into_response());
    }
    Err(not_found())
}

/// `GET /workflow_templates`: custom-node example workflows by module (none).
pub async fn custom_node_templates() -> Json<Value> {
    Json(json!({}))
}

/// On first start, `/` sends the editor to [`FIRST_WORKFLOW`] through the
/// frontend's `?template=` link; `None` otherwise.
pub fn first_start_redirect(uri: &Uri, first_start: bool) -> Option<Response> {
    let plain_root = uri.path() == "/" && uri.query().is_none();
    (first_start && plain_root)
        .then(|| Redirect::temporary(&format!("/?template={FIRST_WORKFLOW}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gallery_workflow_is_a_template_in_ui_format() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_owned)
            })
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = GALLERY.iter().map(|w| w.name.to_owned()).collect();
        listed.sort();
        assert_eq!(
            listed, on_disk,
            "add new gallery workflows to GALLERY (and export their UI form)"
        );
        for workflow in GALLERY {
            let ui: Value = serde_json::from_str(workflow.ui).unwrap();
            assert!(
                ui["nodes"].is_array() && ui["links"].is_array(),
                "{}",
                workflow.name
            );
        }
        assert!(find(FIRST_WORKFLOW).is_some());
    }

    #[test]
    fn the_index_lists_each_workflow_with_a_title() {
        let index = index();
        let names: Vec<&str> = index[0]["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), GALLERY.len());
        assert!(names.contains(&"blend_pair"));
        let blend_pair = &index[0]["templates"][0];
        assert_eq!(blend_pair["title"], "Blend pair");
        assert!(blend_pair["description"]
            .as_str()
            .unwrap()
            .contains("lettuce + mantis"));
    }

    #[test]
    fn only_a_plain_root_on_first_start_redirects() {
        let root: Uri = "/".parse().unwrap();
        let with_query: Uri = "/?template=hello_text".parse().unwrap();
        assert!(first_start_redirect(&root, true).is_some());
        assert!(first_start_redirect(&root, false).is_none());
        assert!(first_start_redirect(&with_query, true).is_none());
    }
}
