//! `Hostile`: a node that misbehaves on request, to test the sandbox's limits.
//!
//! The `attack` input selects what `run` does: `none` (behaves), `spin` (an
//! endless loop), `memory` (allocates until refused), `recursion` (recurses
//! until the stack runs out), `panic`, `wrong-type` (returns an int where the
//! schema says string), `missing-output`, `unknown-output`, `log-flood`.

wit_bindgen::generate!({ path: "../../../since_v0.1.0", world: "prompt-node" });

use std::hint::black_box;

use cretok::node::host::{log, LogLevel};
use cretok::node::types::{
    InputProblem, NamedValue, NodeError, NodeSchema, Port, Value, ValueType,
};
use exports::cretok::node::node::Guest;

struct Hostile;

fn text(value: Value) -> Vec<NamedValue> {
    vec![NamedValue {
        name: "text".into(),
        value,
    }]
}

/// Recurses without touching linear memory, so only the wasm stack grows.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    // Opaque to the optimiser, so the recursion cannot become a loop.
    black_box(recurse(black_box(depth + 1))) + 1
}

impl Guest for Hostile {
    fn describe() -> NodeSchema {
        NodeSchema {
            id: "Hostile".into(),
            display_name: "Hostile (sandbox test)".into(),
            category: "testing".into(),
            description: "Misbehaves as the attack input says.".into(),
            inputs: vec![Port {
                name: "attack".into(),
                kind: ValueType::Str,
                description: "none, spin, memory, recursion, panic, wrong-type, missing-output, unknown-output, log-flood".into(),
                default: Some(Value::Str("none".into())),
            }],
            outputs: vec![Port { name: "text".into(), kind: ValueType::Str, description: String::new(), default: None }],
            extra_inputs: false,
        }
    }

    fn run(inputs: Vec<NamedValue>) -> Result<Vec<NamedValue>, NodeError> {
        std::panic::set_hook(Box::new(|info| log(LogLevel::Error, &info.to_string())));
        let attack = match inputs.iter().find(|i| i.name == "attack").map(|i| &i.value) {
            Some(Value::Str(s)) => s.clone(),
            _ => return Err(NodeError::MissingInput("attack".into())),
        };
        match attack.as_str() {
            "none" => Ok(text(Value::Str("ok".into()))),
            "spin" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recursion" => Ok(text(Value::Int(recurse(0) as i64))),
            "panic" => panic!("the hostile node panics on purpose"),
            "wrong-type" => Ok(text(Value::Int(42))),
            "missing-output" => Ok(Vec::new()),
            "unknown-output" => {
                let mut outputs = text(Value::Str("ok".into()));
                outputs.push(NamedValue {
                    name: "surprise".into(),
                    value: Value::Boolean(true),
                });
                Ok(outputs)
            }
            "log-flood" => {
                let line = "x".repeat(64 * 1024);
                for _ in 0..10_000 {
                    log(LogLevel::Info, &line);
                }
                Ok(text(Value::Str("flooded".into())))
            }
            other => Err(NodeError::InvalidInput(InputProblem {
                input: "attack".into(),
                reason: format!("unknown attack '{other}'"),
            })),
        }
    }
}

export!(Hostile);
