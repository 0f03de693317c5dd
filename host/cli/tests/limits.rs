//! Prompt limits, in-process: the node count, the memory budget the nodes'
//! estimates must fit in, the schedule `denoise` may ask for, and graph
//! algorithms that stay iterative on very long chains.

use std::sync::Arc;

use cretok::native_registry;
use cretok_host::executor::{ExecutionObserver, Executor, Outcome, PromptJob};
use cretok_host::protocol::ServerMessage;
use cretok_host::validation::{validate, ValidationFailure};
use cretok_nodes::sd3::sampling::{denoise_sigmas, Scheduler};
use cretok_nodes::test_prompts::{add_placeholder_checkpoint, concat_chain, sd3_prompt};
use cretok_nodes::{
    check_interrupted, CancelToken, Inputs, Node, NodeError, NodeOutput, NodeSchema, Paths,
    PreviewFormat, PromptLimits, Registry, RunContext,
};
use serde_json::{json, Value};

const GB: u64 = 1_000_000_000;

/// The native nodes over a data directory with a (placeholder) checkpoint, so
/// SD3 graphs pass the loader's list check.
struct Setup {
    _dir: tempfile::TempDir,
    paths: Arc<Paths>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        add_placeholder_checkpoint(dir.path()).unwrap();
        let paths = Arc::new(Paths::new(dir.path(), None));
        Setup { _dir: dir, paths }
    }

    fn registry(&self, limits: PromptLimits) -> Registry {
        let mut registry = native_registry(&self.paths);
        registry.set_limits(limits);
        registry
    }
}

fn limits(max_nodes: usize, memory_bytes: u64) -> PromptLimits {
    PromptLimits {
        max_nodes,
        memory_bytes,
    }
}

fn refused(prompt: &Value, registry: &Registry) -> ValidationFailure {
    match validate(prompt, registry, None) {
        Ok(_) => panic!("the prompt must be refused"),
        Err(failure) => failure,
    }
}

/// The single error of node `id`.
fn node_error(failure: &ValidationFailure, id: &str) -> (String, String) {
    let errors = &failure.node_errors[id].errors;
    assert_eq!(errors.len(), 1, "{}", failure.report());
    (errors[0].kind.clone(), errors[0].details.clone())
}

#[test]
fn a_50000_node_chain_gets_a_clear_error() {
    let setup = Setup::new();
    let registry = setup.registry(PromptLimits::default());
    let failure = refused(&concat_chain("x", 50_000, false, false), &registry);
    assert_eq!(failure.error.kind, "invalid_prompt");
    assert_eq!(failure.error.message, "Prompt has too many nodes");
    assert!(
        failure.error.details.contains("50002 nodes")
            && failure.error.details.contains("limit of 10000")
            && failure.error.details.contains("--max-nodes"),
        "{}",
        failure.error.details
    );
}

struct Quiet;

impl ExecutionObserver for Quiet {
    fn message(&self, _: ServerMessage) {}
    fn preview(&self, _: &str, _: PreviewFormat, _: Vec<u8>) {}
    fn text(&self, _: &str, _: &str) {}
}

/// Validation and execution of a 30,000-node chain on a test thread's 2 MiB
/// stack: the recursive algorithms overflowed it.
#[test]
fn a_30000_node_chain_validates_and_runs_under_a_raised_limit() {
    let setup = Setup::new();
    let registry = setup.registry(limits(50_000, 4 * GB));
    let prompt = concat_chain("x", 30_000, false, false);
    let valid = validate(&prompt, &registry, None).expect("a chain under the limit is valid");
    assert_eq!(valid.order.len(), 30_002);
    assert_eq!(
        (valid.order[0].as_str(), valid.order[30_001].as_str()),
        ("0", "save")
    );

    let job = PromptJob {
        prompt_id: "chain".into(),
        number: 0,
        prompt,
        valid,
        client_id: None,
        extra_data: json!({}),
    };
    let mut executor = Executor::new(Arc::clone(&setup.paths));
    let record = executor.run(&job, &registry, &CancelToken::new(), &Quiet);
    assert_eq!(record.outcome, Outcome::Success);
    assert_eq!(record.outputs["save"]["text"], json!(["x"]));
}

#[test]
fn the_node_limit_is_a_limit_not_a_guess() {
    let setup = Setup::new();
    let registry = setup.registry(limits(10, 4 * GB));
    assert!(validate(&concat_chain("x", 8, false, false), &registry, None).is_ok());
    let failure = refused(&concat_chain("x", 9, false, false), &registry);
    assert!(failure.error.details.contains("11 nodes"), "{failure:?}");
}

