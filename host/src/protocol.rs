//! Every message the host sends to clients, in ComfyUI's websocket shapes
//! (`{"type": ..., "data": ...}` text frames and binary frames), as
//! [`Event`]s serialised once and shared by every socket, and their transport
//! between processes (Redis workers publish them, fronts relay them).

use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes};
use cretok_node_api::PreviewFormat;
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

    /// The text frame: serialised here, once per message.
    pub fn to_text(&self) -> Utf8Bytes {
        // Every field is a string, a number or a JSON value: this cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|e| {
                tracing::error!("serialising a websocket message: {e}");
                String::new()
            })
            .into()
    }

    /// Whether the prompt's history keeps it (ComfyUI's `status.messages`):
    /// the start, the cached nodes and the prompt's last word.
    pub fn belongs_in_history(&self) -> bool {
        matches!(
            self,
            ServerMessage::ExecutionStart { .. } | ServerMessage::ExecutionCached { .. }
        ) || self.ends_prompt()
    }

    /// Whether it is a prompt's last word: success, error or interruption.
    pub fn ends_prompt(&self) -> bool {
        matches!(
            self,
            ServerMessage::ExecutionSuccess { .. }
                | ServerMessage::ExecutionError { .. }
                | ServerMessage::ExecutionInterrupted { .. }
        )
    }

    /// The event name (`"execution_start"`, ...) and the `data` part, as
    /// history messages keep them.
    pub fn name_and_data(&self) -> (String, Json) {
        let Ok(Json::Object(mut message)) = serde_json::to_value(self) else {
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

/// Each preview format: its code in kind 1 frames and its type in kind 4 metadata.
const PREVIEW_FORMATS: [(PreviewFormat, u32, &str); 2] = [
    (PreviewFormat::Jpeg, 1, "image/jpeg"),
    (PreviewFormat::Png, 2, "image/png"),
];

fn format_code(format: PreviewFormat) -> u32 {
    PREVIEW_FORMATS
        .iter()
        .find(|(f, ..)| *f == format)
        .map_or(0, |(_, code, _)| *code)
}

fn format_mime(format: PreviewFormat) -> &'static str {
    PREVIEW_FORMATS
        .iter()
        .find(|(f, ..)| *f == format)
        .map_or("", |(.., mime)| mime)
}

fn format_of_mime(mime: &str) -> Option<PreviewFormat> {
    PREVIEW_FORMATS
        .iter()
        .find(|(.., m)| *m == mime)
        .map(|(f, ..)| *f)
}

/// `u32be kind | u32be n | n bytes | rest`: the layout of kinds 3 and 4.
fn framed(kind: u32, head: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + head.len() + rest.len());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.extend_from_slice(&(head.len() as u32).to_be_bytes());
    frame.extend_from_slice(head);
    frame.extend_from_slice(rest);
    frame
}

/// A preview image, framed for both kinds of client: kind 4 (with metadata)
/// built when the preview is made, kind 1 at most once, when a socket first
/// wants it.
#[derive(Debug)]
pub struct Preview {
    /// `u32be 4 | u32be metadata length | metadata JSON | image`.
    with_metadata: Bytes,
    /// Where the image starts in `with_metadata`.
    image_at: usize,
    format: PreviewFormat,
    plain: OnceLock<Bytes>,
}

impl Preview {
    fn new(format: PreviewFormat, image: &[u8], node_id: &str, prompt_id: &str) -> Preview {
        let metadata = serde_json::json!({
            "node_id": node_id, "display_node_id": node_id, "real_node_id": node_id,
            "prompt_id": prompt_id, "parent_node_id": null, "image_type": format_mime(format),
        })
        .to_string();
        Preview {
            with_metadata: framed(PREVIEW_IMAGE_WITH_METADATA, metadata.as_bytes(), image).into(),
            image_at: 8 + metadata.len(),
            format,
            plain: OnceLock::new(),
        }
    }

