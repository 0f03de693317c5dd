//! Bindings for `cretok:node@0.2.0` (`wit/since_v0.2.0/`): 0.1.0 plus
//! optional inputs and variadic input groups, in place of `extra-inputs`;
//! mapped to the version-independent types of the parent.

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use super::{
    GuestError, GuestPort, GuestSchema, GuestValue, GuestVariadic, LogLevel, NamedValues, PortType,
};
use crate::sandbox::state::StoreState;

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

/// Whether a guest built against `version` can use these bindings.
pub(crate) fn speaks(version: &str) -> bool {
    super::compatible(version, MIN_VERSION)
}

/// The interface whose `log` [`super::add_log`] defines.
const HOST_INTERFACE: &str = "cretok:node/host@0.2.0";

impl From<host::LogLevel> for LogLevel {
    fn from(level: host::LogLevel) -> Self {
        match level {
            host::LogLevel::Debug => LogLevel::Debug,
            host::LogLevel::Info => LogLevel::Info,
            host::LogLevel::Warn => LogLevel::Warn,
            host::LogLevel::Error => LogLevel::Error,
        }
    }
}

impl types::Host for StoreState {}

/// A linked 0.2 component.
pub(crate) struct GuestPre(PromptNodePre<StoreState>);

impl GuestPre {
    pub(crate) fn new(engine: &Engine, component: &Component) -> wasmtime::Result<Self> {
        let mut linker = Linker::new(engine);
        types::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        super::add_log::<host::LogLevel>(&mut linker, HOST_INTERFACE)?;
        Ok(GuestPre(PromptNodePre::new(
            linker.instantiate_pre(component)?,
        )?))
    }

    pub(crate) fn describe(&self, store: &mut Store<StoreState>) -> wasmtime::Result<GuestSchema> {
        let node = self.0.instantiate(&mut *store)?;
        let schema = node.cretok_node_node().call_describe(&mut *store)?;
        Ok(GuestSchema {
            id: schema.id,
            display_name: schema.display_name,
            category: schema.category,
            description: schema.description,
            inputs: schema.inputs.into_iter().map(port).collect(),
            outputs: schema.outputs.into_iter().map(port).collect(),
            extra_inputs: false,
            variadic: schema.variadic.into_iter().map(variadic).collect(),
        })
    }

    pub(crate) fn run(
        &self,
        store: &mut Store<StoreState>,
        inputs: &[(String, GuestValue)],
    ) -> wasmtime::Result<Result<NamedValues, GuestError>> {
        let node = self.0.instantiate(&mut *store)?;
        let inputs: Vec<types::NamedValue> = inputs
            .iter()
            .map(|(name, value)| types::NamedValue {
                name: name.clone(),
                value: to_wit(value.clone()),
            })
            .collect();
        let result = node.cretok_node_node().call_run(&mut *store, &inputs)?;
        Ok(match result {
            Ok(outputs) => Ok(outputs
                .into_iter()
                .map(|o| (o.name, from_wit(o.value)))
                .collect()),
            Err(types::NodeError::MissingInput(input)) => Err(GuestError::MissingInput(input)),
            Err(types::NodeError::WrongType(p)) => Err(GuestError::WrongType {
                input: p.input,
                reason: p.reason,
            }),
            Err(types::NodeError::InvalidInput(p)) => Err(GuestError::InvalidInput {
                input: p.input,
                reason: p.reason,
            }),
            Err(types::NodeError::Failed(message)) => Err(GuestError::Failed(message)),
        })
    }
}

fn port(port: types::Port) -> GuestPort {
    GuestPort {
        name: port.name,
        kind: port_type(port.kind),
        description: port.description,
        default: port.default.map(from_wit),
        optional: port.optional,
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

fn port_type(kind: types::ValueType) -> PortType {
    match kind {
        types::ValueType::Str => PortType::Str,
        types::ValueType::Int => PortType::Int,
        types::ValueType::Float => PortType::Float,
        types::ValueType::Boolean => PortType::Boolean,
        types::ValueType::StrList => PortType::StrList,
    }
}

fn from_wit(value: types::Value) -> GuestValue {
    match value {
        types::Value::Str(s) => GuestValue::Str(s),
        types::Value::Int(i) => GuestValue::Int(i),
        types::Value::Float(x) => GuestValue::Float(x),
        types::Value::Boolean(b) => GuestValue::Boolean(b),
        types::Value::StrList(l) => GuestValue::StrList(l),
    }
}

fn to_wit(value: GuestValue) -> types::Value {
    match value {
        GuestValue::Str(s) => types::Value::Str(s),
        GuestValue::Int(i) => types::Value::Int(i),
        GuestValue::Float(x) => types::Value::Float(x),
        GuestValue::Boolean(b) => types::Value::Boolean(b),
        GuestValue::StrList(l) => types::Value::StrList(l),
    }
}
