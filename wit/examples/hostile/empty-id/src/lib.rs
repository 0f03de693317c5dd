//! A node whose `describe` returns an empty id, which the host must refuse
//! to load.

wit_bindgen::generate!({ path: "../../../since_v0.1.0", world: "prompt-node" });

use cretok::node::types::{NamedValue, NodeError, NodeSchema};
use exports::cretok::node::node::Guest;

struct EmptyId;

impl Guest for EmptyId {
    fn describe() -> NodeSchema {
        NodeSchema {
            id: String::new(),
            display_name: "No id".into(),
            category: String::new(),
            description: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            extra_inputs: false,
        }
    }

    fn run(_inputs: Vec<NamedValue>) -> Result<Vec<NamedValue>, NodeError> {
        Ok(Vec::new())
    }
}

export!(EmptyId);
