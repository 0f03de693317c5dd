//! Subgraph flattening, as the editor's "queue prompt" does it: every node
//! inside an instance of a subgraph becomes a node of its own with the id
//! `<instance id>:<inner id>` (`a:b:c` when nested); inner links from the
//! subgraph's inputs are fed by what feeds the instance's input (a link, or
//! the value of the widget the instance shows for it), and consumers of the
//! instance's outputs read from the inner node linked to that output.
//!
//! The result is a workflow without subgraphs, converted like any other:
//! muted and bypassed instances stay single nodes (handled as at top level),
//! and promoted widget values become primitive nodes feeding the inner inputs.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::{json, Value as Json};

use super::convert::{Problem, PRIMITIVE};
use super::ui::{mode, UiInput, UiLink, UiNode, UiSubgraph, UiWorkflow, SUBGRAPH_INPUT_NODE};

/// How deep subgraphs may nest.
pub const MAX_DEPTH: usize = 16;
/// How many nodes flattening may produce: ten times the default `--max-nodes`,
/// so instances used many times over cannot multiply without bound; the
/// configured limit is checked when the converted prompt is validated.
pub const MAX_EXPANDED_NODES: usize = 10 * cretok_node_api::DEFAULT_MAX_NODES;

/// The workflow with every (running) subgraph instance replaced by its inside.
pub fn flatten(ui: &UiWorkflow) -> Result<Cow<'_, UiWorkflow>, Vec<Problem>> {
    if ui.definitions.subgraphs.is_empty() {
        return Ok(Cow::Borrowed(ui));
    }
    let mut flat = Flattener {
        ui,
        nodes: Vec::new(),
        links: Vec::new(),
        values: HashSet::new(),
        problems: Vec::new(),
    };
    let top = Scope {
        prefix: String::new(),
        nodes: &ui.nodes,
        links: &ui.links,
        instance: None,
    };
    flat.expand(&top, 0).map_err(|problem| vec![problem])?;
    if !flat.problems.is_empty() {
        return Err(flat.problems);
    }
    Ok(Cow::Owned(UiWorkflow {
        nodes: flat.nodes,
        links: flat.links,
        definitions: Default::default(),
    }))
}

/// One graph level: the top-level graph, or the inside of one instance.
struct Scope<'a> {
    /// Prepended to inner ids: `""` at top level, `"68:"` inside instance 68.
    prefix: String,
    nodes: &'a [UiNode],
    links: &'a [UiLink],
    instance: Option<Instance<'a>>,
}

struct Instance<'a> {
    node: &'a UiNode,
    subgraph: &'a UiSubgraph,
    parent: &'a Scope<'a>,
}

impl Scope<'_> {
    fn link(&self, id: u64) -> Option<&UiLink> {
        self.links.iter().find(|l| l.id == id)
    }

    fn node(&self, id: &str) -> Option<&UiNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// Why a link inside a subgraph leads nowhere.
enum Unresolved {
    /// A link, node, or subgraph slot that is not in the file.
    Missing,
    /// Following instance inputs and outputs came back to the same link.
    Loop,
}

/// Where a flattened input gets its value.
enum Source {
    Output { node: String, slot: usize },
    Value { node: String, value: Json },
}

struct Flattener<'a> {
    ui: &'a UiWorkflow,
    nodes: Vec<UiNode>,
    links: Vec<UiLink>,
    /// Ids of the primitive nodes already made for promoted widget values.
    values: HashSet<String>,
    problems: Vec<Problem>,
}

