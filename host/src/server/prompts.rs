//! Prompt, queue, history and interrupt routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value as Json_};

use super::error::{ApiError, JsonBody};
use super::Shared;
use crate::app::{AppState, PromptRequest, SubmitError};
use crate::backend::QueuedPrompt;
use crate::history::HistoryRecord;

/// Reads the `POST /prompt` body (also used by the websocket's `queue_prompt`).
pub fn prompt_request(body: &Json_) -> Result<PromptRequest, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad_request("The body must be a JSON object", ""));
    };
    let Some(prompt) = obj.get("prompt") else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_prompt",
            "No prompt provided",
            "No prompt provided",
        ));
    };
    let extra_data = obj.get("extra_data").cloned().unwrap_or_else(|| json!({}));
    let client_id = obj
        .get("client_id")
        .or_else(|| extra_data.get("client_id"))
        .and_then(Json_::as_str)
        .map(str::to_owned);
    Ok(PromptRequest {
        targets: execution_targets(obj.get("partial_execution_targets"))?,
        prompt: prompt.clone(),
        client_id,
        extra_data,
        front: obj.get("front").and_then(Json_::as_bool).unwrap_or(false),
        number: obj.get("number").and_then(Json_::as_i64),
        prompt_id: obj
            .get("prompt_id")
            .and_then(Json_::as_str)
            .map(str::to_owned),
    })
}

/// `partial_execution_targets`: absent or null for every output, else a list
/// of node ids (strings, or numbers as the ids of a hand-written prompt).
fn execution_targets(targets: Option<&Json_>) -> Result<Option<Vec<String>>, ApiError> {
    let ids = match targets {
        None | Some(Json_::Null) => return Ok(None),
        Some(Json_::Array(ids)) => ids,
        Some(_) => {
            return Err(ApiError::bad_request(
                "partial_execution_targets must be a list of node ids",
                "",
            ))
        }
    };
    ids.iter()
        .map(|id| match id {
            Json_::String(s) => Ok(s.clone()),
            Json_::Number(n) => Ok(n.to_string()),
            _ => Err(ApiError::bad_request(
                "partial_execution_targets must be a list of node ids",
                "every item must be a string (or a number)",
            )),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

pub async fn post_prompt(State(s): State<Shared>, JsonBody(body): JsonBody) -> Response {
    let request = match prompt_request(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match off_runtime(&s, move |app| app.submit(request)).await {
        Ok(sub) => Json(json!({"prompt_id": sub.prompt_id, "number": sub.number, "node_errors": sub.node_errors}))
            .into_response(),
        Err(refused) => {
            let status = match refused {
                SubmitError::Invalid(_) => StatusCode::BAD_REQUEST,
                SubmitError::QueueUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, Json(refused.failure().to_json())).into_response()
        }
    }
}

pub async fn get_prompt(State(s): State<Shared>) -> Result<Json<Json_>, ApiError> {
    let remaining = off_runtime(&s, |app| app.queue.remaining())
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({"exec_info": {"queue_remaining": remaining}})))
}

pub async fn get_queue(State(s): State<Shared>) -> Result<Json<Json_>, ApiError> {
    let (running, pending) = off_runtime(&s, |app| {
        anyhow::Ok((app.queue.running()?, app.queue.pending()?))
    })
    .await
    .map_err(ApiError::unavailable)?;
    let tuples = |prompts: Vec<QueuedPrompt>| -> Vec<Json_> {
        prompts.iter().map(QueuedPrompt::tuple).collect()
    };
    Ok(Json(
        json!({"queue_running": tuples(running), "queue_pending": tuples(pending)}),
    ))
}

fn id_list(body: &Json_, key: &str) -> Vec<String> {
    body.get(key)
        .and_then(Json_::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A `POST /queue` or `POST /history` body: `apply(app, clear, ids)` empties the
/// store when `"clear"` is true and drops the entries listed in `"delete"`.
async fn clear_or_delete(
    s: &Shared,
    body: &Json_,
    apply: impl FnOnce(&AppState, bool, &[String]) -> anyhow::Result<()> + Send + 'static,
) -> Result<StatusCode, ApiError> {
    let clear = body.get("clear").and_then(Json_::as_bool) == Some(true);
    let delete = id_list(body, "delete");
    off_runtime(s, move |app| apply(app, clear, &delete))
        .await
        .map_err(ApiError::unavailable)?;
    Ok(StatusCode::OK)
}

pub async fn post_queue(
    State(s): State<Shared>,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    clear_or_delete(&s, &body, |app, clear, delete| {
        if clear {
            app.queue.clear()?;
        }
        app.queue.delete(delete)?;
        app.broadcast_status();
        Ok(())
    })
    .await
}

pub(super) fn number_param(
    params: &HashMap<String, String>,
    key: &str,
) -> Result<Option<usize>, ApiError> {
    params
        .get(key)
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| ApiError::bad_request(&format!("'{key}' must be a number"), v.clone()))
        })
        .transpose()
}

pub async fn get_history(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Json_>, ApiError> {
    let max_items = number_param(&params, "max_items")?;
    let offset = number_param(&params, "offset")?;
    let page = off_runtime(&s, move |app| app.history.list(max_items, offset))
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(by_prompt_id(&page)))
}

/// `{prompt_id: entry}` in the order given.
fn by_prompt_id(records: &[Arc<HistoryRecord>]) -> Json_ {
    let entries: Map<String, Json_> = records
        .iter()
        .map(|r| (r.prompt_id().to_owned(), json!(r.as_ref())))
        .collect();
    Json_::Object(entries)
}

pub async fn get_history_item(
    State(s): State<Shared>,
    Path(prompt_id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let record = off_runtime(&s, move |app| app.history.get(&prompt_id))
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(by_prompt_id(Vec::from_iter(record).as_slice())))
}

pub async fn post_history(
    State(s): State<Shared>,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    clear_or_delete(&s, &body, |app, clear, delete| {
        if clear {
            app.history.clear()?;
        }
        app.history.delete(delete)
    })
    .await
}

pub async fn interrupt(
    State(s): State<Shared>,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let prompt_id = body
        .get("prompt_id")
        .and_then(Json_::as_str)
        .map(str::to_owned);
    off_runtime(&s, move |app| app.queue.interrupt(prompt_id.as_deref()))
        .await
        .map_err(ApiError::unavailable)?;
    Ok(StatusCode::OK)
}

pub async fn free(State(s): State<Shared>) -> Result<StatusCode, ApiError> {
    off_runtime(&s, |app| app.request_cache_clear())
        .await
        .map_err(ApiError::unavailable)?;
    Ok(StatusCode::OK)
}

/// Runs queue and history calls on the blocking pool: a backend may wait on
/// the network (Redis), and the async workers must keep serving meanwhile.
pub(super) async fn off_runtime<T: Send + 'static>(
    s: &Shared,
    call: impl FnOnce(&AppState) -> T + Send + 'static,
) -> T {
    let app = Arc::clone(&s.app);
    match tokio::task::spawn_blocking(move || call(app.as_ref())).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
