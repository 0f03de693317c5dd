//! UI format → API format, as the editor's "queue prompt" does it: muted
//! nodes are left out, bypassed nodes pass an input of the matching type
//! through, reroutes are followed to their source, primitive nodes give their
//! value to the widget they feed, subgraphs are flattened (see
//! [`super::subgraph`]), and positional widget values are named with the node
//! schemas.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde_json::{json, Map, Value as Json};

use super::subgraph::flatten;
use super::ui::{mode, UiNode, UiWorkflow};
use super::widgets::{layout, required_slots, WidgetSlot, CONTROL_VALUES};
use crate::validation::NodeTypes;

/// Editor-only nodes: they never reach the prompt.
const REROUTE: &str = "Reroute";
pub(super) const PRIMITIVE: &str = "PrimitiveNode";
const NOTES: [&str; 2] = ["Note", "MarkdownNote"];

/// Why a UI workflow cannot be converted; every problem is listed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConvertError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// No installed node has this type.
    UnknownType {
        class_type: String,
        nodes: Vec<String>,
    },
    /// The saved widget values do not fit the installed schema (another version of the node).
    WidgetMismatch {
        node: String,
        class_type: String,
        expected: Vec<String>,
        found: usize,
        reason: String,
    },
    /// An input names a link or node that is not in the file.
    BrokenLink {
        node: String,
        input: String,
        link: u64,
    },
    /// Following reroutes and bypassed nodes came back to where it started.
    Cycle { node: String, input: String },
    /// Subgraphs nest deeper than the limit inside this instance.
    SubgraphTooDeep { node: String, limit: usize },
    /// Flattening the subgraphs makes more nodes than the limit.
    TooManyNodes { limit: usize },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownType { class_type, nodes } => write!(
                f,
                "unknown node type '{class_type}' ({} {}): no installed node provides it",
                if nodes.len() == 1 { "node" } else { "nodes" },
                nodes.join(", ")
            ),
            Problem::WidgetMismatch {
                node,
                class_type,
                expected,
                found,
                reason,
            } => write!(
                f,
                "node {node} ({class_type}): {reason}: the installed {class_type} expects {} widget values [{}], the file has {found}; it was saved with another version of the node",
                expected.len(),
                expected.join(", ")
            ),
            Problem::BrokenLink { node, input, link } => write!(
                f,
                "node {node}: input '{input}' uses link {link}, which is not in the file"
            ),
            Problem::Cycle { node, input } => write!(
                f,
                "node {node}: input '{input}' loops through reroutes, bypassed nodes or subgraphs"
            ),
            Problem::SubgraphTooDeep { node, limit } => write!(
                f,
                "node {node}: subgraphs nest more than {limit} levels deep"
            ),
            Problem::TooManyNodes { limit } => write!(
                f,
                "the subgraphs expand to more than {limit} nodes"
            ),
        }
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the workflow cannot be converted to a prompt:")?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConvertError {}