    /// Reads a kind 4 frame back (as the transport carries previews).
    fn from_metadata_frame(frame: Bytes) -> anyhow::Result<Preview> {
        let (kind, head, _) = split_frame(&frame)?;
        if kind != PREVIEW_IMAGE_WITH_METADATA {
            bail!("a preview frame of kind {kind}");
        }
        let image_at = 8 + head.len();
        let metadata: Json = serde_json::from_slice(head).context("preview metadata")?;
        let mime = metadata["image_type"].as_str().unwrap_or_default();
        let Some(format) = format_of_mime(mime) else {
            bail!("unknown preview image type '{mime}'");
        };
        Ok(Preview {
            with_metadata: frame,
            image_at,
            format,
            plain: OnceLock::new(),
        })
    }

    fn image(&self) -> &[u8] {
        &self.with_metadata[self.image_at..]
    }

    /// The frame for a client that asked for metadata (kind 4) or not (kind 1).
    pub fn frame(&self, with_metadata: bool) -> Bytes {
        if with_metadata {
            return self.with_metadata.clone();
        }
        self.plain
            .get_or_init(|| {
                let mut frame = Vec::with_capacity(8 + self.image().len());
                frame.extend_from_slice(&PREVIEW_IMAGE.to_be_bytes());
                frame.extend_from_slice(&format_code(self.format).to_be_bytes());
                frame.extend_from_slice(self.image());
                frame.into()
            })
            .clone()
    }
}

/// `(kind, head, rest)` of a kind 3 or 4 frame.
fn split_frame(frame: &[u8]) -> anyhow::Result<(u32, &[u8], &[u8])> {
    let Some((kind, rest)) = frame.split_first_chunk::<4>() else {
        bail!("a frame of {} bytes", frame.len());
    };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        bail!("a frame of {} bytes", frame.len());
    };
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        bail!("a frame whose head of {len} bytes is cut short");
    }
    let (head, rest) = rest.split_at(len);
    Ok((u32::from_be_bytes(*kind), head, rest))
}

/// What an event sends, serialised.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A JSON text frame.
    Text(Utf8Bytes),
    /// A binary frame sent as it is: a node's text (kind 3).
    Binary(Bytes),
    /// A preview image (kind 4 or 1, as the client asked).
    Preview(Arc<Preview>),
}

/// An event for websocket clients, serialised when it is made: every
/// socket, and the transport to other processes, share its bytes.
#[derive(Debug, Clone)]
pub struct Event {
    /// The client id it is for; `None`: every client.
    pub target: Option<Arc<str>>,
    pub frame: Frame,
}

/// Transport tags: what follows the target.
const CARRIES_TEXT: u8 = b't';
const CARRIES_BINARY: u8 = b'b';
const CARRIES_PREVIEW: u8 = b'p';
/// The target length that means "every client".
const EVERYONE: u32 = u32::MAX;

impl Event {
    pub fn message(target: Option<Arc<str>>, message: &ServerMessage) -> Event {
        Event {
            target,
            frame: Frame::Text(message.to_text()),
        }
    }

    /// A preview image of node `node_id`.
    pub fn preview(
        target: Option<Arc<str>>,
        prompt_id: &str,
        node_id: &str,
        format: PreviewFormat,
        image: &[u8],
    ) -> Event {
        Event {
            target,
            frame: Frame::Preview(Arc::new(Preview::new(format, image, node_id, prompt_id))),
        }
    }

    /// A line of text from node `node_id`: `u32be 3 | u32be id length | node id | utf8 text`.
    pub fn node_text(target: Option<Arc<str>>, node_id: &str, text: &str) -> Event {
        Event {
            target,
            frame: Frame::Binary(framed(TEXT, node_id.as_bytes(), text.as_bytes()).into()),
        }
    }

