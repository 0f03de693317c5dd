//! `/ws?clientId=ID`: execution events for the client's prompts, queue status
//! for everyone, binary preview frames, and commands (`queue_prompt`,
//! `interrupt`) answered with their `request_id` (see docs/websocket.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tokio::sync::{broadcast, mpsc};

use super::prompts::{off_runtime, prompt_request};
use super::{Shared, MAX_UPLOAD_BYTES};
use crate::app::AppState;
use crate::protocol::ServerMessage;

/// How long a closing connection may take to send what it owes and its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub async fn upgrade(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let sid = params
        .get("clientId")
        .filter(|id| !id.is_empty())
        .cloned()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    ws.on_upgrade(move |socket| connection(s, socket, sid))
}

async fn connection(s: Shared, socket: WebSocket, sid: String) {
    let (mut sink, mut stream) = socket.split();
    let mut events = s.app.bus.subscribe();
    let (direct_tx, mut direct_rx) = mpsc::unbounded_channel::<ServerMessage>();
    let metadata_previews = Arc::new(AtomicBool::new(false));

    let remaining = match off_runtime(&s, |app| app.queue.remaining()).await {
        Ok(remaining) => remaining,
        Err(e) => {
            tracing::error!("websocket {sid} refused: {e:#}");
            let close = CloseFrame {
                code: close_code::AGAIN,
                reason: "the prompt queue is unavailable".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
            return;
        }
    };
    let hello = ServerMessage::status(remaining, Some(sid.clone()));
    if sink.send(Message::Text(hello.to_text())).await.is_err() {
        return;
    }

    let send_sid = sid.clone();
    let send_metadata = Arc::clone(&metadata_previews);
    let mut send_task = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                direct = direct_rx.recv() => match direct {
                    Some(m) => Message::Text(m.to_text()),
                    None => break,
                },
                event = events.recv() => match event {
                    Ok(event) => match event.message_for(&send_sid, send_metadata.load(Ordering::Relaxed)) {
                        Some(m) => m,
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("websocket client {send_sid} fell behind; {n} events dropped");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
        // Answers the client's close frame (or sends ours): the handshake always completes.
        let _ = sink.close().await;
    });

    let recv_state = s.clone();
    let recv_sid = sid.clone();
    let mut recv_task = tokio::spawn(async move {
        let mut first = true;
        while let Some(Ok(message)) = stream.next().await {
            let text = match message {
                Message::Text(text) => text,
                Message::Close(_) => break,
                _ => continue,
            };
            let Ok(command) = serde_json::from_str::<Json>(&text) else {
                let _ = direct_tx.send(reply(
                    Json::Null,
                    Err(json!({"type": "invalid_json", "message": "Malformed JSON"})),
                ));
                continue;
            };
            let (sid, flags) = (recv_sid.clone(), Arc::clone(&metadata_previews));
            let answer = off_runtime(&recv_state, move |app| {
                handle_command(app, &sid, &command, first, &flags)
            })
            .await;
            if let Some(answer) = answer {
                let _ = direct_tx.send(answer);
            }
            first = false;
        }
    });

    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        // The client closed (its last command's reply still goes out): the
        // send task ends once `direct_tx` is dropped and answers the close.
        _ = &mut recv_task => {
            if tokio::time::timeout(CLOSE_GRACE, &mut send_task).await.is_err() {
                send_task.abort();
            }
        }
    }
}

fn reply(request_id: Json, result: Result<Json, Json>) -> ServerMessage {
    match result {
        Ok(result) => ServerMessage::Reply {
            request_id,
            result: Some(result),
            error: None,
        },
        Err(error) => ServerMessage::Reply {
            request_id,
            result: None,
            error: Some(error),
        },
    }
}

fn handle_command(
    app: &AppState,
    sid: &str,
    command: &Json,
    first: bool,
    metadata_previews: &AtomicBool,
) -> Option<ServerMessage> {
    let request_id = command.get("request_id").cloned().unwrap_or(Json::Null);
    let data = command.get("data").cloned().unwrap_or_else(|| json!({}));
    match command.get("type").and_then(Json::as_str) {
        Some("feature_flags") if first => {
            let wants = data
                .get("supports_preview_metadata")
                .and_then(Json::as_bool)
                .unwrap_or(false);
            metadata_previews.store(wants, Ordering::Relaxed);
            Some(ServerMessage::FeatureFlags(json!({
                "supports_preview_metadata": true,
                "max_upload_size": MAX_UPLOAD_BYTES,
            })))
        }
        Some("feature_flags") => None,
        Some("queue_prompt") => {
            let result = prompt_request(&data).map_err(|e| e.body).and_then(|mut request| {
                request.client_id.get_or_insert_with(|| sid.to_owned());
                app.submit(request)
                    .map(|sub| json!({"prompt_id": sub.prompt_id, "number": sub.number, "node_errors": sub.node_errors}))
                    .map_err(|refused| refused.failure().to_json())
            });
            Some(reply(request_id, result))
        }
        Some("interrupt") => {
            let interrupted = app
                .queue
                .interrupt(data.get("prompt_id").and_then(Json::as_str))
                .map(|interrupted| json!({"interrupted": interrupted}))
                .map_err(|e| json!({"type": "queue_unavailable", "message": format!("{e:#}")}));
            Some(reply(request_id, interrupted))
        }
        other => Some(reply(
            request_id,
            Err(
                json!({"type": "unknown_command", "message": format!("unknown command {other:?}")}),
            ),
        )),
    }
}
