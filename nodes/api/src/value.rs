use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A heavy value passed between nodes (a model, a tensor, a learned token).
/// It is shared, never copied: cloning a [`Value::Handle`] clones the `Arc`.
pub type Handle = Arc<dyn Any + Send + Sync>;

/// A value flowing along a link or given as a literal widget input.
#[derive(Clone)]
pub enum Value {
    Int(i64),
    Float(f64),
    String(String),
    Bool(bool),
    /// A list of strings (the `STRING_LIST` link type of sandboxed nodes).
    StringList(Vec<String>),
    /// Anything else, typed by the link type declared in the schema.
    Handle(Handle),
    /// The items of a list (ComfyUI's `OUTPUT_IS_LIST` / `INPUT_IS_LIST`): what
    /// a list output returns per run, and what a node that takes whole lists
    /// receives for each input. It never flows along a link as one value: the
    /// executor maps plain nodes over its items.
    List(Vec<Value>),
}

impl Value {
    /// Wraps a heavy value in a shared handle.
    pub fn handle<T: Any + Send + Sync>(value: T) -> Self {
        Value::Handle(Arc::new(value))
    }

    /// Turns a JSON literal from an API-format prompt into a value.
    /// Returns `None` for JSON that no widget accepts (objects, null, nested lists).
    pub fn from_json(json: &serde_json::Value) -> Option<Self> {
        use serde_json::Value as J;
        match json {
            J::Bool(b) => Some(Value::Bool(*b)),
            J::Number(n) => match n.as_i64() {
                Some(i) => Some(Value::Int(i)),
                None => n.as_f64().map(Value::Float),
            },
            J::String(s) => Some(Value::String(s.clone())),
            J::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Value::StringList),
            J::Null | J::Object(_) => None,
        }
    }

    /// The JSON form of a plain value (used in history and `current_inputs`);
    /// handles have none.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        match self {
            Value::Int(i) => Some(J::from(*i)),
            Value::Float(f) => Some(J::from(*f)),
            Value::String(s) => Some(J::from(s.as_str())),
            Value::Bool(b) => Some(J::from(*b)),
            Value::StringList(l) => Some(J::from(l.clone())),
            Value::Handle(_) => None,
            Value::List(items) => items
                .iter()
                .map(Value::to_json)
                .collect::<Option<Vec<_>>>()
                .map(J::Array),
        }
    }

    /// A short name of the variant, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "INT",
            Value::Float(_) => "FLOAT",
            Value::String(_) => "STRING",
            Value::Bool(_) => "BOOLEAN",
            Value::StringList(_) => "STRING_LIST",
            Value::Handle(_) => "handle",
            Value::List(_) => "LIST",
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "Int({i})"),
            Value::Float(x) => write!(f, "Float({x})"),
            Value::String(s) => write!(f, "String({s:?})"),
            Value::Bool(b) => write!(f, "Bool({b})"),
            Value::StringList(l) => write!(f, "StringList({l:?})"),
            Value::Handle(_) => write!(f, "Handle(..)"),
            Value::List(items) => f.debug_tuple("List").field(items).finish(),
        }
    }
}
