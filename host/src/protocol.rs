//! Every message the host sends to clients, in ComfyUI's websocket shapes
//! (`{"type": ..., "data": ...}` text frames and binary preview frames).
//! Messages also deserialize: Redis workers send them to the fronts.

use cretok_nodes::PreviewFormat;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Milliseconds since the Unix epoch, as ComfyUI timestamps are.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An error's text as clients may see it: without the backtrace frames a
/// library appends (candle does when `RUST_BACKTRACE` is set, wasmtime for
/// guest traps), which name build paths. The full text goes to the server log.
pub fn without_backtrace(text: &str) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !is_backtrace_line(l)).collect();
    kept.join("\n").trim_end().to_owned()
}

/// `stack backtrace:`, `  12: crate::function`, `      at /src/file.rs:3:4`.
fn is_backtrace_line(line: &str) -> bool {
    let line = line.trim_start();
    let frame_number = line
        .split_once(':')
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    frame_number
        || line.starts_with("at /")
        || line.starts_with("at .")
        || line.to_ascii_lowercase().ends_with("backtrace:")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecInfo {
    pub queue_remaining: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueStatus {
    pub exec_info: ExecInfo,
}

/// The fields shared by `execution_error` and `execution_interrupted`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedNode {
    pub prompt_id: String,
    pub node_id: String,
    pub node_type: String,
    pub executed: Vec<String>,
}

/// A JSON text frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ServerMessage {
    Status {
        status: QueueStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        sid: Option<String>,
    },
    ExecutionStart {
        prompt_id: String,
        timestamp: u64,
    },
    ExecutionCached {
        nodes: Vec<String>,
        prompt_id: String,
        timestamp: u64,
    },
    Executing {
        node: Option<String>,
        display_node: Option<String>,
        prompt_id: String,
    },
    Progress {
        value: u64,
        max: u64,
        prompt_id: String,
        node: String,
    },
    Executed {
        node: String,
        display_node: String,
        output: Json,
        prompt_id: String,
    },
    ExecutionSuccess {
        prompt_id: String,
        timestamp: u64,
    },
    ExecutionError {
        #[serde(flatten)]
        failed: FailedNode,
        exception_message: String,
        exception_type: String,
        traceback: Vec<String>,
        current_inputs: Json,
        current_outputs: Vec<String>,
        timestamp: u64,
    },
    ExecutionInterrupted {
        #[serde(flatten)]
        failed: FailedNode,
        timestamp: u64,
    },
    FeatureFlags(Json),
    /// The answer to a command sent over the websocket (see docs/websocket.md).
    Reply {
        request_id: Json,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Json>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<Json>,
    },
}

impl ServerMessage {
    pub fn status(queue_remaining: usize, sid: Option<String>) -> Self {
        ServerMessage::Status {
            status: QueueStatus {
                exec_info: ExecInfo { queue_remaining },
            },
            sid,
        }
    }

    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The event name (`"execution_start"`, ...) and the `data` part, as
    /// history messages keep them; serialised once.
    pub fn name_and_data(&self) -> (String, Json) {
        let Json::Object(mut message) = self.to_json() else {
            return (String::new(), Json::Null);
        };
        let name = match message.remove("type") {
            Some(Json::String(name)) => name,
            _ => String::new(),
        };
        (name, message.remove("data").unwrap_or(Json::Null))
    }
}

/// Binary frame kinds.
const PREVIEW_IMAGE: u32 = 1;
const TEXT: u32 = 3;
const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;

/// `u32be 1 | u32be format | image bytes`.
pub fn preview_frame(format: PreviewFormat, image: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + image.len());
    frame.extend_from_slice(&PREVIEW_IMAGE.to_be_bytes());
    frame.extend_from_slice(&(format as u32).to_be_bytes());
    frame.extend_from_slice(image);
    frame
}

/// `u32be 4 | u32be metadata length | metadata JSON | image bytes`, for clients
/// that announced `supports_preview_metadata`.
pub fn preview_frame_with_metadata(
    format: PreviewFormat,
    image: &[u8],
    node_id: &str,
    prompt_id: &str,
) -> Vec<u8> {
    let mime = match format {
        PreviewFormat::Jpeg => "image/jpeg",
        PreviewFormat::Png => "image/png",
    };
    let metadata = serde_json::json!({
        "node_id": node_id, "display_node_id": node_id, "real_node_id": node_id,
        "prompt_id": prompt_id, "parent_node_id": null, "image_type": mime,
    })
    .to_string();
    let mut frame = Vec::with_capacity(8 + metadata.len() + image.len());
    frame.extend_from_slice(&PREVIEW_IMAGE_WITH_METADATA.to_be_bytes());
    frame.extend_from_slice(&(metadata.len() as u32).to_be_bytes());
    frame.extend_from_slice(metadata.as_bytes());
    frame.extend_from_slice(image);
    frame
}

/// `u32be 3 | u32be id length | node id | utf8 text`.
pub fn text_frame(node_id: &str, text: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + node_id.len() + text.len());
    frame.extend_from_slice(&TEXT.to_be_bytes());
    frame.extend_from_slice(&(node_id.len() as u32).to_be_bytes());
    frame.extend_from_slice(node_id.as_bytes());
    frame.extend_from_slice(text.as_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_have_comfyui_shapes() {
        let m = ServerMessage::status(2, Some("abc".into()));
        assert_eq!(
            m.to_json(),
            json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 2}}, "sid": "abc"}})
        );
        let m = ServerMessage::Executing {
            node: None,
            display_node: None,
            prompt_id: "p".into(),
        };
        assert_eq!(
            m.to_json(),
            json!({"type": "executing", "data": {"node": null, "display_node": null, "prompt_id": "p"}})
        );
        let m = ServerMessage::ExecutionInterrupted {
            failed: FailedNode {
                prompt_id: "p".into(),
                node_id: "3".into(),
                node_type: "Delay".into(),
                executed: vec!["1".into()],
            },
            timestamp: 5,
        };
        let (name, data) = m.name_and_data();
        assert_eq!(name, "execution_interrupted");
        assert_eq!(data["node_type"], "Delay");
    }

    #[test]
    fn backtraces_stay_out_of_client_text() {
        let captured = std::backtrace::Backtrace::force_capture().to_string();
        let text = format!("LoadSD3 (node 4): no tensor x\n{captured}");
        assert!(captured.contains(".rs:"), "{captured}");
        assert_eq!(without_backtrace(&text), "LoadSD3 (node 4): no tensor x");
        let wasm = "error while executing at wasm backtrace:\n    0:  0x1d4 - guest!run\n\
                    Caused by:\n    wasm trap: unreachable";
        assert_eq!(
            without_backtrace(wasm),
            "Caused by:\n    wasm trap: unreachable"
        );
        assert_eq!(
            without_backtrace("plain: 3 lines\nsecond"),
            "plain: 3 lines\nsecond"
        );
    }

    #[test]
    fn binary_frames() {
        let f = preview_frame(PreviewFormat::Png, b"xy");
        assert_eq!(f, [0, 0, 0, 1, 0, 0, 0, 2, b'x', b'y']);
        let t = text_frame("12", "hi");
        assert_eq!(t, [0, 0, 0, 3, 0, 0, 0, 2, b'1', b'2', b'h', b'i']);
        let m = preview_frame_with_metadata(PreviewFormat::Jpeg, b"z", "4", "p");
        let len = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        let meta: serde_json::Value = serde_json::from_slice(&m[8..8 + len]).unwrap();
        assert_eq!(meta["node_id"], "4");
        assert_eq!(&m[8 + len..], b"z");
    }
}
