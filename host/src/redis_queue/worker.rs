//! `cretok worker`: takes prompts from the shared stream, runs them with its
//! own executor (so its model cache is paid once), publishes their events and
//! finishes each one exactly once (see docs/scaleout.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cretok_node_api::{CancelToken, Paths, PreviewMethod, Registry};
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamPendingCountReply,
    StreamReadOptions, StreamReadReply,
};
use redis::{Commands, RedisResult, Script};
use serde_json::Value as Json;

use super::front::entry_prompt;
use super::{
    cancel_key, done_key, ensure_group, Pool, CONTROL, DEAD_LETTERS, DONE_TTL_S, EVENTS, GROUP,
    HISTORY, HISTORY_ORDER, IDS, JOB_FIELD, PROMPTS,
};
use crate::app::{OutboundObserver, OutboundSink};
use crate::backend::QueuedPrompt;
use crate::executor::{ExecutionObserver, ExecutionRecord, Executor, Outcome, PromptJob};
use crate::history::{HistoryRecord, MAX_HISTORY};
use crate::prompt_worker::{run_prompts, Task, Work, WorkQueue};
use crate::protocol::{now_ms, Event, FailedNode, ServerMessage};
use crate::validation::validate;

/// How long one wait for a new prompt blocks (the stop flag is checked between waits).
const POLL_MS: usize = 1000;

/// Records the history entry, publishes the final events and acknowledges,
/// all at once, unless the prompt was already finished (then only
/// acknowledges); either way frees the prompt id for the queue.
/// KEYS: stream, history, history order, done marker, queued ids.
/// ARGV: group, entry id, prompt id, history entry, max history, done ttl,
/// events channel, worker name, final events...
const FINISH: &str = r"
local first = redis.call('SET', KEYS[4], ARGV[8], 'NX', 'EX', ARGV[6])
if first then
  if redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) == 1 then
    redis.call('RPUSH', KEYS[3], ARGV[3])
  end
  while redis.call('LLEN', KEYS[3]) > tonumber(ARGV[5]) do
    redis.call('HDEL', KEYS[2], redis.call('LPOP', KEYS[3]))
  end
  for i = 9, #ARGV do
    redis.call('PUBLISH', ARGV[7], ARGV[i])
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[5], ARGV[3])
if first then return 1 else return 0 end
";

/// Resets the idle time of a prompt this worker still holds; 0 when another took it.
/// KEYS: stream. ARGV: group, entry id, worker name.
const HEARTBEAT: &str = r"
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #held == 1 and held[1][2] == ARGV[3] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
  return 1
end
return 0
";

pub struct WorkerSettings {
    /// The consumer name, unique among workers.
    pub name: String,
    /// A prompt whose worker went silent this long is claimed by another worker.
    pub claim_after: Duration,
    /// A prompt delivered this many times without finishing (its workers
    /// died running it) goes to the dead-letter stream instead of running again.
    pub max_deliveries: usize,
    /// Previews for prompts that do not choose (`--preview-method`).
    pub previews: PreviewMethod,
}

/// A stream entry handed to this worker, and how often it has been handed out.
struct Delivery {
    entry: StreamId,
    deliveries: usize,
}

/// The prompt being run, as the heartbeat and control threads see it.
#[derive(Clone)]
struct Current {
    entry_id: String,
    prompt_id: String,
    cancel: CancelToken,
    /// Set when another worker claimed the prompt: this one must not finish it.
    lost: Arc<AtomicBool>,
}

pub struct RedisWorker {
    pool: Arc<Pool>,
    settings: Arc<WorkerSettings>,
    paths: Arc<Paths>,
    registry: Arc<Registry>,
    current: Arc<Mutex<Option<Current>>>,
    clear_cache: Arc<AtomicBool>,
}

/// The worker taking prompts until `stop` is set: the executor loop's queue.
struct Taking<'a> {
    worker: &'a RedisWorker,
    stop: &'a AtomicBool,
}

