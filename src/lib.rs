//! paygate: a gRPC gateway that cancels subscriptions and creates and inquires refunds at
//! payment providers, safely.
//!
//! The library serves the `paygate` binary (`src/cli/`), the tests and the benches. Its API:
//! - [`server`]: build a gateway with [`server::Gateway::builder`] (accounts, store, limits,
//!   ports; the settings it takes are re-exported there) or from the configuration with
//!   [`server::Gateway::from_config`], then bind and serve it;
//! - [`config`] (the composition root: every setting of a gateway), [`settings`] (where a
//!   setting comes from and how its errors name it; providers read their keys through it),
//!   [`telemetry`], [`dev`]: what the binary's commands start from;
//! - [`pb`]: the generated API, for clients;
//! - [`providers`] and [`domain`]: the providers behind their trait and the typed requests and
//!   results they take (the benches call a provider directly), with each provider's signing
//!   and code table (tested directly);
//! - [`store`] and [`idempotency`]: persistence and the idempotency layer (tested directly,
//!   and used by `paygate settle`); [`error`]: the one mapping to gRPC statuses and the error
//!   reasons callers match on; [`secret`]: values that never reach logs;
//! - [`sim`]: the provider simulators.
//!
//! Everything else (the request pipeline, validation, admission, caller authentication and
//! rate limits, the notification listener) is crate-private, and `unreachable_pub` keeps every
//! item in a private module crate-private.

#![warn(unreachable_pub)]

pub(crate) mod accounts;
pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod auth;
pub mod config;
pub(crate) mod connections;
pub mod dev;
pub mod domain;
pub mod error;
pub(crate) mod events;
pub mod idempotency;
pub(crate) mod notify;
pub(crate) mod ops;
pub mod providers;
pub(crate) mod ratelimit;
pub(crate) mod reason;
pub mod relay;
pub mod reload;
pub(crate) mod retry;
pub mod secret;
pub mod server;
pub mod settings;
pub mod sim;
pub mod store;
pub(crate) mod task;
pub mod telemetry;
pub mod tls;
pub(crate) mod validate;

/// Generated protobuf and gRPC code for `paygate.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("paygate.v1");

    /// Generated protobuf and gRPC code for `paygate.admin.v1`, the operators' service.
    pub mod admin {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("paygate.admin.v1");
    }

    /// The encoded descriptor set of `paygate.v1`, `paygate.admin.v1` and their imports,
    /// served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("paygate_descriptor");
}
