//! `workflows/template_blend.json`: a sandboxed node feeds another through
//! its variadic inputs, next to a native one. The prompt's string nodes are
//! run here in dependency order with links resolved, as the executor does;
//! the whole workflow (SD3 included) runs in the gallery test.

use std::collections::HashMap;
use std::sync::Arc;

use cretok_nodes::{builtin, CancelToken, Inputs, NullSink, Paths, Registry, RunContext, Value};
use serde_json::Value as Json;

/// The host's sandbox test support (builds the example guests once per target dir); this
/// binary uses only part of it.
#[path = "../../tests/sandbox/support.rs"]
#[allow(dead_code)]
mod support;

use support::{folder, host};

#[test]
fn the_template_blend_workflow_builds_the_blend_prompt() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/template_blend.json"
    );
    let prompt: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let paths = Paths::new(data.path(), None);
    let mut registry = Registry::new();
    builtin::register_all(&mut registry, Arc::new(paths.clone()));
    let nodes_dir = folder(&["template", "pairs", "weighted-choice"], &[]);
    let (nodes, errors) = host().load_dir(nodes_dir.path(), &registry);
    assert!(errors.is_empty(), "{errors:?}");
    for node in nodes {
        registry.register(node);
    }

    let mut outputs: HashMap<String, Vec<Value>> = HashMap::new();
    let cancel = CancelToken::new();
    // Node ids are in dependency order in this workflow.
    let string_nodes = ["ConceptPairs", "PrimitiveString", "Template"];
    let mut template = None;
    for (id, node) in prompt.as_object().unwrap() {
        let class = node["class_type"].as_str().unwrap();
        if !string_nodes.contains(&class) {
            continue;
        }
        let mut inputs = Inputs::new();
        for (name, input) in node["inputs"].as_object().unwrap() {
            let value = match input {
                Json::Array(link) if link.len() == 2 && link[1].is_u64() => {
                    let from = link[0].as_str().unwrap();
                    outputs[from][link[1].as_u64().unwrap() as usize].clone()
                }
                literal => Value::from_json(literal).unwrap(),
            };
            inputs.insert(name, value);
        }
        let ctx = RunContext::new(id, &paths, &cancel, &NullSink);
        let out = registry
            .get(class)
            .unwrap_or_else(|| panic!("no node {class}"))
            .run(&inputs, &ctx)
            .unwrap();
        if let (true, [Value::String(text)]) = (class == "Template", &out.values[..]) {
            template = Some(text.clone());
        }
        outputs.insert(id.clone(), out.values);
    }
    // Pairs of 4 concepts: seed 4 selects pair 4, (teapot, lighthouse).
    assert_eq!(
        template.as_deref(),
        Some("a photo of a whimsical <CreTok> creature, half teapot and half lighthouse")
    );
}

struct Quiet;

impl cretok_host::executor::ExecutionObserver for Quiet {
    fn message(&self, _: cretok_host::protocol::ServerMessage) {}
    fn preview(&self, _: &str, _: cretok_nodes::PreviewFormat, _: Vec<u8>) {}
    fn text(&self, _: &str, _: &str) {}
}

/// `workflows/pairs_sweep.json` is a loop: the list outputs of the WASM
/// ConceptPairs run the WASM Template once per pair. Its text part runs here
/// on the executor (SD3 in the gallery test).
#[test]
fn the_pairs_sweep_loops_over_the_list_outputs_of_a_guest_node() {
    use cretok_host::executor::{Executor, Outcome, PromptJob};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/pairs_sweep.json"
    );
    let sweep: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut prompt = serde_json::Map::new();
    for id in ["3", "6", "7", "11", "13"] {
        prompt.insert(id.into(), sweep[id].clone());
    }
    for (id, text) in [("20", "7"), ("21", "13")] {
        prompt.insert(
            id.into(),
            serde_json::json!({"class_type": "SaveText", "inputs": {"text": [text, 0], "filename_prefix": "p"}}),
        );
    }
    let prompt = Json::Object(prompt);
    let data = tempfile::tempdir().unwrap();
    let paths = Arc::new(Paths::new(data.path(), None));
    let mut registry = Registry::new();
    builtin::register_all(&mut registry, Arc::clone(&paths));
    let nodes_dir = folder(&["template", "pairs"], &[]);
    let (nodes, errors) = host().load_dir(nodes_dir.path(), &registry);
    assert!(errors.is_empty(), "{errors:?}");
    for node in nodes {
        registry.register(node);
    }
    let job = PromptJob {
        prompt_id: "pairs".into(),
        number: 0,
        valid: cretok_host::validation::validate(&prompt, &registry, None)
            .unwrap_or_else(|f| panic!("{}", f.report())),
        prompt,
        client_id: None,
        extra_data: serde_json::json!({}),
    };
    let record = Executor::new(paths).run(&job, &registry, &CancelToken::new(), &Quiet);
    assert_eq!(record.outcome, Outcome::Success, "{:?}", record.events);
    let prompts = record.outputs["20"]["text"].as_array().unwrap();
    assert_eq!(prompts.len(), 3, "one blend prompt per pair: {prompts:?}");
    let captions = record.outputs["21"]["text"][0].as_str().unwrap();
    let pairs: Vec<&str> = captions.lines().collect();
    assert_eq!(pairs.len(), 3, "{captions}");
    for (prompt, pair) in prompts.iter().zip(&pairs) {
        let (a, b) = pair.split_once(" + ").unwrap();
        let expected = format!("a photo of a <CreTok> mixture that resembles a {a} and a {b}");
        assert_eq!(prompt.as_str().unwrap(), expected);
    }
    let distinct: std::collections::BTreeSet<&&str> = pairs.iter().collect();
    assert_eq!(distinct.len(), 3, "three different pairs: {captions}");
}
