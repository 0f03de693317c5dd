//! The relay of execution events on the Redis bus: workers publish them (in
//! `protocol`'s transport encoding), every front relays them to its
//! websocket clients, which keep only their own.

use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::broadcast;

use super::EVENTS;
use crate::protocol::Event;

/// Relays every event published on Redis into a front's bus, reconnecting
/// after a lost connection; runs for the life of the process.
pub fn spawn_relay(
    client: redis::Client,
    bus: broadcast::Sender<Event>,
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

fn relay(client: &redis::Client, bus: &broadcast::Sender<Event>) -> redis::RedisResult<()> {
    let mut con = client.get_connection_with_timeout(super::CONNECT_TIMEOUT)?;
    let mut subscription = con.as_pubsub();
    subscription.subscribe(EVENTS)?;
    loop {
        let message = subscription.get_message()?;
        match Event::from_transport(message.get_payload_bytes()) {
            // No subscribers is fine: nobody is listening.
            Ok(event) => drop(bus.send(event)),
            Err(e) => tracing::warn!("dropping a malformed event: {e:#}"),
        }
    }
}
