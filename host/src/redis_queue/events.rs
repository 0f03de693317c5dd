//! Execution events on the Redis bus: workers publish them, every front
//! relays them to its websocket clients, which keep only their own.
//!
//! A payload is `u32be header length | header JSON | bytes` (the image of a preview).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use cretok_nodes::PreviewFormat;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::EVENTS;
use crate::app::Outbound;
use crate::protocol::ServerMessage;

#[derive(Serialize, Deserialize)]
struct Header {
    target: Option<String>,
    event: Event,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Event {
    Message(Box<ServerMessage>),
    Preview {
        prompt_id: String,
        node_id: String,
        format: u32,
    },
    Text {
        node_id: String,
        text: String,
    },
}

pub fn encode(outbound: &Outbound) -> Vec<u8> {
    let (target, event, bytes): (_, _, &[u8]) = match outbound {
        Outbound::Message { target, message } => (target, Event::Message(message.clone()), &[]),
        Outbound::Preview {
            target,
            prompt_id,
            node_id,
            format,
            image,
        } => (
            target,
            Event::Preview {
                prompt_id: prompt_id.clone(),
                node_id: node_id.clone(),
                format: *format as u32,
            },
            image.as_slice(),
        ),
        Outbound::Text {
            target,
            node_id,
            text,
        } => (
            target,
            Event::Text {
                node_id: node_id.clone(),
                text: text.clone(),
            },
            &[],
        ),
    };
    let header = Header {
        target: target.clone(),
        event,
    };
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut payload = Vec::with_capacity(4 + header.len() + bytes.len());
    payload.extend_from_slice(&(header.len() as u32).to_be_bytes());
    payload.extend_from_slice(&header);
    payload.extend_from_slice(bytes);
    payload
}

pub fn decode(payload: &[u8]) -> anyhow::Result<Outbound> {
    let Some((len, rest)) = payload.split_first_chunk::<4>() else {
        bail!("event payload of {} bytes has no header", payload.len());
    };
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        bail!("event header of {len} bytes is cut short");
    }
    let (header, bytes) = rest.split_at(len);
    let header: Header = serde_json::from_slice(header).context("event header")?;
    let target = header.target;
    Ok(match header.event {
        Event::Message(message) => Outbound::Message { target, message },
        Event::Preview {
            prompt_id,
            node_id,
            format,
        } => Outbound::Preview {
            target,
            prompt_id,
            node_id,
            format: match format {
                1 => PreviewFormat::Jpeg,
                2 => PreviewFormat::Png,
                other => bail!("unknown preview format {other}"),
            },
            image: Arc::new(bytes.to_vec()),
        },
        Event::Text { node_id, text } => Outbound::Text {
            target,
            node_id,
            text,
        },
    })
}

/// Relays every event published on Redis into a front's bus, reconnecting
/// after a lost connection; runs for the life of the process.
pub fn spawn_relay(
    client: redis::Client,
    bus: broadcast::Sender<Outbound>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("redis-relay".into())
        .spawn(move || loop {
            if let Err(e) = relay(&client, &bus) {
                tracing::warn!("relaying Redis events: {e}; reconnecting in 1 s");
            }
            std::thread::sleep(Duration::from_secs(1));
        })
}

fn relay(client: &redis::Client, bus: &broadcast::Sender<Outbound>) -> redis::RedisResult<()> {
    let mut con = client.get_connection_with_timeout(super::CONNECT_TIMEOUT)?;
    let mut subscription = con.as_pubsub();
    subscription.subscribe(EVENTS)?;
    loop {
        let message = subscription.get_message()?;
        match decode(message.get_payload_bytes()) {
            // No subscribers is fine: nobody is listening.
            Ok(outbound) => drop(bus.send(outbound)),
            Err(e) => tracing::warn!("dropping a malformed event: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FailedNode;

    #[test]
    fn events_survive_the_trip() {
        let message = ServerMessage::ExecutionError {
            failed: FailedNode {
                prompt_id: "p".into(),
                node_id: "3".into(),
                node_type: "Delay".into(),
                executed: vec!["1".into()],
            },
            exception_message: "boom".into(),
            exception_type: "RuntimeError".into(),
            traceback: vec![],
            current_inputs: serde_json::json!({"text": ["x"]}),
            current_outputs: vec![],
            timestamp: 7,
        };
        let sent = Outbound::Message {
            target: Some("alice".into()),
            message: Box::new(message.clone()),
        };
        let Outbound::Message {
            target,
            message: back,
        } = decode(&encode(&sent)).unwrap()
        else {
            panic!("not a message");
        };
        assert_eq!((target.as_deref(), *back), (Some("alice"), message));

        let preview = Outbound::Preview {
            target: None,
            prompt_id: "p".into(),
            node_id: "9".into(),
            format: PreviewFormat::Png,
            image: Arc::new(vec![0, 1, 2, 255]),
        };
        let Outbound::Preview {
            format,
            image,
            node_id,
            ..
        } = decode(&encode(&preview)).unwrap()
        else {
            panic!("not a preview");
        };
        assert_eq!(
            (format, image.as_slice(), node_id.as_str()),
            (PreviewFormat::Png, &[0, 1, 2, 255][..], "9")
        );
        assert!(decode(&[0, 0, 0, 9, b'{']).is_err());
    }
}
