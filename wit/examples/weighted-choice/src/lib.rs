//! `WeightedChoice`: picks one option from a weighted list, reproducibly for
//! a seed ("owl=3 | teapot | cactus=0.5").
//!
//! Options are separated by `|` or new lines; `text=weight` gives a weight
//! (a finite number ≥ 0), and an option without one weighs 1. The seed is
//! mixed with SplitMix64, so nearby seeds give unrelated picks.

wit_bindgen::generate!({ path: "../../since_v0.1.0", world: "prompt-node" });

use cretok::node::host::{log, LogLevel};
use cretok::node::types::{
    InputProblem, NamedValue, NodeError, NodeSchema, Port, Value, ValueType,
};
use exports::cretok::node::node::Guest;

struct WeightedChoice;

fn port(name: &str, kind: ValueType, description: &str, default: Option<Value>) -> Port {
    Port {
        name: name.into(),
        kind,
        description: description.into(),
        default,
    }
}

fn invalid_choices(reason: String) -> NodeError {
    NodeError::InvalidInput(InputProblem {
        input: "choices".into(),
        reason,
    })
}

impl Guest for WeightedChoice {
    fn describe() -> NodeSchema {
        NodeSchema {
            id: "WeightedChoice".into(),
            display_name: "Weighted Choice".into(),
            category: "prompt".into(),
            description: "Picks one option from a weighted list, reproducibly for a seed.".into(),
            inputs: vec![
                port(
                    "choices",
                    ValueType::Str,
                    "Options separated by | or new lines; text=weight sets a weight (default 1).",
                    Some(Value::Str("owl=3 | teapot | cactus=0.5".into())),
                ),
                port(
                    "seed",
                    ValueType::Int,
                    "The same seed picks the same option.",
                    Some(Value::Int(0)),
                ),
            ],
            outputs: vec![
                port("choice", ValueType::Str, "The picked option.", None),
                port(
                    "index",
                    ValueType::Int,
                    "Its position in the list, from 0.",
                    None,
                ),
            ],
            extra_inputs: false,
        }
    }

    fn run(inputs: Vec<NamedValue>) -> Result<Vec<NamedValue>, NodeError> {
        std::panic::set_hook(Box::new(|info| log(LogLevel::Error, &info.to_string())));
        let mut choices = None;
        let mut seed = None;
        for input in &inputs {
            match (input.name.as_str(), &input.value) {
                ("choices", Value::Str(s)) => choices = Some(s.as_str()),
                ("seed", Value::Int(i)) => seed = Some(*i),
                _ => {}
            }
        }
        let options = parse(choices.ok_or_else(|| NodeError::MissingInput("choices".into()))?)?;
        let seed = seed.ok_or_else(|| NodeError::MissingInput("seed".into()))?;
        let total: f64 = options.iter().map(|(_, w)| w).sum();
        if total <= 0.0 {
            return Err(invalid_choices("the weights add up to zero".into()));
        }
        // 53 random bits give a uniform point in [0, total).
        let point = (splitmix64(seed as u64) >> 11) as f64 / (1u64 << 53) as f64 * total;
        let mut below = 0.0;
        let index = options
            .iter()
            .position(|(_, w)| {
                below += w;
                point < below
            })
            .unwrap_or_else(|| options.iter().rposition(|(_, w)| *w > 0.0).unwrap_or(0));
        Ok(vec![
            NamedValue {
                name: "choice".into(),
                value: Value::Str(options[index].0.into()),
            },
            NamedValue {
                name: "index".into(),
                value: Value::Int(index as i64),
            },
        ])
    }
}

/// Parses `text=weight` entries separated by `|` or new lines.
fn parse(text: &str) -> Result<Vec<(&str, f64)>, NodeError> {
    let mut options = Vec::new();
    for entry in text
        .split(['|', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (option, weight) = match entry.rsplit_once('=') {
            Some((option, weight)) => {
                let weight: f64 = weight.trim().parse().map_err(|_| {
                    invalid_choices(format!("'{entry}': the weight is not a number"))
                })?;
                if !weight.is_finite() || weight < 0.0 {
                    return Err(invalid_choices(format!(
                        "'{entry}': weights must be finite and ≥ 0"
                    )));
                }
                (option.trim(), weight)
            }
            None => (entry, 1.0),
        };
        options.push((option, weight));
    }
    if options.is_empty() {
        return Err(invalid_choices("no options".into()));
    }
    Ok(options)
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

export!(WeightedChoice);
