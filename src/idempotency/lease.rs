//! The lease of one attempt on a key, as a value: it is made only when the store gave the
//! attempt the key (created or taken over), and it ends in exactly one way, each a method that
//! consumes it:
//!
//! - [`Lease::complete`]: the outcome is final and stored with the refund's attribution;
//! - [`Lease::unknown`]: what the attempt did is unknown; the next attempt settles it;
//! - [`Lease::release`]: this attempt executed nothing. A fresh key is deleted; a key taken
//!   over from an attempt with an unknown outcome stays unknown;
//! - [`Lease::unresolved`]: a person must settle the key;
//! - [`Lease::lost`]: the store already says the lease is gone (another attempt holds the
//!   key); nothing is written.
//!
//! A lease dropped without an ending (the call was cancelled mid-attempt) ends as unknown, in
//! the background: the conservative ending, which never lets a request be sent again before the
//! earlier one is settled. Every write is fenced by the lease's token, so an ending written
//! after another attempt took the key over changes nothing.
//!
//! These endings are the only writes of a key's state after its creation or takeover, so a
//! key's history or an event about it is written here, in the ending's transaction.

use std::sync::Arc;

use crate::store::{Completion, HistoryKind, Key, Note, RefundRow, Store, StoreError};

/// How the attempt came to hold the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// It created the key: nothing was sent for it before.
    Fresh,
    /// It took the key over from an attempt whose outcome is unknown.
    Resume,
}

/// The live lease of one attempt (see the module documentation).
#[must_use = "a lease must end: complete, unknown, release, unresolved or lost"]
pub(super) struct Lease {
    store: Arc<dyn Store>,
    key: Key,
    token: String,
    start: Start,
    /// A request of this attempt may have left: its end moves the payment's last send time.
    sent: bool,
    /// The outcome it completes with is an earlier attempt's, found by a reconciliation.
    adopting: bool,
    ended: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("method", &self.key.method)
            .field("request_id", &self.key.request_id)
            .field("start", &self.start)
            .field("sent", &self.sent)
            .finish()
    }
}

impl Lease {
    /// The lease `token` holds on `key`, which the store gave it as `start` says.
    pub(super) fn new(store: Arc<dyn Store>, key: &Key, token: &str, start: Start) -> Self {
        Self {
            store,
            key: key.clone(),
            token: token.to_owned(),
            start,
            sent: false,
            adopting: false,
            ended: false,
        }
    }

    /// Records, fenced by the lease, that a request is about to leave for the key's payment
    /// and may leave until `window_ms` from the store's now; false (nothing recorded) when the
    /// lease is no longer live.
    pub(super) async fn begin_send(&mut self, window_ms: i64) -> Result<bool, StoreError> {
        let begun = self
            .store
            .begin_send(&self.key, &self.token, window_ms)
            .await?;
        self.sent |= begun;
        Ok(begun)
    }

    /// A request of this attempt is about to leave.
    pub(super) fn sending(&mut self) {
        self.sent = true;
    }

    /// The outcome this attempt will complete with is the earlier attempt's, which a
    /// reconciliation found at the provider (its history says so).
    pub(super) fn adopting(&mut self) {
        self.adopting = true;
    }

    /// Stores the final `outcome`, kept `keep_ms`, with the refund's attribution, and
    /// `detail` (what the provider said) in the key's history. A refund already attributed to
    /// another key leaves this one unresolved; a write that failed leaves it unknown, marked
    /// in the background once the store takes writes again, so the caller is not kept waiting
    /// for it.
    pub(super) async fn complete(
        mut self,
        outcome: &str,
        keep_ms: i64,
        refund: Option<RefundRow<'_>>,
        detail: &str,
    ) -> Result<Completion, StoreError> {
        let kind = if self.adopting {
            HistoryKind::Adopted
        } else {
            HistoryKind::Answered
        };
        let note = Note { kind, detail };
        let done = self
            .store
            .complete(&self.key, &self.token, outcome, keep_ms, refund, note)
            .await;
        match done {
            Ok(Completion::AttributedElsewhere) => {
                let why = format!(
                    "the provider's refund ({detail}) is attributed to another request: check both at the provider"
                );
                self.unresolved(&why).await;
            }
            Ok(Completion::Done | Completion::LeaseLost) => self.ended = true,
            // Dropped unended: marked unknown in the background.
            Err(_) => {}
        }
        done
    }

    /// What the attempt did is unknown (`why`, for the key's history): the key is freed for
    /// the next attempt, which settles it before sending anything.
    pub(super) async fn unknown(mut self, why: &str) {
        let r = if self.sent {
            self.store
                .mark_unknown_after_send(&self.key, &self.token, why)
                .await
        } else {
            self.store.mark_unknown(&self.key, &self.token, why).await
        };
        self.ended = true;
        log(r);
    }

