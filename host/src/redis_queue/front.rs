//! A front's view of the shared queue and history: what `cretok serve --redis`
//! routes use instead of the in-process queue.

use std::collections::HashSet;
use std::sync::Arc;

use redis::streams::{StreamId, StreamPendingCountReply, StreamRangeReply};
use redis::{Commands, Connection, RedisResult, Script};
use serde_json::{json, Value as Json};

use super::{
    cancel_key, ensure_group, Pool, CANCEL_TTL_S, CONTROL, GROUP, HISTORY, HISTORY_ORDER, IDS,
    JOB_FIELD, MAX_SCAN, NUMBER, PROMPTS,
};
use crate::backend::{
    history_page_start, BackendResult, HistoryPage, HistoryStore, PushError, QueueBackend,
    QueuedPrompt,
};
use crate::executor::PromptJob;
use crate::history::{HistoryRecord, JobState};

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
    fn next_number(&self, front: bool) -> BackendResult<i64> {
        let n: i64 = self
            .pool
            .with(|con| con.incr(NUMBER, 1))
            .map_err(|e| failed("did not number the prompt", e))?;
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
            .map_err(|e| PushError::Unavailable(failed("did not take the prompt", e)))?;
        let Ok(remaining) = usize::try_from(remaining) else {
            return Err(PushError::DuplicateId(job.prompt_id));
        };
        announce(remaining);
        Ok(())
    }

    fn remaining(&self) -> BackendResult<usize> {
        self.pool
            .with(|con| con.xlen(PROMPTS))
            .map_err(|e| failed("XLEN", e))
    }

    fn running(&self) -> BackendResult<Vec<QueuedPrompt>> {
        let state = self.state().map_err(|e| failed("queue", e))?;
        Ok(state
            .running
            .into_iter()
            .map(|(_, prompt)| prompt)
            .collect())
    }

    fn pending(&self) -> BackendResult<Vec<QueuedPrompt>> {
        let state = self.state().map_err(|e| failed("queue", e))?;
        Ok(state
            .pending
            .into_iter()
            .map(|(_, prompt)| prompt)
            .collect())
    }

    fn delete(&self, prompt_ids: &[String]) -> BackendResult<usize> {
        self.state()
            .and_then(|state| {
                let chosen = state
                    .pending
                    .into_iter()
                    .filter(|(_, p)| prompt_ids.contains(&p.prompt_id))
                    .collect();
                self.remove_pending(chosen)
            })
            .map_err(|e| failed("XDEL", e))
    }

    fn clear(&self) -> BackendResult<()> {
        self.state()
            .and_then(|state| self.remove_pending(state.pending))
            .map(drop)
            .map_err(|e| failed("XDEL", e))
    }

    /// Tells every worker; the one running the prompt stops it. A worker that
    /// claims the prompt later also sees the request (it is kept an hour).
    fn interrupt(&self, prompt_id: Option<&str>) -> BackendResult<bool> {
        let running = self.state().map_err(|e| failed("queue", e))?.running;
        let hit = running
            .iter()
            .any(|(_, p)| prompt_id.is_none_or(|id| id == p.prompt_id));
        if !hit {
            return Ok(false);
        }
        self.pool
            .with(|con| {
                if let Some(id) = prompt_id {
                    let () = con.set_ex(cancel_key(id), 1, CANCEL_TTL_S)?;
                }
                publish_control(con, &json!({"interrupt": prompt_id}))
            })
            .map_err(|e| failed("interrupt", e))?;
        Ok(true)
    }

    fn free_caches(&self) -> BackendResult<()> {
        self.pool
            .with(|con| publish_control(con, &json!({"free": true})))
            .map_err(|e| failed("free", e))
    }
}

/// How many entries a filtered `/jobs` page reads from Redis at a time.
const SCAN_CHUNK: usize = 500;

/// Reads the history entries `ids` (missing ones are left out; unreadable
/// ones are logged and left out).
fn read_entries(con: &mut Connection, ids: &[String]) -> RedisResult<Vec<Arc<HistoryRecord>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let texts: Vec<Option<String>> = redis::cmd("HMGET").arg(HISTORY).arg(ids).query(con)?;
    Ok(ids
        .iter()
        .zip(texts)
        .filter_map(|(id, text)| parse_entry(id, &text?))
        .collect())
}