/// A prompt this worker took, as `finish` needs it.
struct Ticket {
    entry_id: String,
    queued: QueuedPrompt,
    /// The run's claim state; `None` when it was not run.
    current: Option<Current>,
}

impl RedisWorker {
    pub fn connect(
        url: &str,
        settings: WorkerSettings,
        paths: Arc<Paths>,
        registry: Registry,
    ) -> anyhow::Result<Self> {
        let pool = Pool::connect(url)?;
        pool.with(ensure_group)?;
        Ok(RedisWorker {
            pool: Arc::new(pool),
            settings: Arc::new(settings),
            paths,
            registry: Arc::new(registry),
            current: Arc::default(),
            clear_cache: Arc::default(),
        })
    }

    /// Runs prompts until `stop` is set (checked between prompts).
    pub fn run(&self, stop: &AtomicBool) -> anyhow::Result<()> {
        self.spawn_control_listener()?;
        self.spawn_heartbeat()?;
        println!(
            "cretok worker {} is waiting for prompts",
            self.settings.name
        );
        let executor = Executor::new(Arc::clone(&self.paths)).with_previews(self.settings.previews);
        run_prompts(&Taking { worker: self, stop }, executor);
        Ok(())
    }

    /// A prompt whose worker went silent, else a new one (waiting up to `POLL_MS`).
    fn next_entry(&self) -> RedisResult<Option<Delivery>> {
        let name = &self.settings.name;
        let idle_ms = self.settings.claim_after.as_millis() as usize;
        self.pool.with(|con| {
            let stale: StreamAutoClaimReply = con.xautoclaim_options(
                PROMPTS,
                GROUP,
                name,
                idle_ms,
                "0-0",
                StreamAutoClaimOptions::default().count(1),
            )?;
            if let Some(entry) = stale.claimed.into_iter().next() {
                let held: StreamPendingCountReply =
                    con.xpending_count(PROMPTS, GROUP, &entry.id, &entry.id, 1)?;
                let deliveries = held.ids.first().map_or(1, |p| p.times_delivered);
                return Ok(Some(Delivery { entry, deliveries }));
            }
            let options = StreamReadOptions::default()
                .group(GROUP, name)
                .count(1)
                .block(POLL_MS);
            let fresh: Option<StreamReadReply> = con.xread_options(&[PROMPTS], &[">"], &options)?;
            Ok(fresh
                .and_then(|r| r.keys.into_iter().next())
                .and_then(|k| k.ids.into_iter().next())
                .map(|entry| Delivery {
                    entry,
                    deliveries: 1,
                }))
        })
    }

