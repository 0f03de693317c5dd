//! Prompt, queue, history, interrupt and jobs routes.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value as Json_};

use super::error::{ApiError, JsonBody};
use super::Shared;
use crate::app::PromptRequest;
use crate::history::prompt_tuple;

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
        Err(failure) => (StatusCode::BAD_REQUEST, Json(failure.to_json())).into_response(),
    }
}

pub async fn get_prompt(State(s): State<Shared>) -> Json<Json_> {
    Json(json!({"exec_info": {"queue_remaining": s.app.queue.remaining()}}))
}

pub async fn get_queue(State(s): State<Shared>) -> Json<Json_> {
    let running: Vec<Json_> = s
        .app
        .queue
        .running()
        .iter()
        .map(|r| prompt_tuple(&r.job))
        .collect();
    let pending: Vec<Json_> = s
        .app
        .queue
        .pending()
        .iter()
        .map(|j| prompt_tuple(j))
        .collect();
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

fn number_param(params: &HashMap<String, String>, key: &str) -> Result<Option<usize>, ApiError> {
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

/// The queue panel of recent frontends: pending, running and finished prompts as jobs.
pub async fn get_jobs(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Json_>, ApiError> {
    let limit = number_param(&params, "limit")?.unwrap_or(usize::MAX);
    let offset = number_param(&params, "offset")?.unwrap_or(0);
    let wanted: Option<Vec<&str>> = params
        .get("status")
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').collect());

    let mut jobs = Vec::new();
    if let Some(r) = s.app.queue.running() {
        jobs.push(job_json(
            &r.job.prompt_id,
            "in_progress",
            r.job.number,
            &r.job.extra_data,
            None,
        ));
    }
    for j in s.app.queue.pending() {
        jobs.push(job_json(
            &j.prompt_id,
            "pending",
            j.number,
            &j.extra_data,
            None,
        ));
    }
    let history = s.app.history.list(None, None);
    for (id, entry) in history.iter().rev() {
        let status = match entry["status"]["status_str"].as_str() {
            Some("success") => "completed",
            _ if interrupted(entry) => "cancelled",
            _ => "failed",
        };
        let tuple = &entry["prompt"];
        jobs.push(job_json(
            id,
            status,
            tuple[0].as_i64().unwrap_or(0),
            &tuple[3],
            Some(&entry["outputs"]),
        ));
    }
    jobs.retain(|j| {
        wanted
            .as_ref()
            .is_none_or(|w| w.contains(&j["status"].as_str().unwrap_or_default()))
    });
    let total = jobs.len();
    let page: Vec<Json_> = jobs.into_iter().skip(offset).take(limit).collect();
    let has_more = offset.saturating_add(page.len()) < total;
    let limit_json = if limit == usize::MAX {
        Json_::Null
    } else {
        json!(limit)
    };
    Ok(Json(json!({
        "jobs": page,
        "pagination": {"offset": offset, "limit": limit_json, "total": total, "has_more": has_more},
    })))
}

fn interrupted(entry: &Json_) -> bool {
    entry["status"]["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m[0] == "execution_interrupted"))
}

fn job_json(
    id: &str,
    status: &str,
    number: i64,
    extra_data: &Json_,
    outputs: Option<&Json_>,
) -> Json_ {
    let images: Vec<&Json_> = outputs
        .and_then(Json_::as_object)
        .into_iter()
        .flat_map(|o| o.iter())
        .flat_map(|(node, ui)| {
            ui.get("images")
                .and_then(Json_::as_array)
                .into_iter()
                .flatten()
                .map(move |img| (node, img))
        })
        .map(|(_, img)| img)
        .collect();
    let preview = images.last().map(|img| {
        let mut p = (*img).clone();
        p["mediaType"] = json!("images");
        p
    });
    json!({
        "id": id,
        "status": status,
        "create_time": extra_data.get("create_time").cloned().unwrap_or(Json_::Null),
        "priority": number,
        "outputs_count": images.len(),
        "preview_output": preview,
    })
}
