//! The versions of the `cretok:node` WIT package this host speaks, behind
//! version-independent types.
//!
//! Each version has its own module (`since_v0_1_0`, `since_v0_2_0`,
//! `since_v0_3_0`) with its own `bindgen!`, a `MIN_VERSION` and the mapping
//! of its schema; [`version_bindings!`] writes the rest, which every version
//! shares. The host reads the version a component was built against from the
//! name of its `cretok:node/node@X.Y.Z` export before it instantiates
//! anything, and picks the bindings for it. New versions add a module and a
//! [`GuestPre`] variant; older versions keep working.

/// Writes, inside a version's module, what the bindings of every version
/// share: `speaks`, the log level's conversion, a `GuestPre` that links a
/// component, calls `describe` (mapped by the module's
/// `fn schema(types::NodeSchema) -> GuestSchema`) and `run`, and the value
/// conversions. The module has `use`d its bindings' `host`, `types` and
/// `PromptNodePre`, and defines `MIN_VERSION`; the argument is the version's
/// host interface (`"cretok:node/host@X.Y.Z"`).
macro_rules! version_bindings {
    ($host_interface:literal) => {
        /// Whether a guest built against `version` can use these bindings.
        pub(crate) fn speaks(version: &str) -> bool {
            super::compatible(version, MIN_VERSION)
        }

        impl From<host::LogLevel> for super::LogLevel {
            fn from(level: host::LogLevel) -> Self {
                match level {
                    host::LogLevel::Debug => super::LogLevel::Debug,
                    host::LogLevel::Info => super::LogLevel::Info,
                    host::LogLevel::Warn => super::LogLevel::Warn,
                    host::LogLevel::Error => super::LogLevel::Error,
                }
            }
        }

        impl types::Host for crate::sandbox::state::StoreState {}

        /// A linked component of this version.
        pub(crate) struct GuestPre(PromptNodePre<crate::sandbox::state::StoreState>);

        impl GuestPre {
            pub(crate) fn new(
                engine: &wasmtime::Engine,
                component: &wasmtime::component::Component,
            ) -> wasmtime::Result<Self> {
                use wasmtime::component::{HasSelf, Linker};
                let mut linker = Linker::new(engine);
                types::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
                super::add_log::<host::LogLevel>(&mut linker, $host_interface)?;
                Ok(GuestPre(PromptNodePre::new(
                    linker.instantiate_pre(component)?,
                )?))
            }

            pub(crate) fn describe(
                &self,
                store: &mut wasmtime::Store<crate::sandbox::state::StoreState>,
            ) -> wasmtime::Result<super::GuestSchema> {
                let node = self.0.instantiate(&mut *store)?;
                Ok(schema(node.cretok_node_node().call_describe(&mut *store)?))
            }

            pub(crate) fn run(
                &self,
                store: &mut wasmtime::Store<crate::sandbox::state::StoreState>,
                inputs: &[(String, super::GuestValue)],
            ) -> wasmtime::Result<Result<super::NamedValues, super::GuestError>> {
                use super::GuestError;
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
                    Err(types::NodeError::MissingInput(input)) => {
                        Err(GuestError::MissingInput(input))
                    }
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

        fn port_type(kind: types::ValueType) -> super::PortType {
            use super::PortType;
            match kind {
                types::ValueType::Str => PortType::Str,
                types::ValueType::Int => PortType::Int,
                types::ValueType::Float => PortType::Float,
                types::ValueType::Boolean => PortType::Boolean,
                types::ValueType::StrList => PortType::StrList,
            }
        }

        fn from_wit(value: types::Value) -> super::GuestValue {
            use super::GuestValue;
            match value {
                types::Value::Str(s) => GuestValue::Str(s),
                types::Value::Int(i) => GuestValue::Int(i),
                types::Value::Float(x) => GuestValue::Float(x),
                types::Value::Boolean(b) => GuestValue::Boolean(b),
                types::Value::StrList(l) => GuestValue::StrList(l),
            }
        }

        fn to_wit(value: super::GuestValue) -> types::Value {
            use super::GuestValue;
            match value {
                GuestValue::Str(s) => types::Value::Str(s),
                GuestValue::Int(i) => types::Value::Int(i),
                GuestValue::Float(x) => types::Value::Float(x),
                GuestValue::Boolean(b) => types::Value::Boolean(b),
                GuestValue::StrList(l) => types::Value::StrList(l),
            }
        }
    };
}

mod since_v0_1_0;
mod since_v0_2_0;
mod since_v0_3_0;

use wasmtime::component::{Component, ComponentType, Lift, Linker, WasmStr};
use wasmtime::{Engine, Store, StoreContextMut};

use super::state::StoreState;

/// The interface name prefix every node component exports.
const NODE_EXPORT: &str = "cretok:node/node@";
/// The versions these bindings speak, for messages.
pub(crate) const SUPPORTED_VERSIONS: &str = "0.1.x, 0.2.x, 0.3.x";
/// The imports a component may have (with any version suffix).
const ALLOWED_IMPORTS: [&str; 2] = ["cretok:node/host@", "cretok:node/types@"];

/// A port type, as the guest declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortType {
    Str,
    Int,
    Float,
    Boolean,
    StrList,
}

/// A value crossing the boundary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GuestValue {
    Str(String),
    Int(i64),
    Float(f64),
    Boolean(bool),
    StrList(Vec<String>),
}

