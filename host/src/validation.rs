//! Validation of API-format prompts against node schemas, reporting every
//! error at once in ComfyUI's shapes (`error` + `node_errors`, see
//! docs/protocol.md), and against the limits of [`PromptLimits`]: a node count,
//! and a memory budget the nodes' estimates must fit in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cretok_node_api::{
    Estimate, EstimateInputs, InputKind, InputSpec, Inputs, NodeSchema, OutputSpec, PromptLimits,
    Value, ValueEstimate, MAX_LIST_ITEMS,
};
use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::graph::{dependency_order, id_order, Graph, GraphShapeError, RawInput};

/// What validation needs to know about node types (never the nodes themselves).
pub trait NodeTypes {
    fn schema(&self, class_type: &str) -> Option<NodeSchema>;
    /// A node's own checks on its literal inputs (`custom_validation_failed`).
    fn validate_inputs(&self, class_type: &str, literal_inputs: &Inputs) -> Result<(), String>;
    /// A node's memory estimate (see [`cretok_node_api::Node::estimate`]).
    fn estimate(&self, class_type: &str, inputs: &EstimateInputs) -> Result<Estimate, String>;
    fn limits(&self) -> PromptLimits;
}

impl NodeTypes for cretok_node_api::Registry {
    fn schema(&self, class_type: &str) -> Option<NodeSchema> {
        self.get(class_type).map(|n| n.schema())
    }

    fn validate_inputs(&self, class_type: &str, literal_inputs: &Inputs) -> Result<(), String> {
        self.get(class_type)
            .map_or(Ok(()), |n| n.validate_inputs(literal_inputs))
    }

    fn estimate(&self, class_type: &str, inputs: &EstimateInputs) -> Result<Estimate, String> {
        self.get(class_type)
            .map_or(Ok(Estimate::default()), |n| n.estimate(inputs))
    }

    fn limits(&self) -> PromptLimits {
        self.limits()
    }
}

/// One error, in ComfyUI's `{type, message, details, extra_info}` shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub details: String,
    /// Boxed: most errors carry none, and the error type stays small.
    pub extra_info: Box<Json>,
}

impl ErrorInfo {
    pub fn new(kind: &str, message: &str, details: impl Into<String>) -> Self {
        ErrorInfo {
            kind: kind.to_owned(),
            message: message.to_owned(),
            details: details.into(),
            extra_info: Box::new(json!({})),
        }
    }

    fn with_extra(mut self, extra_info: Json) -> Self {
        self.extra_info = Box::new(extra_info);
        self
    }
}

/// The errors of one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeErrors {
    pub errors: Vec<ErrorInfo>,
    pub dependent_outputs: Vec<String>,
    pub class_type: String,
}

/// A prompt that cannot run: the 400 body of `POST /prompt`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationFailure {
    pub error: ErrorInfo,
    pub node_errors: BTreeMap<String, NodeErrors>,
}

impl ValidationFailure {
    fn prompt_level(error: ErrorInfo) -> Self {
        ValidationFailure {
            error,
            node_errors: BTreeMap::new(),
        }
    }

    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Every message, one line each (for the CLI).
    pub fn report(&self) -> String {
        let mut lines = vec![format!("{}: {}", self.error.message, self.error.details)];
        for (id, node) in &self.node_errors {
            for e in &node.errors {
                lines.push(format!(
                    "  node {id} ({}): {}: {}",
                    node.class_type, e.message, e.details
                ));
            }
        }
        lines.join("\n")
    }
}

/// How to get a node type this install lacks: the custom (WASM) nodes are built into the
/// custom-nodes folder, then the server reloads them.
fn install_hint(class: &str) -> String {
    format!(
        "if {class} is a custom (WASM) node, build it into the custom-nodes folder \
         (<data dir>/custom_nodes, or --custom-nodes DIR), e.g. for the examples: \
         `cargo run -p cretok-componentize -- workspace wit/examples -p template -p pairs \
         -p weighted-choice --out <data dir>/custom_nodes`; then restart the server or reload \
         (POST /api/custom_nodes/reload); see wit/README.md"
    )
}

/// An input after validation: a link to check at run time, or a typed literal.
#[derive(Debug, Clone)]
pub enum ResolvedInput {
    Link { node: String, slot: usize },
    Value(Value),
}

/// A node after validation.
#[derive(Debug, Clone)]
pub struct ResolvedNode {
    pub class_type: String,
    pub inputs: BTreeMap<String, ResolvedInput>,
}

