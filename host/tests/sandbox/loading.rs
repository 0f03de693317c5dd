//! Loading a custom-nodes folder: bad files become errors naming the file,
//! good files still load, and compiled components are cached on disk.

use std::sync::Arc;

use cretok_host::sandbox::{LoadError, SandboxHost, SandboxLimits};
use cretok_node_api::{
    Inputs, Node, NodeError, NodeOutput, NodeSchema, Registry, RunContext, Value,
};

use crate::support::{component, folder, host, run};

/// Core-module header plus garbage: a malformed file.
const MALFORMED: &[u8] = b"\0asm\x01\0\0\0\x01\xffgarbage";
/// A valid but empty core module: not a component.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

fn error_for<'a>(errors: &'a [LoadError], file: &str) -> &'a LoadError {
    errors
        .iter()
        .find(|e| e.path().file_name().is_some_and(|n| n == file))
        .unwrap_or_else(|| panic!("no error for {file} in {errors:?}"))
}

#[test]
fn bad_components_are_load_errors_naming_the_file() {
    let dir = folder(
        &[
            "template",
            "hostile-wasi-import",
            "hostile-duplicate-ports",
            "hostile-empty-id",
        ],
        &[
            ("malformed.wasm", MALFORMED),
            ("core-module.wasm", CORE_MODULE),
            ("notes.txt", b"not a node"),
        ],
    );
    let (nodes, errors) = host().load_dir(dir.path(), &Registry::new());
    assert_eq!(nodes.len(), 1, "{errors:?}");
    assert_eq!(nodes[0].schema().name, "Template");
    assert_eq!(errors.len(), 5, "{errors:?}");

    let wasi = error_for(&errors, "hostile-wasi-import.wasm");
    assert!(
        matches!(wasi, LoadError::ForbiddenImport { import, .. } if import == "wasi:random/random@0.2.0")
    );
    assert!(wasi.to_string().contains("hostile-wasi-import.wasm: imports `wasi:random/random@0.2.0`, which the sandbox does not provide"), "{wasi}");

    let duplicate = error_for(&errors, "hostile-duplicate-ports.wasm").to_string();
    assert!(duplicate.ends_with("hostile-duplicate-ports.wasm: describe returned an unusable schema: two inputs are named 'text'"), "{duplicate}");
    let empty = error_for(&errors, "hostile-empty-id.wasm").to_string();
    assert!(
        empty.ends_with(
            "hostile-empty-id.wasm: describe returned an unusable schema: the id is empty"
        ),
        "{empty}"
    );

    for file in ["malformed.wasm", "core-module.wasm"] {
        let error = error_for(&errors, file);
        assert!(matches!(error, LoadError::Invalid { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("{file}: not a valid WebAssembly component")),
            "{error}"
        );
    }
    // The good node still runs after all that.
    let out = run(
        nodes[0].as_ref(),
        &Inputs::new()
            .with("vars.var_0", Value::String("x".into()))
            .with("vars.var_1", Value::String("y".into())),
    )
    .unwrap();
    assert!(matches!(&out.values[..], [Value::String(s)] if s == "a photo of a x mixed with a y"));
}

struct NativeTemplate;

impl Node for NativeTemplate {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Template", "utils")
    }

    fn run(&self, _: &Inputs, _: &RunContext) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::default())
    }
}

#[test]
fn an_id_two_files_declare_is_refused_for_both() {
    let template = std::fs::read(component("template")).unwrap();
    let dir = folder(&["pairs"], &[("a.wasm", &template), ("b.wasm", &template)]);
    let (nodes, errors) = host().load_dir(dir.path(), &Registry::new());
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].schema().name, "ConceptPairs");
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}: node id 'Template' is also declared by b.wasm, so none of them loads \
             (ids are compared without case)",
            dir.path().join("a.wasm").display()
        )
    );

    let mut native = Registry::new();
    native.register(Arc::new(NativeTemplate));
    let (nodes, errors) = host().load_dir(dir.path(), &native);
    assert_eq!(nodes.len(), 1);
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|e| e
        .to_string()
        .ends_with("is taken by the built-in node 'Template' (ids are compared without case)")));
}