    /// The work of a delivered entry, or `None` when there is nothing to run
    /// (a malformed entry, a prompt already finished).
    fn accept(&self, delivery: Delivery) -> RedisResult<Option<Work<Ticket, RedisEvents>>> {
        let entry = delivery.entry;
        let Some(queued) = entry_prompt(&entry) else {
            self.acknowledge(&entry.id, None)?;
            return Ok(None);
        };
        let prompt_id = queued.prompt_id.clone();
        let finished: bool = self.pool.with(|con| con.exists(done_key(&prompt_id)))?;
        if finished {
            println!("skipped {prompt_id}: already finished");
            self.acknowledge(&entry.id, Some(&prompt_id))?;
            return Ok(None);
        }
        let events = OutboundObserver {
            sink: RedisEvents {
                pool: Arc::clone(&self.pool),
                prompt_id: prompt_id.clone(),
                held: Mutex::default(),
            },
            target: queued.client_id.as_deref().map(Arc::from),
            prompt_id: prompt_id.clone(),
        };
        if delivery.deliveries > self.settings.max_deliveries {
            let record = self.dead_letter(&entry, &queued, delivery.deliveries - 1, &events)?;
            return Ok(Some(Work {
                ticket: Ticket {
                    entry_id: entry.id,
                    queued,
                    current: None,
                },
                events,
                task: Task::Refused(Box::new(record)),
            }));
        }
        let current = Current {
            entry_id: entry.id.clone(),
            prompt_id: prompt_id.clone(),
            cancel: CancelToken::new(),
            lost: Arc::default(),
        };
        // Installed before the cancel key is read: a front sets the key, then
        // publishes, so an interrupt sent while this prompt is claimed is seen
        // either here or by the control listener.
        *self.lock_current() = Some(current.clone());
        let interrupted: bool = self
            .pool
            .with(|con| con.exists(cancel_key(&prompt_id)))
            .inspect_err(|_| *self.lock_current() = None)?;
        if interrupted {
            current.cancel.cancel();
        }
        println!("started {prompt_id}");
        self.publish_status();
        let task = match validate(
            &queued.prompt,
            self.registry.as_ref(),
            Some(&queued.outputs),
        ) {
            Ok(valid) => Task::Run {
                job: Arc::new(PromptJob {
                    prompt_id: prompt_id.clone(),
                    number: queued.number,
                    prompt: queued.prompt.clone(),
                    valid,
                    client_id: queued.client_id.clone(),
                    extra_data: queued.extra_data.clone(),
                }),
                registry: Arc::clone(&self.registry),
                cancel: current.cancel.clone(),
            },
            Err(failure) => {
                let (node_id, node_type) = failure
                    .node_errors
                    .iter()
                    .next()
                    .map(|(id, e)| (id.clone(), e.class_type.clone()))
                    .unwrap_or_default();
                let message = format!(
                    "worker {} cannot run this prompt: {}",
                    self.settings.name,
                    failure.report()
                );
                let failed = FailedNode {
                    prompt_id: prompt_id.clone(),
                    node_id,
                    node_type,
                    executed: vec![],
                };
                Task::Refused(Box::new(error_record(
                    failed,
                    "prompt_invalid_on_worker",
                    message,
                    &events,
                )))
            }
        };
        Ok(Some(Work {
            ticket: Ticket {
                entry_id: entry.id,
                queued,
                current: Some(current),
            },
            events,
            task,
        }))
    }

    /// Moves a prompt that was delivered `runs` times without finishing to the
    /// dead-letter stream; returns its error record.
    fn dead_letter(
        &self,
        entry: &StreamId,
        queued: &QueuedPrompt,
        runs: usize,
        observer: &dyn ExecutionObserver,
    ) -> RedisResult<ExecutionRecord> {
        let reason = format!(
            "prompt {} was delivered {runs} times without finishing (its worker stopped \
             while running it each time); it was moved to the dead-letter stream \
             {DEAD_LETTERS} and is not run again",
            queued.prompt_id
        );
        let job: String = entry.get(JOB_FIELD).unwrap_or_default();
        self.pool.with(|con| {
            con.xadd::<_, _, _, _, ()>(
                DEAD_LETTERS,
                "*",
                &[
                    ("prompt_id", queued.prompt_id.as_str()),
                    (JOB_FIELD, job.as_str()),
                    ("reason", reason.as_str()),
                    ("deliveries", runs.to_string().as_str()),
                    ("worker", self.settings.name.as_str()),
                ],
            )
        })?;
        tracing::error!("{reason}");
        println!("dead-lettered {} after {runs} deliveries", queued.prompt_id);
        let failed = FailedNode {
            prompt_id: queued.prompt_id.clone(),
            node_id: String::new(),
            node_type: String::new(),
            executed: vec![],
        };
        Ok(error_record(failed, "dead_letter", reason, observer))
    }

    /// Finishes a prompt with its record: history, final events, queue status.
    fn report(
        &self,
        entry_id: &str,
        record: &HistoryRecord,
        observer: &OutboundObserver<RedisEvents>,
    ) -> anyhow::Result<()> {
        let prompt_id = record.prompt_id();
        let held =
            std::mem::take(&mut *observer.sink.held.lock().unwrap_or_else(|p| p.into_inner()));
        let entry_json = serde_json::to_string(record)?;
        let first = self.finish(entry_id, prompt_id, &entry_json, &held)?;
        let outcome = match record.outcome {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Interrupted => "interrupted",
        };
        if first {
            println!("finished {prompt_id} {outcome}");
        } else {
            println!("skipped {prompt_id}: finished elsewhere meanwhile");
        }
        self.publish_status();
        Ok(())
    }