fn parse_entry(prompt_id: &str, text: &str) -> Option<Arc<HistoryRecord>> {
    match serde_json::from_str(text) {
        Ok(record) => Some(Arc::new(record)),
        Err(e) => {
            tracing::warn!("history entry {prompt_id} in Redis is unreadable: {e}");
            None
        }
    }
}

/// The ids `first..=last` of the history order (oldest first), newest first.
fn ids_newest_first(con: &mut Connection, first: usize, last: usize) -> RedisResult<Vec<String>> {
    let mut ids: Vec<String> = con.lrange(HISTORY_ORDER, first as isize, last as isize)?;
    ids.reverse();
    Ok(ids)
}

impl RedisQueue {
    /// One page of every finished job: only its entries are read.
    fn newest_unfiltered(&self, offset: usize, limit: usize) -> RedisResult<HistoryPage> {
        self.pool.with(|con| {
            let total: usize = con.llen(HISTORY_ORDER)?;
            let Some(last) = total.checked_sub(offset.saturating_add(1)) else {
                return Ok(HistoryPage {
                    total,
                    records: Vec::new(),
                });
            };
            if limit == 0 {
                return Ok(HistoryPage {
                    total,
                    records: Vec::new(),
                });
            }
            let first = (last + 1).saturating_sub(limit);
            let ids = ids_newest_first(con, first, last)?;
            Ok(HistoryPage {
                total,
                records: read_entries(con, &ids)?,
            })
        })
    }

    /// A page of the jobs in some states: every entry is read (in chunks) to
    /// count them, but only the page is kept.
    fn newest_filtered(
        &self,
        wanted: &[JobState],
        offset: usize,
        limit: usize,
    ) -> RedisResult<HistoryPage> {
        self.pool.with(|con| {
            let len: usize = con.llen(HISTORY_ORDER)?;
            let mut page = HistoryPage::default();
            let mut end = len;
            while end > 0 {
                let first = end.saturating_sub(SCAN_CHUNK);
                let ids = ids_newest_first(con, first, end - 1)?;
                for record in read_entries(con, &ids)? {
                    if !wanted.contains(&record.job_state()) {
                        continue;
                    }
                    if page.total >= offset && page.records.len() < limit {
                        page.records.push(record);
                    }
                    page.total += 1;
                }
                end = first;
            }
            Ok(page)
        })
    }
}

/// A Redis failure as a backend error naming the command.
fn failed(what: &str, e: redis::RedisError) -> anyhow::Error {
    // Not `context`: a Redis error already repeats its source in its message.
    anyhow::anyhow!("Redis {what}: {e}")
}

impl HistoryStore for RedisQueue {
    fn get(&self, prompt_id: &str) -> BackendResult<Option<Arc<HistoryRecord>>> {
        let text: Option<String> = self
            .pool
            .with(|con| con.hget(HISTORY, prompt_id))
            .map_err(|e| failed("HGET", e))?;
        Ok(text.and_then(|t| parse_entry(prompt_id, &t)))
    }

    fn list(
        &self,
        max_items: Option<usize>,
        offset: Option<usize>,
    ) -> BackendResult<Vec<Arc<HistoryRecord>>> {
        self.pool
            .with(|con| {
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
                read_entries(con, &ids)
            })
            .map_err(|e| failed("history", e))
    }

    fn newest(
        &self,
        wanted: &[JobState],
        offset: usize,
        limit: usize,
    ) -> BackendResult<HistoryPage> {
        let page = if JobState::ALL.iter().all(|s| wanted.contains(s)) {
            self.newest_unfiltered(offset, limit)
        } else if wanted.is_empty() {
            Ok(HistoryPage::default())
        } else {
            self.newest_filtered(wanted, offset, limit)
        };
        page.map_err(|e| failed("history", e))
    }

    fn delete(&self, prompt_ids: &[String]) -> BackendResult<()> {
        if prompt_ids.is_empty() {
            return Ok(());
        }
        self.pool
            .with(|con| {
                let mut pipe = redis::pipe();
                pipe.atomic().hdel(HISTORY, prompt_ids).ignore();
                for id in prompt_ids {
                    pipe.lrem(HISTORY_ORDER, 0, id).ignore();
                }
                pipe.query::<()>(con)
            })
            .map_err(|e| failed("history delete", e))
    }

    fn clear(&self) -> BackendResult<()> {
        self.pool
            .with(|con| con.del::<_, ()>(&[HISTORY, HISTORY_ORDER]))
            .map_err(|e| failed("history clear", e))
    }
}
