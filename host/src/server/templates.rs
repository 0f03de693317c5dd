//! The gallery (`workflows/`) as the editor's workflow templates, built into
//! the binary. The ComfyUI frontend lists its core templates from
//! `/templates/index.json` and opens `/templates/NAME.json`, which must be in
//! the editor's UI format: those are `workflows/ui/NAME.json`, laid out and
//! saved by the real frontend (`tests/browser/export_ui_workflows.mjs`). The
//! API-format `workflows/NAME.json` stays the source; the node whose `_meta`
//! has a `description` describes the template card.
//!
//! Where the editor would open ComfyUI's default graph (a browser with no
//! workflow of its own), it opens [`DEFAULT_WORKFLOW`] (see `frontend.rs`).

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
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

/// The workflow a new browser opens (the default of the editor's `CreTok.DefaultWorkflow`).
pub const DEFAULT_WORKFLOW: &str = "blend_pair";

/// The names of the templates, [`DEFAULT_WORKFLOW`] first.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> = GALLERY.iter().map(|w| w.name).collect();
    names.sort_by_key(|name| *name != DEFAULT_WORKFLOW);
    names
}

fn find(name: &str) -> Option<&'static GalleryWorkflow> {
    GALLERY.iter().find(|w| w.name == name)
}

/// The card's title: the workflow's own (`_meta.workflow_title` of a node), else its file name.
fn title(api: &Value, workflow: &GalleryWorkflow) -> String {
    meta(api, "workflow_title")
        .unwrap_or(workflow.name)
        .to_owned()
}

/// The first `_meta.<key>` any node of the API form carries.
fn meta<'a>(api: &'a Value, key: &str) -> Option<&'a str> {
    api.as_object()?
        .values()
        .find_map(|node| node["_meta"][key].as_str())
}

/// A template card: the workflow's title and description (from the `_meta` of its nodes).
fn card(workflow: &GalleryWorkflow) -> Value {
    let api: Value = serde_json::from_str(workflow.api).unwrap_or_default();
    let title = title(&api, workflow);
    let description = meta(&api, "description").unwrap_or(&title).to_owned();
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

/// A node of the UI form as the thumbnail draws it: its body's place and size, and its title.
struct NodeBox {
    id: i64,
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    title: String,
}

/// Height of a node's title bar above its body (the editor's).
const TITLE_BAR: f64 = 30.0;

fn node_boxes(ui: &Value) -> Vec<NodeBox> {
    let number = |v: &Value, i: usize| v[i].as_f64().unwrap_or(0.0);
    ui["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| NodeBox {
            id: n["id"].as_i64().unwrap_or(-1),
            x: number(&n["pos"], 0),
            y: number(&n["pos"], 1),
            width: number(&n["size"], 0).max(60.0),
            height: number(&n["size"], 1).max(20.0),
            title: n["title"]
                .as_str()
                .or(n["type"].as_str())
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The card image (`NAME-1.svg`): a picture of the graph as the editor lays it out, each node a
/// box with its title, each link a curve from its source's output side to its target's input side.
fn thumbnail(workflow: &GalleryWorkflow) -> String {
    let ui: Value = serde_json::from_str(workflow.ui).unwrap_or_default();
    let boxes = node_boxes(&ui);
    let left = boxes.iter().map(|b| b.x).fold(f64::MAX, f64::min).min(0.0);
    let top = boxes
        .iter()
        .map(|b| b.y - TITLE_BAR)
        .fold(f64::MAX, f64::min)
        .min(0.0);
    let right = boxes.iter().map(|b| b.x + b.width).fold(0.0, f64::max);
    let bottom = boxes.iter().map(|b| b.y + b.height).fold(0.0, f64::max);
    let pad = 40.0;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512" viewBox="{} {} {} {}" preserveAspectRatio="xMidYMid meet"><rect x="{}" y="{}" width="100%" height="100%" fill="#1e293b"/>"##,
        left - pad,
        top - pad,
        right - left + 2.0 * pad,
        bottom - top + 2.0 * pad,
        left - pad,
        top - pad,
    );
    let find = |id: i64| boxes.iter().find(|b| b.id == id);
    for link in ui["links"].as_array().into_iter().flatten() {
        let end = |i: usize| link[i].as_i64().unwrap_or(-1);
        let (Some(from), Some(to)) = (find(end(1)), find(end(3))) else {
            continue;
        };
        let (x1, y1) = (from.x + from.width, from.y + 14.0 + 20.0 * end(2) as f64);
        let (x2, y2) = (to.x, to.y + 14.0 + 20.0 * end(4) as f64);
        let bend = ((x2 - x1).abs() / 2.0).max(40.0);
        svg.push_str(&format!(
            r##"<path d="M{x1} {y1} C{} {y1} {} {y2} {x2} {y2}" stroke="#94a3b8" stroke-width="4" fill="none"/>"##,
            x1 + bend,
            x2 - bend
        ));
    }
    for b in &boxes {
        svg.push_str(&format!(
            r##"<rect x="{}" y="{}" width="{}" height="{}" rx="8" fill="#334155" stroke="#64748b" stroke-width="2"/><text x="{}" y="{}" fill="#e2e8f0" font-family="sans-serif" font-size="18">{}</text>"##,
            b.x,
            b.y - TITLE_BAR,
            b.width,
            b.height + TITLE_BAR,
            b.x + 10.0,
            b.y - 9.0,
            escape(&b.title)
        ));
    }
    svg.push_str("</svg>");
    svg
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
        assert!(find(DEFAULT_WORKFLOW).is_some());
        assert_eq!(names()[0], DEFAULT_WORKFLOW);
    }

    #[test]
    fn thumbnails_picture_each_graph() {
        for workflow in GALLERY {
            let svg = thumbnail(workflow);
            let ui: Value = serde_json::from_str(workflow.ui).unwrap();
            let nodes = ui["nodes"].as_array().unwrap().len();
            let links = ui["links"].as_array().unwrap().len();
            assert_eq!(
                svg.matches("<rect x=").count(),
                nodes + 1,
                "{}",
                workflow.name
            );
            assert_eq!(svg.matches("<path ").count(), links, "{}", workflow.name);
        }
        let svg = thumbnail(find("blend_pair").unwrap());
        assert!(
            svg.contains("SD3 checkpoint") && svg.contains("&lt;CreTok&gt;"),
            "{svg}"
        );
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
        assert_eq!(blend_pair["title"], "Blend two concepts with <CreTok>");
        assert!(blend_pair["description"]
            .as_str()
            .unwrap()
            .contains("lettuce + mantis"));
    }
}
