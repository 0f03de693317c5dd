//! `DuplicatePorts`: a `describe` that declares two inputs of the same name,
//! which the host must refuse to load.

wit_bindgen::generate!({ path: "../../../since_v0.1.0", world: "prompt-node" });

use cretok::node::types::{NamedValue, NodeError, NodeSchema, Port, ValueType};
use exports::cretok::node::node::Guest;

struct DuplicatePorts;

fn text_port() -> Port {
    Port {
        name: "text".into(),
        kind: ValueType::Str,
        description: String::new(),
        default: None,
    }
}

impl Guest for DuplicatePorts {
    fn describe() -> NodeSchema {
        NodeSchema {
            id: "DuplicatePorts".into(),
            display_name: String::new(),
            category: String::new(),
            description: String::new(),
            inputs: vec![text_port(), text_port()],
            outputs: vec![text_port()],
            extra_inputs: false,
        }
    }

    fn run(inputs: Vec<NamedValue>) -> Result<Vec<NamedValue>, NodeError> {
        Ok(inputs)
    }
}

export!(DuplicatePorts);
