//! The jobs API that the queue panel of recent frontends (1.58+) uses instead
//! of `/queue` + `/history`: every prompt as a job, running, pending or finished.
//! Shapes follow the frontend's schema (`zJobsListResponse`, `zJobDetail`).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value as Json_};

use super::error::{ApiError, JsonBody};
use super::prompts::{number_param, off_runtime};
use super::Shared;
use crate::app::AppState;
use crate::backend::{BackendResult, QueuedPrompt};
use crate::history::{HistoryRecord, JobState};

/// Output kinds the frontend can preview (ComfyUI's `PREVIEWABLE_MEDIA_TYPES`).
const PREVIEWABLE: [&str; 4] = ["images", "video", "audio", "3d"];

/// The summary of a running or pending prompt.
fn queued_summary(job: &QueuedPrompt, status: &str) -> Json_ {
    json!({
        "id": job.prompt_id,
        "status": status,
        "create_time": create_time(&job.extra_data),
        "priority": job.number,
        "outputs_count": 0,
        "preview_output": null,
        "workflow_id": workflow_id(&job.extra_data),
    })
}

/// The summary of a finished prompt.
fn finished_summary(record: &HistoryRecord) -> Json_ {
    let job = &record.prompt;
    let (count, preview) = outputs_summary(&record.outputs);
    json!({
        "id": job.prompt_id,
        "status": record.job_state().as_str(),
        "create_time": create_time(&job.extra_data),
        "execution_start_time": record.started_at(),
        "execution_end_time": record.ended_at(),
        "execution_error": record.error().map(|e| e.name_and_data().1),
        "priority": job.number,
        "outputs_count": count,
        "preview_output": preview,
        "workflow_id": workflow_id(&job.extra_data),
    })
}

/// A summary plus what the detail view adds: `{prompt, extra_data}`,
/// outputs and the history status.
fn with_detail(
    mut summary: Json_,
    job: &QueuedPrompt,
    outputs: Json_,
    execution_status: Json_,
) -> Json_ {
    summary["workflow"] = json!({"prompt": job.prompt, "extra_data": job.extra_data});
    summary["outputs"] = outputs;
    summary["execution_status"] = execution_status;
    summary
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
fn outputs_summary(outputs: &BTreeMap<String, Json_>) -> (usize, Option<Json_>) {
    let mut count = 0;
    let mut preview: Option<Json_> = None;
    let mut fallback: Option<Json_> = None;
    for (node_id, ui) in outputs {
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

/// Running then pending prompts in queue order, with their job status.
fn queued_jobs(app: &AppState) -> BackendResult<Vec<(QueuedPrompt, &'static str)>> {
    let running = app.queue.running()?.into_iter().map(|p| (p, "in_progress"));
    let pending = app.queue.pending()?.into_iter().map(|p| (p, "pending"));
    Ok(running.chain(pending).collect())
}

/// The jobs whose status is `wanted` (all when `None`): running, pending in
/// queue order, then finished newest first. Returns the page
/// `offset..offset + limit` and how many there are; of history, only the
/// page is read.
fn job_page(
    app: &AppState,
    wanted: Option<&[String]>,
    offset: usize,
    limit: usize,
) -> BackendResult<(Vec<Json_>, usize)> {
    let is_wanted = |status: &str| wanted.is_none_or(|w| w.iter().any(|s| s == status));
    let queued: Vec<_> = queued_jobs(app)?
        .into_iter()
        .filter(|(_, status)| is_wanted(status))
        .collect();
    let mut page: Vec<Json_> = queued
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(job, status)| queued_summary(job, status))
        .collect();
    let states: Vec<JobState> = JobState::ALL
        .into_iter()
        .filter(|s| is_wanted(s.as_str()))
        .collect();
    let finished = app.history.newest(
        &states,
        offset.saturating_sub(queued.len()),
        limit - page.len(),
    )?;
    page.extend(finished.records.iter().map(|r| finished_summary(r)));
    Ok((page, queued.len() + finished.total))
}

/// `GET /jobs?status=a,b&limit=&offset=`.
pub async fn list(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Json_>, ApiError> {
    let limit = number_param(&params, "limit")?;
    let offset = number_param(&params, "offset")?.unwrap_or(0);
    let wanted: Option<Vec<String>> = params
        .get("status")
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_owned).collect());
    let (page, total) = off_runtime(&s, move |app| {
        job_page(app, wanted.as_deref(), offset, limit.unwrap_or(usize::MAX))
    })
    .await
    .map_err(ApiError::unavailable)?;
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

/// The detail of job `id`, when there is one.
fn find_job(app: &AppState, id: &str) -> BackendResult<Option<Json_>> {
    let queued = queued_jobs(app)?
        .into_iter()
        .find(|(j, _)| j.prompt_id == id);
    if let Some((job, status)) = queued {
        let summary = queued_summary(&job, status);
        return Ok(Some(with_detail(summary, &job, json!({}), Json_::Null)));
    }
    Ok(app.history.get(id)?.map(|record| {
        let summary = finished_summary(&record);
        with_detail(
            summary,
            &record.prompt,
            json!(record.outputs),
            record.status_json(),
        )
    }))
}

/// `GET /jobs/{id}`: the job plus its graph, outputs and execution status.
pub async fn detail(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let wanted = id.clone();
    off_runtime(&s, move |app| find_job(app, &wanted))
        .await
        .map_err(ApiError::unavailable)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job '{id}'")))
}

/// Removes a pending job or interrupts the running one; whether it was found.
fn cancel_one(app: &AppState, id: &str) -> BackendResult<bool> {
    Ok(app.queue.delete(&[id.to_owned()])? > 0 || app.queue.interrupt(Some(id))?)
}

/// Cancels each job it can; returns those it found.
async fn cancel_jobs(s: &Shared, ids: Vec<String>) -> Result<Vec<String>, ApiError> {
    off_runtime(s, move |app| {
        let mut cancelled = Vec::new();
        for id in ids {
            if cancel_one(app, &id)? {
                cancelled.push(id);
            }
        }
        app.broadcast_status();
        Ok(cancelled)
    })
    .await
    .map_err(ApiError::unavailable)
}

/// `POST /jobs/{id}/cancel`.
pub async fn cancel(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let cancelled = cancel_jobs(&s, vec![id]).await?;
    Ok(Json(json!({ "cancelled": cancelled })))
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
    let cancelled = cancel_jobs(&s, ids).await?;
    Ok(Json(json!({ "cancelled": cancelled })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ui_outputs(outputs: Json_) -> BTreeMap<String, Json_> {
        serde_json::from_value(outputs).expect("outputs by node id")
    }

    #[test]
    fn preview_prefers_saved_images_and_names_its_node() {
        let outputs = ui_outputs(json!({
            "5": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
            "9": {
                "images": [{"filename": "a.png", "subfolder": "", "type": "output"}],
                "text": ["not a file"],
                "animated": [false],
            },
        }));
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
        let outputs = ui_outputs(json!({
            "5": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
            "7": {"files": [{"filename": "t.txt", "subfolder": "", "type": "output"}]},
        }));
        let (count, preview) = outputs_summary(&outputs);
        assert_eq!(count, 2);
        assert_eq!(preview.unwrap()["nodeId"], "5");
        assert_eq!(outputs_summary(&BTreeMap::new()), (0, None));
    }
}
