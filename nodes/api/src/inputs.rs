use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use crate::{NodeError, Value};

/// The resolved inputs of one node run: literals and upstream outputs, by input name.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    values: HashMap<String, Value>,
}

impl Inputs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: Value) {
        self.values.insert(name.into(), value);
    }

    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.insert(name, value);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.values.iter()
    }

    fn required(&self, name: &str) -> Result<&Value, NodeError> {
        self.get(name)
            .ok_or_else(|| NodeError::invalid_input(name, "missing"))
    }

    fn wrong_type(name: &str, want: &str, got: &Value) -> NodeError {
        NodeError::invalid_input(name, format!("expected {want}, got {}", got.kind_name()))
    }

    /// An optional input read with `read` (e.g. [`Inputs::bool`]), or `default` when the prompt
    /// leaves it out (workflows written before the input existed).
    pub fn optional<'i, T>(
        &'i self,
        name: &str,
        read: impl FnOnce(&'i Inputs, &str) -> Result<T, NodeError>,
        default: T,
    ) -> Result<T, NodeError> {
        match self.get(name) {
            Some(_) => read(self, name),
            None => Ok(default),
        }
    }

    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        match self.required(name)? {
            Value::Int(i) => Ok(*i),
            other => Err(Self::wrong_type(name, "INT", other)),
        }
    }

    /// A float input; integers are accepted, as the editor may send `5` for `5.0`.
    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        match self.required(name)? {
            Value::Float(x) => Ok(*x),
            Value::Int(i) => Ok(*i as f64),
            other => Err(Self::wrong_type(name, "FLOAT", other)),
        }
    }

    pub fn string(&self, name: &str) -> Result<&str, NodeError> {
        match self.required(name)? {
            Value::String(s) => Ok(s),
            other => Err(Self::wrong_type(name, "STRING", other)),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        match self.required(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(Self::wrong_type(name, "BOOLEAN", other)),
        }
    }

    pub fn string_list(&self, name: &str) -> Result<&[String], NodeError> {
        match self.required(name)? {
            Value::StringList(l) => Ok(l),
            other => Err(Self::wrong_type(name, "STRING_LIST", other)),
        }
    }

    /// The items of input `name` of a node that takes whole lists
    /// ([`crate::NodeSchema::input_is_list`]).
    pub fn list(&self, name: &str) -> Result<&[Value], NodeError> {
        match self.required(name)? {
            Value::List(items) => Ok(items),
            other => Err(Self::wrong_type(name, "a list", other)),
        }
    }

    /// A heavy value of type `T` (a model, a latent, ...).
    pub fn handle<T: Any + Send + Sync>(&self, name: &str) -> Result<Arc<T>, NodeError> {
        match self.required(name)? {
            Value::Handle(h) => Arc::clone(h).downcast::<T>().map_err(|_| {
                NodeError::invalid_input(
                    name,
                    format!("expected a {} value", std::any::type_name::<T>()),
                )
            }),
            other => Err(Self::wrong_type(name, std::any::type_name::<T>(), other)),
        }
    }

    /// An optional heavy value: `None` when the input is not connected.
    pub fn opt_handle<T: Any + Send + Sync>(
        &self,
        name: &str,
    ) -> Result<Option<Arc<T>>, NodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.handle(name).map(Some),
        }
    }
}
