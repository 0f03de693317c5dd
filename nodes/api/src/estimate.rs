//! Memory estimates: before a prompt runs, validation asks each node what its
//! outputs and its run will take, from literal inputs and the estimates of the
//! nodes it links to, and refuses prompts beyond the memory budget.
//!
//! Model weights are not counted: their size is the file the user chose, not a
//! number a prompt can inflate. Estimates cover what a prompt's numbers control:
//! latents, images, text.

use std::collections::HashMap;

use crate::{Inputs, Value};

/// Prompts bigger than this many nodes are refused before anything else is looked at.
pub const DEFAULT_MAX_NODES: usize = 10_000;

/// The default budget is this share of physical memory.
pub const DEFAULT_MEMORY_SHARE: f64 = 0.5;

/// The most items one list may hold (a list output, or the runs of a node
/// mapped over lists); the executor refuses a longer list, and validation
/// counts a list output whose length a node does not estimate as this long.
pub const MAX_LIST_ITEMS: u64 = 10_000;

/// The longest text an estimate keeps as a known value (longer ones keep
/// only their size): what a node run ahead of the prompt may be given.
pub const MAX_KNOWN_TEXT: usize = 64 * 1024;

/// The budget when physical memory cannot be read (no `/proc/meminfo`).
const FALLBACK_MEMORY_BYTES: u64 = 8 << 30;

/// What validation knows of one value before anything runs.
#[derive(Debug, Clone)]
pub struct ValueEstimate {
    /// The bytes it will take (a string's length, a tensor's elements × 4),
    /// all items together for a list.
    pub bytes: u64,
    /// The value itself when it is a known scalar (a literal, a primitive's constant).
    pub value: Option<Value>,
    /// How many items it holds: 1 for a plain value, the length (or a bound
    /// of it) for a list.
    pub items: u64,
}

impl Default for ValueEstimate {
    fn default() -> Self {
        ValueEstimate::bytes(0)
    }
}

impl ValueEstimate {
    pub fn bytes(bytes: u64) -> Self {
        ValueEstimate {
            bytes,
            value: None,
            items: 1,
        }
    }

    /// A list of `items` values of `bytes_per_item` each.
    pub fn list(bytes_per_item: u64, items: u64) -> Self {
        ValueEstimate {
            bytes: bytes_per_item.saturating_mul(items),
            value: None,
            items: items.max(1),
        }
    }

    /// One item of it (an average share of the bytes; the value only when it is not a list).
    pub fn item(&self) -> Self {
        if self.items <= 1 {
            return self.clone();
        }
        ValueEstimate::bytes(self.bytes.div_ceil(self.items))
    }

    /// The estimate of a known value; scalars and texts up to
    /// [`MAX_KNOWN_TEXT`] bytes keep the value itself.
    pub fn known(value: &Value) -> Self {
        let bytes = match value {
            Value::String(s) => s.len() as u64,
            Value::StringList(l) => l.iter().map(|s| s.len() as u64).sum(),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => 8,
            Value::Handle(_) => 0,
            Value::List(items) => {
                let bytes = items.iter().map(|v| Self::known(v).bytes).sum();
                return ValueEstimate::list(0, items.len() as u64).with_bytes(bytes);
            }
        };
        let kept = match value {
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => true,
            Value::String(s) => s.len() <= MAX_KNOWN_TEXT,
            _ => false,
        };
        ValueEstimate {
            bytes,
            value: kept.then(|| value.clone()),
            items: 1,
        }
    }

    fn with_bytes(mut self, bytes: u64) -> Self {
        self.bytes = bytes;
        self
    }
}

/// The bytes of an f32 tensor of `dims` (saturating: an absurd shape stays absurd).
pub fn f32_bytes(dims: &[u64]) -> u64 {
    dims.iter().fold(4u64, |acc, &d| acc.saturating_mul(d))
}

/// A node's estimate of one run.
#[derive(Debug, Clone, Default)]
pub struct Estimate {
    /// One per declared output, in order. Outputs not listed are estimated as
    /// the sum of the inputs (a pass-through).
    pub outputs: Vec<ValueEstimate>,
    /// What the run needs beyond its outputs (intermediate tensors), freed when it ends.
    pub working_bytes: u64,
}

impl Estimate {
    pub fn outputs(outputs: Vec<ValueEstimate>) -> Self {
        Estimate {
            outputs,
            working_bytes: 0,
        }
    }

    pub fn with_working_bytes(mut self, bytes: u64) -> Self {
        self.working_bytes = bytes;
        self
    }
}

/// The inputs an estimate sees, by name: literals (known) and the estimates of linked outputs.
#[derive(Debug, Clone, Default)]
pub struct EstimateInputs {
    inputs: HashMap<String, ValueEstimate>,
}

