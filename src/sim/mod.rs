//! Provider simulators: real HTTP servers with the providers' wire formats and rules. Tests,
//! the dev mode and the benchmarks share them.

pub mod antom;
mod control;
mod fault;
pub mod payxpert;
mod server;

pub use self::control::{Controls, Counters, Simulator};
pub use self::fault::{Fault, FaultKind};

/// A running simulator (the Antom one unless `S` says otherwise).
pub type SimServer<S = antom::AntomSim> = server::SimServer<S>;