    /// Acknowledges an entry that is not run, freeing its prompt id.
    fn acknowledge(&self, entry_id: &str, prompt_id: Option<&str>) -> RedisResult<()> {
        self.pool.with(|con| {
            let mut pipe = redis::pipe();
            pipe.xack(PROMPTS, GROUP, &[entry_id])
                .xdel(PROMPTS, &[entry_id]);
            if let Some(prompt_id) = prompt_id {
                pipe.srem(IDS, prompt_id);
            }
            pipe.query::<()>(con)
        })
    }

    /// Records the history entry and publishes `final_events` unless the
    /// prompt was already finished, and acknowledges the entry.
    /// Returns whether this call finished the prompt.
    fn finish(
        &self,
        entry_id: &str,
        prompt_id: &str,
        history_entry: &str,
        final_events: &[Vec<u8>],
    ) -> RedisResult<bool> {
        self.pool.with(|con| {
            let script = Script::new(FINISH);
            let mut call = script.key(PROMPTS);
            call.key(HISTORY)
                .key(HISTORY_ORDER)
                .key(done_key(prompt_id))
                .key(IDS)
                .arg(GROUP)
                .arg(entry_id)
                .arg(prompt_id)
                .arg(history_entry)
                .arg(MAX_HISTORY)
                .arg(DONE_TTL_S)
                .arg(EVENTS)
                .arg(&self.settings.name);
            for event in final_events {
                call.arg(event.as_slice());
            }
            call.invoke::<i64>(con).map(|first| first == 1)
        })
    }

    fn publish_status(&self) {
        let published = self.pool.with(|con| -> RedisResult<()> {
            let remaining: usize = con.xlen(PROMPTS)?;
            let status = Event::message(None, &ServerMessage::status(remaining, None));
            con.publish(EVENTS, status.to_transport())
        });
        if let Err(e) = published {
            tracing::warn!("publishing the queue status: {e}");
        }
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the running prompt claimed, so only a silent worker loses it.
    fn spawn_heartbeat(&self) -> std::io::Result<()> {
        let pool = Arc::clone(&self.pool);
        let settings = Arc::clone(&self.settings);
        let current = Arc::clone(&self.current);
        let period = (settings.claim_after / 4).max(Duration::from_millis(50));
        std::thread::Builder::new()
            .name("redis-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let running = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(running) = running else { continue };
                let held = pool.with(|con| {
                    Script::new(HEARTBEAT)
                        .key(PROMPTS)
                        .arg(GROUP)
                        .arg(&running.entry_id)
                        .arg(&settings.name)
                        .invoke::<i64>(con)
                });
                match held {
                    Ok(0) => {
                        tracing::warn!(
                            "prompt {} was claimed by another worker",
                            running.prompt_id
                        );
                        running.lost.store(true, Ordering::SeqCst);
                        running.cancel.cancel();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("heartbeat: {e}"),
                }
            })?;
        Ok(())
    }

    /// Hears `/interrupt` and `/free` from every front.
    fn spawn_control_listener(&self) -> std::io::Result<()> {
        let client = self.pool.client.clone();
        let current = Arc::clone(&self.current);
        let clear_cache = Arc::clone(&self.clear_cache);
        let (subscribed, heard) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("redis-control".into())
            .spawn(move || loop {
                if let Err(e) = listen_for_control(&client, &current, &clear_cache, &subscribed) {
                    tracing::warn!("control channel: {e}; reconnecting in 1 s");
                }
                std::thread::sleep(Duration::from_secs(1));
            })?;
        // A prompt taken before the subscription could miss its interrupt.
        if heard.recv_timeout(super::CONNECT_TIMEOUT).is_err() {
            tracing::warn!("the control channel is not subscribed yet; interrupts may be missed");
        }
        Ok(())
    }
}

impl WorkQueue for Taking<'_> {
    type Ticket = Ticket;
    type Sink = RedisEvents;