impl<'a> Flattener<'a> {
    /// The definition a node instantiates, when it runs as a subgraph.
    fn expands(&self, node: &UiNode) -> Option<&'a UiSubgraph> {
        if matches!(node.mode, mode::MUTED | mode::BYPASSED) {
            return None;
        }
        self.ui.subgraph(&node.class_type)
    }

    fn expand(&mut self, scope: &Scope<'_>, depth: usize) -> Result<(), Problem> {
        for node in scope.nodes {
            let id = format!("{}{}", scope.prefix, node.id);
            if let Some(subgraph) = self.expands(node) {
                if depth + 1 > MAX_DEPTH {
                    return Err(Problem::SubgraphTooDeep {
                        node: id,
                        limit: MAX_DEPTH,
                    });
                }
                let inner = Scope {
                    prefix: format!("{id}:"),
                    nodes: &subgraph.nodes,
                    links: &subgraph.links,
                    instance: Some(Instance {
                        node,
                        subgraph,
                        parent: scope,
                    }),
                };
                self.expand(&inner, depth + 1)?;
                continue;
            }
            let inputs = node
                .inputs
                .iter()
                .map(|input| self.flat_input(scope, &id, input))
                .collect::<Result<_, _>>()?;
            self.push(UiNode {
                id,
                inputs,
                ..node.clone()
            })?;
        }
        Ok(())
    }

    fn push(&mut self, node: UiNode) -> Result<(), Problem> {
        if self.nodes.len() >= MAX_EXPANDED_NODES {
            return Err(Problem::TooManyNodes {
                limit: MAX_EXPANDED_NODES,
            });
        }
        self.nodes.push(node);
        Ok(())
    }

    /// The input with its link renumbered into the flat workflow; a broken
    /// link is listed in `problems`, only the node limit stops flattening.
    fn flat_input(
        &mut self,
        scope: &Scope<'_>,
        node: &str,
        input: &UiInput,
    ) -> Result<UiInput, Problem> {
        let mut flat = UiInput {
            link: None,
            ..input.clone()
        };
        let Some(link) = input.link else {
            return Ok(flat);
        };
        match self.source(scope, link, &mut HashSet::new()) {
            Ok(Some(source)) => flat.link = Some(self.flat_link(source)?),
            Ok(None) => {}
            Err(Unresolved::Missing) => self.problems.push(Problem::BrokenLink {
                node: node.to_owned(),
                input: input.name.clone(),
                link,
            }),
            Err(Unresolved::Loop) => self.problems.push(Problem::Cycle {
                node: node.to_owned(),
                input: input.name.clone(),
            }),
        }
        Ok(flat)
    }

    fn flat_link(&mut self, source: Source) -> Result<u64, Problem> {
        let (origin_id, origin_slot) = match source {
            Source::Output { node, slot } => (node, slot),
            Source::Value { node, value } => {
                if self.values.insert(node.clone()) {
                    self.push(UiNode {
                        id: node.clone(),
                        class_type: PRIMITIVE.to_owned(),
                        mode: 0,
                        title: None,
                        inputs: Vec::new(),
                        outputs: Vec::new(),
                        widgets_values: json!([value]),
                    })?;
                }
                (node, 0)
            }
        };
        let id = self.links.len() as u64 + 1;
        self.links.push(UiLink {
            id,
            origin_id,
            origin_slot,
        });
        Ok(id)
    }

    /// What feeds link `link` of `scope`, following it out of and into
    /// instances.
    fn source(
        &self,
        scope: &Scope<'_>,
        link: u64,
        visited: &mut HashSet<(String, u64)>,
    ) -> Result<Option<Source>, Unresolved> {
        if !visited.insert((scope.prefix.clone(), link)) {
            return Err(Unresolved::Loop);
        }
        let link = scope.link(link).ok_or(Unresolved::Missing)?;
        if link.origin_id == SUBGRAPH_INPUT_NODE {
            let instance = scope.instance.as_ref().ok_or(Unresolved::Missing)?;
            return self.instance_input(instance, link.origin_slot, visited);
        }
        let origin = scope.node(&link.origin_id).ok_or(Unresolved::Missing)?;
        let id = format!("{}{}", scope.prefix, origin.id);
        let Some(subgraph) = self.expands(origin) else {
            return Ok(Some(Source::Output {
                node: id,
                slot: link.origin_slot,
            }));
        };
        let inner = Scope {
            prefix: format!("{id}:"),
            nodes: &subgraph.nodes,
            links: &subgraph.links,
            instance: Some(Instance {
                node: origin,
                subgraph,
                parent: scope,
            }),
        };
        let output = subgraph
            .outputs
            .get(link.origin_slot)
            .ok_or(Unresolved::Missing)?;
        // Saved files may list a link the subgraph no longer has: the output is
        // then unconnected, as the editor sees it.
        match output.link_ids.iter().find(|&&l| inner.link(l).is_some()) {
            Some(&inner_link) => self.source(&inner, inner_link, visited),
            None => Ok(None),
        }
    }

    /// What feeds input `slot` of the subgraph inside `instance`: the link
    /// into the instance's input of that name, else the instance's widget value.
    fn instance_input(
        &self,
        instance: &Instance<'_>,
        slot: usize,
        visited: &mut HashSet<(String, u64)>,
    ) -> Result<Option<Source>, Unresolved> {
        let input = instance
            .subgraph
            .inputs
            .get(slot)
            .ok_or(Unresolved::Missing)?;
        let outer = instance.node.inputs.iter().find(|i| i.name == input.name);
        if let Some(link) = outer.and_then(|i| i.link) {
            return self.source(instance.parent, link, visited);
        }
        let Some(index) = promoted_widget_index(instance.subgraph, slot) else {
            return Ok(None);
        };
        let value = match &instance.node.widgets_values {
            Json::Array(values) => values.get(index).cloned(),
            Json::Object(by_name) => by_name.get(&input.name).cloned(),
            _ => None,
        };
        Ok(value.map(|value| Source::Value {
            node: format!(
                "{}{}:input:{slot}",
                instance.parent.prefix, instance.node.id
            ),
            value,
        }))
    }
}

