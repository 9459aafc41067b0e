//! `paygate.v1.EventService`: the stored provider events, in order, from a cursor on.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{Rpc, Shared, event_to_pb};
use crate::error::{ErrorContext, GatewayError, StoreUse};
use crate::idempotency::Reply;
use crate::ops::WATCH_EVENTS;
use crate::pb;
use crate::pb::event_service_server::EventService;
use crate::telemetry;
use crate::validate;

/// Events read from the store at a time.
const BATCH: i64 = 256;

/// The event service.
#[derive(Debug, Clone)]
pub(crate) struct EventApi {
    shared: Arc<Shared>,
}

impl EventApi {
    /// Serves events.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (rpc, req) = Rpc::begin(&self.shared, WATCH_EVENTS, request);
        let s = rpc.shared;
        let ctx = ErrorContext::default();
        rpc.respond(ctx.clone(), false, async {
            // The in-flight slot covers the set-up only; a stream holds none.
            let (caller, admitted) = rpc.admit(&ctx).await?;
            drop(admitted);
            let (after, named, kinds) = validate::watch_events(&req, &s.accounts)?;
            let accounts: HashSet<String> = if named.is_empty() {
                s.accounts
                    .names()
                    .into_iter()
                    .filter(|a| s.auth.authorize_account(&caller, a, &ctx).is_ok())
                    .collect()
            } else {
                for a in &named {
                    s.auth.authorize_account(&caller, a, &ctx)?;
                }
                named.into_iter().collect()
            };
            let (newest, purged) = s
                .events
                .counter()
                .await
                .map_err(|e| GatewayError::store(&e, StoreUse::Read("the event log"), &ctx))?;
            if after > 0 && after < purged {
                return Err(GatewayError::CursorExpired { oldest: purged });
            }
            if after > newest {
                return Err(GatewayError::CursorAhead { newest });
            }
            // A slot for the stream's life: the total and the caller's caps shed at once.
            let slot = s.streams.take(&caller)?;
            let (tx, rx) = mpsc::channel(64);
            let shared = self.shared.clone();
            tokio::spawn(
                async move {
                    let _slot = slot;
                    stream(shared, Filter { accounts, kinds }, caller, after, tx).await;
                    crate::telemetry::stream_ended();
                }
                .instrument(tracing::Span::current()),
            );
            Ok(Reply::fresh(ReceiverStream::new(rx)))
        })
        .await
    }
}

/// Which events a stream sends.
struct Filter {
    accounts: HashSet<String>,
    /// Empty: every kind.
    kinds: Vec<pb::EventKind>,
}

impl Filter {
    fn wants(&self, e: &crate::events::Event) -> bool {
        use crate::domain::Notice;
        let kind = match e.notice {
            Notice::Refund(_) => pb::EventKind::Refund,
            Notice::Subscription(_) => pb::EventKind::Subscription,
            Notice::SubscriptionPayment(_) => pb::EventKind::SubscriptionPayment,
        };
        self.accounts.contains(&e.account) && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// Sends every event after `after` that `filter` wants, then new ones as they are stored,
/// until the receiver goes away or shutdown starts.
async fn stream(
    s: Arc<Shared>,
    filter: Filter,
    caller: String,
    mut after: i64,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
) {
    let mut stopping = s.stopping.subscribe();
    let mut head = s.events.head();
    let _watching = telemetry::GaugeGuard::hold(metrics::gauge!("paygate_event_watchers"));
    loop {
        if *stopping.borrow() {
            let _ = tx.send(Err(GatewayError::ShuttingDown.into())).await;
            return;
        }
        // Every event up to `known` was committed before this read.
        let known = *head.borrow_and_update();
        let batch = match s.events.after(after, BATCH).await {
            Ok(b) => b,
            Err(e) => {
                let doing = StoreUse::Read("the event log; ending the stream");
                let err = GatewayError::store(&e, doing, &ErrorContext::default());
                let _ = tx.send(Err(err.into())).await;
                return;
            }
        };
        let full = batch.rows as i64 == BATCH;
        for e in batch.events {
            // A refund's event goes to the caller that made it (or one allowed to read
            // others'); events that concern no caller go to every watcher of the account.
            let visible = filter.wants(&e)
                && (e.caller.is_none() || s.auth.may_read(&caller, e.caller.as_deref()));
            if visible && tx.send(Ok(event_to_pb(&e))).await.is_err() {
                return;
            }
        }
        after = batch.last.unwrap_or(after);
        if full {
            continue;
        }
        // What the read did not return up to `known` was purged by retention.
        after = after.max(known);
        // Sleep until an event past the cursor is stored (here or on another replica).
        tokio::select! {
            _ = head.wait_for(|h| *h > after) => {}
            _ = stopping.changed() => {}
            _ = tx.closed() => return,
        }
    }
}
