//! The `paygate` binary: the commands are in `cli/`, one file each.

#![warn(unreachable_pub)]

use std::process::ExitCode;

mod cli;

#[tokio::main]
async fn main() -> ExitCode {
    cli::run().await
}
