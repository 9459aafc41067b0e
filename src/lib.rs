//! paygate: a gRPC gateway that cancels subscriptions and creates and inquires refunds at
//! payment providers, safely.

pub mod accounts;
pub mod admission;
pub mod api;
pub mod auth;
pub mod config;
pub mod dev;
pub mod domain;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod notify;
pub mod ops;
pub mod providers;
pub mod ratelimit;
pub mod reason;
pub mod retry;
pub mod secret;
pub mod server;
pub mod sim;
pub mod store;
pub mod task;
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
