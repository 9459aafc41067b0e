//! Logging: text or JSON lines through `tracing`, filtered by `RUST_LOG` (default `info`).
//! Request bodies are never logged; identifiers are; key material never reaches a log
//! because keys live only inside types whose `Debug` redacts them.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Prometheus metrics, served on `addr` at `/metrics` (text format). Series:
/// - `paygate_rpc_total{method,code}`, `paygate_rpc_duration_seconds{method}`,
///   `paygate_in_flight_requests`;
/// - `paygate_provider_calls_total{provider,account,endpoint,result}`,
///   `paygate_provider_call_duration_seconds{provider,account,endpoint}`,
///   `paygate_provider_in_flight{account}`;
/// - `paygate_idempotency_events_total{event}` (replay, conflict, in_flight_wait, aborted,
///   unknown, resumed, adopted, unresolved);
/// - `paygate_rate_limit_total{limit,outcome}` (waited, rejected), `paygate_shed_total{reason}`;
/// - `paygate_store_duration_seconds{op}`.
pub fn install_metrics(addr: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| e.to_string())
}

/// Counts an idempotency event.
pub fn idempotency_event(event: &'static str) {
    metrics::counter!("paygate_idempotency_events_total", "event" => event).increment(1);
}

/// Times a store operation.
pub async fn store_op<T>(op: &'static str, fut: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = fut.await;
    metrics::histogram!("paygate_store_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    out
}

/// Holds one unit of a gauge for as long as it lives (also when its future is dropped).
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    /// Increments `gauge` until the guard is dropped.
    pub fn hold(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
