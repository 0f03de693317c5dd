//! API-format prompts: `{id: {class_type, inputs, _meta}}`, where an input is a
//! literal or a link `[node_id, output_index]` (literal lists are wrapped as
//! `{"__value__": [...]}`).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value as Json;

/// One input of a node as written in the prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum RawInput {
    /// `[node_id, slot]`.
    Link {
        node: String,
        slot: usize,
    },
    /// A list that looks like a link but is not a valid one (`["4"]`, `[4, "x"]`).
    MalformedLink(Json),
    Literal(Json),
}

impl RawInput {
    fn parse(json: &Json) -> Self {
        match json {
            Json::Array(items) if items.len() == 2 && !items.iter().all(Json::is_string) => {
                let node = match &items[0] {
                    Json::String(s) => Some(s.clone()),
                    Json::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                match (node, items[1].as_u64()) {
                    (Some(node), Some(slot)) => RawInput::Link {
                        node,
                        slot: slot as usize,
                    },
                    _ => RawInput::MalformedLink(json.clone()),
                }
            }
            Json::Array(_) => RawInput::MalformedLink(json.clone()),
            Json::Object(o) if o.contains_key("__value__") => {
                RawInput::Literal(o["__value__"].clone())
            }
            other => RawInput::Literal(other.clone()),
        }
    }
}

/// One node of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphNode {
    /// `None` when the node has no (string) `class_type`.
    pub class_type: Option<String>,
    pub inputs: BTreeMap<String, RawInput>,
}

/// A parsed API-format prompt, nodes keyed by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub nodes: BTreeMap<String, GraphNode>,
}

/// Why a prompt is not even a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphShapeError {
    #[error("the prompt is not a JSON object of nodes")]
    NotAnObject,
    #[error("node {0} is not a JSON object")]
    NodeNotAnObject(String),
}

impl Graph {
    pub fn parse(prompt: &Json) -> Result<Self, GraphShapeError> {
        let Json::Object(map) = prompt else {
            return Err(GraphShapeError::NotAnObject);
        };
        let mut nodes = BTreeMap::new();
        for (id, node) in map {
            let Json::Object(node) = node else {
                return Err(GraphShapeError::NodeNotAnObject(id.clone()));
            };
            let class_type = node
                .get("class_type")
                .and_then(Json::as_str)
                .map(str::to_owned);
            let inputs = node
                .get("inputs")
                .and_then(Json::as_object)
                .map(|inputs| {
                    inputs
                        .iter()
                        .map(|(k, v)| (k.clone(), RawInput::parse(v)))
                        .collect()
                })
                .unwrap_or_default();
            nodes.insert(id.clone(), GraphNode { class_type, inputs });
        }
        Ok(Graph { nodes })
    }

    pub fn class_type(&self, id: &str) -> Option<&str> {
        self.nodes.get(id)?.class_type.as_deref()
    }

    /// Ids of the nodes `id` links to, in input-name order.
    pub fn dependencies(&self, id: &str) -> impl Iterator<Item = &str> {
        self.nodes
            .get(id)
            .into_iter()
            .flat_map(|n| n.inputs.values())
            .filter_map(|input| match input {
                RawInput::Link { node, .. } => Some(node.as_str()),
                _ => None,
            })
    }
}

/// The nodes reachable from `roots`, dependencies first (a depth-first
/// post-order: roots in the order given, each node's dependencies in the order
/// `dependencies` yields them), or `Err` with the first cycle met, in link order.
/// Iterative: a chain as long as the node limit must not overflow the stack.
pub fn dependency_order<'g, I>(
    roots: impl IntoIterator<Item = &'g str>,
    dependencies: impl Fn(&'g str) -> I,
) -> Result<Vec<&'g str>, Vec<&'g str>>
where
    I: Iterator<Item = &'g str>,
{
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut order = Vec::new();
    for root in roots {
        if marks.contains_key(root) {
            continue;
        }
        marks.insert(root, Mark::Open);
        let mut path = vec![(root, dependencies(root))];
        while let Some((id, deps)) = path.last_mut() {
            let id = *id;
            match deps.next() {
                None => {
                    marks.insert(id, Mark::Done);
                    order.push(id);
                    path.pop();
                }
                Some(dep) => match marks.get(dep) {
                    Some(Mark::Done) => {}
                    Some(Mark::Open) => {
                        let start = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        return Err(path[start..].iter().map(|(n, _)| *n).collect());
                    }
                    None => {
                        marks.insert(dep, Mark::Open);
                        path.push((dep, dependencies(dep)));
                    }
                },
            }
        }
    }
    Ok(order)
}

