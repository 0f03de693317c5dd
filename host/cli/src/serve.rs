use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::{CustomNodeArgs, DataArgs, NodeSource, PreviewArgs};
use cretok_host::app::AppState;
use cretok_host::redis_queue::{spawn_relay, RedisQueue};
use cretok_host::server::{self, find_frontend, Access, ServerState};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8188)]
    port: u16,
    /// Serve the ComfyUI web frontend from this folder.
    #[arg(long)]
    front_end_root: Option<PathBuf>,
    /// Queue prompts on this Redis server for `cretok worker` processes, instead
    /// of running them here (e.g. redis://127.0.0.1:6379/0; see docs/scaleout.md).
    #[arg(long, env = "CRETOK_REDIS")]
    redis: Option<String>,
    /// Also answer requests whose Host header is NAME (a reverse proxy's public
    /// name); repeatable. Loopback names and the listen address always work.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Let the web page at URL (scheme://host[:port]) use the server, with CORS;
    /// repeatable. Other cross-origin requests are refused.
    #[arg(long = "allow-origin", value_name = "URL")]
    allow_origins: Vec<String>,
    #[command(flatten)]
    previews: PreviewArgs,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    custom: CustomNodeArgs,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let paths = args.data.paths();
    std::fs::create_dir_all(paths.output_dir())?;
    let nodes = NodeSource::new(Arc::clone(&paths), &args.custom)?;
    tracing::info!(
        "custom nodes folder: {}",
        nodes.custom_nodes_dir().display()
    );
    let nodes = Arc::new(nodes);
    let registry = nodes.native();
    let state = match &args.redis {
        None => AppState::new(Arc::clone(&paths), registry),
        Some(url) => {
            let shared = Arc::new(RedisQueue::connect(url)?);
            let state = AppState::with_backend(
                Arc::clone(&paths),
                registry,
                Arc::clone(&shared) as _,
                Arc::clone(&shared) as _,
            );
            spawn_relay(shared.client(), state.bus.clone())?;
            tracing::info!("prompts go to the Redis queue at {url}");
            state
        }
    };
    let frontend_dir = find_frontend(args.front_end_root.as_deref());
    match &frontend_dir {
        Some(dir) => tracing::info!("serving the web frontend from {}", dir.display()),
        None => tracing::info!("no web frontend found: serving the built-in page (see README)"),
    }
    let loader = Arc::clone(&nodes);
    state
        .catalog
        .rebuild_in_background(move || loader.registry())?;
    let catalog = Arc::clone(&state.catalog);
    let server_state = Arc::new(ServerState {
        app: Arc::clone(&state),
        frontend_dir,
        reload_nodes: Box::new(move || catalog.rebuild(|| nodes.registry())),
    });
    tracing::info!("data directory: {}", paths.data_dir.display());
    // With Redis, `cretok worker` processes run the prompts.
    let worker = args
        .redis
        .is_none()
        .then(|| state.spawn_worker(args.previews.preview_method))
        .transpose()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let access = Access {
        allow_hosts: args.allow_hosts,
        allow_origins: args.allow_origins,
    };
    let result = runtime.block_on(server::serve(
        server_state,
        SocketAddr::new(args.listen, args.port),
        &access,
    ));
    if let Some(worker) = worker {
        worker.stop();
    }
    result.map(|()| ExitCode::SUCCESS)
}
