//! paygate: a gRPC gateway that cancels subscriptions and creates and inquires refunds at
//! payment providers, safely.
//!
//! The library serves the `paygate` binary (`src/cli/`), the tests and the benches. A gateway
//! is built with [`server::Gateway::builder`] (accounts, store, limits, ports) or from the
//! configuration with [`server::Gateway::from_config`], then bound and served. The public
//! modules are what those users need: the generated API ([`pb`]), the simulators ([`sim`]),
//! configuration, providers and their parts, the store and the idempotency layer (tested
//! directly). The request pipeline's inside (`ops`, `retry`, `events`, `task`) is
//! crate-private, and `unreachable_pub` keeps every item in a private module crate-private.

#![warn(unreachable_pub)]

pub mod accounts;
pub mod admission;
pub mod api;
pub mod auth;
pub mod config;
pub mod dev;
pub mod domain;
pub mod error;
pub(crate) mod events;
pub mod idempotency;
pub mod notify;
pub(crate) mod ops;
pub mod providers;
pub mod ratelimit;
pub mod reason;
pub(crate) mod retry;
pub mod secret;
pub mod server;
pub mod sim;
pub mod store;
pub(crate) mod task;
pub mod telemetry;
pub mod validate;

/// Generated protobuf and gRPC code for `paygate.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("paygate.v1");

    /// The encoded descriptor set of `paygate.v1` and its imports, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("paygate_descriptor");
}
