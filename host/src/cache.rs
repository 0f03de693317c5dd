//! Node output caching across prompts, keyed on each node's input signature:
//! its class, fingerprint, literal inputs and the signatures of what it links to.
//! An unchanged subgraph therefore keeps its outputs (a loaded model, a trained
//! token) while anything downstream of a change re-runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::mapping::Items;
use crate::validation::{ResolvedInput, ResolvedNode};

/// A node's input signature (a sha256 of its canonical description).
pub type Signature = String;

/// What a node produced, as cached: shared (never copied) between the cache
/// and the prompt that uses it, so a big text is held once.
pub struct CachedOutput {
    /// The items of each output (one for a plain output of a single run).
    pub values: Vec<Items>,
    pub ui: Option<serde_json::Value>,
}

/// Computes signatures for nodes given in dependency order.
pub fn signatures(
    order: &[String],
    nodes: &BTreeMap<String, ResolvedNode>,
    fingerprints: &HashMap<String, String>,
) -> HashMap<String, Signature> {
    let mut sigs: HashMap<String, Signature> = HashMap::new();
    for id in order {
        let node = &nodes[id];
        let mut hasher = Sha256::new();
        hasher.update(node.class_type.as_bytes());
        if let Some(fp) = fingerprints.get(id) {
            hasher.update(b"\0fingerprint\0");
            hasher.update(fp.as_bytes());
        }
        for (name, input) in &node.inputs {
            hasher.update(b"\0input\0");
            hasher.update(name.as_bytes());
            hasher.update(b"=");
            match input {
                ResolvedInput::Link { node, slot } => {
                    hasher.update(format!("link({},{slot})", sigs[node]).as_bytes());
                }
                ResolvedInput::Value(v) => {
                    let json = v.to_json().unwrap_or_default();
                    hasher.update(format!("{}:{json}", v.kind_name()).as_bytes());
                }
            }
        }
        sigs.insert(id.clone(), format!("{:x}", hasher.finalize()));
    }
    sigs
}

/// Outputs of recent prompts. After each prompt only the entries it used or
/// produced are kept (ComfyUI's classic policy): memory stays bounded by one
/// prompt's worth of models and tensors.
#[derive(Default)]
pub struct OutputCache {
    entries: HashMap<Signature, Arc<CachedOutput>>,
}

impl OutputCache {
    pub fn get(&self, sig: &str) -> Option<&Arc<CachedOutput>> {
        self.entries.get(sig)
    }

    pub fn insert(&mut self, sig: Signature, output: Arc<CachedOutput>) {
        self.entries.insert(sig, output);
    }

    /// Drops every entry not in `keep`.
    pub fn retain_only(&mut self, keep: &HashSet<&Signature>) {
        self.entries.retain(|sig, _| keep.contains(sig));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use cretok_node_api::Value;

    use super::*;

    fn output(text: &str) -> (Arc<CachedOutput>, Weak<String>) {
        let value = Arc::new(text.to_owned());
        let weak = Arc::downgrade(&value);
        let output = CachedOutput {
            values: vec![vec![Value::Handle(value)]],
            ui: None,
        };
        (Arc::new(output), weak)
    }

    #[test]
    fn values_outside_the_kept_set_are_freed() {
        let mut cache = OutputCache::default();
        let (kept, kept_value) = output("kept");
        let (dropped, dropped_value) = output("dropped");
        cache.insert("a".into(), kept);
        cache.insert("b".into(), dropped);
        let a: Signature = "a".into();
        cache.retain_only(&HashSet::from([&a]));
        assert!(cache.get("a").is_some() && cache.get("b").is_none());
        assert!(kept_value.upgrade().is_some());
        assert!(dropped_value.upgrade().is_none(), "the value must be freed");
        cache.clear();
        assert!(kept_value.upgrade().is_none());
    }
}