    /// What socket `sid` sends for it (its bytes shared, not copied), or
    /// `None` when the event is someone else's.
    pub fn message_for(&self, sid: &str, metadata_previews: bool) -> Option<Message> {
        if self.target.as_deref().is_some_and(|t| t != sid) {
            return None;
        }
        Some(match &self.frame {
            Frame::Text(text) => Message::Text(text.clone()),
            Frame::Binary(bytes) => Message::Binary(bytes.clone()),
            Frame::Preview(preview) => Message::Binary(preview.frame(metadata_previews)),
        })
    }

    /// The event between processes: `u8 tag | u32be target length (or
    /// u32::MAX for everyone) | target | the frame's bytes`, where a preview
    /// travels as its kind 4 frame.
    pub fn to_transport(&self) -> Vec<u8> {
        let (tag, frame): (u8, &[u8]) = match &self.frame {
            Frame::Text(text) => (CARRIES_TEXT, text.as_bytes()),
            Frame::Binary(bytes) => (CARRIES_BINARY, bytes),
            Frame::Preview(preview) => (CARRIES_PREVIEW, &preview.with_metadata),
        };
        let target = self.target.as_deref().map(str::as_bytes);
        let target_len = target.map_or(EVERYONE, |t| t.len() as u32);
        let target = target.unwrap_or_default();
        let mut payload = Vec::with_capacity(5 + target.len() + frame.len());
        payload.push(tag);
        payload.extend_from_slice(&target_len.to_be_bytes());
        payload.extend_from_slice(target);
        payload.extend_from_slice(frame);
        payload
    }