    fn take(&self) -> Option<Work<Ticket, RedisEvents>> {
        let worker = self.worker;
        while !self.stop.load(Ordering::SeqCst) {
            let accepted = worker
                .next_entry()
                .and_then(|delivery| delivery.map_or(Ok(None), |d| worker.accept(d)));
            match accepted {
                Ok(Some(work)) => return Some(work),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("taking a prompt: {e}; retrying in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                    let _ = worker.pool.with(ensure_group);
                }
            }
        }
        None
    }

    fn take_cache_clear(&self) -> bool {
        self.worker.clear_cache.swap(false, Ordering::SeqCst)
    }

    fn finish(
        &self,
        ticket: Ticket,
        record: ExecutionRecord,
        events: &OutboundObserver<RedisEvents>,
    ) -> bool {
        let worker = self.worker;
        *worker.lock_current() = None;
        if ticket
            .current
            .is_some_and(|c| c.lost.load(Ordering::SeqCst))
        {
            println!("lost {} to another worker", ticket.queued.prompt_id);
            return false;
        }
        let record = HistoryRecord::new(ticket.queued, record);
        let prompt_id = record.prompt_id();
        match worker.report(&ticket.entry_id, &record, events) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("finishing prompt {prompt_id}: {e:#}; it will be claimed again");
                std::thread::sleep(Duration::from_secs(1));
                false
            }
        }
    }
}

fn listen_for_control(
    client: &redis::Client,
    current: &Mutex<Option<Current>>,
    clear_cache: &AtomicBool,
    subscribed: &std::sync::mpsc::Sender<()>,
) -> RedisResult<()> {
    let mut con = client.get_connection_with_timeout(super::CONNECT_TIMEOUT)?;
    let mut subscription = con.as_pubsub();
    subscription.subscribe(CONTROL)?;
    let _ = subscribed.send(());
    loop {
        let message = subscription.get_message()?;
        let Ok(request) = serde_json::from_slice::<Json>(message.get_payload_bytes()) else {
            continue;
        };
        if request.get("free").is_some() {
            clear_cache.store(true, Ordering::SeqCst);
        }
        if let Some(target) = request.get("interrupt") {
            let running = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(running) = running {
                if target.as_str().is_none_or(|id| id == running.prompt_id) {
                    running.cancel.cancel();
                }
            }
        }
    }
}

/// The record of a prompt that fails before any node runs, reported to its client.
fn error_record(
    failed: FailedNode,
    exception_type: &str,
    exception_message: String,
    observer: &dyn ExecutionObserver,
) -> ExecutionRecord {
    let message = ServerMessage::ExecutionError {
        failed,
        exception_message,
        exception_type: exception_type.to_owned(),
        traceback: vec![],
        current_inputs: Json::Object(Default::default()),
        current_outputs: vec![],
        timestamp: now_ms(),
    };
    observer.message(message.clone());
    ExecutionRecord::refused(message)
}

/// Publishes a prompt's events; holds back the final one (success, error or
/// interruption) for [`RedisWorker::finish`], which publishes it only once.
struct RedisEvents {
    pool: Arc<Pool>,
    prompt_id: String,
    held: Mutex<Vec<Vec<u8>>>,
}

impl OutboundSink for RedisEvents {
    fn send(&self, event: Event) {
        let payload = event.to_transport();
        if let Err(e) = self
            .pool
            .with(|con| -> RedisResult<()> { con.publish(EVENTS, payload) })
        {
            tracing::warn!("publishing an event of prompt {}: {e}", self.prompt_id);
        }
    }

    fn send_final(&self, event: Event) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.to_transport());
    }
}
