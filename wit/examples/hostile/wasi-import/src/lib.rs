//! `WasiRandom`: a node that imports `wasi:random`, a capability the sandbox
//! never grants; loading it must fail with a clear error.

wit_bindgen::generate!({
    path: ["../../../since_v0.1.0", "wit"],
    world: "hostile:wasi-import/wasi-node",
    generate_all,
});

use cretok::node::types::{NamedValue, NodeError, NodeSchema, Port, Value, ValueType};
use exports::cretok::node::node::Guest;

struct WasiRandom;

impl Guest for WasiRandom {
    fn describe() -> NodeSchema {
        NodeSchema {
            id: "WasiRandom".into(),
            display_name: String::new(),
            category: String::new(),
            description: String::new(),
            inputs: Vec::new(),
            outputs: vec![Port {
                name: "number".into(),
                kind: ValueType::Int,
                description: String::new(),
                default: None,
            }],
            extra_inputs: false,
        }
    }

    fn run(_inputs: Vec<NamedValue>) -> Result<Vec<NamedValue>, NodeError> {
        let number = wasi::random::random::get_random_u64();
        Ok(vec![NamedValue {
            name: "number".into(),
            value: Value::Int(number as i64),
        }])
    }
}

export!(WasiRandom);