    /// Reads what [`Event::to_transport`] wrote.
    pub fn from_transport(payload: &[u8]) -> anyhow::Result<Event> {
        let Some((&tag, rest)) = payload.split_first() else {
            bail!("an empty event payload");
        };
        let Some((len, rest)) = rest.split_first_chunk::<4>() else {
            bail!("an event payload of {} bytes", payload.len());
        };
        let (target, frame) = match u32::from_be_bytes(*len) {
            EVERYONE => (None, rest),
            len if rest.len() >= len as usize => {
                let (target, frame) = rest.split_at(len as usize);
                let target = std::str::from_utf8(target).context("event target")?;
                (Some(Arc::from(target)), frame)
            }
            len => bail!("an event target of {len} bytes is cut short"),
        };
        let frame = Bytes::copy_from_slice(frame);
        let frame = match tag {
            CARRIES_TEXT => Frame::Text(Utf8Bytes::try_from(frame).context("event text")?),
            CARRIES_BINARY => Frame::Binary(frame),
            CARRIES_PREVIEW => Frame::Preview(Arc::new(Preview::from_metadata_frame(frame)?)),
            other => bail!("unknown event tag {other}"),
        };
        Ok(Event { target, frame })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(message: &ServerMessage) -> Json {
        serde_json::from_str(&message.to_text()).unwrap()
    }

    fn bytes_of(message: Message) -> Bytes {
        match message {
            Message::Binary(bytes) => bytes,
            other => panic!("not a binary frame: {other:?}"),
        }
    }

    #[test]
    fn messages_have_comfyui_shapes() {
        let m = ServerMessage::status(2, Some("abc".into()));
        assert_eq!(
            wire(&m),
            json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 2}}, "sid": "abc"}})
        );
        let m = ServerMessage::Executing {
            node: None,
            display_node: None,
            prompt_id: "p".into(),
        };
        assert_eq!(
            wire(&m),
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
    fn binary_frames_have_comfyui_layouts() {
        let text = Event::node_text(None, "12", "hi").message_for("anyone", false);
        assert_eq!(
            bytes_of(text.unwrap()),
            [0, 0, 0, 3, 0, 0, 0, 2, b'1', b'2', b'h', b'i'][..]
        );
        let preview = Event::preview(None, "p", "4", PreviewFormat::Png, b"xy");
        let plain = bytes_of(preview.message_for("a", false).unwrap());
        assert_eq!(plain, [0, 0, 0, 1, 0, 0, 0, 2, b'x', b'y'][..]);
        let framed = bytes_of(preview.message_for("a", true).unwrap());
        let len = u32::from_be_bytes(framed[4..8].try_into().unwrap()) as usize;
        let meta: Json = serde_json::from_slice(&framed[8..8 + len]).unwrap();
        assert_eq!(framed[..4], [0, 0, 0, 4]);
        assert_eq!(
            (&meta["node_id"], &meta["image_type"]),
            (&json!("4"), &json!("image/png"))
        );
        assert_eq!(&framed[8 + len..], b"xy");
    }

    #[test]
    fn an_event_is_serialised_once_and_every_socket_shares_its_bytes() {
        let (bus, mut alice) = tokio::sync::broadcast::channel::<Event>(4);
        let mut bob = bus.subscribe();
        let executing = ServerMessage::Executing {
            node: Some("3".into()),
            display_node: Some("3".into()),
            prompt_id: "p".into(),
        };
        bus.send(Event::message(None, &executing)).unwrap();
        bus.send(Event::preview(
            None,
            "p",
            "3",
            PreviewFormat::Jpeg,
            &[7; 64],
        ))
        .unwrap();
        let text_ptr = |event: &Event, sid: &str| match event.message_for(sid, false) {
            Some(Message::Text(text)) => text.as_str().as_ptr(),
            other => panic!("not a text frame: {other:?}"),
        };
        let (a, b) = (alice.try_recv().unwrap(), bob.try_recv().unwrap());
        assert_eq!(text_ptr(&a, "alice"), text_ptr(&b, "bob"));
        let (a, b) = (alice.try_recv().unwrap(), bob.try_recv().unwrap());
        for with_metadata in [false, true] {
            let mine = bytes_of(a.message_for("alice", with_metadata).unwrap());
            let theirs = bytes_of(b.message_for("bob", with_metadata).unwrap());
            assert_eq!(mine.as_ptr(), theirs.as_ptr(), "metadata {with_metadata}");
        }
        let private = Event::message(Some("alice".into()), &executing);
        assert!(private.message_for("bob", false).is_none());
        assert!(private.message_for("alice", false).is_some());
    }

    #[test]
    fn events_survive_the_transport_between_processes() {
        let error = ServerMessage::ExecutionError {
            failed: FailedNode {
                prompt_id: "p".into(),
                node_id: "3".into(),
                node_type: "Delay".into(),
                executed: vec!["1".into()],
            },
            exception_message: "boom".into(),
            exception_type: "RuntimeError".into(),
            traceback: vec![],
            current_inputs: json!({"text": ["x"]}),
            current_outputs: vec![],
            timestamp: 7,
        };
        let events = [
            Event::message(Some("alice".into()), &error),
            Event::message(Some("".into()), &error),
            Event::preview(None, "p", "9", PreviewFormat::Png, &[0, 1, 2, 255]),
            Event::node_text(Some("bob".into()), "9", "loss 0.1"),
        ];
        for sent in events {
            let back = Event::from_transport(&sent.to_transport()).unwrap();
            assert_eq!(back.target, sent.target);
            for (sid, metadata) in [("alice", false), ("bob", true), ("", false)] {
                let (before, after) = (
                    sent.message_for(sid, metadata),
                    back.message_for(sid, metadata),
                );
                assert_eq!(format!("{before:?}"), format!("{after:?}"));
            }
        }
        let text = Event::message(None, &error).to_transport();
        let back = Event::from_transport(&text).unwrap();
        let Some(Message::Text(json)) = back.message_for("x", false) else {
            panic!("not text");
        };
        let back: ServerMessage = serde_json::from_str(json.as_str()).unwrap();
        assert_eq!(back, error);
        assert!(Event::from_transport(&[b't', 0, 0, 0, 9, b'a']).is_err());
        assert!(Event::from_transport(&[b'p', 255, 255, 255, 255, 0, 0, 0, 1]).is_err());
        assert!(Event::from_transport(&[]).is_err());
    }
}