/// The position among the instance's widget values of subgraph input `slot`,
/// if the instance shows a widget for it: the inputs linked inside to a
/// widget each have one, in input order.
fn promoted_widget_index(subgraph: &UiSubgraph, slot: usize) -> Option<usize> {
    let is_widget = |links: &[u64]| {
        subgraph.nodes.iter().any(|node| {
            node.inputs
                .iter()
                .any(|i| i.widget.is_some() && i.link.is_some_and(|l| links.contains(&l)))
        })
    };
    if !is_widget(&subgraph.inputs.get(slot)?.link_ids) {
        return None;
    }
    Some(
        subgraph.inputs[..slot]
            .iter()
            .filter(|i| is_widget(&i.link_ids))
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::NodeTypes;
    use crate::workflow::to_api;
    use cretok_node_api::{
        Estimate, EstimateInputs, InputKind, InputSpec, Inputs, NodeSchema, OutputSpec,
        PromptLimits,
    };

    struct Types(Vec<NodeSchema>);

    impl NodeTypes for Types {
        fn schema(&self, class_type: &str) -> Option<NodeSchema> {
            self.0.iter().find(|s| s.name == class_type).cloned()
        }
        fn validate_inputs(&self, _: &str, _: &Inputs) -> Result<(), String> {
            Ok(())
        }
        fn estimate(&self, _: &str, _: &EstimateInputs) -> Result<Estimate, String> {
            Ok(Estimate::default())
        }
        fn limits(&self) -> PromptLimits {
            PromptLimits::default()
        }
    }

    fn types() -> Types {
        Types(vec![
            NodeSchema::new("Load", "test")
                .input(InputSpec::required("name", InputKind::string("")))
                .output(OutputSpec::new("IMAGE")),
            NodeSchema::new("Scale", "test")
                .input(InputSpec::required("image", InputKind::link("IMAGE")))
                .input(InputSpec::required(
                    "factor",
                    InputKind::float(1.0, 0.0, 8.0, 0.1),
                ))
                .output(OutputSpec::new("IMAGE")),
            NodeSchema::new("Save", "test")
                .input(InputSpec::required("images", InputKind::link("IMAGE")))
                .output_node(),
        ])
    }

    /// Load → [instance 5: Scale(image ← input 0, factor ← promoted widget input 1),
    /// a muted Scale, a Note] → Save; the instance's output 0 is Scale's output.
    fn with_subgraph(instance_widgets: Json) -> Json {
        json!({
            "nodes": [
                {"id": 1, "type": "Load", "outputs": [{"type": "IMAGE"}], "widgets_values": ["a.png"]},
                {"id": 5, "type": "sub-1", "inputs": [{"name": "pixels", "type": "IMAGE", "link": 1}],
                 "outputs": [{"type": "IMAGE"}], "widgets_values": instance_widgets},
                {"id": 7, "type": "Save", "inputs": [{"name": "images", "type": "IMAGE", "link": 2}]}
            ],
            "links": [[1, 1, 0, 5, 0, "IMAGE"], [2, 5, 0, 7, 0, "IMAGE"]],
            "definitions": {"subgraphs": [{
                "id": "sub-1",
                "inputs": [{"name": "pixels", "type": "IMAGE", "linkIds": [1]},
                           {"name": "factor", "type": "FLOAT", "linkIds": [2]}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [3]}],
                "nodes": [
                    {"id": 1, "type": "Scale", "inputs": [
                        {"name": "image", "type": "IMAGE", "link": 1},
                        {"name": "factor", "type": "FLOAT", "link": 2, "widget": {"name": "factor"}}],
                     "outputs": [{"type": "IMAGE"}], "widgets_values": [1.0]},
                    {"id": 2, "type": "Scale", "mode": 2, "inputs": [
                        {"name": "image", "type": "IMAGE", "link": 4}], "widgets_values": [3.0]},
                    {"id": 3, "type": "Note", "widgets_values": ["inside"]}
                ],
                "links": [
                    {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "IMAGE"},
                    {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "FLOAT"},
                    {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"},
                    {"id": 4, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"}
                ]
            }]}
        })
    }

    fn convert(json: &Json) -> Result<Json, crate::workflow::ConvertError> {
        to_api(&UiWorkflow::parse(json).unwrap(), &types())
    }

    #[test]
    fn inner_nodes_get_prefixed_ids_and_the_instance_links() {
        let prompt = convert(&with_subgraph(json!([2.5]))).unwrap();
        let ids: Vec<&String> = prompt.as_object().unwrap().keys().collect();
        assert_eq!(ids, ["1", "5:1", "7"], "{prompt}");
        assert_eq!(
            prompt["5:1"]["inputs"],
            json!({"image": ["1", 0], "factor": 2.5})
        );
        assert_eq!(prompt["5:1"]["class_type"], "Scale");
        assert_eq!(prompt["7"]["inputs"], json!({"images": ["5:1", 0]}));
    }

    #[test]
    fn nested_instances_chain_their_ids() {
        let inner = with_subgraph(json!([2.5]));
        let mut outer = inner.clone();
        // Instance 9 of "sub-2", whose only node is an instance (5) of "sub-1".
        outer["nodes"][1]["id"] = json!(9);
        outer["nodes"][1]["type"] = json!("sub-2");
        outer["links"] = json!([[1, 1, 0, 9, 0, "IMAGE"], [2, 9, 0, 7, 0, "IMAGE"]]);
        let mut sub2 = inner["definitions"]["subgraphs"][0].clone();
        sub2["id"] = json!("sub-2");
        sub2["nodes"] = json!([{
            "id": 5, "type": "sub-1",
            "inputs": [{"name": "pixels", "type": "IMAGE", "link": 1},
                       {"name": "factor", "type": "FLOAT", "link": 2, "widget": {"name": "factor"}}],
            "outputs": [{"type": "IMAGE"}], "widgets_values": [1.0]}]);
        sub2["links"] = json!([
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 5, "target_slot": 0},
            {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 5, "target_slot": 1},
            {"id": 3, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 0}
        ]);
        outer["definitions"]["subgraphs"]
            .as_array_mut()
            .unwrap()
            .push(sub2);
        let prompt = convert(&outer).unwrap();
        assert_eq!(
            prompt["9:5:1"]["inputs"],
            json!({"image": ["1", 0], "factor": 2.5}),
            "{prompt}"
        );
        assert_eq!(prompt["7"]["inputs"], json!({"images": ["9:5:1", 0]}));
    }

    #[test]
    fn an_output_listing_a_missing_inner_link_is_unconnected() {
        let mut ui = with_subgraph(json!([2.5]));
        ui["definitions"]["subgraphs"][0]["outputs"][0]["linkIds"] = json!([99]);
        let prompt = convert(&ui).unwrap();
        assert_eq!(prompt["7"]["inputs"], json!({}));
    }

    #[test]
    fn a_bypassed_instance_passes_its_input_through() {
        let mut ui = with_subgraph(json!([2.5]));
        ui["nodes"][1]["mode"] = json!(mode::BYPASSED);
        let prompt = convert(&ui).unwrap();
        assert_eq!(prompt["7"]["inputs"], json!({"images": ["1", 0]}));
        assert!(prompt.get("5:1").is_none());
    }

    #[test]
    fn broken_inner_links_and_self_nesting_are_reported() {
        let mut ui = with_subgraph(json!([2.5]));
        ui["definitions"]["subgraphs"][0]["links"][0]["origin_slot"] = json!(7);
        let err = convert(&ui).unwrap_err();
        assert_eq!(
            err.problems,
            [Problem::BrokenLink {
                node: "5:1".into(),
                input: "image".into(),
                link: 1
            }]
        );

        let mut ui = with_subgraph(json!([2.5]));
        ui["definitions"]["subgraphs"][0]["nodes"][2]["type"] = json!("sub-1");
        let err = convert(&ui).unwrap_err();
        assert_eq!(
            err.problems,
            [Problem::SubgraphTooDeep {
                // Instance 5 and 15 nested instances 3 expand; the 17th level is refused.
                node: format!("5{}", ":3".repeat(MAX_DEPTH)),
                limit: MAX_DEPTH
            }]
        );
        assert!(err.to_string().contains("nest more than 16 levels deep"));
    }

    #[test]
    fn instances_multiplying_past_the_node_cap_are_refused() {
        // Each level holds 11 instances of the level below: 11^5 Load nodes.
        let eleven = |class_type: &str| -> Vec<Json> {
            (1..=11)
                .map(|id| json!({"id": id, "type": class_type, "widgets_values": ["a.png"]}))
                .collect()
        };
        let mut subgraphs = vec![json!({"id": "level-0", "nodes": eleven("Load")})];
        for level in 1..5 {
            let below = format!("level-{}", level - 1);
            subgraphs.push(json!({"id": format!("level-{level}"), "nodes": eleven(&below)}));
        }
        let ui = json!({
            "nodes": [{"id": 1, "type": "level-4"}],
            "definitions": {"subgraphs": subgraphs}
        });
        let err = convert(&ui).unwrap_err();
        assert_eq!(
            err.problems,
            [Problem::TooManyNodes {
                limit: MAX_EXPANDED_NODES
            }]
        );
    }

    #[test]
    fn a_missing_definition_is_an_unknown_type() {
        let mut ui = with_subgraph(json!([2.5]));
        ui["nodes"][1]["type"] = json!("sub-9");
        let err = convert(&ui).unwrap_err();
        assert_eq!(
            err.problems,
            [Problem::UnknownType {
                class_type: "sub-9".into(),
                nodes: vec!["5".into()]
            }]
        );
    }
}
