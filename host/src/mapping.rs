//! ComfyUI's list semantics: every link carries a list of items (one for a
//! plain output). A node that does not take whole lists runs once per item,
//! the longest input setting the count and shorter inputs repeating their
//! last item; a node that does (`input_is_list`) runs once with every input as
//! a [`Value::List`]. The runs' outputs are merged: a plain output gets one
//! item per run, a list output the items of every run in order, and the `ui`
//! maps of output nodes are concatenated key by key.

use std::collections::BTreeMap;

use cretok_node_api::{Inputs, NodeError, NodeOutput, OutputSpec, Value, MAX_LIST_ITEMS};
use serde_json::Value as Json;

/// The items one output carries, in order.
pub type Items = Vec<Value>;

/// A node's inputs as item lists, and the runs they make.
pub struct MappedInputs<'a> {
    inputs: BTreeMap<&'a str, &'a [Value]>,
    whole_lists: bool,
    runs: usize,
}

impl<'a> MappedInputs<'a> {
    /// `whole_lists`: the node takes whole lists (one run).
    pub fn new(
        inputs: BTreeMap<&'a str, &'a [Value]>,
        whole_lists: bool,
    ) -> Result<Self, NodeError> {
        if !whole_lists {
            if let Some((name, _)) = inputs.iter().find(|(_, items)| items.is_empty()) {
                return Err(NodeError::invalid_input(
                    name,
                    "is an empty list: there is no item to run the node on",
                ));
            }
        }
        let longest = inputs.values().map(|items| items.len()).max().unwrap_or(1);
        Ok(MappedInputs {
            runs: if whole_lists { 1 } else { longest.max(1) },
            inputs,
            whole_lists,
        })
    }

    /// How many times the node runs.
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// The inputs of run `index` (`index < runs()`).
    pub fn run(&self, index: usize) -> Inputs {
        let mut inputs = Inputs::new();
        for (&name, items) in &self.inputs {
            let value = if self.whole_lists {
                Value::List(items.to_vec())
            } else {
                items[index.min(items.len() - 1)].clone()
            };
            inputs.insert(name, value);
        }
        inputs
    }
}

/// The merged outputs of a node's runs.
pub struct MergedOutputs<'a> {
    declared: &'a [OutputSpec],
    values: Vec<Items>,
    uis: Vec<Json>,
}

impl<'a> MergedOutputs<'a> {
    pub fn new(declared: &'a [OutputSpec]) -> Self {
        MergedOutputs {
            declared,
            values: vec![Vec::new(); declared.len()],
            uis: Vec::new(),
        }
    }

    /// Adds one run's output, checking it against the declared outputs.
    pub fn push(&mut self, output: NodeOutput) -> Result<(), NodeError> {
        if output.values.len() < self.declared.len() {
            return Err(NodeError::Failed(anyhow::anyhow!(
                "produced {} outputs but declares {}",
                output.values.len(),
                self.declared.len()
            )));
        }
        for ((spec, items), value) in self
            .declared
            .iter()
            .zip(&mut self.values)
            .zip(output.values)
        {
            match (spec.is_list, value) {
                (true, Value::List(list)) => items.extend(list),
                (false, Value::List(_)) => {
                    return Err(output_error(
                        spec,
                        "returned a list but is not a list output",
                    ))
                }
                (true, other) => {
                    return Err(output_error(
                        spec,
                        &format!("is a list output but returned {}", other.kind_name()),
                    ))
                }
                (false, value) => items.push(value),
            }
            if items.len() as u64 > MAX_LIST_ITEMS {
                return Err(output_error(
                    spec,
                    &format!("has more than {MAX_LIST_ITEMS} items, the most a list may hold"),
                ));
            }
        }
        self.uis.extend(output.ui);
        Ok(())
    }

    /// Every output's items and the merged `ui`.
    pub fn finish(self) -> (Vec<Items>, Option<Json>) {
        (self.values, merge_uis(self.uis))
    }
}

