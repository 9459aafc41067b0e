//! Logging: text or JSON lines through `tracing`, filtered by `RUST_LOG` (default `info`).
//! Request bodies are never logged; identifiers are; key material never reaches a log
//! because keys live only inside types whose `Debug` redacts them.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("{s:?} is not one of text, json")),
        }
    }
}

/// The trace exporter; call [`Telemetry::shutdown`] before the process exits.
#[must_use]
pub struct Telemetry {
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes pending spans and stops the exporter (without blocking the async runtime).
    pub async fn shutdown(mut self) {
        if let Some(p) = self.traces.take() {
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    }
}

/// Installs the global subscriber: logs to stderr (text without colours unless stderr is a
/// terminal; JSON lines carry `trace_id` and `span_id` when traces are on), and OpenTelemetry
/// traces exported over OTLP when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set: see [`tracer_provider`]. Safe to call more than once
/// (later calls do nothing).
pub fn init(format: LogFormat) -> Telemetry {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let traces = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty()))
    .then(|| match tracer_provider() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("paygate: OpenTelemetry: traces are off: {e}");
            None
        }
    })
    .flatten();
    let otel = traces.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing_opentelemetry::layer().with_tracer(p.tracer("paygate"))
    });
    use tracing_subscriber::Layer as _;
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let colours = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colours);
    // Judged per event (a plain `filter_fn` is cached per call site).
    let attacks = || tracing_subscriber::filter::dynamic_filter_fn(|meta, _| attack_log(meta));
    let _ = match format {
        LogFormat::Text => registry.with(fmt.with_filter(attacks())).try_init(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .map_event_format(WithTraceIds)
                    .with_filter(attacks()),
            )
            .try_init(),
    };
    Telemetry { traces }
}

/// How often the HTTP/2 library's warnings about a defence it took are logged at most.
const ATTACK_LOG_EVERY_SECS: u64 = 10;

/// Whether to log an event: every one, except the HTTP/2 library's warnings that it closed a
/// connection for too many resets (one per GOAWAY, thousands a second under attack). Those
/// are counted in `paygate_http2_goaways_total{reason}` and logged once per
/// [`ATTACK_LOG_EVERY_SECS`].
fn attack_log(meta: &tracing::Metadata<'_>) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    if !meta.is_event()
        || *meta.level() != tracing::Level::WARN
        || !meta.target().starts_with("h2::proto::streams")
    {
        return true;
    }
    let reason = if meta.target().ends_with("::recv") {
        "remote_resets"
    } else {
        "local_error_resets"
    };
    metrics::counter!("paygate_http2_goaways_total", "reason" => reason).increment(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    now >= last + ATTACK_LOG_EVERY_SECS
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// A JSON event format that adds the current span's OpenTelemetry `trace_id` and `span_id`
/// to each line, so that logs and traces join.
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt;
        let ids = ctx.lookup_current().and_then(|span| {
            let cx = tracing::dispatcher::get_default(|d| {
                tracing_opentelemetry::get_otel_context(&span.id(), d)
            })?;
            let otel = cx.span();
            let sc = otel.span_context();
            sc.is_valid()
                .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        // The JSON format writes one object and a newline: the ids go before its last brace.
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The OTLP trace exporter, configured by the standard variables:
/// - `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (default) or
///   `http/protobuf`;
/// - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) / `OTEL_EXPORTER_OTLP_ENDPOINT` (over
///   HTTP, `/v1/traces` is appended); an `https://` endpoint is verified against the system's
///   roots, plus the CA in `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` /
///   `OTEL_EXPORTER_OTLP_CERTIFICATE` when set;
/// - `OTEL_SERVICE_NAME`, then `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, then `paygate`;
///   the other `OTEL_RESOURCE_ATTRIBUTES` as given.
fn tracer_provider() -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
    let var = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let protocol = var([
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ])
    .unwrap_or_else(|| "grpc".into());
    let ca = match var([
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ]) {
        Some(path) => Some(
            std::fs::read(&path)
                .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {path}: {e}"))?,
        ),
        None => None,
    };
    let exporter = match protocol.as_str() {
        "grpc" => {
            let endpoint = var([
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ])
            .unwrap_or_default();
            let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if endpoint.starts_with("https://") {
                let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
                if let Some(ca) = &ca {
                    tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
                }
                b = b.with_tls_config(tls);
            }
            b.build()
        }
        "http/protobuf" => {
            let mut client = reqwest::Client::builder();
            if let Some(ca) = &ca {
                let cert = reqwest::Certificate::from_pem(ca)
                    .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {e}"))?;
                client = client.add_root_certificate(cert);
            }
            let client = client.build().map_err(|e| e.to_string())?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(client)
                .build()
        }
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: {other:?} is not one of grpc, http/protobuf"
            ));
        }
    }
    .map_err(|e| e.to_string())?;
    // The SDK lets OTEL_RESOURCE_ATTRIBUTES override OTEL_SERVICE_NAME; the specification
    // says the opposite, so the name is set last.
    let mut resource = opentelemetry_sdk::Resource::builder();
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
        && !name.is_empty()
    {
        resource = resource.with_service_name(name);
    } else if !std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
        v.split(',')
            .any(|kv| kv.trim().starts_with("service.name="))
    }) {
        resource = resource.with_service_name("paygate");
    }
    // Exports run as tasks on the gateway's tokio runtime (the tonic exporter needs one).
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build())
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// A span for one RPC, child of the caller's W3C trace context when its metadata carries one.
pub fn rpc_span(method: &'static str, metadata: &tonic::metadata::MetadataMap) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        "rpc",
        otel.name = method,
        rpc.method = method,
        account = tracing::field::Empty,
        request_id = tracing::field::Empty,
        caller = tracing::field::Empty,
        replayed = tracing::field::Empty,
        grpc.code = tracing::field::Empty,
    );
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(metadata)));
    let _ = span.set_parent(parent);
    span
}

