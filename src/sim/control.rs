//! What every simulator offers a test: a queue of faults, counters of what it has seen, and
//! the control endpoints for both (`GET /sim/stats`, `POST /sim/faults`, `DELETE /sim/faults`).
//! A simulator keeps its [`Controls`] inside its state lock and implements [`Simulator`]; the
//! rest comes from here.

use std::collections::HashMap;

use axum::http::Method;
use serde::Serialize;
use serde_json::{Value, json};

use super::fault::{Fault, FaultKind};

/// A simulator's counters: authenticated calls by endpoint, plus its own.
pub trait Counters: Clone + Default + Serialize {
    /// Authenticated calls by endpoint name.
    fn calls_mut(&mut self) -> &mut HashMap<String, u64>;
}

/// The faults queued on a simulator and its counters.
#[derive(Debug, Default)]
pub struct Controls<S> {
    faults: Vec<Fault>,
    pub(crate) stats: S,
}

impl<S: Counters> Controls<S> {
    /// Counts an authenticated call to `endpoint` and takes the first fault queued for it,
    /// counting down that fault's uses.
    pub(crate) fn call(&mut self, endpoint: &str) -> Option<FaultKind> {
        *self.stats.calls_mut().entry(endpoint.into()).or_default() += 1;
        let i = self
            .faults
            .iter()
            .position(|f| f.times > 0 && f.endpoint.as_deref().is_none_or(|e| e == endpoint))?;
        let f = &mut self.faults[i];
        f.times -= 1;
        let kind = f.kind.clone();
        if f.times == 0 {
            self.faults.remove(i);
        }
        Some(kind)
    }
}

/// A simulator as a test drives it.
pub trait Simulator {
    /// Its counters.
    type Stats: Counters;

    /// Runs `f` on its controls, under its state lock.
    fn with_controls<R>(&self, f: impl FnOnce(&mut Controls<Self::Stats>) -> R) -> R;

    /// Queues a fault.
    fn inject(&self, f: Fault) {
        self.with_controls(|c| c.faults.push(f));
    }

    /// Drops queued faults.
    fn clear_faults(&self) {
        self.with_controls(|c| c.faults.clear());
    }

    /// A snapshot of the counters.
    fn stats(&self) -> Self::Stats {
        self.with_controls(|c| c.stats.clone())
    }

    /// Authenticated calls to `endpoint` so far.
    fn calls(&self, endpoint: &str) -> u64 {
        self.with_controls(|c| c.stats.calls_mut().get(endpoint).copied().unwrap_or(0))
    }
}

/// Serves the control endpoints every simulator has: `None` when `method path` is not one of
/// them, else the answer's JSON or the request body's parse error.
pub(super) fn common_control<S: Simulator>(
    sim: &S,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<Result<Value, serde_json::Error>> {
    Some(match (method.as_str(), path) {
        ("GET", "/sim/stats") => serde_json::to_value(sim.stats()),
        ("POST", "/sim/faults") => serde_json::from_slice::<Fault>(body).map(|f| {
            sim.inject(f);
            json!({})
        }),
        ("DELETE", "/sim/faults") => {
            sim.clear_faults();
            Ok(json!({}))
        }
        _ => return None,
    })
}
