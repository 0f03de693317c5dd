//! Forged hostile guests against the budgets: everything a guest hands the
//! host is bounded (schema, names, outputs, logs, files, functions, time), a
//! guest cannot shadow another node, a replaced guest is a new node, and
//! after each attack the next call works.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cretok_host::catalog::NodeCatalog;
use cretok_host::sandbox::{Fault, LoadError, RunError, SandboxHost, SandboxLimits, SandboxNode};
use cretok_node_api::{
    CancelToken, Inputs, Node, NodeError, NodeOutput, NodeSchema, NullSink, Paths, Registry,
    RunContext, Value,
};

use crate::forge::{Guest, Image, Port, Run, Str, STR};
use crate::support::host;

/// A node loaded from a forged guest written to a temporary folder.
fn load(host: &SandboxHost, guest: &Guest) -> Result<SandboxNode, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    guest.write(dir.path(), "forged.wasm");
    host.load_file(&dir.path().join("forged.wasm"))
}

/// The error of a load that must fail.
fn refused(loaded: Result<SandboxNode, LoadError>) -> LoadError {
    match loaded {
        Ok(node) => panic!("{} was loaded", node.component()),
        Err(e) => e,
    }
}

fn host_with(limits: SandboxLimits) -> SandboxHost {
    SandboxHost::new(limits, None).unwrap()
}

/// Runs `node` for the prompt whose cancel token is `prompt`.
fn run_for(node: &dyn Node, prompt: &CancelToken) -> Result<NodeOutput, NodeError> {
    let paths = Paths::new(std::env::temp_dir(), None);
    node.run(
        &Inputs::new(),
        &RunContext::new("1", &paths, prompt, &NullSink),
    )
}

fn run(node: &dyn Node) -> Result<NodeOutput, NodeError> {
    run_for(node, &CancelToken::new())
}

fn fault(result: Result<NodeOutput, NodeError>) -> Fault {
    match result {
        Err(NodeError::Failed(error)) => error.downcast::<RunError>().unwrap().fault,
        other => panic!("expected a fault, got {:?}", other.map(|o| o.values)),
    }
}

/// A well-behaved forged node answers, and its output is `text`.
fn answers(node: &dyn Node, text: &str) {
    let out = run(node).unwrap();
    assert!(
        matches!(&out.values[..], [Value::String(s)] if s == text),
        "{:?}",
        out.values
    );
}

fn text_port(image: &mut Image, name: &str, description: Str) -> Port {
    Port {
        name: image.str(name),
        kind: STR,
        description,
    }
}

#[test]
fn a_schema_alias_bomb_is_stopped_by_the_schema_copy_budget() {
    // 60 tooltips all pointing at one 8 MiB buffer: 480 MiB if copied.
    let mut image = Image::default();
    let bomb = image.zeros(8 << 20);
    let ports: Vec<Port> = (0..60)
        .map(|i| text_port(&mut image, &format!("p{i}"), bomb))
        .collect();
    let inputs = image.ports(&ports);
    let (id, empty) = (image.str("Bomb"), image.str(""));
    let outputs = image.ports(&[]);
    let schema = image.schema(id, empty, empty, inputs, outputs);
    let started = Instant::now();
    let error = refused(load(&host(), &Guest::new(image, schema, Run::Spin)));
    assert!(started.elapsed() < Duration::from_secs(5));
    match &error {
        LoadError::Describe { fault, .. } => assert_eq!(*fault, Fault::CopyBudget(64 << 10)),
        other => panic!("expected the copy budget, got {other}"),
    }
    assert!(
        error.to_string().ends_with(
            "describe handed the host more than its copy budget of 65536 bytes in one transfer"
        ),
        "{error}"
    );
}

fn schema_error(id: &str, display_name: &str, description: &str) -> String {
    let mut image = Image::default();
    let (id, display_name, description) = (
        image.str(id),
        image.str(display_name),
        image.str(description),
    );
    let (name, empty) = (image.str("text"), image.str(""));
    let outputs = image.ports(&[Port {
        name,
        kind: STR,
        description: empty,
    }]);
    let inputs = image.ports(&[]);
    let schema = image.schema(id, display_name, description, inputs, outputs);
    match load(&host(), &Guest::new(image, schema, Run::Spin)) {
        Err(LoadError::BadSchema { problem, .. }) => problem,
        Err(other) => panic!("expected a bad schema, got {other}"),
        Ok(_) => panic!("the schema was accepted"),
    }
}