/// The W3C trace-context headers of the current span, for an outgoing provider request.
pub fn trace_headers() -> Vec<(String, String)> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct Collect(Vec<(String, String)>);
    impl opentelemetry::propagation::Injector for Collect {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }
    let cx = tracing::Span::current().context();
    let mut c = Collect(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut c));
    c.0
}

/// Prometheus metrics, served on `addr` at `/metrics` only, in the text exposition format
/// (`text/plain; version=0.0.4`), each series with HELP and TYPE. Series:
/// - `paygate_build_info{version}` (1), and the `process_*` series (CPU, memory, file
///   descriptors, threads, start time);
/// - `paygate_rpc_total{method,code}`, `paygate_rpc_duration_seconds{method,code}`,
///   `paygate_in_flight_requests`;
/// - `paygate_provider_calls_total{provider,account,endpoint,result}`,
///   `paygate_provider_call_duration_seconds{provider,account,endpoint}`,
///   `paygate_provider_in_flight{account}`;
/// - `paygate_idempotency_events_total{event}`;
/// - `paygate_rate_limit_total{limit,outcome}` (waited, rejected), `paygate_shed_total{reason}`;
/// - `paygate_store_duration_seconds{op}`, `paygate_signature_failures_total{provider,kind}`,
///   `paygate_answer_mismatches_total{provider}`, `paygate_state_anomalies_total{kind}`,
///   `paygate_notifications_total{provider,kind,outcome}`, `paygate_event_watchers`,
///   `paygate_notify_connections`, `paygate_notify_connections_refused_total`;
/// - with the relay on: `paygate_events_relay_lag_events`, `paygate_events_relay_lag_seconds`,
///   `paygate_events_relay_publish_errors_total`, `paygate_events_relayed_total`.
///
/// Counters whose label sets are known in advance exist from the start at 0, so that
/// `increase()` sees the first event after a restart.
/// `providers` names the providers' own label sets.
pub fn install_metrics(
    addr: std::net::SocketAddr,
    providers: &[ProviderSeries],
) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe_metrics(providers);
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            let process = process.clone();
            async move {
                process.collect();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

/// Idempotency events (`paygate_idempotency_events_total{event}`).
pub const IDEMPOTENCY_EVENTS: &[&str] = &[
    "replay",
    "conflict",
    "in_flight_wait",
    "aborted",
    "unknown",
    "resumed",
    "adopted",
    "unresolved",
    "claimed",
    "lease_lost",
    "payment_busy",
    "payment_wait",
    "quiet_period",
    "not_stored",
];

/// Notification outcomes (`paygate_notifications_total{outcome}`).
pub const NOTIFICATION_OUTCOMES: &[&str] = &[
    "stored",
    "duplicate",
    "rejected",
    "malformed",
    "unsupported",
    "unknown_account",
    "store_error",
    "stale",
    "superseded",
    "contradicts",
];

/// Why calls or connections are shed (`paygate_shed_total{reason}`).
pub const SHED_REASONS: &[&str] = &[
    "gateway_in_flight",
    "account_calls",
    "account_in_flight",
    "circuit_open",
    "connections",
    "client_connections",
    "handshake_timeout",
    "open_requests",
    "store_busy",
];

/// Reports that contradict a final state (`paygate_state_anomalies_total{kind}`).
pub const STATE_ANOMALIES: &[&str] = &["refund_notification", "refund_answer"];

/// A provider's label sets that exist from the start.
#[derive(Debug, Clone, Copy)]
pub struct ProviderSeries {
    /// The `provider` label.
    pub provider: &'static str,
    /// It signs its answers: `paygate_signature_failures_total{kind}` starts at 0.
    pub signs_answers: bool,
    /// The kinds of notification it sends: `paygate_notifications_total{kind,outcome}`.
    pub notification_kinds: &'static [&'static str],
}

