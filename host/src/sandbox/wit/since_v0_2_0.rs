//! Bindings for `cretok:node@0.2.0` (`wit/since_v0.2.0/`): 0.1.0 plus
//! optional inputs and variadic input groups, in place of `extra-inputs`;
//! mapped to the version-independent types of the parent.

use super::{GuestPort, GuestSchema, GuestVariadic};

/// The oldest guest version these bindings host.
pub(crate) const MIN_VERSION: (u64, u64, u64) = (0, 2, 0);

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.2.0",
        world: "prompt-node",
    });
}

use bindings::cretok::node::{host, types};
use bindings::PromptNodePre;

version_bindings!("cretok:node/host@0.2.0");

fn schema(schema: types::NodeSchema) -> GuestSchema {
    GuestSchema {
        id: schema.id,
        display_name: schema.display_name,
        category: schema.category,
        description: schema.description,
        inputs: schema.inputs.into_iter().map(port).collect(),
        outputs: schema.outputs.into_iter().map(port).collect(),
        extra_inputs: false,
        variadic: schema.variadic.into_iter().map(variadic).collect(),
    }
}

fn port(port: types::Port) -> GuestPort {
    GuestPort {
        name: port.name,
        kind: port_type(port.kind),
        description: port.description,
        default: port.default.map(from_wit),
        optional: port.optional,
        is_list: false,
    }
}

fn variadic(group: types::Variadic) -> GuestVariadic {
    GuestVariadic {
        name: group.name,
        prefix: group.prefix,
        kind: port_type(group.kind),
        description: group.description,
        min: group.min,
        max: group.max,
    }
}
