//! The shared queue of `--redis` deployments: fronts (`cretok serve --redis`)
//! queue prompts on a Redis Stream, workers (`cretok worker`) take them
//! through a consumer group, publish their events for the fronts to relay,
//! and write history every front reads (see docs/scaleout.md).

mod events;
mod front;
mod worker;

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use redis::{Client, Connection, RedisResult};

pub use events::spawn_relay;
pub use front::RedisQueue;
pub use worker::{RedisWorker, WorkerSettings};

/// The stream of queued prompts; an entry is deleted when its prompt is acknowledged.
const PROMPTS: &str = "cretok:prompts";
/// The workers' consumer group on [`PROMPTS`].
const GROUP: &str = "workers";
/// The stream entry field holding the prompt (a JSON `QueuedPrompt`).
const JOB_FIELD: &str = "job";
/// The ids of prompts on [`PROMPTS`] (a prompt id is refused while it is here or in history).
const IDS: &str = "cretok:prompt-ids";
/// Where a prompt delivered too often without finishing goes, with the reason.
const DEAD_LETTERS: &str = "cretok:dead-letters";
/// Counter of prompt numbers.
const NUMBER: &str = "cretok:number";
/// History entries by prompt id, and their order (oldest first).
const HISTORY: &str = "cretok:history";
const HISTORY_ORDER: &str = "cretok:history:order";
/// Pub/sub channel of execution events, relayed by every front.
const EVENTS: &str = "cretok:events";
/// Pub/sub channel of interrupt and free requests, heard by every worker.
const CONTROL: &str = "cretok:control";
/// How long a finished prompt's marker lives (a claim after that would run it again).
const DONE_TTL_S: u64 = 7 * 24 * 3600;
/// How long an interrupt request for a prompt id stays visible to the worker that claims it.
const CANCEL_TTL_S: u64 = 3600;
/// Most entries `/queue` reads from the stream.
const MAX_SCAN: usize = 10_000;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a command may wait for Redis (a blocking read asks for less).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept for the routes.
const MAX_IDLE: usize = 8;

fn done_key(prompt_id: &str) -> String {
    format!("cretok:done:{prompt_id}")
}

fn cancel_key(prompt_id: &str) -> String {
    format!("cretok:cancel:{prompt_id}")
}

/// A few blocking connections to Redis, reused across calls.
struct Pool {
    client: Client,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    /// Connects once, so a wrong URL or a stopped Redis fails at start.
    fn connect(url: &str) -> anyhow::Result<Pool> {
        let client = Client::open(url).with_context(|| format!("bad Redis URL {url}"))?;
        let pool = Pool {
            client,
            idle: Mutex::new(Vec::new()),
        };
        pool.with(|con| redis::cmd("PING").query::<String>(con))
            .with_context(|| format!("cannot reach Redis at {url}"))?;
        Ok(pool)
    }

    fn open(&self) -> RedisResult<Connection> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    /// Runs `f` on a pooled connection; a connection that failed is dropped.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut con = match pooled {
            Some(con) => con,
            None => self.open()?,
        };
        let result = f(&mut con);
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(con);
            }
        }
        result
    }
}

/// Creates the consumer group (and the stream) unless they exist; from the
/// stream's start, so prompts queued before any worker are delivered.
fn ensure_group(con: &mut Connection) -> RedisResult<()> {
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(PROMPTS)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}