/// A prompt that can run: its nodes, the output nodes to execute, the order
/// to run them in, and the errors of outputs that were dropped (ComfyUI runs
/// the valid outputs).
#[derive(Debug, Clone)]
pub struct ValidPrompt {
    pub nodes: BTreeMap<String, ResolvedNode>,
    pub outputs: Vec<String>,
    /// Every node of `nodes`, dependencies first: a depth-first post-order from
    /// each output (outputs in id order, inputs in name order).
    pub order: Vec<String>,
    pub node_errors: BTreeMap<String, NodeErrors>,
}

/// Validates a prompt; on success returns only the nodes the good outputs need.
/// `targets` (`partial_execution_targets`): only these output nodes run, and
/// only their dependencies are checked; every node must still have a known
/// `class_type`, and ids that are not output nodes are ignored, as in ComfyUI.
pub fn validate(
    prompt: &Json,
    types: &dyn NodeTypes,
    targets: Option<&[String]>,
) -> Result<ValidPrompt, ValidationFailure> {
    let graph = Graph::parse(prompt).map_err(|e| {
        let details = match &e {
            GraphShapeError::NotAnObject => String::new(),
            GraphShapeError::NodeNotAnObject(id) => format!("Node ID '#{id}'"),
        };
        ValidationFailure::prompt_level(ErrorInfo::new(
            "invalid_prompt",
            &capitalize(&e.to_string()),
            details,
        ))
    })?;
    let limits = types.limits();
    check_node_count(&graph, &limits)?;
    let schemas = known_schemas(&graph, types)?;
    let outputs = output_nodes(&graph, &schemas, targets)?;
    check_cycles(&graph, &outputs)?;

    let mut validator = Validator {
        graph: &graph,
        schemas: &schemas,
        types,
        resolved: BTreeMap::new(),
        errors: BTreeMap::new(),
    };
    let mut good = Vec::new();
    let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for output in &outputs {
        let ancestors = ancestors(&graph, output);
        let mut ok = true;
        for id in &ancestors {
            if !validator.node_ok(id) {
                ok = false;
                dependents
                    .entry(id.clone())
                    .or_default()
                    .push(output.clone());
            }
        }
        if ok {
            good.push(output.clone());
        }
    }
    let node_errors: BTreeMap<String, NodeErrors> = validator
        .errors
        .into_iter()
        .map(|(id, errors)| {
            let class_type = graph.class_type(&id).unwrap_or_default().to_owned();
            let dependent_outputs = dependents.remove(&id).unwrap_or_default();
            (
                id,
                NodeErrors {
                    errors,
                    dependent_outputs,
                    class_type,
                },
            )
        })
        .collect();
    if good.is_empty() {
        let details = node_errors
            .iter()
            .flat_map(|(id, n)| {
                n.errors
                    .iter()
                    .map(move |e| format!("{id}: {}: {}", e.message, e.details))
            })
            .collect::<Vec<_>>()
            .join("\n");
        return Err(ValidationFailure {
            error: ErrorInfo::new(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                details,
            ),
            node_errors,
        });
    }
    let needed: BTreeSet<String> = good.iter().flat_map(|o| ancestors(&graph, o)).collect();
    let nodes: BTreeMap<String, ResolvedNode> = validator
        .resolved
        .into_iter()
        .filter(|(id, _)| needed.contains(id))
        .collect();
    let order = resolved_order(&nodes, &good);
    check_memory(&nodes, &order, &schemas, types, &limits)?;
    Ok(ValidPrompt {
        nodes,
        outputs: good,
        order,
        node_errors,
    })
}

/// Refuses prompts with more nodes than the limit, before any other work.
fn check_node_count(graph: &Graph, limits: &PromptLimits) -> Result<(), ValidationFailure> {
    let count = graph.nodes.len();
    if count <= limits.max_nodes {
        return Ok(());
    }
    Err(ValidationFailure::prompt_level(ErrorInfo::new(
        "invalid_prompt",
        "Prompt has too many nodes",
        format!(
            "{count} nodes, more than the limit of {} (the server's --max-nodes option raises it)",
            limits.max_nodes
        ),
    )))
}

