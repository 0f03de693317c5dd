//! The editor files of the gallery (`workflows/ui/`) were saved with the
//! node schemas the server serves now: every native node holds one widget
//! value per widget of its schema. A schema change without a re-export
//! (`bash tests/browser/run.sh --export-ui-workflows`) fails here, without a
//! browser, instead of in the editor tests. And single editor nodes convert
//! to API form as ComfyUI saves them.

use std::path::PathBuf;
use std::sync::Arc;

use cretok::native_registry;
use cretok_host::workflow::ui::UiWorkflow;
use cretok_host::workflow::widgets::layout;
use cretok_host::workflow::{to_api, ConvertError};
use cretok_nodes::Paths;
use serde_json::{json, Value};

fn ui_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows/ui");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_native_node_of_the_gallery_ui_files_has_the_widgets_of_its_schema() {
    let registry = native_registry(&Arc::new(Paths::new("/nonexistent", None)));
    let files = ui_files();
    assert!(files.len() >= 9, "the gallery's UI files: {files:?}");
    let mut stale = Vec::new();
    let mut checked = 0;
    for path in &files {
        let ui: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for node in ui["nodes"].as_array().unwrap() {
            let class_type = node["type"].as_str().unwrap();
            let Some(node_type) = registry.get(class_type) else {
                continue; // UI-only nodes and the example guests
            };
            let want = layout(&node_type.schema()).len();
            let got = node["widgets_values"].as_array().map_or(0, Vec::len);
            checked += 1;
            if got != want {
                stale.push(format!(
                    "{} node {} ({class_type}): {got} widget values, the schema has {want}",
                    path.file_name().unwrap().to_string_lossy(),
                    node["id"]
                ));
            }
        }
    }
    assert!(checked >= 30, "only {checked} native nodes checked");
    assert!(
        stale.is_empty(),
        "re-export with `bash tests/browser/run.sh --export-ui-workflows`:\n{}",
        stale.join("\n")
    );
}

/// One node with these widget values, converted with the native schemas.
fn convert_one(class_type: &str, widgets_values: Value) -> Result<Value, ConvertError> {
    let ui = UiWorkflow::parse(&json!({
        "nodes": [{"id": 1, "type": class_type, "mode": 0, "inputs": [], "outputs": [],
                   "widgets_values": widgets_values}],
        "links": []
    }))
    .unwrap();
    let registry = native_registry(&Arc::new(Paths::new("/nonexistent", None)));
    to_api(&ui, &registry)
}

#[test]
fn the_editors_display_widgets_of_preview_any_are_not_inputs() {
    for values in [
        json!([]),
        json!([null, null, null]),
        json!([null, null, false]),
    ] {
        let prompt = convert_one("PreviewAny", values.clone()).unwrap();
        assert_eq!(prompt["1"]["inputs"], json!({}), "{values}");
    }
    assert!(convert_one("PreviewAny", json!([null, null, null, null])).is_err());
}

#[test]
fn primitive_int_carries_control_after_generate_as_comfyui_saves_it() {
    let prompt = convert_one("PrimitiveInt", json!([8, "fixed"])).unwrap();
    assert_eq!(prompt["1"]["inputs"], json!({"value": 8}));
}