#[test]
fn long_names_markup_and_control_characters_are_refused() {
    let long = "A".repeat(5000);
    let problem = schema_error(&long, "", "");
    assert!(problem.starts_with("the id 'AAAA"), "{problem}");
    assert!(problem.ends_with("…' is longer than 64 bytes"), "{problem}");
    assert!(
        problem.len() < 160,
        "quotes at most 80 characters: {problem}"
    );
    for ((id, display_name, description), problem) in [
        (
            ("X", "<img src=x onerror=alert(1)>", ""),
            "the display name '<img src=x onerror=alert(1)>' contains '<'",
        ),
        (
            ("X", "", "fine\u{202E}txt.exe"),
            "the description 'fine\\u{202e}txt.exe' contains '\\u{202e}'",
        ),
        (
            ("X", "", "a\u{1b}[2J"),
            "the description 'a\\u{1b}[2J' contains '\\u{1b}'",
        ),
        (
            ("..", "", ""),
            "the id '..' does not start with a letter or digit",
        ),
    ] {
        assert_eq!(schema_error(id, display_name, description), problem);
    }
    let problem = schema_error("X", "", &"d".repeat(2000));
    assert!(
        problem.ends_with("…' is 2000 bytes long, more than 1024"),
        "{problem}"
    );
}

#[test]
fn an_output_alias_bomb_is_stopped_by_the_copy_budget() {
    // 40 outputs all pointing at one 8 MiB buffer.
    let mut image = Image::default();
    let schema = image.text_node("OutBomb");
    let bomb = image.zeros(8 << 20);
    let name = image.str("text");
    let result = image.string_outputs(&vec![(name, bomb); 40]);
    let node = load(&host(), &Guest::new(image, schema, Run::Return(result))).unwrap();
    let message = match run(&node) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the bomb was accepted"),
    };
    assert_eq!(
        message,
        "custom node 'OutBomb' (forged.wasm) handed the host more than its copy budget of \
         1048576 bytes in one transfer"
    );
}

#[test]
fn sixty_thousand_outputs_fail_fast() {
    let mut image = Image::default();
    let schema = image.text_node("Many");
    let (name, value) = (image.str("text"), image.str("x"));
    let result = image.string_outputs(&vec![(name, value); 60_000]);
    let node = load(&host(), &Guest::new(image, schema, Run::Return(result))).unwrap();
    let started = Instant::now();
    let stopped = fault(run(&node));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stopped, Fault::CopyBudget(1 << 20));
    // Under a larger budget the outputs are lifted, and checked in linear time.
    let roomy = host_with(SandboxLimits {
        copy_bytes: 16 << 20,
        ..SandboxLimits::default()
    });
    let mut image = Image::default();
    let schema = image.text_node("Many");
    let (name, value) = (image.str("text"), image.str("x"));
    let result = image.string_outputs(&vec![(name, value); 60_000]);
    let node = load(&roomy, &Guest::new(image, schema, Run::Return(result))).unwrap();
    let started = Instant::now();
    assert_eq!(
        fault(run(&node)),
        Fault::BadOutputs("output 'text' is returned twice".into())
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

fn logging_node(line_bytes: usize, times: u32) -> SandboxNode {
    let mut image = Image::default();
    let schema = image.text_node("Logger");
    let message = image.zeros(line_bytes);
    let (name, value) = (image.str("text"), image.str("logged"));
    let then = image.string_outputs(&[(name, value)]);
    let run = Run::Log {
        message,
        times,
        then,
    };
    load(&host(), &Guest::new(image, schema, run)).unwrap()
}

#[test]
fn a_log_bomb_is_copied_only_up_to_the_line_cap() {
    // 1000 lines of 900 KB: each is checked in the guest's memory, and only
    // the first KiB of the first 100 is copied.
    let node = logging_node(900_000, 1000);
    let sink = crate::support::TextSink::default();
    let paths = Paths::new(std::env::temp_dir(), None);
    let cancel = CancelToken::new();
    let out = node
        .run(
            &Inputs::new(),
            &RunContext::new("1", &paths, &cancel, &sink),
        )
        .unwrap();
    assert!(matches!(&out.values[..], [Value::String(s)] if s == "logged"));
    let lines = sink.0.lock().unwrap();
    assert_eq!(lines.len(), 100);
    assert!(lines
        .iter()
        .all(|l| l.len() <= "[Logger] ".len() + 1024 + '…'.len_utf8()));
    drop(lines);
    // A single line larger than the copy budget stops the call.
    let node = logging_node(14 << 20, 1);
    assert_eq!(fault(run(&node)), Fault::CopyBudget(1 << 20));
    answers(&logging_node(10, 1), "logged");
}

#[test]
fn a_component_of_100_000_functions_is_refused_before_compiling() {
    let mut guest = Guest::text("Flood", "x");
    guest.filler_functions = 100_000;
    let started = Instant::now();
    let error = refused(load(&host(), &guest));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The filler, the node's three and wit-component's shims.
    let message = error.to_string();
    assert!(message.contains(": defines 1000"), "{message}");
    assert!(
        message.ends_with(" functions, more than the 10000 a component may have"),
        "{message}"
    );
}

#[test]
fn an_oversize_file_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.wasm");
    // Sparse: 3 GiB that take no disk space, and must not be read.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let started = Instant::now();
    let error = refused(host().load_file(&path));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        error.to_string().ends_with(
            "huge.wasm: is 3221225472 bytes, more than the 16777216 bytes a component may have \
             (--wasm-max-file-mib)"
        ),
        "{error}"
    );
}

