//! The relay of the event log to NATS JetStream (`[events.nats]`, `PAYGATE_EVENTS_NATS_URL`).
//!
//! The event log is the outbox: every event is written in its change's transaction. The relay
//! reads it in store order and publishes each event ([`message`]), then advances its durable
//! mark in the store only after JetStream acknowledged every event up to it. With several
//! replicas exactly one relays at a time: the one holding the relay's lease, on the store's
//! clock, renewed at every step and taken over within [`LEASE`] of its holder's death.
//! Delivery is at least once: after a crash or a takeover, events published but not yet
//! marked are published again with the same `Nats-Msg-Id`, which JetStream drops within its
//! duplicate window.
//!
//! The bus never decides an RPC: nothing on the request path waits for the relay. While NATS
//! is down or slow, events wait in the store (the purge keeps unpublished events) and the lag
//! grows; when it returns, the backlog drains in order.

pub(crate) mod message;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;

use crate::events::Events;
use crate::store::Store;

/// The relay's name in the store.
pub const NATS_RELAY: &str = "nats";
/// The default subject prefix: an event goes to `<prefix>.<account>.<kind>`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "paygate.events";
/// The default stream, created when missing, capturing `<prefix>.>`.
pub const DEFAULT_STREAM: &str = "PAYGATE_EVENTS";
/// How long a relay's lease lives after its last renewal.
pub const LEASE: Duration = Duration::from_secs(5);
/// Events published per round, their acknowledgements awaited together.
const BATCH: i64 = 256;
/// How often an idle relay, or one waiting for the lease, looks again.
const IDLE: Duration = Duration::from_millis(250);
/// The longest wait before trying NATS again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the relay publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// The server, e.g. `nats://nats:4222`.
    pub url: String,
    /// Subjects are `<subject_prefix>.<account>.<kind>`.
    pub subject_prefix: String,
    /// The JetStream stream, created when missing.
    pub stream: String,
}

/// Why a relay round stopped.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("cannot reach NATS: {0}")]
    Connect(String),
    #[error("cannot use the JetStream stream: {0}")]
    Stream(String),
    #[error("JetStream did not acknowledge event {seq}: {why}")]
    Publish { seq: i64, why: String },
    #[error("the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The relay of one gateway process.
pub(crate) struct Relay {
    settings: NatsSettings,
    store: Arc<dyn Store>,
    events: Events,
    instance: String,
}

impl Relay {
    /// Relays `events` (over `store`) to NATS as `settings` say, as `instance`.
    pub(crate) fn new(
        settings: NatsSettings,
        store: Arc<dyn Store>,
        events: Events,
        instance: String,
    ) -> Self {
        Self {
            settings,
            store,
            events,
            instance,
        }
    }

    /// Relays until `stopping` turns true: connects, holds the lease, publishes; after a
    /// failure, tries again with a growing delay.
    pub(crate) async fn run(self, mut stopping: watch::Receiver<bool>) {
        let lag = tokio::spawn(lag_loop(self.store.clone()));
        let mut backoff = IDLE;
        let mut failing = false;
        while !*stopping.borrow() {
            let round = tokio::select! {
                r = self.session() => r,
                _ = stopping.changed() => break,
            };
            if let Err(e) = round {
                metrics::counter!("paygate_events_relay_publish_errors_total").increment(1);
                if !failing {
                    tracing::warn!(error = %e, "the event relay to NATS stopped; events wait in the store");
                }
                failing = true;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopping.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        lag.abort();
    }

    /// One connection: publishes while it holds the lease, until something fails.
    async fn session(&self) -> Result<(), RelayError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(&self.settings.url)
            .await
            .map_err(|e| RelayError::Connect(e.to_string()))?;
        let js = jetstream::new(client);
        let config = jetstream::stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![format!("{}.>", self.settings.subject_prefix)],
            ..Default::default()
        };
        // An existing stream is used as it is.
        js.get_or_create_stream(config)
            .await
            .map_err(|e| RelayError::Stream(e.to_string()))?;
        tracing::info!(url = %self.settings.url, stream = %self.settings.stream, "relaying events to NATS");
        let mut head = self.events.head();
        loop {
            let lease_ms = LEASE.as_millis() as i64;
            let Some(through) = self
                .store
                .relay_claim(NATS_RELAY, &self.instance, lease_ms)
                .await?
            else {
                // Another replica relays.
                tokio::time::sleep(IDLE).await;
                continue;
            };
            if !self.publish_after(&js, through).await? {
                // Nothing new: wait for an event (here or on another replica) or renew.
                let _ = tokio::time::timeout(IDLE, head.wait_for(|h| *h > through)).await;
            }
        }
    }

    /// Publishes the events after `through`, then marks them published; whether there were
    /// any.
    async fn publish_after(
        &self,
        js: &jetstream::Context,
        through: i64,
    ) -> Result<bool, RelayError> {
        let batch = self.events.after(through, BATCH).await?;
        let Some(last) = batch.last else {
            return Ok(false);
        };
        // Published together, acknowledged in order: the mark moves only past events
        // JetStream holds.
        let mut acks = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            let m = message::outgoing(&self.settings.subject_prefix, e)
                .map_err(|why| RelayError::Publish { seq: e.seq, why })?;
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in &m.headers {
                headers.insert(*name, value.as_str());
            }
            let ack = js
                .publish_with_headers(m.subject, headers, m.body.into())
                .await
                .map_err(|e2| RelayError::Publish {
                    seq: e.seq,
                    why: e2.to_string(),
                })?;
            acks.push((e.seq, ack));
        }
        let mut acked = through;
        let mut failed = None;
        for (seq, ack) in acks {
            match ack.await {
                Ok(_) => acked = seq,
                Err(e) => {
                    failed = Some(RelayError::Publish {
                        seq,
                        why: e.to_string(),
                    });
                    break;
                }
            }
        }
        // Rows the gateway could not read (a newer release's) count as published: they are
        // skipped by every reader of this release.
        if failed.is_none() {
            acked = last;
        }
        if acked > through {
            let marked = self
                .store
                .relay_advance(NATS_RELAY, &self.instance, acked)
                .await?;
            if marked {
                metrics::counter!("paygate_events_relayed_total")
                    .increment((acked - through) as u64);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }
}

/// Keeps the lag gauges current from the store, whoever relays and whether NATS answers, so
/// a relay that stopped is seen on every replica.
async fn lag_loop(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match store.relay_lag(NATS_RELAY).await {
            Ok(lag) => {
                let seconds = lag
                    .oldest_at
                    .map_or(0.0, |at| (lag.now - at).max(0) as f64 / 1000.0);
                metrics::gauge!("paygate_events_relay_lag_events").set(lag.events as f64);
                metrics::gauge!("paygate_events_relay_lag_seconds").set(seconds);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the event relay's lag"),
        }
    }
}