/// Converts an editor workflow to an API-format prompt.
pub fn to_api(ui: &UiWorkflow, types: &dyn NodeTypes) -> Result<Json, ConvertError> {
    let flat = flatten(ui).map_err(|problems| ConvertError { problems })?;
    let ui = flat.as_ref();
    let mut problems = unknown_types(ui, types);
    let mut prompt = Map::new();
    for node in ui.nodes.iter().filter(|n| runs(n)) {
        let Some(schema) = types.schema(&node.class_type) else {
            continue;
        };
        let mut inputs = match widget_inputs(node, &layout(&schema), required_slots(&schema)) {
            Ok(inputs) => inputs,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        for input in &node.inputs {
            let Some(link) = input.link else { continue };
            let mut resolver = Resolver::new(ui, node, &input.name);
            match resolver.link(link, &input.data_type) {
                Ok(Some(source)) => {
                    inputs.insert(input.name.clone(), source);
                }
                Ok(None) => {}
                Err(problem) => problems.push(problem),
            }
        }
        let title = node.title.as_deref().unwrap_or(&schema.display_name);
        prompt.insert(
            node.id.clone(),
            json!({"inputs": inputs, "class_type": node.class_type, "_meta": {"title": title}}),
        );
    }
    if !problems.is_empty() {
        return Err(ConvertError { problems });
    }
    Ok(Json::Object(prompt))
}

/// Whether the node becomes part of the prompt.
fn runs(node: &UiNode) -> bool {
    !matches!(node.mode, mode::MUTED | mode::BYPASSED) && !is_virtual(&node.class_type)
}

fn is_virtual(class_type: &str) -> bool {
    class_type == REROUTE || class_type == PRIMITIVE || NOTES.contains(&class_type)
}

/// Every type of a node that would run and is not installed, with its node ids.
fn unknown_types(ui: &UiWorkflow, types: &dyn NodeTypes) -> Vec<Problem> {
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for node in ui.nodes.iter().filter(|n| runs(n)) {
        if types.schema(&node.class_type).is_none() {
            missing
                .entry(&node.class_type)
                .or_default()
                .push(node.id.clone());
        }
    }
    missing
        .into_iter()
        .map(|(class_type, nodes)| Problem::UnknownType {
            class_type: class_type.to_owned(),
            nodes,
        })
        .collect()
}

/// The widget values by input name, checked against the layout `slots`; the
/// values of optional widgets past the first `required` slots may be absent
/// (the inputs keep their defaults).
fn widget_inputs(
    node: &UiNode,
    slots: &[WidgetSlot],
    required: usize,
) -> Result<Map<String, Json>, Problem> {
    let mismatch = |found: usize, reason: String| Problem::WidgetMismatch {
        node: node.id.clone(),
        class_type: node.class_type.clone(),
        expected: slots.iter().map(|s| s.name().to_owned()).collect(),
        found,
        reason,
    };
    let values: Vec<Json> = match &node.widgets_values {
        Json::Array(values) => values.clone(),
        Json::Null => Vec::new(),
        Json::Object(by_name) => slots
            .iter()
            .filter_map(|s| by_name.get(s.name()).cloned())
            .collect(),
        other => return Err(mismatch(0, format!("widgets_values is {other}"))),
    };
    if values.len() < required || values.len() > slots.len() {
        return Err(mismatch(
            values.len(),
            "wrong number of widget values".to_owned(),
        ));
    }
    let mut inputs = Map::new();
    for (slot, value) in slots.iter().zip(values) {
        match slot {
            WidgetSlot::Input(name) => {
                inputs.insert(name.clone(), literal(value));
            }
            WidgetSlot::ImageUpload | WidgetSlot::Display(_) => {}
            WidgetSlot::ControlAfterGenerate => {
                if !value.as_str().is_some_and(|v| CONTROL_VALUES.contains(&v)) {
                    return Err(mismatch(
                        slots.len(),
                        format!("{value} where a control_after_generate value belongs"),
                    ));
                }
            }
        }
    }
    Ok(inputs)
}

/// A widget value as a prompt literal: lists are wrapped so they are not read as links.
fn literal(value: Json) -> Json {
    match value {
        Json::Array(_) => json!({ "__value__": value }),
        other => other,
    }
}

/// Follows one input's link back to the node output (or primitive value) feeding it.
struct Resolver<'a> {
    ui: &'a UiWorkflow,
    node: &'a UiNode,
    input: &'a str,
    visited: HashSet<(String, usize)>,
}

impl<'a> Resolver<'a> {
    fn new(ui: &'a UiWorkflow, node: &'a UiNode, input: &'a str) -> Self {
        Resolver {
            ui,
            node,
            input,
            visited: HashSet::new(),
        }
    }

    fn broken(&self, link: u64) -> Problem {
        Problem::BrokenLink {
            node: self.node.id.clone(),
            input: self.input.to_owned(),
            link,
        }
    }

    /// `None`: nothing feeds the input (a muted source, an unconnected bypass).
    fn link(&mut self, link: u64, want: &str) -> Result<Option<Json>, Problem> {
        let source = self.ui.link(link).ok_or_else(|| self.broken(link))?;
        let origin = self
            .ui
            .node(&source.origin_id)
            .ok_or_else(|| self.broken(link))?;
        self.output(origin, source.origin_slot, want)
    }