    /// This attempt executed nothing (`why`): a fresh key goes (and its payment is released,
    /// its history with it); a key taken over stays unknown, as the earlier attempt left it.
    pub(super) async fn release(mut self, why: &str) {
        match self.start {
            Start::Fresh => {
                let r = self.store.delete(&self.key, &self.token).await;
                self.ended = true;
                log(r);
            }
            Start::Resume => {
                let why = format!(
                    "{why}; this attempt sent nothing, the earlier one's outcome is still unknown"
                );
                self.unknown(&why).await
            }
        }
    }

    /// A person must settle the key (`why`, for its history: what they need to decide).
    pub(super) async fn unresolved(mut self, why: &str) {
        let r = self
            .store
            .mark_unresolved(&self.key, &self.token, why)
            .await;
        self.ended = true;
        log(r);
    }

    /// The store says another attempt holds the key now: nothing is written.
    pub(super) fn lost(mut self) {
        self.ended = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime left (the process is exiting): the lease expires.
        };
        let (store, key, token) = (self.store.clone(), self.key.clone(), self.token.clone());
        let sent = self.sent;
        runtime.spawn(async move {
            let why = "the call ended before its attempt did (cancelled, or its answer could not be stored)";
            let r = if sent {
                store.mark_unknown_after_send(&key, &token, why).await
            } else {
                store.mark_unknown(&key, &token, why).await
            };
            log(r);
        });
    }
}

fn log(r: Result<bool, StoreError>) {
    if let Err(e) = r {
        tracing::error!(error = %e, "idempotency store update failed; the lease will expire");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Inserted, KeyState, NewKey};

    fn key(id: &str) -> Key {
        Key {
            caller: "c".into(),
            method: "RefundService.Create",
            request_id: id.into(),
        }
    }

    async fn leased(store: &Arc<dyn Store>, k: &Key, token: &str) {
        let new = NewKey {
            key: k,
            account: "main",
            claim_keep_ms: 60_000,
            payment_id: None,
            fingerprint: "fp",
            token,
            lease_ms: 60_000,
            instance: "i1",
            payment: None,
        };
        assert!(matches!(
            store.insert(new).await.unwrap(),
            Inserted::Created
        ));
    }

    async fn state(store: &Arc<dyn Store>, k: &Key) -> Option<KeyState> {
        store.load(k).await.unwrap().map(|r| r.state)
    }

    /// Each ending leaves the key as the module documentation says, and a lease dropped
    /// without one (a cancelled call) leaves it unknown rather than leased.
    #[tokio::test]
    async fn every_lease_ends_once_as_its_ending_says() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let store = crate::store::open(&url).await.unwrap();

        let fresh = key("fresh");
        leased(&store, &fresh, "t1").await;
        Lease::new(store.clone(), &fresh, "t1", Start::Fresh)
            .release("refused")
            .await;
        assert_eq!(
            state(&store, &fresh).await,
            None,
            "nothing executed: deleted"
        );

        let resumed = key("resumed");
        leased(&store, &resumed, "t2").await;
        Lease::new(store.clone(), &resumed, "t2", Start::Resume)
            .release("refused")
            .await;
        assert_eq!(
            state(&store, &resumed).await,
            Some(KeyState::Unknown),
            "an earlier attempt's outcome stays unknown"
        );

        let person = key("person");
        leased(&store, &person, "t3").await;
        Lease::new(store.clone(), &person, "t3", Start::Fresh)
            .unresolved("two candidates")
            .await;
        assert_eq!(state(&store, &person).await, Some(KeyState::Unresolved));

        let done = key("done");
        leased(&store, &done, "t4").await;
        let c = Lease::new(store.clone(), &done, "t4", Start::Fresh)
            .complete("{}", 60_000, None, "answered")
            .await
            .unwrap();
        assert_eq!(c, Completion::Done);
        assert_eq!(state(&store, &done).await, Some(KeyState::Done));

        let other = key("other");
        leased(&store, &other, "t5").await;
        Lease::new(store.clone(), &other, "not-the-holder", Start::Fresh)
            .unknown("timeout")
            .await;
        assert_eq!(
            state(&store, &other).await,
            Some(KeyState::InFlight),
            "fenced by the token"
        );

        let cancelled = key("cancelled");
        leased(&store, &cancelled, "t6").await;
        let mut lease = Lease::new(store.clone(), &cancelled, "t6", Start::Fresh);
        lease.sending();
        drop(lease);
        let mut left = None;
        for _ in 0..200 {
            left = state(&store, &cancelled).await;
            if left != Some(KeyState::InFlight) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(left, Some(KeyState::Unknown), "dropped: unknown");
    }
}
