//! The ComfyUI-compatible HTTP + websocket server (see docs/protocol.md). Every
//! route is served both as `/x` and `/api/x`.

mod error;
mod files;
mod frontend;
mod info;
mod jobs;
mod origin;
mod prompts;
mod templates;
mod userdata;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
pub use frontend::find_frontend;
pub use origin::OriginPolicy;

use crate::app::AppState;

/// Largest JSON body accepted (a prompt with its embedded UI workflow).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest upload accepted (`/upload/image`).
pub const MAX_UPLOAD_BYTES: usize = 100 * 1024 * 1024;

/// What the routes share: the host state plus server-only settings.
pub struct ServerState {
    pub app: Arc<AppState>,
    /// The ComfyUI frontend's static folder, when one was found.
    pub frontend_dir: Option<PathBuf>,
    /// Rebuilds the node catalog (native plus custom nodes); returns load problems.
    pub reload_nodes: Box<dyn Fn() -> Vec<String> + Send + Sync>,
}

type Shared = Arc<ServerState>;

fn api_routes() -> Router<Shared> {
    Router::new()
        .route(
            "/prompt",
            get(prompts::get_prompt).post(prompts::post_prompt),
        )
        .route("/queue", get(prompts::get_queue).post(prompts::post_queue))
        .route(
            "/history",
            get(prompts::get_history).post(prompts::post_history),
        )
        .route("/history/{prompt_id}", get(prompts::get_history_item))
        .route("/interrupt", post(prompts::interrupt))
        .route("/free", post(prompts::free))
        .route("/jobs", get(jobs::list))
        .route("/jobs/cancel", post(jobs::cancel_many))
        .route("/jobs/{job_id}", get(jobs::detail))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/view", get(files::view))
        .route(
            "/upload/image",
            post(files::upload_image).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/object_info", get(info::object_info))
        .route("/object_info/{class}", get(info::object_info_class))
        .route("/custom_nodes/reload", post(info::reload_nodes))
        .route("/system_stats", get(info::system_stats))
        .route("/embeddings", get(info::embeddings))
        .route("/extensions", get(info::extensions))
        .route("/features", get(info::features))
        .route("/models", get(info::model_folders))
        .route("/models/{folder}", get(info::models_in_folder))
        .route("/experiment/models", get(info::experiment_model_folders))
        .route(
            "/experiment/models/{folder}",
            get(info::experiment_models_in_folder),
        )
        .route("/i18n", get(info::empty_object))
        .route("/global_subgraphs", get(info::empty_object))
        .route("/users", get(userdata::users))
        .route(
            "/settings",
            get(userdata::get_settings).post(userdata::post_settings),
        )
        .route(
            "/settings/{id}",
            get(userdata::get_setting).post(userdata::post_setting),
        )
        .route("/userdata", get(userdata::list))
        .route(
            "/userdata/{file}",
            get(userdata::read)
                .post(userdata::write)
                .delete(userdata::delete),
        )
        .route("/userdata/{file}/move/{dest}", post(userdata::move_file))
        .route("/ws", get(ws::upgrade))
        .route("/templates/{file}", get(templates::file))
        .route("/workflow_templates", get(templates::custom_node_templates))
}

/// The whole application router, every route behind the origin policy.
pub fn router(state: Shared, policy: Arc<OriginPolicy>) -> Router {
    let api = api_routes();
    Router::new()
        .merge(api.clone())
        .nest("/api", api)
        .fallback(frontend::serve)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(policy, origin::enforce))
        .with_state(state)
}

/// Who may reach the server besides its own pages and clients without `Origin`.
pub struct Access {
    /// Extra `Host` names (`--allow-host`).
    pub allow_hosts: Vec<String>,
    /// Web front ends served elsewhere (`--allow-origin`).
    pub allow_origins: Vec<String>,
}

/// Serves until Ctrl-C.
pub async fn serve(state: Shared, addr: SocketAddr, access: &Access) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let policy = OriginPolicy::new(local, &access.allow_hosts, &access.allow_origins)?;
    tracing::info!("listening on http://{local}");
    if !local.ip().is_loopback() {
        tracing::warn!(
            "listening on {local}, reachable from other machines: the server has NO \
             authentication, anyone who can reach this address can run prompts and read \
             and write its files (see docs/security.md for a reverse proxy set-up)"
        );
    }
    println!("CreTok Studio is serving on http://{local}");
    axum::serve(listener, router(state, Arc::new(policy)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
