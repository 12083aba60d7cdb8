//! Shared breaker state across keel instances, through Redis (`[breaker] shared = "redis://…"`).
//!
//! When a breaker of this instance opens (by traffic or by an operator), keel publishes
//! `{"instance", "target", "cooldown_ms"}` on the channel `<prefix>:breakers` and stores it under
//! `<prefix>:breaker:<target>` for the length of the cooldown. Every instance subscribes to the
//! channel and opens its own breaker for that target for the rest of the cooldown (reason
//! `remote`); an instance that starts later reads the stored keys first. Each instance then probes
//! the target on its own, as after any opening. Redis being down never stops keel: sharing pauses,
//! is logged, and resumes when Redis is back.

use std::time::Duration;

use futures_util::StreamExt as _;
use keel_breaker::{Reason, State, Transition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::state::Gateway;

/// How long to wait before reconnecting to Redis after an error.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// One breaker opening, as published.
#[derive(Debug, Serialize, Deserialize)]
struct Opened {
    /// The publishing instance (its own messages are ignored).
    instance: String,
    /// The target's breaker key (`upstream:model`).
    target: String,
    /// How long the breaker stays open.
    cooldown_ms: u64,
}

/// Where this instance shares: the Redis client, channel and key prefix, and its own id.
#[derive(Clone)]
pub(crate) struct Sharing {
    client: redis::Client,
    prefix: String,
    instance: String,
}

impl Sharing {
    /// From `[breaker] shared` and `shared_prefix`; `None` when sharing is off or the URL is
    /// unusable (logged).
    pub(crate) fn from_config(gateway: &Gateway) -> Option<Sharing> {
        let config = &gateway.config().breaker;
        let url = config.shared.as_deref()?;
        match redis::Client::open(url) {
            Ok(client) => Some(Sharing {
                client,
                prefix: config.shared_prefix.clone(),
                instance: uuid::Uuid::new_v4().simple().to_string(),
            }),
            Err(err) => {
                tracing::error!(url, error = %err, "[breaker] shared: not a usable Redis URL; breaker state is not shared");
                None
            }
        }
    }

    fn channel(&self) -> String {
        format!("{}:breakers", self.prefix)
    }

    fn key(&self, target: &str) -> String {
        format!("{}:breaker:{target}", self.prefix)
    }

    /// Whether an opening should be told to the other instances: openings this instance made
    /// (not ones it learned from them).
    pub(crate) fn shares(transition: &Transition) -> bool {
        transition.to == State::Open && transition.reason != Reason::Remote
    }

    /// Publishes the openings sent on `openings` until the channel closes.
    pub(crate) async fn publish(self, default_cooldown: Duration, mut openings: mpsc::UnboundedReceiver<Transition>) {
        let mut connection = None;
        while let Some(transition) = openings.recv().await {
            let cooldown = transition.cooldown.unwrap_or(default_cooldown);
            let cooldown_ms = u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX).max(1);
            let opened = Opened { instance: self.instance.clone(), target: transition.target.to_string(), cooldown_ms };
            let Ok(message) = serde_json::to_string(&opened) else { continue };
            // One reconnect per message; a message that cannot be published is logged and dropped
            // (the other instances then find out by their own traffic, as without sharing).
            for _ in 0..2 {
                if connection.is_none() {
                    connection = self.client.get_multiplexed_async_connection().await.ok();
                }
                let Some(conn) = connection.as_mut() else { break };
                let sent: redis::RedisResult<()> = redis::pipe()
                    .cmd("SET")
                    .arg(self.key(&opened.target))
                    .arg(&message)
                    .arg("PX")
                    .arg(cooldown_ms)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(self.channel())
                    .arg(&message)
                    .ignore()
                    .query_async(conn)
                    .await;
                match sent {
                    Ok(()) => {
                        tracing::info!(target = %opened.target, "breaker opening shared with other keel instances");
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot publish a breaker opening to Redis; retrying once");
                        connection = None;
                    }
                }
            }
        }
    }

    /// Applies other instances' openings to this instance's breakers, reconnecting as needed.
    pub(crate) async fn subscribe(self, gateway: Gateway) {
        loop {
            if let Err(err) = self.follow(&gateway).await {
                tracing::warn!(error = %err, "shared breaker state: Redis unavailable; retrying in 1s");
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    async fn follow(&self, gateway: &Gateway) -> redis::RedisResult<()> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.channel()).await?;
        // Openings from before this instance subscribed are still in their keys.
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        for target in gateway.inner.breaker_handles.keys() {
            let key = self.key(target);
            let (stored, ttl_ms): (Option<String>, i64) =
                redis::pipe().cmd("GET").arg(&key).cmd("PTTL").arg(&key).query_async(&mut conn).await?;
            if let (Some(stored), Ok(ttl_ms)) = (stored, u64::try_from(ttl_ms)) {
                self.apply(gateway, &stored, Some(Duration::from_millis(ttl_ms)));
            }
        }
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let payload: String = message.get_payload()?;
            self.apply(gateway, &payload, None);
        }
        Ok(())
    }

    /// Opens this instance's breaker for a target another instance opened.
    fn apply(&self, gateway: &Gateway, payload: &str, remaining: Option<Duration>) {
        let Ok(opened) = serde_json::from_str::<Opened>(payload) else {
            tracing::warn!(payload, "shared breaker state: ignoring a message that is not keel's");
            return;
        };
        if opened.instance == self.instance {
            return;
        }
        let Some(breaker) = gateway.inner.breaker_handles.get(&opened.target) else { return };
        let cooldown = remaining.unwrap_or(Duration::from_millis(opened.cooldown_ms));
        if breaker.open_remote(cooldown).is_some() {
            tracing::warn!(target = %opened.target, from = %opened.instance, "breaker opened by another keel instance");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_openings_are_shared() {
        let transition = |to, reason| Transition {
            target: "a:m".into(),
            from: State::Closed,
            to,
            reason,
            at: keel_breaker::Nanos::ZERO,
            cooldown: None,
        };
        assert!(Sharing::shares(&transition(State::Open, Reason::ConsecutiveFailures { count: 5 })));
        assert!(Sharing::shares(&transition(State::Open, Reason::ForcedOpen)));
        assert!(!Sharing::shares(&transition(State::Open, Reason::Remote)));
        assert!(!Sharing::shares(&transition(State::Closed, Reason::Reset)));
    }
}
