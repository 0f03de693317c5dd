//! Finished prompts: the typed record that the executor hands to every
//! reader (`/history`, `/jobs`, the Redis backend), its ComfyUI wire shape,
//! and the in-process store (newest last, bounded).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value as Json};

use crate::backend::{history_page_start, BackendResult, HistoryPage, HistoryStore, QueuedPrompt};
use crate::executor::{ExecutionRecord, Outcome};
use crate::protocol::ServerMessage;

/// How many prompts history keeps (ComfyUI's limit).
pub const MAX_HISTORY: usize = 10_000;

/// How a finished prompt reads as a job (`/jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 3] = [JobState::Completed, JobState::Failed, JobState::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// A finished prompt: what was asked, how it ended, what it made and when.
/// Serialises to ComfyUI's history entry, the shape clients read and the
/// Redis backend stores.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRecord {
    pub prompt: QueuedPrompt,
    pub outcome: Outcome,
    /// UI outputs of output nodes, by node id.
    pub outputs: BTreeMap<String, Json>,
    /// Start, cached, then success, error or interruption, with their timestamps.
    pub events: Vec<ServerMessage>,
}

impl HistoryRecord {
    pub fn new(prompt: QueuedPrompt, run: ExecutionRecord) -> Self {
        HistoryRecord {
            prompt,
            outcome: run.outcome,
            outputs: run.outputs,
            events: run.events,
        }
    }

    pub fn prompt_id(&self) -> &str {
        &self.prompt.prompt_id
    }

    pub fn job_state(&self) -> JobState {
        match self.outcome {
            Outcome::Success => JobState::Completed,
            Outcome::Error => JobState::Failed,
            Outcome::Interrupted => JobState::Cancelled,
        }
    }

    /// When execution started (ms since the epoch), unless it never did.
    pub fn started_at(&self) -> Option<u64> {
        self.events.iter().find_map(|e| match e {
            ServerMessage::ExecutionStart { timestamp, .. } => Some(*timestamp),
            _ => None,
        })
    }

    /// When it ended: its success, error or interruption event.
    pub fn ended_at(&self) -> Option<u64> {
        self.events.iter().rev().find_map(|e| match e {
            ServerMessage::ExecutionSuccess { timestamp, .. }
            | ServerMessage::ExecutionError { timestamp, .. }
            | ServerMessage::ExecutionInterrupted { timestamp, .. } => Some(*timestamp),
            _ => None,
        })
    }

    /// The error event of a failed prompt.
    pub fn error(&self) -> Option<&ServerMessage> {
        self.events
            .iter()
            .find(|e| matches!(e, ServerMessage::ExecutionError { .. }))
    }

    /// The `status` part of the entry: `{status_str, completed, messages}`.
    pub fn status_json(&self) -> Json {
        let success = self.outcome == Outcome::Success;
        let messages: Vec<Json> = self
            .events
            .iter()
            .map(|e| {
                let (name, data) = e.name_and_data();
                json!([name, data])
            })
            .collect();
        json!({
            "status_str": if success { "success" } else { "error" },
            "completed": success,
            "messages": messages,
        })
    }
}

/// `meta` of an entry: each output node names itself (no subgraphs here).
#[derive(Serialize)]
struct NodeMeta<'a> {
    node_id: &'a str,
    display_node: &'a str,
    parent_node: Option<&'a str>,
    real_node_id: &'a str,
}

/// The entry as ComfyUI writes it; `prompt` is the `/queue` 5-tuple.
#[derive(Serialize)]
struct WireEntry<'a> {
    prompt: (i64, &'a str, &'a Json, &'a Json, &'a [String]),
    outputs: &'a BTreeMap<String, Json>,
    status: Json,
    meta: BTreeMap<&'a str, NodeMeta<'a>>,
}

/// The entry as read back (`meta` follows from `outputs`).
#[derive(Deserialize)]
struct StoredEntry {
    prompt: (i64, String, Json, Json, Vec<String>),
    outputs: BTreeMap<String, Json>,
    status: StoredStatus,
}

#[derive(Deserialize)]
struct StoredStatus {
    status_str: String,
    messages: Vec<(String, Json)>,
}

