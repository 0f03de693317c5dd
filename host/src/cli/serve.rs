use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::{native_registry, DataArgs};
use crate::app::AppState;
use crate::server::{self, find_frontend, ServerState};

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
    #[command(flatten)]
    data: DataArgs,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let paths = args.data.paths();
    std::fs::create_dir_all(paths.output_dir())?;
    let state = AppState::new(Arc::clone(&paths), native_registry(&paths));
    let frontend_dir = find_frontend(args.front_end_root.as_deref());
    match &frontend_dir {
        Some(dir) => tracing::info!("serving the web frontend from {}", dir.display()),
        None => tracing::info!("no web frontend found: serving the built-in page (see README)"),
    }
    let catalog_state = Arc::clone(&state);
    let reload_paths = Arc::clone(&paths);
    let server_state = Arc::new(ServerState {
        app: Arc::clone(&state),
        frontend_dir,
        reload_nodes: Box::new(move || {
            catalog_state
                .catalog
                .replace(native_registry(&reload_paths));
            Vec::new()
        }),
    });
    tracing::info!("data directory: {}", paths.data_dir.display());
    let worker = state.spawn_worker()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(server::serve(
        server_state,
        SocketAddr::new(args.listen, args.port),
    ));
    state.queue.close();
    state.queue.interrupt(None);
    let _ = worker.join();
    result.map(|()| ExitCode::SUCCESS)
}
