//! Prompt, queue, history and interrupt routes.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value as Json_};

use super::error::{ApiError, JsonBody};
use super::Shared;
use crate::app::{PromptRequest, SubmitError};

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

pub async fn post_prompt(State(s): State<Shared>, JsonBody(body): JsonBody) -> Response {
    let request = match prompt_request(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match s.app.submit(request) {
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

pub async fn get_prompt(State(s): State<Shared>) -> Json<Json_> {
    Json(json!({"exec_info": {"queue_remaining": s.app.queue.remaining()}}))
}

pub async fn get_queue(State(s): State<Shared>) -> Json<Json_> {
    let running: Vec<Json_> = s.app.queue.running().iter().map(|q| q.tuple()).collect();
    let pending: Vec<Json_> = s.app.queue.pending().iter().map(|q| q.tuple()).collect();
    Json(json!({"queue_running": running, "queue_pending": pending}))
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

pub async fn post_queue(State(s): State<Shared>, JsonBody(body): JsonBody) -> StatusCode {
    if body.get("clear").and_then(Json_::as_bool) == Some(true) {
        s.app.queue.clear();
    }
    s.app.queue.delete(&id_list(&body, "delete"));
    s.app.broadcast_status();
    StatusCode::OK
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
    Ok(Json(Json_::Object(s.app.history.list(max_items, offset))))
}

pub async fn get_history_item(
    State(s): State<Shared>,
    Path(prompt_id): Path<String>,
) -> Json<Json_> {
    let mut out = Map::new();
    if let Some(entry) = s.app.history.get(&prompt_id) {
        out.insert(prompt_id, entry);
    }
    Json(Json_::Object(out))
}

pub async fn post_history(State(s): State<Shared>, JsonBody(body): JsonBody) -> StatusCode {
    if body.get("clear").and_then(Json_::as_bool) == Some(true) {
        s.app.history.clear();
    }
    s.app.history.delete(&id_list(&body, "delete"));
    StatusCode::OK
}

pub async fn interrupt(State(s): State<Shared>, JsonBody(body): JsonBody) -> StatusCode {
    s.app
        .queue
        .interrupt(body.get("prompt_id").and_then(Json_::as_str));
    StatusCode::OK
}

pub async fn free(State(s): State<Shared>) -> StatusCode {
    s.app.request_cache_clear();
    StatusCode::OK
}