impl Serialize for HistoryRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = &self.prompt;
        let meta = self
            .outputs
            .keys()
            .map(|id| {
                let meta = NodeMeta {
                    node_id: id,
                    display_node: id,
                    parent_node: None,
                    real_node_id: id,
                };
                (id.as_str(), meta)
            })
            .collect();
        WireEntry {
            prompt: (p.number, &p.prompt_id, &p.prompt, &p.extra_data, &p.outputs),
            outputs: &self.outputs,
            status: self.status_json(),
            meta,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for HistoryRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredEntry::deserialize(deserializer)?;
        let (number, prompt_id, prompt, extra_data, outputs) = stored.prompt;
        let events = stored
            .status
            .messages
            .into_iter()
            .map(|(name, data)| {
                ServerMessage::deserialize(json!({"type": name, "data": data}))
                    .map_err(|e| D::Error::custom(format!("history message '{name}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let interrupted = events
            .iter()
            .any(|e| matches!(e, ServerMessage::ExecutionInterrupted { .. }));
        let outcome = match stored.status.status_str.as_str() {
            "success" => Outcome::Success,
            _ if interrupted => Outcome::Interrupted,
            _ => Outcome::Error,
        };
        let client_id = extra_data
            .get("client_id")
            .and_then(Json::as_str)
            .map(str::to_owned);
        Ok(HistoryRecord {
            prompt: QueuedPrompt {
                prompt_id,
                number,
                prompt,
                extra_data,
                outputs,
                client_id,
            },
            outcome,
            outputs: stored.outputs,
            events,
        })
    }
}

#[derive(Default)]
struct Entries {
    order: VecDeque<String>,
    by_id: HashMap<String, Arc<HistoryRecord>>,
}

/// History in this process.
#[derive(Default)]
pub struct History {
    entries: Mutex<Entries>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, record: HistoryRecord) {
        let id = record.prompt_id().to_owned();
        let mut e = self.lock();
        if e.by_id.insert(id.clone(), Arc::new(record)).is_none() {
            e.order.push_back(id);
        }
        while e.order.len() > MAX_HISTORY {
            if let Some(old) = e.order.pop_front() {
                e.by_id.remove(&old);
            }
        }
    }
}

impl HistoryStore for History {
    fn get(&self, prompt_id: &str) -> BackendResult<Option<Arc<HistoryRecord>>> {
        Ok(self.lock().by_id.get(prompt_id).cloned())
    }

    fn list(
        &self,
        max_items: Option<usize>,
        offset: Option<usize>,
    ) -> BackendResult<Vec<Arc<HistoryRecord>>> {
        let e = self.lock();
        let start = history_page_start(e.order.len(), max_items, offset);
        Ok(e.order
            .iter()
            .skip(start)
            .take(max_items.unwrap_or(usize::MAX))
            .map(|id| Arc::clone(&e.by_id[id]))
            .collect())
    }

    fn newest(
        &self,
        wanted: &[JobState],
        offset: usize,
        limit: usize,
    ) -> BackendResult<HistoryPage> {
        let e = self.lock();
        let newest_first = e.order.iter().rev().map(|id| &e.by_id[id]);
        if JobState::ALL.iter().all(|s| wanted.contains(s)) {
            let records = newest_first.skip(offset).take(limit).cloned().collect();
            return Ok(HistoryPage {
                total: e.order.len(),
                records,
            });
        }
        let mut page = HistoryPage::default();
        for record in newest_first.filter(|r| wanted.contains(&r.job_state())) {
            if page.total >= offset && page.records.len() < limit {
                page.records.push(Arc::clone(record));
            }
            page.total += 1;
        }
        Ok(page)
    }

    fn delete(&self, prompt_ids: &[String]) -> BackendResult<()> {
        let mut e = self.lock();
        for id in prompt_ids {
            e.by_id.remove(id);
        }
        e.order.retain(|id| !prompt_ids.contains(id));
        Ok(())
    }

    fn clear(&self) -> BackendResult<()> {
        let mut e = self.lock();
        e.order.clear();
        e.by_id.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FailedNode;

    fn record(outcome: Outcome) -> HistoryRecord {
        let prompt = QueuedPrompt {
            prompt_id: "p1".into(),
            number: 4,
            prompt: json!({"1": {"class_type": "Delay", "inputs": {}}}),
            extra_data: json!({"client_id": "alice", "create_time": 1}),
            outputs: vec!["1".into()],
            client_id: Some("alice".into()),
        };
        let mut events = vec![
            ServerMessage::ExecutionStart {
                prompt_id: "p1".into(),
                timestamp: 10,
            },
            ServerMessage::ExecutionCached {
                nodes: vec![],
                prompt_id: "p1".into(),
                timestamp: 11,
            },
        ];
        let failed = FailedNode {
            prompt_id: "p1".into(),
            node_id: "1".into(),
            node_type: "Delay".into(),
            executed: vec![],
        };
        events.push(match outcome {
            Outcome::Success => ServerMessage::ExecutionSuccess {
                prompt_id: "p1".into(),
                timestamp: 20,
            },
            Outcome::Interrupted => ServerMessage::ExecutionInterrupted {
                failed,
                timestamp: 20,
            },
            Outcome::Error => ServerMessage::ExecutionError {
                failed,
                exception_message: "boom".into(),
                exception_type: "RuntimeError".into(),
                traceback: vec![],
                current_inputs: json!({}),
                current_outputs: vec![],
                timestamp: 20,
            },
        });
        HistoryRecord {
            prompt,
            outcome,
            outputs: [("1".to_owned(), json!({"text": ["hi"]}))].into(),
            events,
        }
    }

    #[test]
    fn the_record_serialises_to_comfyui_s_history_entry() {
        let wire = serde_json::to_value(record(Outcome::Success)).unwrap();
        assert_eq!(
            wire["prompt"],
            json!([4, "p1", {"1": {"class_type": "Delay", "inputs": {}}},
                   {"client_id": "alice", "create_time": 1}, ["1"]])
        );
        assert_eq!(wire["outputs"], json!({"1": {"text": ["hi"]}}));
        assert_eq!(wire["status"]["status_str"], "success");
        assert_eq!(wire["status"]["completed"], true);
        assert_eq!(wire["status"]["messages"][0][0], "execution_start");
        assert_eq!(wire["status"]["messages"][2][1]["timestamp"], 20);
        assert_eq!(
            wire["meta"]["1"],
            json!({"node_id": "1", "display_node": "1", "parent_node": null, "real_node_id": "1"})
        );
    }

    #[test]
    fn every_outcome_round_trips_through_its_wire_shape() {
        for outcome in [Outcome::Success, Outcome::Error, Outcome::Interrupted] {
            let sent = record(outcome);
            let text = serde_json::to_string(&sent).unwrap();
            let back: HistoryRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(back, sent);
            assert_eq!((back.started_at(), back.ended_at()), (Some(10), Some(20)));
        }
        assert!(record(Outcome::Error).error().is_some());
        assert_eq!(
            record(Outcome::Interrupted).job_state(),
            JobState::Cancelled
        );
    }

    #[test]
    fn newest_pages_and_filters_without_walking_into_other_pages() {
        let history = History::new();
        for i in 0..25_u32 {
            let mut r = record(if i.is_multiple_of(5) {
                Outcome::Error
            } else {
                Outcome::Success
            });
            r.prompt.prompt_id = format!("p{i}");
            history.insert(r);
        }
        let page = history.newest(&JobState::ALL, 3, 4).unwrap();
        let ids: Vec<&str> = page.records.iter().map(|r| r.prompt_id()).collect();
        assert_eq!((page.total, ids), (25, vec!["p21", "p20", "p19", "p18"]));
        let failed = history.newest(&[JobState::Failed], 1, 10).unwrap();
        let ids: Vec<&str> = failed.records.iter().map(|r| r.prompt_id()).collect();
        assert_eq!((failed.total, ids), (5, vec!["p15", "p10", "p5", "p0"]));
        assert_eq!(history.newest(&[], 0, 10).unwrap().total, 0);
    }
}