#[test]
fn a_file_that_failed_is_not_compiled_again_until_it_changes() {
    let host = host();
    let dir = tempfile::tempdir().unwrap();
    let mut bad = Guest::text("..", "x");
    bad.write(dir.path(), "bad.wasm");
    let first = refused(host.load_file(&dir.path().join("bad.wasm")));
    assert!(matches!(first, LoadError::BadSchema { .. }), "{first}");
    let again = refused(host.load_file(&dir.path().join("bad.wasm")));
    assert!(matches!(again, LoadError::FailedBefore { .. }), "{again}");
    assert!(again.to_string().starts_with(&first.to_string()), "{again}");
    bad = Guest::text("Fixed", "x");
    bad.write(dir.path(), "bad.wasm");
    answers(&host.load_file(&dir.path().join("bad.wasm")).unwrap(), "x");
}

#[test]
fn a_replaced_guest_is_a_new_node_for_the_cache() {
    let host = host();
    let dir = tempfile::tempdir().unwrap();
    Guest::text("Same", "old").write(dir.path(), "same.wasm");
    let old = host.load_file(&dir.path().join("same.wasm")).unwrap();
    Guest::text("Same", "new").write(dir.path(), "same.wasm");
    let new = host.load_file(&dir.path().join("same.wasm")).unwrap();
    answers(&new, "new");
    let (old_key, new_key) = (
        old.fingerprint(&Inputs::new()),
        new.fingerprint(&Inputs::new()),
    );
    assert!(old_key.is_some());
    assert_ne!(old_key, new_key);
}

struct Native(&'static str);

impl Node for Native {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new(self.0, "sampling")
    }

    fn run(&self, _: &Inputs, _: &RunContext) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::default())
    }
}

#[test]
fn shadowing_by_file_name_order_or_case_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // `shadow_Template.wasm` sorts before `template.wasm`: neither wins.
    Guest::text("Template", "shadow").write(dir.path(), "shadow_Template.wasm");
    Guest::text("Template", "real").write(dir.path(), "template.wasm");
    Guest::text("Echo", "a").write(dir.path(), "echo.wasm");
    Guest::text("ECHO", "b").write(dir.path(), "echo2.wasm");
    Guest::text("ksampler", "c").write(dir.path(), "ksampler.wasm");
    Guest::text("Fine", "fine").write(dir.path(), "fine.wasm");
    let mut native = Registry::new();
    native.register(Arc::new(Native("KSampler")));
    let (nodes, errors) = host().load_dir(dir.path(), &native);
    let names: Vec<String> = nodes.iter().map(|n| n.schema().name).collect();
    assert_eq!(names, ["Fine"], "{errors:?}");
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 5, "{messages:?}");
    assert!(messages[0].ends_with(
        "echo.wasm: node id 'Echo' is also declared by echo2.wasm, so none of them loads \
         (ids are compared without case)"
    ));
    assert!(messages[2].ends_with(
        "ksampler.wasm: node id 'ksampler' is taken by the built-in node 'KSampler' \
         (ids are compared without case)"
    ));
    assert!(messages[3]
        .contains("shadow_Template.wasm: node id 'Template' is also declared by template.wasm"));
    assert!(messages[4]
        .contains("template.wasm: node id 'Template' is also declared by shadow_Template.wasm"));
}