#[test]
fn the_registry_gets_the_custom_nodes_beside_the_native_ones() {
    let mut native = Registry::new();
    native.register(Arc::new(NativeTemplate));
    let dir = folder(&["pairs", "template"], &[("broken.wasm", MALFORMED)]);
    let (registry, errors) = host().registry_with_custom_nodes(native, dir.path());
    let names: Vec<&str> = registry.names().collect();
    assert_eq!(names, ["ConceptPairs", "Template"]);
    assert_eq!(registry.get("Template").unwrap().schema().category, "utils");
    let files: Vec<_> = errors
        .iter()
        .map(|e| e.path().file_name().unwrap().to_owned())
        .collect();
    assert_eq!(files, ["broken.wasm", "template.wasm"]);
}

#[test]
fn a_missing_folder_holds_no_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, errors) = host().load_dir(&dir.path().join("absent"), &Registry::new());
    assert!(nodes.is_empty() && errors.is_empty());
}

#[test]
fn compiled_components_are_cached_and_reused() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("compiled");
    let nodes = folder(&["template", "pairs"], &[]);
    let load = || {
        let host = SandboxHost::new(SandboxLimits::default(), Some(&cache_dir)).unwrap();
        let (nodes, errors) = host.load_dir(nodes.path(), &Registry::new());
        assert!(errors.is_empty(), "{errors:?}");
        nodes
    };
    load();
    let artifacts = || -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    };
    let cached = artifacts();
    assert_eq!(cached.len(), 2);
    assert!(cached
        .iter()
        .all(|p| p.extension().is_some_and(|e| e == "cwasm")));
    let modified: Vec<_> = cached
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();

    // A reload reads the artifacts instead of compiling again.
    let reloaded = load();
    assert_eq!(artifacts(), cached);
    let again: Vec<_> = cached
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(again, modified);
    let template = reloaded
        .iter()
        .find(|n| n.schema().name == "Template")
        .unwrap();
    let out = run(
        template.as_ref(),
        &Inputs::new()
            .with("template", Value::String("{var_0}!".into()))
            .with("vars.var_0", Value::String("3".into())),
    )
    .unwrap();
    assert!(matches!(&out.values[..], [Value::String(s)] if s == "3!"));

    // An artifact altered in place (one byte of its code, which wasmtime's own
    // header check would not notice) is compiled again, not run.
    let original = std::fs::read(&cached[0]).unwrap();
    let mut altered = original.clone();
    altered[original.len() / 2] ^= 0x40;
    std::fs::write(&cached[0], &altered).unwrap();
    assert_eq!(load().len(), 2);
    assert_eq!(std::fs::read(&cached[0]).unwrap(), original, "rewritten");

    // A damaged artifact is replaced by a fresh compilation.
    for path in &cached {
        std::fs::write(path, b"damaged").unwrap();
    }
    assert_eq!(load().len(), 2);
    assert!(artifacts()
        .iter()
        .all(|p| std::fs::metadata(p).unwrap().len() > 1000));
}

#[test]
fn a_compile_over_its_time_budget_is_abandoned_and_remembered() {
    let hasty = SandboxHost::new(
        SandboxLimits {
            compile_time: std::time::Duration::ZERO,
            ..SandboxLimits::default()
        },
        None,
    )
    .unwrap();
    let path = component("template");
    let Err(error) = hasty.load_file(&path) else {
        panic!("compiled within a zero budget")
    };
    assert!(matches!(error, LoadError::CompileBudget { .. }), "{error}");
    assert!(
        error
            .to_string()
            .ends_with("compiling took longer than 0 ms (--wasm-compile-budget-ms); abandoned"),
        "{error}"
    );
    let Err(again) = hasty.load_file(&path) else {
        panic!("loaded after failing")
    };
    assert!(matches!(again, LoadError::FailedBefore { .. }), "{again}");
    assert!(
        host().load_file(&path).is_ok(),
        "the default budget suffices"
    );
}