    fn output(&mut self, node: &UiNode, slot: usize, want: &str) -> Result<Option<Json>, Problem> {
        if !self.visited.insert((node.id.clone(), slot)) {
            return Err(Problem::Cycle {
                node: self.node.id.clone(),
                input: self.input.to_owned(),
            });
        }
        let through = |index: Option<usize>| index.and_then(|i| node.inputs.get(i)?.link);
        let next = match (node.mode, node.class_type.as_str()) {
            (mode::MUTED, _) => None,
            (mode::BYPASSED, _) => through(bypass_input(node, slot, want)),
            (_, REROUTE) => through(Some(0)),
            (_, PRIMITIVE) => return Ok(primitive_value(node)),
            (_, class_type) if NOTES.contains(&class_type) => None,
            _ => return Ok(Some(json!([node.id, slot]))),
        };
        match next {
            Some(link) => self.link(link, want),
            None => Ok(None),
        }
    }
}

/// The value a primitive node applies to the widget it feeds.
fn primitive_value(node: &UiNode) -> Option<Json> {
    match &node.widgets_values {
        Json::Array(values) => values.first().cloned().map(literal),
        _ => None,
    }
}

/// Which input of a bypassed node stands in for output `slot` when a `want`
/// input consumes it: the input at the same index if its type fits, else the
/// first input of exactly that type, else the first that fits (the editor's rule).
fn bypass_input(node: &UiNode, slot: usize, want: &str) -> Option<usize> {
    if is_any(want) {
        let index = if node.inputs.len() > slot { slot } else { 0 };
        return (!node.inputs.is_empty()).then_some(index);
    }
    let output_type = node.outputs.get(slot).map_or("*", |o| o.data_type.as_str());
    let fits = |t: &str| connects(t, output_type) && connects(t, want);
    if node.inputs.get(slot).is_some_and(|i| fits(&i.data_type)) {
        return Some(slot);
    }
    node.inputs
        .iter()
        .position(|i| i.data_type == want)
        .or_else(|| node.inputs.iter().position(|i| fits(&i.data_type)))
}

fn is_any(data_type: &str) -> bool {
    data_type.is_empty() || data_type == "*"
}

/// LiteGraph's type check: equal ignoring case, a wildcard, or overlapping `A,B` lists.
fn connects(a: &str, b: &str) -> bool {
    if is_any(a) || is_any(b) {
        return true;
    }
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    a.split(',').any(|x| b.split(',').any(|y| x == y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::ui::{UiInput, UiOutput};

    fn bypassed(inputs: &[&str], outputs: &[&str]) -> UiNode {
        UiNode {
            id: "9".into(),
            class_type: "X".into(),
            mode: mode::BYPASSED,
            title: None,
            inputs: inputs
                .iter()
                .map(|t| UiInput {
                    name: t.to_lowercase(),
                    data_type: (*t).into(),
                    link: None,
                    widget: None,
                })
                .collect(),
            outputs: outputs
                .iter()
                .map(|t| UiOutput {
                    data_type: (*t).into(),
                })
                .collect(),
            widgets_values: Json::Null,
        }
    }

    #[test]
    fn bypass_prefers_the_same_index_then_the_first_exact_type() {
        let node = bypassed(&["MODEL", "CLIP", "CLIP"], &["MODEL", "CLIP"]);
        assert_eq!(bypass_input(&node, 1, "CLIP"), Some(1));
        assert_eq!(bypass_input(&node, 0, "MODEL"), Some(0));
        let node = bypassed(&["IMAGE", "MASK"], &["MASK", "IMAGE"]);
        assert_eq!(bypass_input(&node, 1, "IMAGE"), Some(0));
        assert_eq!(bypass_input(&node, 0, "LATENT"), None);
        assert_eq!(bypass_input(&node, 5, "*"), Some(0));
    }

    #[test]
    fn types_connect_like_litegraph() {
        assert!(connects("IMAGE", "image"));
        assert!(connects("*", "MODEL"));
        assert!(connects("INT,FLOAT", "FLOAT"));
        assert!(!connects("INT", "FLOAT"));
    }
}
