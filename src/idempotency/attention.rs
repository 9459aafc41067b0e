//! What needs a person, measured for as long as it lasts: the keys that wait for a retry to
//! settle them (`unknown`) or for an operator (`unresolved`), by account and state, with the
//! oldest one's age. Read from the store, so the figures are right after a restart and the
//! same on every replica (alert on their maximum).

use std::sync::Arc;
use std::time::Duration;

use crate::store::{Attention, KeyState, Store};

/// How often a serving process reads the figures.
pub const ATTENTION_EVERY: Duration = Duration::from_secs(5);

const STATES: [KeyState; 2] = [KeyState::Unknown, KeyState::Unresolved];

/// Sets `paygate_keys_needing_attention{account,state}` and
/// `paygate_keys_needing_attention_oldest_seconds{account,state}` from `store` every
/// [`ATTENTION_EVERY`], forever: 0 for each of `accounts` with none.
pub async fn attention_loop(store: Arc<dyn Store>, accounts: Vec<String>) {
    let mut tick = tokio::time::interval(ATTENTION_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.needing_attention().await {
            Ok(rows) => report(&accounts, &rows),
            Err(e) => tracing::debug!(error = %e, "cannot count the keys that need attention"),
        }
    }
}

/// The gauges for `rows`, and 0 for every account and state without a row.
fn report(accounts: &[String], rows: &[Attention]) {
    let mut names: Vec<&str> = accounts.iter().map(String::as_str).collect();
    for r in rows {
        if !names.contains(&r.account.as_str()) {
            names.push(&r.account);
        }
    }
    for account in names {
        for state in STATES {
            let row = rows
                .iter()
                .find(|r| r.account == account && r.state == state);
            let (count, age) = row.map_or((0.0, 0.0), |r| {
                (r.count as f64, (r.now - r.oldest_at).max(0) as f64 / 1000.0)
            });
            let labels = [
                ("account", account.to_owned()),
                ("state", state.as_str().to_owned()),
            ];
            metrics::gauge!("paygate_keys_needing_attention", &labels).set(count);
            metrics::gauge!("paygate_keys_needing_attention_oldest_seconds", &labels).set(age);
        }
    }
}
