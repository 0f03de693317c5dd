//! Versions of the `cretok:node` package side by side: guests built against
//! 0.1.0 and 0.2.0 load and run unchanged next to 0.3.0 ones, in one folder and
//! one host. `fixtures/template-v0.1.0.wasm` is the `Template` example as it was
//! released for 0.1.0: `wit/` of commit 29701e7, built with
//! `cretok-componentize workspace <that wit>/examples -p template`.

use cretok_node_api::{Inputs, Node, Registry, Value};

use crate::support::{component, folder, host, run};

const TEMPLATE_V0_1_0: &[u8] = include_bytes!("fixtures/template-v0.1.0.wasm");

/// Whether a component exports `cretok:node/node@VERSION`.
fn exports_version(component: &[u8], version: &str) -> bool {
    let export = format!("cretok:node/node@{version}");
    component
        .windows(export.len())
        .any(|w| w == export.as_bytes())
}

fn registry_of(names: &[&str], extra: &[(&str, &[u8])]) -> Registry {
    let dir = folder(names, extra);
    let (nodes, errors) = host().load_dir(dir.path(), &Registry::new());
    assert!(errors.is_empty(), "{errors:?}");
    let mut registry = Registry::new();
    for node in nodes {
        registry.register(node);
    }
    registry
}

fn texts(node: &dyn Node, inputs: &Inputs) -> Vec<String> {
    run(node, inputs)
        .unwrap()
        .values
        .into_iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn the_examples_span_every_version() {
    let bytes = |name| std::fs::read(component(name)).unwrap();
    assert!(exports_version(&bytes("weighted-choice"), "0.1.0"));
    assert!(exports_version(TEMPLATE_V0_1_0, "0.1.0"));
    assert!(exports_version(&bytes("template"), "0.2.0"));
    assert!(exports_version(&bytes("pairs"), "0.3.0"));
    assert!(!exports_version(&bytes("pairs"), "0.2.0"));
}

#[test]
fn guests_of_0_1_0_and_0_2_0_run_unchanged_next_to_0_3_0_ones() {
    let registry = registry_of(&["template", "pairs", "weighted-choice"], &[]);
    let names: Vec<&str> = registry.names().collect();
    assert_eq!(names, ["ConceptPairs", "Template", "WeightedChoice"]);

    let choice = registry.get("WeightedChoice").unwrap();
    let inputs = Inputs::new()
        .with("choices", Value::String("never=0 | always".into()))
        .with("seed", Value::Int(3));
    assert_eq!(texts(choice.as_ref(), &inputs), ["always"]);

    let pairs = registry.get("ConceptPairs").unwrap();
    let inputs = Inputs::new()
        .with("concepts", Value::String("owl, teapot, cactus".into()))
        .with("seed", Value::Int(0));
    assert_eq!(texts(pairs.as_ref(), &inputs)[..2], ["owl", "teapot"]);
    let without_teapot = inputs.with("exclude", Value::String("teapot".into()));
    assert_eq!(
        texts(pairs.as_ref(), &without_teapot)[..2],
        ["owl", "cactus"]
    );
}

#[test]
fn the_released_0_1_0_template_keeps_its_extra_inputs() {
    let registry = registry_of(
        &["pairs", "weighted-choice"],
        &[("template.wasm", TEMPLATE_V0_1_0)],
    );
    let template = registry.get("Template").unwrap();
    assert!(template.schema().extra_inputs);
    let info = registry.object_info();
    assert!(info["Template"]["input"]["optional"]
        .as_object()
        .unwrap()
        .is_empty());
    let inputs = Inputs::new()
        .with("a", Value::String("owl".into()))
        .with("b", Value::String("teapot".into()));
    assert_eq!(
        texts(template.as_ref(), &inputs),
        ["a photo of a owl mixed with a teapot"]
    );
}