impl GuestValue {
    pub(crate) fn port_type(&self) -> PortType {
        match self {
            GuestValue::Str(_) => PortType::Str,
            GuestValue::Int(_) => PortType::Int,
            GuestValue::Float(_) => PortType::Float,
            GuestValue::Boolean(_) => PortType::Boolean,
            GuestValue::StrList(_) => PortType::StrList,
        }
    }
}

/// A port as `describe` returned it (not yet validated).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GuestPort {
    pub name: String,
    pub kind: PortType,
    pub description: String,
    pub default: Option<GuestValue>,
    /// An input without a default that may be left out (0.2).
    pub optional: bool,
    /// An output that returns a list of items (0.3).
    pub is_list: bool,
}

/// A group of inputs the user grows in the editor (0.2), as `describe`
/// returned it (not yet validated).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GuestVariadic {
    pub name: String,
    pub prefix: String,
    pub kind: PortType,
    pub description: String,
    pub min: u32,
    pub max: u32,
}

/// A schema as `describe` returned it (not yet validated).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GuestSchema {
    pub id: String,
    pub display_name: String,
    pub category: String,
    pub description: String,
    pub inputs: Vec<GuestPort>,
    pub outputs: Vec<GuestPort>,
    pub extra_inputs: bool,
    pub variadic: Vec<GuestVariadic>,
}

/// The error a guest's `run` returned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GuestError {
    MissingInput(String),
    WrongType { input: String, reason: String },
    InvalidInput { input: String, reason: String },
    Failed(String),
}

/// How important a guest's log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Named values, in and out of `run`.
pub(crate) type NamedValues = Vec<(String, GuestValue)>;

/// Why a component cannot be hosted, found before instantiating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incompatible {
    /// It exports no `cretok:node/node` interface.
    NotANode { exports: Vec<String> },
    /// It was built against a version this host does not speak.
    UnsupportedVersion(String),
    /// It imports something the sandbox does not provide (WASI, ...).
    ForbiddenImport(String),
}

/// A component, type-checked and linked against the bindings of its version,
/// ready to be instantiated in a fresh store per call.
pub(crate) enum GuestPre {
    V0_1(since_v0_1_0::GuestPre),
    V0_2(since_v0_2_0::GuestPre),
    V0_3(since_v0_3_0::GuestPre),
}

