//! A front's view of the shared queue and history: what `cretok serve --redis`
//! routes use instead of the in-process queue.

use std::collections::HashSet;

use redis::streams::{StreamId, StreamPendingCountReply, StreamRangeReply};
use redis::{Commands, Connection, RedisResult, Script};
use serde_json::{json, Map, Value as Json};

use super::{
    cancel_key, ensure_group, Pool, CANCEL_TTL_S, CONTROL, GROUP, HISTORY, HISTORY_ORDER, IDS,
    JOB_FIELD, MAX_SCAN, NUMBER, PROMPTS,
};
use crate::backend::{history_page_start, HistoryStore, PushError, QueueBackend, QueuedPrompt};
use crate::executor::PromptJob;

/// Queues a prompt unless its id is queued, running or in history; answers
/// the stream's length, or -1 for a taken id.
/// KEYS: stream, history, queued ids. ARGV: prompt id, job field, job.
const PUSH: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('SADD', KEYS[3], ARGV[1]) == 0 then
  return -1
end
redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3])
return redis.call('XLEN', KEYS[1])
";

pub struct RedisQueue {
    pool: Pool,
}

/// The stream's prompts: those a worker holds, and those still waiting.
struct QueueState {
    running: Vec<(String, QueuedPrompt)>,
    pending: Vec<(String, QueuedPrompt)>,
}

/// The prompt of a stream entry, or `None` (logged) when it is malformed.
pub(super) fn entry_prompt(entry: &StreamId) -> Option<QueuedPrompt> {
    let parsed = entry
        .get::<String>(JOB_FIELD)
        .map(|text| serde_json::from_str::<QueuedPrompt>(&text));
    match parsed {
        Some(Ok(prompt)) => Some(prompt),
        _ => {
            tracing::warn!("stream entry {} holds no readable prompt", entry.id);
            None
        }
    }
}

/// Logs a failed Redis call and answers `fallback`, so routes keep answering.
fn or_log<T>(result: RedisResult<T>, what: &str, fallback: T) -> T {
    result.unwrap_or_else(|e| {
        tracing::error!("Redis {what}: {e}");
        fallback
    })
}

impl RedisQueue {
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = Pool::connect(url)?;
        pool.with(ensure_group)?;
        Ok(RedisQueue { pool })
    }

    /// A client for the event relay.
    pub fn client(&self) -> redis::Client {
        self.pool.client.clone()
    }

    fn state(&self) -> RedisResult<QueueState> {
        self.pool.with(|con| {
            let entries: StreamRangeReply = con.xrange_all(PROMPTS)?;
            let held: StreamPendingCountReply =
                con.xpending_count(PROMPTS, GROUP, "-", "+", MAX_SCAN)?;
            let held: HashSet<&str> = held.ids.iter().map(|p| p.id.as_str()).collect();
            let mut state = QueueState {
                running: Vec::new(),
                pending: Vec::new(),
            };
            for entry in entries.ids.iter().take(MAX_SCAN) {
                let Some(prompt) = entry_prompt(entry) else {
                    continue;
                };
                let list = if held.contains(entry.id.as_str()) {
                    &mut state.running
                } else {
                    &mut state.pending
                };
                list.push((entry.id.clone(), prompt));
            }
            Ok(state)
        })
    }
}

impl RedisQueue {
    /// Deletes waiting entries and frees their prompt ids; returns how many went.
    fn remove_pending(&self, entries: Vec<(String, QueuedPrompt)>) -> RedisResult<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        let (entry_ids, prompt_ids): (Vec<String>, Vec<String>) = entries
            .into_iter()
            .map(|(entry_id, prompt)| (entry_id, prompt.prompt_id))
            .unzip();
        self.pool.with(|con| {
            let (deleted,): (usize,) = redis::pipe()
                .atomic()
                .xdel(PROMPTS, entry_ids.as_slice())
                .srem(IDS, prompt_ids.as_slice())
                .ignore()
                .query(con)?;
            Ok(deleted)
        })
    }
}

fn publish_control(con: &mut Connection, request: &Json) -> RedisResult<()> {
    con.publish(CONTROL, request.to_string())
}

impl QueueBackend for RedisQueue {
    fn next_number(&self, front: bool) -> anyhow::Result<i64> {
        let n: i64 = self
            .pool
            .with(|con| con.incr(NUMBER, 1))
            // Not `context`: a Redis error already repeats its source in its message.
            .map_err(|e| anyhow::anyhow!("Redis did not number the prompt: {e}"))?;
        Ok(if front { -n } else { n })
    }

