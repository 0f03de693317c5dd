//! The jobs API that the queue panel of recent frontends (1.58+) uses instead
//! of `/queue` + `/history`: every prompt as a job, running, pending or finished.
//! Shapes follow the frontend's schema (`zJobsListResponse`, `zJobDetail`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value as Json_};

use super::error::{ApiError, JsonBody};
use super::prompts::{number_param, off_runtime};
use super::Shared;
use crate::app::AppState;
use crate::backend::QueuedPrompt;

/// Output kinds the frontend can preview (ComfyUI's `PREVIEWABLE_MEDIA_TYPES`).
const PREVIEWABLE: [&str; 4] = ["images", "video", "audio", "3d"];

/// A job and what its detail view adds: `{prompt, extra_data}`, outputs, status.
struct Job {
    summary: Json_,
    prompt: Json_,
    extra_data: Json_,
    outputs: Json_,
    execution_status: Json_,
}

impl Job {
    fn queued(job: &QueuedPrompt, status: &str) -> Job {
        Job {
            summary: json!({
                "id": job.prompt_id,
                "status": status,
                "create_time": create_time(&job.extra_data),
                "priority": job.number,
                "outputs_count": 0,
                "preview_output": null,
                "workflow_id": workflow_id(&job.extra_data),
            }),
            prompt: job.prompt.clone(),
            extra_data: job.extra_data.clone(),
            outputs: json!({}),
            execution_status: Json_::Null,
        }
    }

    fn finished(id: &str, entry: &Json_) -> Job {
        let status = &entry["status"];
        let messages = status["messages"].as_array().cloned().unwrap_or_default();
        let message = |kind: &str| messages.iter().find(|m| m[0] == kind).map(|m| m[1].clone());
        let error = message("execution_error");
        let interrupted = message("execution_interrupted");
        let state = if status["status_str"] == "success" {
            "completed"
        } else if interrupted.is_some() {
            "cancelled"
        } else {
            "failed"
        };
        let end = [
            "execution_success",
            "execution_error",
            "execution_interrupted",
        ]
        .into_iter()
        .find_map(message);
        let tuple = &entry["prompt"];
        let extra_data = tuple[3].clone();
        let outputs = entry["outputs"].clone();
        let (count, preview) = outputs_summary(&outputs);
        Job {
            summary: json!({
                "id": id,
                "status": state,
                "create_time": create_time(&extra_data),
                "execution_start_time": message("execution_start").map(|m| m["timestamp"].clone()),
                "execution_end_time": end.map(|m| m["timestamp"].clone()),
                "execution_error": error,
                "priority": tuple[0].as_i64().unwrap_or(0),
                "outputs_count": count,
                "preview_output": preview,
                "workflow_id": workflow_id(&extra_data),
            }),
            prompt: tuple[2].clone(),
            extra_data,
            outputs,
            execution_status: status.clone(),
        }
    }

    fn status(&self) -> &str {
        self.summary["status"].as_str().unwrap_or_default()
    }

    fn detail(self) -> Json_ {
        let mut out = self.summary;
        out["workflow"] = json!({"prompt": self.prompt, "extra_data": self.extra_data});
        out["outputs"] = self.outputs;
        out["execution_status"] = self.execution_status;
        out
    }
}

fn create_time(extra_data: &Json_) -> Json_ {
    extra_data
        .get("create_time")
        .cloned()
        .unwrap_or_else(|| json!(0))
}

fn workflow_id(extra_data: &Json_) -> Json_ {
    extra_data["extra_pnginfo"]["workflow"]["id"].clone()
}

/// How many file outputs a prompt made, and the one to preview (saved files
/// first), tagged with its node and media type as the frontend expects.
fn outputs_summary(outputs: &Json_) -> (usize, Option<Json_>) {
    let mut count = 0;
    let mut preview: Option<Json_> = None;
    let mut fallback: Option<Json_> = None;
    for (node_id, ui) in outputs.as_object().into_iter().flatten() {
        for (media_type, items) in ui.as_object().into_iter().flatten() {
            if media_type == "animated" {
                continue;
            }
            for item in items.as_array().into_iter().flatten() {
                if !item.is_object() {
                    continue;
                }
                count += 1;
                if preview.is_some() || !PREVIEWABLE.contains(&media_type.as_str()) {
                    continue;
                }
                let mut tagged = item.clone();
                tagged["nodeId"] = json!(node_id);
                tagged["mediaType"] = json!(media_type);
                if item["type"] == "output" {
                    preview = Some(tagged);
                } else if fallback.is_none() {
                    fallback = Some(tagged);
                }
            }
        }
    }
    (count, preview.or(fallback))
}

