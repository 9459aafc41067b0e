//! `paygate healthcheck`: ask a running gateway's gRPC health service, like a probe.

use std::time::Duration;

use super::process::{Failure, env};

#[derive(clap::Args)]
pub(super) struct Args {
    /// The gateway's address; default: 127.0.0.1 on PAYGATE_LISTEN_ADDR's port (50051).
    #[arg(long)]
    addr: Option<String>,
    /// The service to ask about: empty = the process, or e.g. paygate.v1.RefundService
    /// (NOT_SERVING from the shutdown signal on).
    #[arg(long, default_value = "")]
    service: String,
    /// How long to wait for the answer.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

pub(super) async fn run(args: Args) -> Result<(), Failure> {
    let Args {
        addr,
        service,
        timeout_ms,
    } = args;
    let addr = addr.unwrap_or_else(|| {
        let port = env("PAYGATE_LISTEN_ADDR")
            .and_then(|a| a.rsplit_once(':').map(|(_, p)| p.to_owned()))
            .unwrap_or_else(|| "50051".into());
        format!("127.0.0.1:{port}")
    });
    match paygate::server::health_check(&addr, &service, Duration::from_millis(timeout_ms)).await {
        Ok(status) if status == "SERVING" => {
            println!("{status}");
            Ok(())
        }
        Ok(status) => Err(Failure::Failed(format!(
            "healthcheck: {addr} {service:?}: {status}"
        ))),
        Err(e) => Err(Failure::Failed(format!("healthcheck: {addr}: {e}"))),
    }
}