    /// Queues on the stream; workers take prompts in arrival order (`front`
    /// and `number` are kept for display).
    fn push(&self, job: PromptJob, announce: &dyn Fn(usize)) -> Result<(), PushError> {
        let entry = serde_json::to_string(&QueuedPrompt::of(&job))
            .map_err(|e| PushError::Unavailable(e.into()))?;
        let remaining: i64 = self
            .pool
            .with(|con| {
                Script::new(PUSH)
                    .key(PROMPTS)
                    .key(HISTORY)
                    .key(IDS)
                    .arg(&job.prompt_id)
                    .arg(JOB_FIELD)
                    .arg(entry)
                    .invoke(con)
            })
            .map_err(|e| {
                PushError::Unavailable(anyhow::anyhow!("Redis did not take the prompt: {e}"))
            })?;
        let Ok(remaining) = usize::try_from(remaining) else {
            return Err(PushError::DuplicateId(job.prompt_id));
        };
        announce(remaining);
        Ok(())
    }

    fn remaining(&self) -> usize {
        or_log(self.pool.with(|con| con.xlen(PROMPTS)), "XLEN", 0)
    }

    fn running(&self) -> Vec<QueuedPrompt> {
        or_log(self.state().map(|s| s.running), "queue", Vec::new())
            .into_iter()
            .map(|(_, prompt)| prompt)
            .collect()
    }

    fn pending(&self) -> Vec<QueuedPrompt> {
        or_log(self.state().map(|s| s.pending), "queue", Vec::new())
            .into_iter()
            .map(|(_, prompt)| prompt)
            .collect()
    }

    fn delete(&self, prompt_ids: &[String]) -> usize {
        let deleted = self.state().and_then(|state| {
            let chosen = state
                .pending
                .into_iter()
                .filter(|(_, p)| prompt_ids.contains(&p.prompt_id))
                .collect();
            self.remove_pending(chosen)
        });
        or_log(deleted, "XDEL", 0)
    }

    fn clear(&self) {
        let cleared = self
            .state()
            .and_then(|state| self.remove_pending(state.pending));
        or_log(cleared, "XDEL", 0);
    }

    /// Tells every worker; the one running the prompt stops it. A worker that
    /// claims the prompt later also sees the request (it is kept an hour).
    fn interrupt(&self, prompt_id: Option<&str>) -> bool {
        let running = or_log(self.state().map(|s| s.running), "queue", Vec::new());
        let hit = running
            .iter()
            .any(|(_, p)| prompt_id.is_none_or(|id| id == p.prompt_id));
        if !hit {
            return false;
        }
        let sent = self.pool.with(|con| {
            if let Some(id) = prompt_id {
                let () = con.set_ex(cancel_key(id), 1, CANCEL_TTL_S)?;
            }
            publish_control(con, &json!({"interrupt": prompt_id}))
        });
        or_log(sent.map(|()| true), "interrupt", false)
    }

    fn free_caches(&self) {
        let sent = self
            .pool
            .with(|con| publish_control(con, &json!({"free": true})));
        or_log(sent, "free", ());
    }
}

impl HistoryStore for RedisQueue {
    fn get(&self, prompt_id: &str) -> Option<Json> {
        let text: Option<String> = or_log(
            self.pool.with(|con| con.hget(HISTORY, prompt_id)),
            "HGET",
            None,
        );
        text.and_then(|t| serde_json::from_str(&t).ok())
    }

    fn list(&self, max_items: Option<usize>, offset: Option<usize>) -> Map<String, Json> {
        let entries = self.pool.with(|con| {
            let len: usize = con.llen(HISTORY_ORDER)?;
            let start = history_page_start(len, max_items, offset);
            let count = max_items
                .unwrap_or(usize::MAX)
                .min(len.saturating_sub(start));
            if count == 0 {
                return Ok(Vec::new());
            }
            let ids: Vec<String> =
                con.lrange(HISTORY_ORDER, start as isize, (start + count - 1) as isize)?;
            let texts: Vec<Option<String>> =
                redis::cmd("HMGET").arg(HISTORY).arg(&ids).query(con)?;
            Ok(ids.into_iter().zip(texts).collect())
        });
        or_log(entries, "history", Vec::new())
            .into_iter()
            .filter_map(|(id, text)| Some((id, serde_json::from_str(&text?).ok()?)))
            .collect()
    }

    fn delete(&self, prompt_ids: &[String]) {
        if prompt_ids.is_empty() {
            return;
        }
        let deleted = self.pool.with(|con| {
            let mut pipe = redis::pipe();
            pipe.atomic().hdel(HISTORY, prompt_ids).ignore();
            for id in prompt_ids {
                pipe.lrem(HISTORY_ORDER, 0, id).ignore();
            }
            pipe.query::<()>(con)
        });
        or_log(deleted, "history delete", ());
    }

    fn clear(&self) {
        let cleared = self
            .pool
            .with(|con| con.del::<_, ()>(&[HISTORY, HISTORY_ORDER]));
        or_log(cleared, "history clear", ());
    }
}
