use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Node, NodeSchema, PromptLimits};

/// Maps class names to node types, with the limits prompts of them are validated against.
#[derive(Clone, Default)]
pub struct Registry {
    nodes: BTreeMap<String, Arc<dyn Node>>,
    limits: PromptLimits,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node under its schema's name, replacing any node of that name.
    pub fn register(&mut self, node: Arc<dyn Node>) {
        self.nodes.insert(node.schema().name, node);
    }

    pub fn limits(&self) -> PromptLimits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: PromptLimits) {
        self.limits = limits;
    }

    pub fn get(&self, class_type: &str) -> Option<&Arc<dyn Node>> {
        self.nodes.get(class_type)
    }

    pub fn remove(&mut self, class_type: &str) -> Option<Arc<dyn Node>> {
        self.nodes.remove(class_type)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    pub fn schemas(&self) -> impl Iterator<Item = NodeSchema> + '_ {
        self.nodes.values().map(|n| n.schema())
    }

    /// The whole `/object_info` object.
    pub fn object_info(&self) -> serde_json::Value {
        self.schemas()
            .map(|s| (s.name.clone(), s.to_object_info()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}
