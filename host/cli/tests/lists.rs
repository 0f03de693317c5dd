//! List outputs and list inputs, in process: ComfyUI's mapping rules (a plain
//! node runs once per item, shorter lists repeat their last item, a list node
//! gets whole lists), merged output-node results, cancellation between items
//! and the memory budget of mapped nodes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cretok::native_registry;
use cretok_host::executor::{ExecutionObserver, ExecutionRecord, Executor, Outcome, PromptJob};
use cretok_host::protocol::ServerMessage;
use cretok_host::validation::validate;
use cretok_nodes::{
    data_type, CancelToken, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node,
    NodeError, NodeOutput, NodeSchema, OutputSpec, Paths, PreviewFormat, PromptLimits, Registry,
    RunContext, Value, ValueEstimate,
};
use serde_json::{json, Value as Json};

struct Quiet;

impl ExecutionObserver for Quiet {
    fn message(&self, _: ServerMessage) {}
    fn preview(&self, _: &str, _: PreviewFormat, _: Vec<u8>) {}
    fn text(&self, _: &str, _: &str) {}
}

/// The native nodes over a temporary data directory.
struct Setup {
    dir: tempfile::TempDir,
    paths: Arc<Paths>,
    registry: Registry,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = Arc::new(Paths::new(dir.path(), None));
        std::fs::create_dir_all(paths.output_dir()).unwrap();
        let registry = native_registry(&paths);
        Setup {
            dir,
            paths,
            registry,
        }
    }

    fn run_with(&self, prompt: Json, cancel: &CancelToken) -> ExecutionRecord {
        let valid =
            validate(&prompt, &self.registry, None).unwrap_or_else(|f| panic!("{}", f.report()));
        let job = PromptJob {
            prompt_id: "lists".into(),
            number: 0,
            valid,
            prompt,
            client_id: None,
            extra_data: json!({}),
        };
        Executor::new(Arc::clone(&self.paths)).run(&job, &self.registry, cancel, &Quiet)
    }

    fn run(&self, prompt: Json) -> ExecutionRecord {
        let record = self.run_with(prompt, &CancelToken::new());
        assert_eq!(record.outcome, Outcome::Success, "{:?}", record.events);
        record
    }

    fn saved_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("output"))
            .unwrap()
            .count()
    }
}

fn lines(text: &str) -> Json {
    json!({"class_type": "TextToList", "inputs": {"text": text}})
}

#[test]
fn a_list_of_three_mapped_over_by_a_plain_node_saves_three_texts() {
    let setup = Setup::new();
    let record = setup.run(json!({
        "1": lines("lettuce\nmantis\n\nowl"),
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": "!", "delimiter": ""}},
        "3": {"class_type": "SaveText", "inputs": {"text": ["2", 0], "filename_prefix": "sweep"}}
    }));
    let ui = &record.outputs["3"];
    assert_eq!(ui["text"], json!(["lettuce!", "mantis!", "owl!"]));
    assert_eq!(ui["files"].as_array().unwrap().len(), 3, "{ui}");
    assert_eq!(setup.saved_files(), 3);
}

#[test]
fn lists_of_different_length_repeat_the_shorter_ones_last_item() {
    let setup = Setup::new();
    let record = setup.run(json!({
        "1": lines("a\nb\nc"),
        "2": lines("x\ny"),
        "3": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": ["2", 0], "delimiter": "+"}},
        "4": {"class_type": "SaveText", "inputs": {"text": ["3", 0], "filename_prefix": "pairs"}}
    }));
    assert_eq!(record.outputs["4"]["text"], json!(["a+x", "b+y", "c+y"]));
}

#[test]
fn an_input_list_node_receives_the_whole_list_and_runs_once() {
    let setup = Setup::new();
    let record = setup.run(json!({
        "1": lines("a\nb\nc"),
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": "1", "delimiter": ""}},
        "3": {"class_type": "JoinTextList", "inputs": {"texts": ["2", 0], "delimiter": ", "}},
        "4": {"class_type": "SaveText", "inputs": {"text": ["3", 0], "filename_prefix": "joined"}}
    }));
    assert_eq!(record.outputs["4"]["text"], json!(["a1, b1, c1"]));
    assert_eq!(setup.saved_files(), 1);
}