impl GuestPre {
    /// Checks the component's imports and version and links it.
    pub(crate) fn new(
        engine: &Engine,
        component: &Component,
    ) -> Result<Result<Self, Incompatible>, wasmtime::Error> {
        let ty = component.component_type();
        if let Some((name, _)) = ty
            .imports(engine)
            .find(|(name, _)| !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)))
        {
            return Ok(Err(Incompatible::ForbiddenImport(name.to_owned())));
        }
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        let Some(version) = exports.iter().find_map(|n| n.strip_prefix(NODE_EXPORT)) else {
            return Ok(Err(Incompatible::NotANode { exports }));
        };
        if since_v0_1_0::speaks(version) {
            Ok(Ok(GuestPre::V0_1(since_v0_1_0::GuestPre::new(
                engine, component,
            )?)))
        } else if since_v0_2_0::speaks(version) {
            Ok(Ok(GuestPre::V0_2(since_v0_2_0::GuestPre::new(
                engine, component,
            )?)))
        } else if since_v0_3_0::speaks(version) {
            Ok(Ok(GuestPre::V0_3(since_v0_3_0::GuestPre::new(
                engine, component,
            )?)))
        } else {
            Ok(Err(Incompatible::UnsupportedVersion(version.to_owned())))
        }
    }

    /// Instantiates the component in `store` and calls `describe`.
    pub(crate) fn describe(&self, store: &mut Store<StoreState>) -> wasmtime::Result<GuestSchema> {
        match self {
            GuestPre::V0_1(pre) => pre.describe(store),
            GuestPre::V0_2(pre) => pre.describe(store),
            GuestPre::V0_3(pre) => pre.describe(store),
        }
    }

    /// Instantiates the component in `store` and calls `run`.
    pub(crate) fn run(
        &self,
        store: &mut Store<StoreState>,
        inputs: &[(String, GuestValue)],
    ) -> wasmtime::Result<Result<NamedValues, GuestError>> {
        match self {
            GuestPre::V0_1(pre) => pre.run(store, inputs),
            GuestPre::V0_2(pre) => pre.run(store, inputs),
            GuestPre::V0_3(pre) => pre.run(store, inputs),
        }
    }
}

/// Defines the `log` function of the host interface `interface`
/// (`cretok:node/host@X.Y.Z`) with the message taken lazily: it is checked in
/// the guest's memory and only the part the log keeps is copied, so a guest
/// cannot make the host allocate a huge line to cut it down. Every version's
/// `log(level, message: string)` goes through here, with its `log-level`.
pub(crate) fn add_log<Level>(
    linker: &mut Linker<StoreState>,
    interface: &str,
) -> wasmtime::Result<()>
where
    Level: ComponentType + Lift + Send + Sync + 'static,
    LogLevel: From<Level>,
{
    linker.instance(interface)?.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, StoreState>, (level, message): (Level, WasmStr)| {
            if !store.data().log.has_room() {
                store.data_mut().log.drop_line();
                return Ok(());
            }
            let kept = store.data().log.cut(&message.to_str(&store)?);
            store.data_mut().log.keep(LogLevel::from(level), kept);
            Ok(())
        },
    )
}

/// Parses `X.Y.Z` (ignoring pre-release and build tags).
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let triple = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(triple)
}

/// Whether a guest built against `version` can be hosted by bindings for
/// `min` (semver: same major, or same minor while the major is 0, and not
/// older than `min`).
fn compatible(version: &str, min: (u64, u64, u64)) -> bool {
    let Some(v) = parse_version(version) else {
        return false;
    };
    let same_line = if min.0 == 0 {
        v.0 == 0 && v.1 == min.1
    } else {
        v.0 == min.0
    };
    same_line && v >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_semver() {
        assert!(compatible("0.1.0", (0, 1, 0)));
        assert!(compatible("0.1.7", (0, 1, 0)));
        assert!(!compatible("0.2.0", (0, 1, 0)));
        assert!(!compatible("0.0.9", (0, 1, 0)));
        assert!(!compatible("1.1", (0, 1, 0)));
        assert!(compatible("1.4.0", (1, 2, 0)));
        assert!(!compatible("2.0.0", (1, 2, 0)));
        assert_eq!(parse_version("0.1.0-rc.1"), Some((0, 1, 0)));
    }
}
