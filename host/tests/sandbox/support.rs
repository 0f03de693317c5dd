//! Builds the guest components and gives tests a host, a run context and
//! folders of components.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cretok_host::sandbox::{SandboxHost, SandboxLimits};
use cretok_node_api::{
    CancelToken, EventSink, Inputs, Node, NodeError, NodeOutput, Paths, PreviewFormat, RunContext,
};

/// The folder of built components (`<crate name>.wasm`), built on first use.
pub fn components() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-guests");
        // Above the package of whichever test includes this file (the host's or the CLI's).
        let examples = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join("wit/examples"))
            .find(|dir| dir.is_dir())
            .expect("wit/examples above the test's package");
        let out = root.join("components");
        cretok_componentize::build_workspace(&examples, &root.join("target"), &out, &[])
            .unwrap_or_else(|e| panic!("building the guest nodes: {e}"));
        out
    })
}

/// The path of one built component.
pub fn component(name: &str) -> PathBuf {
    let path = components().join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A temporary custom-nodes folder holding copies of `names` (as
/// `<name>.wasm`) and of `extra` files given as (file name, bytes).
pub fn folder(names: &[&str], extra: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(component(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    for (file, bytes) in extra {
        std::fs::write(dir.path().join(file), bytes).unwrap();
    }
    dir
}

/// A host with the default limits and no compile cache.
pub fn host() -> SandboxHost {
    SandboxHost::new(SandboxLimits::default(), None).unwrap()
}

/// Loads one built component with `host`.
pub fn load(host: &SandboxHost, name: &str) -> cretok_host::sandbox::SandboxNode {
    host.load_file(&component(name))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Keeps the text lines a node sends to the user.
#[derive(Default)]
pub struct TextSink(pub Mutex<Vec<String>>);

impl EventSink for TextSink {
    fn progress(&self, _: &str, _: u64, _: u64) {}
    fn preview(&self, _: &str, _: PreviewFormat, _: Vec<u8>) {}
    fn text(&self, _: &str, text: &str) {
        self.0.lock().unwrap().push(text.to_owned());
    }
}

/// Runs `node` on `inputs` with a throwaway context, sending text to `sink`.
pub fn run_with(
    node: &dyn Node,
    inputs: &Inputs,
    sink: &TextSink,
) -> Result<NodeOutput, NodeError> {
    let paths = Paths::new(std::env::temp_dir(), None);
    let cancel = CancelToken::new();
    node.run(inputs, &RunContext::new("1", &paths, &cancel, sink))
}

/// Runs `node` on `inputs` with a throwaway context.
pub fn run(node: &dyn Node, inputs: &Inputs) -> Result<NodeOutput, NodeError> {
    run_with(node, inputs, &TextSink::default())
}

/// The message of a failed run.
pub fn failure(result: Result<NodeOutput, NodeError>) -> String {
    match result {
        Ok(out) => panic!("expected a failure, got {:?}", out.values),
        Err(e) => e.to_string(),
    }
}