/// Running, pending in queue order, then finished prompts newest first.
fn all_jobs(app: &AppState) -> Vec<Job> {
    let mut jobs = Vec::new();
    for r in app.queue.running() {
        jobs.push(Job::queued(&r, "in_progress"));
    }
    for j in app.queue.pending() {
        jobs.push(Job::queued(&j, "pending"));
    }
    let history = app.history.list(None, None);
    for (id, entry) in history.iter().rev() {
        jobs.push(Job::finished(id, entry));
    }
    jobs
}

/// `GET /jobs?status=a,b&limit=&offset=`.
pub async fn list(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Json_>, ApiError> {
    let limit = number_param(&params, "limit")?;
    let offset = number_param(&params, "offset")?.unwrap_or(0);
    let wanted: Option<Vec<&str>> = params
        .get("status")
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').collect());

    let mut jobs = off_runtime(&s, all_jobs).await;
    jobs.retain(|j| wanted.as_ref().is_none_or(|w| w.contains(&j.status())));
    let total = jobs.len();
    let page: Vec<Json_> = jobs
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|j| j.summary)
        .collect();
    let has_more = offset.saturating_add(page.len()) < total;
    Ok(Json(json!({
        "jobs": page,
        "pagination": {
            "offset": offset,
            "limit": limit.unwrap_or(total),
            "total": total,
            "has_more": has_more,
        },
    })))
}

/// `GET /jobs/{id}`: the job plus its graph, outputs and execution status.
pub async fn detail(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    off_runtime(&s, all_jobs)
        .await
        .into_iter()
        .find(|j| j.summary["id"] == id.as_str())
        .map(|j| Json(j.detail()))
        .ok_or_else(|| ApiError::not_found(format!("no job '{id}'")))
}

/// Removes a pending job or interrupts the running one; whether it was found.
fn cancel_one(app: &AppState, id: &str) -> bool {
    app.queue.delete(&[id.to_owned()]) > 0 || app.queue.interrupt(Some(id))
}

/// Cancels each job it can; returns those it found.
async fn cancel_jobs(s: &Shared, ids: Vec<String>) -> Vec<String> {
    off_runtime(s, move |app| {
        let cancelled: Vec<String> = ids.into_iter().filter(|id| cancel_one(app, id)).collect();
        app.broadcast_status();
        cancelled
    })
    .await
}

/// `POST /jobs/{id}/cancel`.
pub async fn cancel(State(s): State<Shared>, Path(id): Path<String>) -> Json<Json_> {
    let cancelled = cancel_jobs(&s, vec![id]).await;
    Json(json!({ "cancelled": cancelled }))
}

/// `POST /jobs/cancel` with `{"job_ids": [...]}`.
pub async fn cancel_many(
    State(s): State<Shared>,
    JsonBody(body): JsonBody,
) -> Result<Json<Json_>, ApiError> {
    let ids: Vec<String> = body["job_ids"]
        .as_array()
        .ok_or_else(|| ApiError::bad_request("job_ids must be a list of ids", ""))?
        .iter()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect();
    let cancelled = cancel_jobs(&s, ids).await;
    Ok(Json(json!({ "cancelled": cancelled })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_prefers_saved_images_and_names_its_node() {
        let outputs = json!({
            "5": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
            "9": {
                "images": [{"filename": "a.png", "subfolder": "", "type": "output"}],
                "text": ["not a file"],
                "animated": [false],
            },
        });
        let (count, preview) = outputs_summary(&outputs);
        assert_eq!(count, 2);
        assert_eq!(
            preview,
            Some(
                json!({"filename": "a.png", "subfolder": "", "type": "output", "nodeId": "9", "mediaType": "images"})
            )
        );
    }

    #[test]
    fn temp_images_are_the_fallback_preview_and_files_are_counted() {
        let outputs = json!({
            "5": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
            "7": {"files": [{"filename": "t.txt", "subfolder": "", "type": "output"}]},
        });
        let (count, preview) = outputs_summary(&outputs);
        assert_eq!(count, 2);
        assert_eq!(preview.unwrap()["nodeId"], "5");
        assert_eq!(outputs_summary(&json!({})), (0, None));
    }
}