/// The relay's metrics (they move only with the relay on), and the keys that need attention.
fn describe_relay_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!(
        "paygate_keys_needing_attention",
        "Idempotency keys waiting for a retry to settle them (state=unknown) or for an operator (state=unresolved), by account; read from the store"
    );
    describe_gauge!(
        "paygate_keys_needing_attention_oldest_seconds",
        Unit::Seconds,
        "Time since the oldest such key last changed, by account and state (0 when none)"
    );
    describe_gauge!(
        "paygate_events_relay_lag_events",
        "Events stored and not yet acknowledged by NATS JetStream (when the relay is on)"
    );
    describe_gauge!(
        "paygate_events_relay_lag_seconds",
        Unit::Seconds,
        "Age of the oldest event not yet acknowledged by NATS JetStream (0 when none)"
    );
    describe_counter!(
        "paygate_events_relay_publish_errors_total",
        "Relay rounds that failed: NATS unreachable, the stream unusable, or a publish not acknowledged"
    );
    describe_counter!(
        "paygate_events_relayed_total",
        "Events NATS JetStream acknowledged"
    );
    describe_counter!(
        "paygate_secret_reloads_total",
        "Secrets read again after their files changed (or on SIGHUP): result=ok took new contents, result=error did not load and the previous ones stay in use"
    );
}

