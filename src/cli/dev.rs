//! `paygate dev`: an Antom simulator with demo data and a gateway in front of it, on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;

use paygate::dev;
use paygate::server::{self, Gateway};
use paygate::telemetry::{self, LogFormat};

use super::process::{Failure, env, shutdown_signal};

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    pub(super) log_format: super::args::LogFormatArg,
    /// Where dev keys and local state live.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Keep the idempotency store and the simulators' data (payments, refunds,
    /// subscriptions) of earlier runs; by default each run starts with a fresh store and the
    /// simulators' demo data.
    #[arg(long)]
    keep: bool,
}

pub(super) async fn run(args: Args, format: Option<LogFormat>) -> Result<(), Failure> {
    let Args { data_dir, keep, .. } = args;
    let format = format.unwrap_or(LogFormat::Text);
    let _telemetry = telemetry::init(format);
    let listen = match env("PAYGATE_LISTEN_ADDR") {
        Some(v) => v.parse().map_err(|_| {
            Failure::config(format!(
                "PAYGATE_LISTEN_ADDR: {v:?} is not a host:port address"
            ))
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 50051)),
    };
    let (sims, config) = dev::start(&data_dir, listen, format, keep)
        .await
        .map_err(|e| Failure::Failed(format!("dev mode: {e}")))?;
    let gateway = Gateway::from_config(config).await.map_err(Failure::start)?;
    let bound = gateway.bind().await.map_err(Failure::config)?;
    let addr = bound.grpc_addr().unwrap_or(listen);
    let notify = bound.notify_addr();
    if let Some(n) = notify {
        dev::connect_notifications(&sims, n);
    }
    println!(
        "{}",
        dev::banner(addr, notify, &sims, &data_dir.join("paygate.db"), keep)
    );
    let served = server::serve(bound, shutdown_signal()).await;
    sims.stop().await;
    served.map_err(|e| Failure::Failed(format!("server error: {e}")))
}