#[test]
fn a_huge_latent_is_refused_naming_the_budget_and_the_flag() {
    let setup = Setup::new();
    let registry = setup.registry(limits(10_000, 4 * GB));
    let failure = refused(&sd3_prompt(16384, 16384, 64, "a cat", 1.0), &registry);
    assert_eq!(failure.error.kind, "prompt_outputs_failed_validation");
    let (kind, details) = node_error(&failure, "2");
    assert_eq!(kind, "memory_budget_exceeded");
    assert!(
        details.contains("17.18 GB")
            && details.contains("4.00 GB")
            && details.contains("--max-memory-gb"),
        "{details}"
    );

    // The same through a primitive: its constant is known before running.
    let mut through_primitive = sd3_prompt(json!(["7", 0]), 16384, 64, "a cat", 1.0);
    through_primitive["7"] = json!({"class_type": "PrimitiveInt", "inputs": {"value": 16384}});
    let failure = refused(&through_primitive, &registry);
    assert_eq!(node_error(&failure, "2").0, "memory_budget_exceeded");
}

#[test]
fn an_ordinary_sd3_prompt_fits_a_small_budget() {
    let setup = Setup::new();
    // A whole 1024² decode holds about 2 GiB of activations (docs/sd3.md, real size).
    let registry = setup.registry(limits(10_000, 3 * GB));
    let valid = validate(&sd3_prompt(1024, 1024, 1, "a cat", 1.0), &registry, None);
    assert!(valid.is_ok(), "{:?}", valid.err().map(|f| f.report()));
    // Four times the pixels needs the sampler's activations four times over.
    let failure = refused(&sd3_prompt(2048, 2048, 1, "a cat", 1.0), &registry);
    assert_eq!(node_error(&failure, "4").0, "memory_budget_exceeded");
}

#[test]
fn a_doubling_string_chain_is_refused_before_it_runs() {
    let setup = Setup::new();
    let registry = setup.registry(limits(10_000, 4 * GB));
    let failure = refused(&concat_chain("x", 40, true, false), &registry);
    let (id, errors) = failure.node_errors.iter().next().expect("a node error");
    assert_eq!(errors.errors[0].kind, "memory_budget_exceeded");
    // 2^n bytes at node n, held with every earlier one: refused once past 4 GB.
    let node: u32 = id.parse().unwrap();
    assert!((29..=32).contains(&node), "refused at node {node}");
}

#[test]
fn huge_text_is_refused_before_tokenizing() {
    let setup = Setup::new();
    let registry = setup.registry(limits(10_000, 4 * GB));
    let text = "a cat ".repeat(20_000);
    let failure = refused(&sd3_prompt(1024, 1024, 1, &text, 1.0), &registry);
    let (kind, details) = node_error(&failure, "3");
    assert_eq!(kind, "input_too_large");
    assert!(details.contains("120000 bytes"), "{details}");
}

#[test]
fn a_tiny_denoise_is_refused_and_the_schedule_stays_bounded() {
    let setup = Setup::new();
    let registry = setup.registry(limits(10_000, 4 * GB));
    let failure = refused(&sd3_prompt(1024, 1024, 1, "a cat", 1e-12), &registry);
    let (kind, details) = node_error(&failure, "4");
    assert_eq!(kind, "input_too_large");
    assert!(
        details.starts_with("denoise: 1e-12 with 20 steps"),
        "{details}"
    );
    assert!(validate(&sd3_prompt(1024, 1024, 1, "a cat", 0.01), &registry, None).is_ok());

    // Called directly (no validation), the schedule is bounded, not 2·10¹³ steps.
    let sigmas = denoise_sigmas(Scheduler::Simple, 20, 3.0, 1e-12);
    assert_eq!(sigmas.len(), 21);
    assert!(sigmas.iter().all(|s| s.is_finite()));
}

/// Stands for model code: no RunContext, only `check_interrupted` between blocks.
struct BlockLoop;

impl Node for BlockLoop {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("BlockLoop", "test").output_node()
    }

    fn run(&self, _: &Inputs, _: &RunContext) -> Result<NodeOutput, NodeError> {
        loop {
            check_interrupted().map_err(anyhow::Error::from)?;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[test]
fn model_code_stops_within_a_block_of_an_interrupt() {
    let setup = Setup::new();
    let mut registry = setup.registry(limits(10, GB));
    registry.register(Arc::new(BlockLoop));
    let prompt = json!({"1": {"class_type": "BlockLoop", "inputs": {}}});
    let job = PromptJob {
        prompt_id: "loop".into(),
        number: 0,
        valid: validate(&prompt, &registry, None).unwrap(),
        prompt,
        client_id: None,
        extra_data: json!({}),
    };
    let cancel = CancelToken::new();
    let canceller = cancel.clone();
    let interrupt = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        canceller.cancel();
        std::time::Instant::now()
    });
    let mut executor = Executor::new(Arc::clone(&setup.paths));
    let record = executor.run(&job, &registry, &cancel, &Quiet);
    let stopped = std::time::Instant::now();
    let interrupted_at = interrupt.join().unwrap();
    assert_eq!(record.outcome, Outcome::Interrupted);
    assert!(stopped.duration_since(interrupted_at) < std::time::Duration::from_secs(1));
}
