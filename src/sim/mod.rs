//! Provider simulators: real HTTP servers with the providers' wire formats and rules. Tests,
//! the dev mode and the benchmarks share them.

pub mod antom;