#[test]
fn object_info_declares_list_outputs_and_list_inputs() {
    let setup = Setup::new();
    let info = setup.registry.object_info();
    assert_eq!(info["TextToList"]["output_is_list"], json!([true]));
    assert_eq!(info["TextToList"]["is_input_list"], json!(false));
    assert_eq!(info["JoinTextList"]["is_input_list"], json!(true));
    assert_eq!(info["SaveText"]["output_is_list"], json!([]));
}

/// Passes its text on, counting runs; cancels the prompt on its first run.
struct CancelsOnFirstRun {
    runs: Arc<AtomicUsize>,
}

impl Node for CancelsOnFirstRun {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CancelsOnFirstRun", "test")
            .input(InputSpec::required(
                "text",
                InputKind::link(data_type::STRING),
            ))
            .output(OutputSpec::new(data_type::STRING))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        ctx.cancel_token().cancel();
        Ok(NodeOutput::values(vec![Value::String(
            inputs.string("text")?.to_owned(),
        )]))
    }
}

#[test]
fn an_interrupt_stops_a_mapped_node_between_items() {
    let mut setup = Setup::new();
    let runs = Arc::new(AtomicUsize::new(0));
    setup.registry.register(Arc::new(CancelsOnFirstRun {
        runs: Arc::clone(&runs),
    }));
    let record = setup.run_with(
        json!({
            "1": lines("a\nb\nc"),
            "2": {"class_type": "CancelsOnFirstRun", "inputs": {"text": ["1", 0]}},
            "3": {"class_type": "SaveText", "inputs": {"text": ["2", 0], "filename_prefix": "x"}}
        }),
        &CancelToken::new(),
    );
    assert_eq!(record.outcome, Outcome::Interrupted);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "no item after the interrupt"
    );
    assert_eq!(setup.saved_files(), 0);
}

/// Makes a 100-byte text from any text.
struct Grow;

impl Node for Grow {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Grow", "test")
            .input(InputSpec::required(
                "text",
                InputKind::link(data_type::STRING),
            ))
            .output(OutputSpec::new(data_type::STRING))
    }

    fn run(&self, _: &Inputs, _: &RunContext) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::values(vec![Value::String("g".repeat(100))]))
    }

    fn estimate(&self, _: &EstimateInputs) -> Result<Estimate, String> {
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(100)]))
    }
}

#[test]
fn a_mapped_node_is_estimated_once_per_item() {
    let mut setup = Setup::new();
    setup.registry.register(Arc::new(Grow));
    setup.registry.set_limits(PromptLimits {
        max_nodes: 100,
        memory_bytes: 2_000,
    });
    let grown = |text: &str| {
        json!({
            "1": lines(text),
            "2": {"class_type": "Grow", "inputs": {"text": ["1", 0]}},
            "3": {"class_type": "JoinTextList", "inputs": {"texts": ["2", 0], "delimiter": ""}},
            "4": {"class_type": "SaveText", "inputs": {"text": ["3", 0], "filename_prefix": "g"}}
        })
    };
    // Three lines at most: 3 runs of 100 bytes, joined into 300, fit.
    let record = setup.run(grown("a\nb\nc"));
    assert_eq!(record.outputs["4"]["text"][0].as_str().unwrap().len(), 300);
    // Forty lines: 40 × 100 bytes held and joined is over the budget of 2,000.
    let failure = validate(&grown(&"x\n".repeat(40)), &setup.registry, None).unwrap_err();
    let errors = &failure.node_errors["2"].errors;
    assert_eq!(
        errors[0].kind,
        "memory_budget_exceeded",
        "{}",
        failure.report()
    );
}
