//! `paygate serve` (the default): the gateway from the configuration file and environment.

use std::path::Path;

use paygate::config::Config;
use paygate::server::{self, Gateway};
use paygate::telemetry::{self, LogFormat};

use super::process::{Failure, env, shutdown_signal};

pub(super) async fn run(config: Option<&Path>, format: Option<LogFormat>) -> Result<(), Failure> {
    let mut config = Config::load(config, &env).map_err(Failure::config)?;
    if let Some(f) = format {
        config.log_format = f;
    }
    let telemetry = telemetry::init(config.log_format);
    let served = run_gateway(config).await;
    telemetry.shutdown().await;
    served
}

async fn run_gateway(config: Config) -> Result<(), Failure> {
    let listen = config.listen_addr;
    if let Some(addr) = config.metrics_addr {
        let series: Vec<telemetry::ProviderSeries> = paygate::providers::registry::REGISTRY
            .iter()
            .map(|r| r.metrics)
            .collect();
        telemetry::install_metrics(addr, &series).map_err(|e| {
            Failure::config(format!(
                "PAYGATE_METRICS_ADDR (metrics_addr): cannot serve metrics on {addr}: {e}"
            ))
        })?;
        tracing::info!(%addr, "metrics on /metrics");
    }
    let gateway = Gateway::from_config(config).await.map_err(Failure::start)?;
    let bound = gateway.bind().await.map_err(Failure::config)?;
    let gateway = &bound.gateway;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addr = %listen,
        store = gateway.idempotency().store().name(),
        accounts = ?gateway.account_names(),
        tls = gateway.tls.is_some(),
        "paygate listening"
    );
    server::serve(bound, shutdown_signal())
        .await
        .map_err(|e| Failure::Failed(format!("server error: {e}")))
}
