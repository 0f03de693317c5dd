//! `ConceptPairs`: turns a list of concepts into every unordered pair, and
//! picks the pair a seed selects, so that one graph sweeps all blends of a
//! list by incrementing the seed.
//!
//! Concepts are separated by commas or new lines; blanks and repeats are
//! dropped. Pairs are ordered `(0,1), (0,2), …, (1,2), …`; the selected pair
//! is `seed mod count`. The optional `exclude` link (`cretok:node@0.2.0`)
//! drops concepts before pairing. `every_a` and `every_b` are list outputs
//! (`cretok:node@0.3.0`): the two concepts of every pair, so that the nodes
//! they feed run once per pair.

wit_bindgen::generate!({ path: "../../since_v0.3.0", world: "prompt-node" });

use cretok::node::host::{log, LogLevel};
use cretok::node::types::{
    InputProblem, NamedValue, NodeError, NodeSchema, Port, Value, ValueType,
};
use exports::cretok::node::node::Guest;

struct Pairs;

fn port(name: &str, kind: ValueType, description: &str, default: Option<Value>) -> Port {
    Port {
        name: name.into(),
        kind,
        description: description.into(),
        default,
        optional: false,
        is_list: false,
    }
}

fn list_output(name: &str, description: &str) -> Port {
    Port {
        is_list: true,
        ..port(name, ValueType::Str, description, None)
    }
}

fn output(name: &str, value: Value) -> NamedValue {
    NamedValue {
        name: name.into(),
        value,
    }
}

impl Guest for Pairs {
    fn describe() -> NodeSchema {
        NodeSchema {
            id: "ConceptPairs".into(),
            display_name: "Concept Pairs".into(),
            category: "prompt".into(),
            description: "Every unordered pair of the concepts, and the pair the seed selects."
                .into(),
            inputs: vec![
                port(
                    "concepts",
                    ValueType::Str,
                    "Concepts separated by commas or new lines.",
                    Some(Value::Str("owl, teapot, cactus".into())),
                ),
                port(
                    "seed",
                    ValueType::Int,
                    "Selects pair number seed mod count.",
                    Some(Value::Int(0)),
                ),
                Port {
                    optional: true,
                    ..port(
                        "exclude",
                        ValueType::Str,
                        "Concepts to leave out, separated like `concepts` (optional link).",
                        None,
                    )
                },
            ],
            outputs: vec![
                port(
                    "a",
                    ValueType::Str,
                    "First concept of the selected pair.",
                    None,
                ),
                port(
                    "b",
                    ValueType::Str,
                    "Second concept of the selected pair.",
                    None,
                ),
                port(
                    "pairs",
                    ValueType::StrList,
                    "Every pair, as \"a + b\".",
                    None,
                ),
                port("count", ValueType::Int, "How many pairs there are.", None),
                list_output("every_a", "First concept of every pair (a list)."),
                list_output("every_b", "Second concept of every pair (a list)."),
            ],
            variadic: Vec::new(),
        }
    }

    fn run(inputs: Vec<NamedValue>) -> Result<Vec<NamedValue>, NodeError> {
        std::panic::set_hook(Box::new(|info| log(LogLevel::Error, &info.to_string())));
        let mut concepts = None;
        let mut seed = None;
        let mut exclude = "";
        for input in &inputs {
            match (input.name.as_str(), &input.value) {
                ("concepts", Value::Str(s)) => concepts = Some(s.as_str()),
                ("seed", Value::Int(i)) => seed = Some(*i),
                ("exclude", Value::Str(s)) => exclude = s.as_str(),
                _ => {}
            }
        }
        let excluded = split_concepts(exclude);
        let mut concepts =
            split_concepts(concepts.ok_or_else(|| NodeError::MissingInput("concepts".into()))?);
        concepts.retain(|c| !excluded.contains(c));
        let seed = seed.ok_or_else(|| NodeError::MissingInput("seed".into()))?;
        if concepts.len() < 2 {
            return Err(NodeError::InvalidInput(InputProblem {
                input: "concepts".into(),
                reason: format!(
                    "needs at least two distinct concepts, got {}",
                    concepts.len()
                ),
            }));
        }
        let pairs: Vec<(&str, &str)> = concepts
            .iter()
            .enumerate()
            .flat_map(|(i, a)| concepts[i + 1..].iter().map(move |b| (*a, *b)))
            .collect();
        let (a, b) = pairs[seed.rem_euclid(pairs.len() as i64) as usize];
        let mut outputs = vec![
            output("a", Value::Str(a.into())),
            output("b", Value::Str(b.into())),
            output(
                "pairs",
                Value::StrList(pairs.iter().map(|(a, b)| format!("{a} + {b}")).collect()),
            ),
            output("count", Value::Int(pairs.len() as i64)),
        ];
        let every_a = pairs
            .iter()
            .map(|(a, _)| output("every_a", Value::Str((*a).into())));
        let every_b = pairs
            .iter()
            .map(|(_, b)| output("every_b", Value::Str((*b).into())));
        outputs.extend(every_a.chain(every_b));
        Ok(outputs)
    }
}

/// Splits on commas and new lines, trims, drops blanks and repeats.
fn split_concepts(text: &str) -> Vec<&str> {
    let mut concepts: Vec<&str> = Vec::new();
    for concept in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        if !concepts.contains(&concept) {
            concepts.push(concept);
        }
    }
    concepts
}

export!(Pairs);