fn output_error(spec: &OutputSpec, problem: &str) -> NodeError {
    NodeError::Failed(anyhow::anyhow!("output {} {problem}", spec.name))
}

/// One run's `ui` as it is; several runs' concatenated key by key (the keys
/// of the first, as ComfyUI does). A value that is not a list keeps the
/// first run's.
fn merge_uis(mut uis: Vec<Json>) -> Option<Json> {
    if uis.len() <= 1 {
        return uis.pop();
    }
    let mut merged = match uis.remove(0) {
        Json::Object(first) => first,
        other => return Some(other),
    };
    for ui in uis {
        let Json::Object(ui) = ui else { continue };
        for (key, value) in ui {
            if let (Some(Json::Array(all)), Json::Array(more)) = (merged.get_mut(&key), value) {
                all.extend(more);
            }
        }
    }
    Some(Json::Object(merged))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn texts(items: &[&str]) -> Vec<Value> {
        items.iter().map(|s| Value::String((*s).into())).collect()
    }

    fn text(inputs: &Inputs, name: &str) -> String {
        inputs.string(name).unwrap().to_owned()
    }

    #[test]
    fn shorter_lists_repeat_their_last_item() {
        let (long, short) = (texts(&["a", "b", "c"]), texts(&["x", "y"]));
        let inputs = BTreeMap::from([("long", &long[..]), ("short", &short[..])]);
        let mapped = MappedInputs::new(inputs, false).unwrap();
        assert_eq!(mapped.runs(), 3);
        let runs: Vec<(String, String)> = (0..3)
            .map(|i| {
                let run = mapped.run(i);
                (text(&run, "long"), text(&run, "short"))
            })
            .collect();
        assert_eq!(
            runs,
            [("a", "x"), ("b", "y"), ("c", "y")].map(|(a, b)| (a.into(), b.into()))
        );
    }

    #[test]
    fn a_list_node_runs_once_with_whole_lists() {
        let items = texts(&["a", "b"]);
        let mapped = MappedInputs::new(BTreeMap::from([("t", &items[..])]), true).unwrap();
        assert_eq!(mapped.runs(), 1);
        assert_eq!(mapped.run(0).list("t").unwrap().len(), 2);
    }

    #[test]
    fn an_empty_list_is_refused_by_a_mapped_node_and_a_node_without_inputs_runs_once() {
        let empty: Vec<Value> = vec![];
        let refused = MappedInputs::new(BTreeMap::from([("t", &empty[..])]), false);
        assert!(refused.is_err());
        assert_eq!(MappedInputs::new(BTreeMap::new(), false).unwrap().runs(), 1);
    }

    #[test]
    fn list_outputs_are_flattened_and_uis_concatenated() {
        let declared = [OutputSpec::new("STRING").list(), OutputSpec::new("INT")];
        let mut merged = MergedOutputs::new(&declared);
        for run in 0..2 {
            let out = NodeOutput::values(vec![Value::List(texts(&["p", "q"])), Value::Int(run)])
                .with_ui(json!({"text": [format!("run {run}")], "animated": [false]}));
            merged.push(out).unwrap();
        }
        let (values, ui) = merged.finish();
        assert_eq!((values[0].len(), values[1].len()), (4, 2));
        assert_eq!(
            ui.unwrap(),
            json!({"text": ["run 0", "run 1"], "animated": [false, false]})
        );
    }

    #[test]
    fn an_output_that_breaks_its_declaration_fails() {
        let list = [OutputSpec::new("STRING").list()];
        let plain = [OutputSpec::new("STRING")];
        let one = || NodeOutput::values(vec![Value::String("a".into())]);
        let many = || NodeOutput::values(vec![Value::List(texts(&["a"]))]);
        assert!(MergedOutputs::new(&list).push(one()).is_err());
        assert!(MergedOutputs::new(&plain).push(many()).is_err());
        assert!(MergedOutputs::new(&plain)
            .push(NodeOutput::default())
            .is_err());
    }
}
