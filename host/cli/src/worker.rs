use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{CustomNodeArgs, DataArgs, NodeSource, PreviewArgs};
use cretok_host::redis_queue::{RedisWorker, WorkerSettings};

#[derive(Args)]
pub struct WorkerArgs {
    /// The shared queue of the fronts (`cretok serve --redis URL`), e.g. redis://10.0.0.5:6379/0.
    #[arg(long, env = "CRETOK_REDIS")]
    redis: String,
    /// This worker's name in the queue; unique per worker. Defaults to <host name>-<process id>.
    #[arg(long)]
    name: Option<String>,
    /// A prompt whose worker stopped answering this long (ms) is run by another worker.
    #[arg(long, default_value_t = 30_000)]
    claim_after_ms: u64,
    /// A prompt handed out this many times without finishing (each time its
    /// worker died running it) is moved to the dead-letter stream and
    /// finished as an error, so one poisonous prompt cannot take down every worker.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    max_deliveries: u32,
    #[command(flatten)]
    previews: PreviewArgs,
    /// The data directory must be the fronts' one (or share its output/, input/ and temp/).
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    custom: CustomNodeArgs,
}

pub fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let paths = args.data.paths();
    std::fs::create_dir_all(paths.output_dir())?;
    let nodes = NodeSource::new(Arc::clone(&paths), &args.custom)?;
    let (registry, _) = nodes.registry();
    let settings = WorkerSettings {
        name: args.name.unwrap_or_else(default_name),
        claim_after: Duration::from_millis(args.claim_after_ms.max(100)),
        max_deliveries: args.max_deliveries as usize,
        previews: args.previews.preview_method,
    };
    let worker = RedisWorker::connect(&args.redis, settings, paths, registry)?;
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if on_signal.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping after the running prompt (press Ctrl-C again to quit now)");
    })?;
    worker.run(&stop)?;
    Ok(ExitCode::SUCCESS)
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}