/// The run order of resolved nodes (see [`ValidPrompt::order`]).
fn resolved_order(nodes: &BTreeMap<String, ResolvedNode>, outputs: &[String]) -> Vec<String> {
    let links = |id: &str| {
        nodes
            .get(id)
            .into_iter()
            .flat_map(|n| n.inputs.values())
            .filter_map(|input| match input {
                ResolvedInput::Link { node, .. } => Some(node.as_str()),
                ResolvedInput::Value(_) => None,
            })
    };
    // Cycles were refused on the graph; a cycle here could only repeat that answer.
    let order =
        dependency_order(outputs.iter().map(String::as_str), links).unwrap_or_else(|cycle| cycle);
    order.into_iter().map(str::to_owned).collect()
}

/// Adds up the nodes' estimates in run order (every output stays held until
/// the prompt ends, as the executor holds them) and refuses the prompt at the
/// first node whose run would take it past the memory budget. A node mapped
/// over lists is estimated per item and its outputs multiplied by its runs.
fn check_memory(
    nodes: &BTreeMap<String, ResolvedNode>,
    order: &[String],
    schemas: &HashMap<String, NodeSchema>,
    types: &dyn NodeTypes,
    limits: &PromptLimits,
) -> Result<(), ValidationFailure> {
    let mut estimates: HashMap<&str, Vec<ValueEstimate>> = HashMap::new();
    let mut held: u64 = 0;
    for id in order {
        let node = &nodes[id];
        let schema = schemas.get(&node.class_type);
        let linked = estimate_inputs(node, &estimates);
        let (inputs, runs) = match schema.is_some_and(|s| s.input_is_list) {
            true => (linked, 1),
            false => (linked.per_item(), linked.longest_list()),
        };
        let estimate = types
            .estimate(&node.class_type, &inputs)
            .map_err(|reason| {
                node_failure(
                    id,
                    node,
                    ErrorInfo::new("input_too_large", "Input is too large", reason),
                )
            })?;
        let declared = schema.map_or(&[][..], |s| &s.outputs);
        let per_run = complete_outputs(estimate.outputs, declared, inputs.total_bytes());
        let outputs = over_runs(per_run, declared, runs);
        let produced = outputs
            .iter()
            .fold(0u64, |acc, o| acc.saturating_add(o.bytes));
        let peak = held
            .saturating_add(estimate.working_bytes)
            .saturating_add(produced);
        if peak > limits.memory_bytes {
            return Err(node_failure(id, node, over_budget(peak, limits)));
        }
        held = held.saturating_add(produced);
        estimates.insert(id, outputs);
    }
    Ok(())
}

fn estimate_inputs(
    node: &ResolvedNode,
    estimates: &HashMap<&str, Vec<ValueEstimate>>,
) -> EstimateInputs {
    let mut inputs = EstimateInputs::new();
    for (name, input) in &node.inputs {
        let estimate = match input {
            ResolvedInput::Value(v) => ValueEstimate::known(v),
            ResolvedInput::Link { node, slot } => estimates
                .get(node.as_str())
                .and_then(|outputs| outputs.get(*slot))
                .cloned()
                .unwrap_or_default(),
        };
        inputs.insert(name.clone(), estimate);
    }
    inputs
}

/// One run's output estimates, one per declared output; the missing ones pass
/// the inputs' size on, a list output as a list of [`MAX_LIST_ITEMS`] such items.
fn complete_outputs(
    mut outputs: Vec<ValueEstimate>,
    declared: &[OutputSpec],
    inputs_bytes: u64,
) -> Vec<ValueEstimate> {
    for spec in declared.iter().skip(outputs.len()) {
        outputs.push(match spec.is_list {
            true => ValueEstimate::list(inputs_bytes, MAX_LIST_ITEMS),
            false => ValueEstimate::bytes(inputs_bytes),
        });
    }
    outputs
}

/// The outputs of `runs` runs: a plain output holds one item per run, a list
/// output every run's items (at most [`MAX_LIST_ITEMS`], which the executor
/// enforces); the bytes add up.
fn over_runs(
    per_run: Vec<ValueEstimate>,
    declared: &[OutputSpec],
    runs: u64,
) -> Vec<ValueEstimate> {
    if runs <= 1 {
        return per_run;
    }
    per_run
        .into_iter()
        .enumerate()
        .map(|(slot, one)| {
            let is_list = declared.get(slot).is_some_and(|s| s.is_list);
            let items = if is_list {
                one.items.saturating_mul(runs)
            } else {
                runs
            };
            ValueEstimate {
                bytes: one.bytes.saturating_mul(runs),
                value: None,
                items: items.min(MAX_LIST_ITEMS),
            }
        })
        .collect()
}