fn describe_metrics(providers: &[ProviderSeries]) {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "paygate_build_info",
        "1, labelled with the running paygate version"
    );
    describe_counter!(
        "paygate_rpc_total",
        "RPCs answered, by method and gRPC code"
    );
    describe_histogram!(
        "paygate_rpc_duration_seconds",
        Unit::Seconds,
        "Time to answer an RPC, by method and gRPC code"
    );
    describe_gauge!("paygate_in_flight_requests", "RPCs being answered now");
    describe_counter!(
        "paygate_provider_calls_total",
        "Calls to a provider, by provider, account, endpoint and result (ok or the reason)"
    );
    describe_histogram!(
        "paygate_provider_call_duration_seconds",
        Unit::Seconds,
        "Time a provider took to answer, by provider, account and endpoint"
    );
    describe_gauge!(
        "paygate_provider_in_flight",
        "Provider calls under way, by account"
    );
    describe_counter!(
        "paygate_idempotency_events_total",
        "Idempotency events: replays, conflicts, waits, unknown and unresolved outcomes, adoptions"
    );
    describe_counter!(
        "paygate_rate_limit_total",
        "Calls that waited for or were refused by a rate limit"
    );
    describe_counter!(
        "paygate_shed_total",
        "Calls refused at once to protect a provider or the gateway, by reason"
    );
    describe_histogram!(
        "paygate_store_duration_seconds",
        Unit::Seconds,
        "Time of an idempotency store operation"
    );
    describe_counter!(
        "paygate_signature_failures_total",
        "Provider answers whose signature is missing or does not verify"
    );
    describe_counter!(
        "paygate_answer_mismatches_total",
        "Provider answers that are not about the request they answer (another refund's ids, payment or amount), by provider: never a success, an anomaly for a person"
    );
    describe_counter!(
        "paygate_state_anomalies_total",
        "Reports that contradict a recorded final state (a FAIL for a refund recorded SUCCEEDED), by kind: nothing changed, each is in the store's anomalies table for a person"
    );
    describe_counter!(
        "paygate_http2_goaways_total",
        "gRPC connections closed for too many stream resets (rapid reset: remote_resets; malformed requests: local_error_resets); counted while logging at WARN"
    );
    describe_counter!(
        "paygate_notifications_total",
        "Provider notifications received, by provider, kind and outcome"
    );
    describe_gauge!("paygate_event_watchers", "Open EventService.Watch streams");
    describe_relay_metrics();
    describe_gauge!(
        "paygate_notify_connections",
        "Open connections on the notification port"
    );
    describe_counter!(
        "paygate_notify_connections_refused_total",
        "Connections to the notification port refused at the cap"
    );
    metrics::gauge!("paygate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for gauge in [
        "paygate_in_flight_requests",
        "paygate_event_watchers",
        "paygate_notify_connections",
    ] {
        metrics::gauge!(gauge).set(0.0);
    }
    metrics::counter!("paygate_notify_connections_refused_total").absolute(0);
    metrics::counter!("paygate_events_relay_publish_errors_total").absolute(0);
    metrics::counter!("paygate_events_relayed_total").absolute(0);
    for result in ["ok", "error"] {
        metrics::counter!("paygate_secret_reloads_total", "result" => result).absolute(0);
    }
    for event in IDEMPOTENCY_EVENTS {
        metrics::counter!("paygate_idempotency_events_total", "event" => *event).absolute(0);
    }
    for p in providers.iter().filter(|p| p.signs_answers) {
        for kind in ["missing", "invalid"] {
            metrics::counter!("paygate_signature_failures_total", "provider" => p.provider, "kind" => kind)
                .absolute(0);
        }
    }
    for p in providers {
        metrics::counter!("paygate_answer_mismatches_total", "provider" => p.provider).absolute(0);
    }
    for reason in ["remote_resets", "local_error_resets"] {
        metrics::counter!("paygate_http2_goaways_total", "reason" => reason).absolute(0);
    }
    for kind in STATE_ANOMALIES {
        metrics::counter!("paygate_state_anomalies_total", "kind" => *kind).absolute(0);
    }
    for reason in SHED_REASONS {
        metrics::counter!("paygate_shed_total", "reason" => *reason).absolute(0);
    }
    for p in providers {
        for kind in p.notification_kinds {
            for outcome in NOTIFICATION_OUTCOMES {
                metrics::counter!("paygate_notifications_total", "provider" => p.provider, "kind" => *kind, "outcome" => *outcome)
                    .absolute(0);
            }
        }
    }
}

/// Counts an idempotency event.
pub fn idempotency_event(event: &'static str) {
    debug_assert!(
        IDEMPOTENCY_EVENTS.contains(&event),
        "{event} is not in IDEMPOTENCY_EVENTS"
    );
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

/// Event streams ended since the allocator last gave memory back.
static ENDED_STREAMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts an ended event stream, for [`trim_loop`].
pub fn stream_ended() {
    ENDED_STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Every `every`, when event streams ended since the last look, asks the allocator to give
/// freed memory back to the system: glibc keeps what thousands of ended streams used in its
/// arenas otherwise.
pub async fn trim_loop(every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if ENDED_STREAMS.swap(0, std::sync::atomic::Ordering::Relaxed) > 0 {
            trim();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
