//! Finished prompts: their outputs and status, newest last, bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::{json, Map, Value as Json};

use crate::backend::{history_page_start, HistoryStore, QueuedPrompt};
use crate::executor::{ExecutionRecord, Outcome};

/// How many prompts history keeps (ComfyUI's limit).
pub const MAX_HISTORY: usize = 10_000;

#[derive(Default)]
struct Entries {
    order: VecDeque<String>,
    by_id: HashMap<String, Json>,
}

#[derive(Default)]
pub struct History {
    entries: Mutex<Entries>,
}

/// A history entry in ComfyUI's shape.
pub fn history_entry(prompt: &QueuedPrompt, record: &ExecutionRecord) -> Json {
    let (status_str, completed) = match record.outcome {
        Outcome::Success => ("success", true),
        Outcome::Error | Outcome::Interrupted => ("error", false),
    };
    let messages: Vec<Json> = record
        .messages
        .iter()
        .map(|(name, data)| json!([name, data]))
        .collect();
    let meta: Map<String, Json> = record
        .outputs
        .keys()
        .map(|id| {
            (
                id.clone(),
                json!({"node_id": id, "display_node": id, "parent_node": null, "real_node_id": id}),
            )
        })
        .collect();
    json!({
        "prompt": prompt.tuple(),
        "outputs": record.outputs,
        "status": {"status_str": status_str, "completed": completed, "messages": messages},
        "meta": meta,
    })
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, prompt_id: &str, entry: Json) {
        let mut e = self.lock();
        if e.by_id.insert(prompt_id.to_owned(), entry).is_none() {
            e.order.push_back(prompt_id.to_owned());
        }
        while e.order.len() > MAX_HISTORY {
            if let Some(old) = e.order.pop_front() {
                e.by_id.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl HistoryStore for History {
    fn get(&self, prompt_id: &str) -> Option<Json> {
        self.lock().by_id.get(prompt_id).cloned()
    }

    fn list(&self, max_items: Option<usize>, offset: Option<usize>) -> Map<String, Json> {
        let e = self.lock();
        let start = history_page_start(e.order.len(), max_items, offset);
        e.order
            .iter()
            .skip(start)
            .take(max_items.unwrap_or(usize::MAX))
            .map(|id| (id.clone(), e.by_id[id].clone()))
            .collect()
    }

    fn delete(&self, prompt_ids: &[String]) {
        let mut e = self.lock();
        for id in prompt_ids {
            e.by_id.remove(id);
        }
        e.order.retain(|id| !prompt_ids.contains(id));
    }

    fn clear(&self) {
        let mut e = self.lock();
        e.order.clear();
        e.by_id.clear();
    }
}