fn over_budget(peak: u64, limits: &PromptLimits) -> ErrorInfo {
    ErrorInfo::new(
        "memory_budget_exceeded",
        "Prompt needs more memory than the budget",
        format!(
            "about {} up to this node, over the budget of {} (the server's --max-memory-gb option changes it)",
            gigabytes(peak),
            gigabytes(limits.memory_bytes)
        ),
    )
}

fn gigabytes(bytes: u64) -> String {
    if bytes == u64::MAX {
        "more than 16 EB".to_owned()
    } else {
        format!("{:.2} GB", bytes as f64 / 1e9)
    }
}

/// A whole prompt refused because of one node's error.
fn node_failure(id: &str, node: &ResolvedNode, error: ErrorInfo) -> ValidationFailure {
    ValidationFailure {
        error: ErrorInfo::new(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            format!("{id}: {}: {}", error.message, error.details),
        ),
        node_errors: BTreeMap::from([(
            id.to_owned(),
            NodeErrors {
                errors: vec![error],
                dependent_outputs: vec![],
                class_type: node.class_type.clone(),
            },
        )]),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// Looks up every node's schema; a missing or unknown `class_type` is an `invalid_prompt`.
fn known_schemas(
    graph: &Graph,
    types: &dyn NodeTypes,
) -> Result<HashMap<String, NodeSchema>, ValidationFailure> {
    let mut schemas = HashMap::new();
    let mut node_errors = BTreeMap::new();
    let mut first = None;
    for (id, node) in &graph.nodes {
        let error = match &node.class_type {
            None => ErrorInfo::new(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                format!("Node ID '#{id}'"),
            ),
            Some(class) => match schemas.get(class).cloned().or_else(|| types.schema(class)) {
                Some(schema) => {
                    schemas.insert(class.clone(), schema);
                    continue;
                }
                None => ErrorInfo::new(
                    "invalid_prompt",
                    &format!("Cannot execute because node {class} does not exist."),
                    format!("Node ID '#{id}'; {}", install_hint(class)),
                ),
            },
        };
        first.get_or_insert_with(|| error.clone());
        node_errors.insert(
            id.clone(),
            NodeErrors {
                errors: vec![error],
                dependent_outputs: vec![],
                class_type: node.class_type.clone().unwrap_or_default(),
            },
        );
    }
    match first {
        Some(error) => Err(ValidationFailure { error, node_errors }),
        None => Ok(schemas),
    }
}

/// The output nodes to run: all of them, or those among `targets`.
fn output_nodes(
    graph: &Graph,
    schemas: &HashMap<String, NodeSchema>,
    targets: Option<&[String]>,
) -> Result<Vec<String>, ValidationFailure> {
    let targets: Option<HashSet<&str>> = targets.map(|t| t.iter().map(String::as_str).collect());
    let mut outputs: Vec<String> = graph
        .nodes
        .keys()
        .filter(|id| {
            let output_node = graph
                .class_type(id)
                .and_then(|c| schemas.get(c))
                .is_some_and(|s| s.output_node);
            output_node && targets.as_ref().is_none_or(|t| t.contains(id.as_str()))
        })
        .cloned()
        .collect();
    if outputs.is_empty() {
        return Err(ValidationFailure::prompt_level(ErrorInfo::new(
            "prompt_no_outputs",
            "Prompt has no outputs",
            "",
        )));
    }
    outputs.sort_by(|a, b| id_order(a, b));
    Ok(outputs)
}

/// `id` and every node it transitively links to (existing nodes only).
fn ancestors(graph: &Graph, id: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![id.to_owned()];
    while let Some(n) = stack.pop() {
        if graph.nodes.contains_key(&n) && seen.insert(n.clone()) {
            stack.extend(graph.dependencies(&n).map(str::to_owned));
        }
    }
    seen
}

/// Refuses graphs where an output depends on a cycle.
fn check_cycles(graph: &Graph, outputs: &[String]) -> Result<(), ValidationFailure> {
    let Err(cycle) = dependency_order(outputs.iter().map(String::as_str), |id| {
        graph.dependencies(id)
    }) else {
        return Ok(());
    };
    let path = cycle.join(" -> ");
    let node_errors = cycle
        .iter()
        .map(|&id| {
            let error = ErrorInfo::new(
                "dependency_cycle",
                "Dependency cycle detected",
                format!("cycle through nodes {path}"),
            );
            let class_type = graph.class_type(id).unwrap_or_default().to_owned();
            (
                id.to_owned(),
                NodeErrors {
                    errors: vec![error],
                    dependent_outputs: vec![],
                    class_type,
                },
            )
        })
        .collect();
    Err(ValidationFailure {
        error: ErrorInfo::new(
            "invalid_prompt",
            "Dependency cycle detected",
            format!("nodes {path}"),
        ),
        node_errors,
    })
}

struct Validator<'a> {
    graph: &'a Graph,
    schemas: &'a HashMap<String, NodeSchema>,
    types: &'a dyn NodeTypes,
    resolved: BTreeMap<String, ResolvedNode>,
    errors: BTreeMap<String, Vec<ErrorInfo>>,
}

impl Validator<'_> {
    /// Validates one node (once); true when it has no errors of its own.
    fn node_ok(&mut self, id: &str) -> bool {
        if self.resolved.contains_key(id) {
            return true;
        }
        if self.errors.contains_key(id) {
            return false;
        }
        let node = &self.graph.nodes[id];
        let class_type = node.class_type.clone().unwrap_or_default();
        let schema = &self.schemas[&class_type];
        let mut errors = Vec::new();
        let mut inputs = BTreeMap::new();
        for spec in &schema.inputs {
            match node.inputs.get(&spec.name) {
                None if spec.required => errors.push(
                    ErrorInfo::new(
                        "required_input_missing",
                        "Required input is missing",
                        spec.name.clone(),
                    )
                    .with_extra(json!({"input_name": spec.name})),
                ),
                None => {}
                Some(raw) => match self.check_input(spec, raw) {
                    Ok(input) => {
                        inputs.insert(spec.name.clone(), input);
                    }
                    Err(e) => errors.push(e),
                },
            }
        }
        if schema.extra_inputs {
            for (name, raw) in node
                .inputs
                .iter()
                .filter(|(n, _)| schema.find_input(n).is_none())
            {
                let spec = InputSpec::optional(name, InputKind::link("*"));
                match self.check_extra_input(&spec, raw) {
                    Ok(input) => {
                        inputs.insert(name.clone(), input);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        if errors.is_empty() {
            let literals = literal_inputs(&inputs);
            if let Err(reason) = self.types.validate_inputs(&class_type, &literals) {
                errors.push(ErrorInfo::new(
                    "custom_validation_failed",
                    "Custom validation failed for node",
                    reason,
                ));
            }
        }
        if errors.is_empty() {
            self.resolved
                .insert(id.to_owned(), ResolvedNode { class_type, inputs });
            true
        } else {
            self.errors.insert(id.to_owned(), errors);
            false
        }
    }

    fn check_input(&self, spec: &InputSpec, raw: &RawInput) -> Result<ResolvedInput, ErrorInfo> {
        match raw {
            RawInput::Link { node, slot } => self.check_link(spec, node, *slot),
            RawInput::MalformedLink(json) => Err(bad_link(
                spec,
                format!("{}: {json} is not [node_id, slot_index]", spec.name),
            )),
            RawInput::Literal(json) => check_literal(spec, json).map(ResolvedInput::Value),
        }
    }

    fn check_extra_input(
        &self,
        spec: &InputSpec,
        raw: &RawInput,
    ) -> Result<ResolvedInput, ErrorInfo> {
        match raw {
            RawInput::Literal(json) => {
                Value::from_json(json)
                    .map(ResolvedInput::Value)
                    .ok_or_else(|| {
                        invalid_type(spec, json, "a string, number, boolean or list of strings")
                    })
            }
            _ => self.check_input(spec, raw),
        }
    }

    fn check_link(
        &self,
        spec: &InputSpec,
        node: &str,
        slot: usize,
    ) -> Result<ResolvedInput, ErrorInfo> {
        let Some(class) = self.graph.class_type(node) else {
            return Err(bad_link(
                spec,
                format!("{}: node '{node}' does not exist", spec.name),
            ));
        };
        let outputs = &self.schemas[class].outputs;
        let Some(output) = outputs.get(slot) else {
            return Err(bad_link(
                spec,
                format!(
                    "{}: node '{node}' ({class}) has {} outputs, not slot {slot}",
                    spec.name,
                    outputs.len()
                ),
            ));
        };
        if !spec.kind.accepts(&output.data_type) {
            return Err(ErrorInfo::new(
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                format!(
                    "{}, received_type({}) mismatch input_type({})",
                    spec.name,
                    output.data_type,
                    spec.kind.type_name()
                ),
            )
            .with_extra(json!({
                "input_name": spec.name,
                "input_config": spec.kind.to_object_info(None),
                "received_type": output.data_type,
                "linked_node": [node, slot],
            })));
        }
        Ok(ResolvedInput::Link {
            node: node.to_owned(),
            slot,
        })
    }
}

/// The literal inputs of a node (what fingerprints and custom validation see).
pub fn literal_inputs(inputs: &BTreeMap<String, ResolvedInput>) -> Inputs {
    let mut literals = Inputs::new();
    for (name, input) in inputs {
        if let ResolvedInput::Value(v) = input {
            literals.insert(name.clone(), v.clone());
        }
    }
    literals
}

fn extra(spec: &InputSpec, received: &Json) -> Json {
    json!({"input_name": spec.name, "input_config": spec.kind.to_object_info(None), "received_value": received})
}

fn bad_link(spec: &InputSpec, details: String) -> ErrorInfo {
    ErrorInfo::new(
        "bad_linked_input",
        "Bad linked input, must be a length-2 list of [node_id, slot_index]",
        details,
    )
    .with_extra(json!({"input_name": spec.name, "input_config": spec.kind.to_object_info(None)}))
}

fn invalid_type(spec: &InputSpec, value: &Json, want: &str) -> ErrorInfo {
    ErrorInfo::new(
        "invalid_input_type",
        &format!(
            "Failed to convert an input value to a {} value",
            spec.kind.type_name()
        ),
        format!("{}, {value}, expected {want}", spec.name),
    )
    .with_extra(extra(spec, value))
}

/// Checks and converts a literal against a widget, as ComfyUI does (numbers
/// given as strings are converted; ranges and combo lists are enforced).
pub fn check_literal(spec: &InputSpec, json: &Json) -> Result<Value, ErrorInfo> {
    match &spec.kind {
        InputKind::Int { min, max, .. } => {
            let v = as_int(json).ok_or_else(|| invalid_type(spec, json, "an integer"))?;
            check_range(spec, json, v as f64, *min as f64, *max as f64)?;
            Ok(Value::Int(v))
        }
        InputKind::Float { min, max, .. } => {
            let v = as_float(json).ok_or_else(|| invalid_type(spec, json, "a number"))?;
            check_range(spec, json, v, *min, *max)?;
            Ok(Value::Float(v))
        }
        InputKind::String { .. } => match json {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Number(n) => Ok(Value::String(n.to_string())),
            Json::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err(invalid_type(spec, json, "a string")),
        },
        InputKind::Bool { .. } => json
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| invalid_type(spec, json, "true or false")),
        InputKind::Combo { options, .. } => match json.as_str() {
            Some(s) if options.iter().any(|o| o == s) => Ok(Value::String(s.to_owned())),
            _ => {
                let shown = json
                    .as_str()
                    .map_or_else(|| json.to_string(), str::to_owned);
                let list = options
                    .iter()
                    .map(|o| format!("'{o}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(ErrorInfo::new(
                    "value_not_in_list",
                    "Value not in list",
                    format!("{}: '{shown}' not in [{list}]", spec.name),
                )
                .with_extra(extra(spec, json)))
            }
        },
        InputKind::Link(t) if t == cretok_node_api::data_type::STRING_LIST => {
            match Value::from_json(json) {
                Some(v @ Value::StringList(_)) => Ok(v),
                _ => Err(invalid_type(spec, json, "a list of strings")),
            }
        }
        InputKind::Link(t) => Err(invalid_type(
            spec,
            json,
            &format!("a link from a {t} output"),
        )),
        InputKind::Autogrow { prefix, .. } => Err(invalid_type(
            spec,
            json,
            &format!(
                "links named {}.{prefix}0, {}.{prefix}1, …",
                spec.name, spec.name
            ),
        )),
    }
}

fn check_range(spec: &InputSpec, json: &Json, v: f64, min: f64, max: f64) -> Result<(), ErrorInfo> {
    if v < min {
        return Err(ErrorInfo::new(
            "value_smaller_than_min",
            &format!("Value {json} smaller than min of {min}"),
            spec.name.clone(),
        )
        .with_extra(extra(spec, json)));
    }
    if v > max {
        return Err(ErrorInfo::new(
            "value_bigger_than_max",
            &format!("Value {json} bigger than max of {max}"),
            spec.name.clone(),
        )
        .with_extra(extra(spec, json)));
    }
    Ok(())
}

fn as_int(json: &Json) -> Option<i64> {
    match json {
        Json::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                .map(|f| f as i64)
        }),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_float(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok().filter(|f: &f64| f.is_finite()),
        _ => None,
    }
}
