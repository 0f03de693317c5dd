//! Routes in the shapes the ComfyUI web frontend 1.58 parses (its zod schemas):
//! the jobs API of the queue panel, and the start-up routes it needs.

use cretok_tests::Server;
use serde_json::{json, Value};

fn text_prompt(ms: i64) -> Value {
    json!({
        "1": {"class_type": "Delay", "inputs": {"text": "a lettuce and a mantis", "milliseconds": ms}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename_prefix": "jobs"}}
    })
}

/// The fields every job in `/jobs` must carry, with the types the frontend checks.
fn assert_job_shape(job: &Value) {
    assert!(job["id"].is_string(), "{job}");
    assert!(job["create_time"].is_number(), "{job}");
    assert!(job["priority"].is_number(), "{job}");
    assert!(job["outputs_count"].is_number(), "{job}");
    assert!(
        ["pending", "in_progress", "completed", "failed", "cancelled"]
            .contains(&job["status"].as_str().unwrap_or_default()),
        "{job}"
    );
}

fn assert_pagination(body: &Value, total: u64) {
    let p = &body["pagination"];
    assert!(p["offset"].is_number() && p["limit"].is_number(), "{body}");
    assert_eq!(p["total"], total, "{body}");
    assert!(p["has_more"].is_boolean(), "{body}");
}

#[tokio::test]
async fn jobs_list_running_pending_and_finished_prompts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let mut ws = server.connect("fe").await?;

    let extra = json!({"extra_pnginfo": {"workflow": {"id": "wf-1", "nodes": []}}});
    let (status, body) = server
        .post(
            "/api/prompt",
            &json!({"prompt": text_prompt(0), "client_id": "fe", "extra_data": extra}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let done = body["prompt_id"].as_str().unwrap().to_owned();
    ws.until_done(&done).await?;

    let slow = server.queue(&text_prompt(20_000), "fe").await?;
    let pending = server.queue(&text_prompt(0), "fe").await?;
    ws.wait_for("execution_start").await?;

    // The queue panel's two polls.
    let (status, active) = server
        .get("/api/jobs?status=in_progress,pending&limit=200&offset=0")
        .await?;
    assert_eq!(status, 200, "{active}");
    let ids: Vec<&str> = active["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [slow.as_str(), pending.as_str()], "{active}");
    assert_eq!(active["jobs"][0]["status"], "in_progress");
    assert_eq!(active["jobs"][1]["status"], "pending");
    active["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(assert_job_shape);
    assert_pagination(&active, 2);

    let (_, history) = server
        .get("/api/jobs?status=completed,failed,cancelled&limit=64&offset=0")
        .await?;
    let job = &history["jobs"][0];
    assert_job_shape(job);
    assert_eq!(job["id"], done.as_str());
    assert_eq!(job["status"], "completed");
    assert_eq!(job["workflow_id"], "wf-1");
    assert_eq!(job["outputs_count"], 1, "the saved text file");
    assert!(job["preview_output"].is_null(), "text is not previewable");
    assert!(job["execution_start_time"].as_i64() <= job["execution_end_time"].as_i64());
    assert_pagination(&history, 1);

    // Without a limit, the limit is still a number.
    let (_, all) = server.get("/api/jobs").await?;
    assert_pagination(&all, 3);
    assert_eq!(all["pagination"]["limit"], 3);
    let (status, _) = server.get("/api/jobs?limit=lots").await?;
    assert_eq!(status, 400);

    // Detail: what the "Load" action and the output view read.
    let (status, detail) = server.get(&format!("/api/jobs/{done}")).await?;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["id"], done.as_str());
    assert_eq!(
        detail["workflow"]["extra_data"]["extra_pnginfo"]["workflow"]["id"],
        "wf-1"
    );
    assert_eq!(detail["workflow"]["prompt"]["2"]["class_type"], "SaveText");
    assert_eq!(
        detail["outputs"]["2"]["text"],
        json!(["a lettuce and a mantis"])
    );
    assert_eq!(detail["execution_status"]["status_str"], "success");
    let (status, _) = server.get("/api/jobs/no-such-job").await?;
    assert_eq!(status, 404);

    // Cancel: the pending one is removed, the running one interrupted.
    let (status, body) = server
        .post(&format!("/api/jobs/{pending}/cancel"), &json!({}))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancelled"], json!([pending]));
    let (status, body) = server
        .post(
            "/api/jobs/cancel",
            &json!({"job_ids": [slow, "no-such-job"]}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancelled"], json!([slow]));
    ws.until_done(&slow).await?;
    let (_, finished) = server
        .get("/api/jobs?status=completed,failed,cancelled")
        .await?;
    assert_eq!(finished["jobs"][0]["id"], slow.as_str());
    assert_eq!(finished["jobs"][0]["status"], "cancelled");
    assert!(finished["jobs"][0]["execution_end_time"].is_number());
    let (_, queue) = server.get("/api/jobs?status=pending").await?;
    assert_eq!(queue["jobs"], json!([]));
    Ok(())
}

#[tokio::test]
async fn failed_jobs_carry_their_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let mut ws = server.connect("fe").await?;
    // SaveText refuses to write outside the output folder: a runtime error.
    let mut prompt = text_prompt(0);
    prompt["2"]["inputs"]["filename_prefix"] = json!("../../escape");
    let id = server.queue(&prompt, "fe").await?;
    ws.until_done(&id).await?;
    let (_, jobs) = server.get("/api/jobs?status=failed").await?;
    let job = &jobs["jobs"][0];
    assert_eq!(job["id"], id.as_str(), "{jobs}");
    let error = &job["execution_error"];
    assert_eq!(error["node_id"], "2", "{error}");
    assert_eq!(error["node_type"], "SaveText", "{error}");
    assert!(error["exception_message"].is_string(), "{error}");
    assert!(error["traceback"].is_array(), "{error}");
    Ok(())
}

#[tokio::test]
async fn start_up_routes_answer_what_the_frontend_expects() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let (_, users) = server.get("/api/users").await?;
    assert_eq!(users, json!({"storage": "server", "migrated": true}));
    let (_, settings) = server.get("/api/settings").await?;
    assert_eq!(
        settings,
        json!({"Comfy.TutorialCompleted": true}),
        "only the defaults we serve"
    );
    let (_, info) = server.get("/api/object_info").await?;
    assert_eq!(info["SaveText"]["output_node"], true);
    assert!(info["SaveText"]["category"]
        .as_str()
        .unwrap()
        .starts_with("utils"));
    for route in [
        "/api/features",
        "/api/system_stats",
        "/api/extensions",
        "/api/i18n",
        "/api/embeddings",
        "/api/experiment/models",
        "/api/global_subgraphs",
    ] {
        let (status, body) = server.get(route).await?;
        assert_eq!(status, 200, "{route}: {body}");
        assert!(body.is_object() || body.is_array(), "{route}: {body}");
    }
    Ok(())
}