#[test]
fn concurrent_reloads_with_slow_guests_swap_one_whole_catalogue() {
    let host = host_with(SandboxLimits {
        deadline: Duration::from_millis(200),
        ..SandboxLimits::default()
    });
    let dir = tempfile::tempdir().unwrap();
    for i in 0..8 {
        Guest::text(&format!("Good{i}"), "good").write(dir.path(), &format!("good{i}.wasm"));
    }
    let mut slow = Guest::text("Slow", "never");
    slow.slow_describe = true;
    slow.write(dir.path(), "slow.wasm");
    let catalog = NodeCatalog::new(Registry::new());
    let started = Instant::now();
    let answers: Vec<Vec<String>> = std::thread::scope(|scope| {
        let reloads: Vec<_> = (0..40)
            .map(|_| {
                scope.spawn(|| {
                    catalog.rebuild(|| {
                        let (registry, errors) =
                            host.registry_with_custom_nodes(Registry::new(), dir.path());
                        (registry, errors.iter().map(ToString::to_string).collect())
                    })
                })
            })
            .collect();
        reloads.into_iter().map(|r| r.join().unwrap()).collect()
    });
    // 40 reloads coalesce: a few slow describes, not 40.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    for problems in &answers {
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].ends_with("slow.wasm: describe hit the deadline of 200 ms"),
            "{problems:?}"
        );
    }
    let registry = catalog.snapshot();
    for i in 0..8 {
        answers_in(&registry, &format!("Good{i}"));
    }
    assert!(registry.get("Slow").is_none());
}

fn answers_in(registry: &Registry, id: &str) {
    answers(
        registry
            .get(id)
            .unwrap_or_else(|| panic!("{id} is missing"))
            .as_ref(),
        "good",
    );
}

fn spinning_node(limits: SandboxLimits) -> SandboxNode {
    let mut image = Image::default();
    let schema = image.text_node("Spin");
    load(&host_with(limits), &Guest::new(image, schema, Run::Spin)).unwrap()
}

#[test]
fn an_interrupt_stops_a_running_call() {
    let node = spinning_node(SandboxLimits {
        deadline: Duration::from_secs(30),
        ..SandboxLimits::default()
    });
    let prompt = CancelToken::new();
    let started = Instant::now();
    let result = std::thread::scope(|scope| {
        let call = scope.spawn(|| run_for(&node, &prompt));
        std::thread::sleep(Duration::from_millis(100));
        prompt.cancel();
        call.join().unwrap()
    });
    assert!(matches!(result, Err(NodeError::Interrupted)), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_prompt_of_many_near_deadline_calls_runs_out_of_guest_time() {
    let deadline = Duration::from_millis(200);
    let budget = Duration::from_millis(500);
    let node = spinning_node(SandboxLimits {
        deadline,
        prompt_budget: budget,
        ..SandboxLimits::default()
    });
    let prompt = CancelToken::new();
    let started = Instant::now();
    let faults: Vec<Fault> = (0..20).map(|_| fault(run_for(&node, &prompt))).collect();
    let took = started.elapsed();
    assert_eq!(
        faults[..2],
        [Fault::Deadline(deadline), Fault::Deadline(deadline)]
    );
    assert!(
        faults[2..]
            .iter()
            .all(|f| *f == Fault::PromptBudget(budget)),
        "{faults:?}"
    );
    assert!(
        took < budget + Duration::from_millis(300),
        "20 calls took {took:?}"
    );
    assert_eq!(
        faults[3].to_string(),
        "used up the prompt's guest time of 500 ms (--wasm-prompt-budget-ms)"
    );
    // The next prompt has its own budget.
    assert_eq!(
        fault(run_for(&node, &CancelToken::new())),
        Fault::Deadline(deadline)
    );
}