/// Orders prompt ids naturally: numeric ids by value ("2" before "10"), then others.
pub fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_links_literals_and_wrapped_lists() {
        let g = Graph::parse(&json!({
            "1": {"class_type": "A", "inputs": {"x": ["2", 0], "y": 3, "z": {"__value__": ["a", "b"]}, "w": ["a", "b"]}},
            "2": {"class_type": "B", "inputs": {}, "_meta": {"title": "t"}}
        }))
        .unwrap();
        let n = &g.nodes["1"];
        assert_eq!(
            n.inputs["x"],
            RawInput::Link {
                node: "2".into(),
                slot: 0
            }
        );
        assert_eq!(n.inputs["y"], RawInput::Literal(json!(3)));
        assert_eq!(n.inputs["z"], RawInput::Literal(json!(["a", "b"])));
        assert!(matches!(n.inputs["w"], RawInput::MalformedLink(_)));
        assert_eq!(g.dependencies("1").collect::<Vec<_>>(), ["2"]);
    }

    #[test]
    fn refuses_non_objects() {
        assert_eq!(Graph::parse(&json!([1])), Err(GraphShapeError::NotAnObject));
        assert_eq!(
            Graph::parse(&json!({"1": 5})),
            Err(GraphShapeError::NodeNotAnObject("1".into()))
        );
    }

    fn chain(len: usize) -> Graph {
        let nodes = (0..len)
            .map(|i| {
                let inputs = if i == 0 {
                    json!({})
                } else {
                    json!({"a": [(i - 1).to_string(), 0]})
                };
                (i.to_string(), json!({"class_type": "N", "inputs": inputs}))
            })
            .collect::<serde_json::Map<_, _>>();
        Graph::parse(&Json::Object(nodes)).unwrap()
    }

    #[test]
    fn orders_dependencies_first_without_recursion() {
        let g = chain(200_000);
        let last = (200_000 - 1).to_string();
        let order = dependency_order([last.as_str()], |id| g.dependencies(id)).unwrap();
        assert_eq!(order.len(), 200_000);
        assert_eq!((order[0], order[199_999]), ("0", last.as_str()));
    }

    #[test]
    fn diamonds_visit_each_node_once_in_input_order() {
        let g = Graph::parse(&json!({
            "1": {"class_type": "A", "inputs": {}},
            "2": {"class_type": "B", "inputs": {"x": ["1", 0]}},
            "3": {"class_type": "C", "inputs": {"x": ["1", 0]}},
            "4": {"class_type": "D", "inputs": {"a": ["3", 0], "b": ["2", 0]}}
        }))
        .unwrap();
        let order = dependency_order(["4", "2"], |id| g.dependencies(id)).unwrap();
        assert_eq!(order, ["1", "3", "2", "4"]);
    }

    #[test]
    fn reports_the_cycle_in_link_order() {
        let g = Graph::parse(&json!({
            "1": {"class_type": "A", "inputs": {"x": ["3", 0]}},
            "2": {"class_type": "B", "inputs": {"x": ["1", 0]}},
            "3": {"class_type": "C", "inputs": {"x": ["2", 0]}},
            "4": {"class_type": "D", "inputs": {"x": ["3", 0]}}
        }))
        .unwrap();
        let cycle = dependency_order(["4"], |id| g.dependencies(id)).unwrap_err();
        assert_eq!(cycle, ["3", "2", "1"]);
    }

    #[test]
    fn numeric_ids_sort_by_value() {
        let mut ids = vec!["10", "2", "b", "1"];
        ids.sort_by(|a, b| id_order(a, b));
        assert_eq!(ids, ["1", "2", "10", "b"]);
    }
}