impl EstimateInputs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, estimate: ValueEstimate) {
        self.inputs.insert(name.into(), estimate);
    }

    pub fn with(mut self, name: &str, estimate: ValueEstimate) -> Self {
        self.insert(name, estimate);
        self
    }

    pub fn get(&self, name: &str) -> Option<&ValueEstimate> {
        self.inputs.get(name)
    }

    /// Every input's value, when each one is known before running.
    pub fn known_values(&self) -> Option<Inputs> {
        let mut inputs = Inputs::new();
        for (name, estimate) in &self.inputs {
            inputs.insert(name.clone(), estimate.value.clone()?);
        }
        Some(inputs)
    }

    /// The bytes of input `name`; 0 when it is not connected.
    pub fn bytes(&self, name: &str) -> u64 {
        self.get(name).map_or(0, |e| e.bytes)
    }

    /// The most items any input holds (1 when none is a list): the runs of a
    /// node mapped over its inputs' items.
    pub fn longest_list(&self) -> u64 {
        self.inputs
            .values()
            .map(|e| e.items)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// What one run of a node mapped over the items sees: one item of each input.
    pub fn per_item(&self) -> Self {
        let inputs = self
            .inputs
            .iter()
            .map(|(name, e)| (name.clone(), e.item()))
            .collect();
        EstimateInputs { inputs }
    }

    /// The sum of every input's bytes.
    pub fn total_bytes(&self) -> u64 {
        self.inputs
            .values()
            .fold(0, |acc, e| acc.saturating_add(e.bytes))
    }

    /// Input `name` when it is a known integer.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)?.value.as_ref()? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Input `name` when it is a known number.
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name)?.value.as_ref()? {
            Value::Float(x) => Some(*x),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

/// The limits a prompt is validated against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptLimits {
    /// The most nodes one prompt may have (`--max-nodes`).
    pub max_nodes: usize,
    /// The most memory a prompt's estimate may reach (`--max-memory-gb`).
    pub memory_bytes: u64,
}

impl Default for PromptLimits {
    fn default() -> Self {
        PromptLimits {
            max_nodes: DEFAULT_MAX_NODES,
            memory_bytes: default_memory_budget(),
        }
    }
}

/// [`DEFAULT_MEMORY_SHARE`] of physical memory.
pub fn default_memory_budget() -> u64 {
    cretok_support::memory::physical_bytes().map_or(FALLBACK_MEMORY_BYTES, |total| {
        (total as f64 * DEFAULT_MEMORY_SHARE) as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_is_a_share_of_physical_memory() {
        let budget = default_memory_budget();
        match cretok_support::memory::physical_bytes() {
            Some(total) => assert_eq!(budget, (total as f64 * DEFAULT_MEMORY_SHARE) as u64),
            None => assert_eq!(budget, FALLBACK_MEMORY_BYTES),
        }
    }

    #[test]
    fn scalars_and_short_texts_keep_their_value() {
        let long = ValueEstimate::known(&Value::String("x".repeat(MAX_KNOWN_TEXT + 1)));
        assert!(long.value.is_none());
        let list = ValueEstimate::known(&Value::List(vec![Value::Int(1), Value::Int(2)]));
        assert_eq!((list.items, list.value.is_none()), (2, true));
        let text = ValueEstimate::known(&Value::String("abc".into()));
        assert_eq!(text.bytes, 3);
        assert!(matches!(&text.value, Some(Value::String(t)) if t == "abc"));
        let inputs = EstimateInputs::new()
            .with("w", ValueEstimate::known(&Value::Int(64)))
            .with("t", text);
        assert_eq!(inputs.int("w"), Some(64));
        assert_eq!(inputs.float("w"), Some(64.0));
        assert_eq!(inputs.int("t"), None);
        assert_eq!(inputs.total_bytes(), 11);
        let known = inputs.known_values().unwrap();
        assert!(matches!(known.get("t"), Some(Value::String(t)) if t == "abc"));
        let unknown = inputs.with("image", ValueEstimate::bytes(100));
        assert!(unknown.known_values().is_none());
    }

    #[test]
    fn a_list_estimate_counts_its_items_and_shares_its_bytes() {
        let list = ValueEstimate::known(&Value::List(vec![
            Value::String("ab".into()),
            Value::String("abcd".into()),
        ]));
        assert_eq!((list.bytes, list.items), (6, 2));
        let item = list.item();
        assert_eq!((item.bytes, item.items), (3, 1));
        let bounded = ValueEstimate::list(100, MAX_LIST_ITEMS);
        assert_eq!(bounded.bytes, 100 * MAX_LIST_ITEMS);
        let one = ValueEstimate::known(&Value::Int(3));
        assert!(matches!(one.item().value, Some(Value::Int(3))));
    }

    #[test]
    fn tensor_sizes_saturate() {
        assert_eq!(f32_bytes(&[2, 16, 8, 8]), 2 * 16 * 8 * 8 * 4);
        assert_eq!(f32_bytes(&[u64::MAX, 2]), u64::MAX);
    }
}
