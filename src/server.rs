//! The tonic server: the gRPC services, health, reflection and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::task::Background;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::ServerTlsConfig;

use crate::accounts::{Account, Accounts};
use crate::admission::AccountGuard;
use crate::api::admin::AdminApi;
use crate::api::event::EventApi;
use crate::api::refund::RefundApi;
use crate::api::subscription::SubscriptionApi;
use crate::config::{Config, ConfigError};
use crate::store::StoreError;

/// Why a gateway could not be built from its configuration.
#[derive(Debug)]
pub enum StartError {
    /// A setting is wrong.
    Config(ConfigError),
    /// The store was migrated by a newer release, which this one must not run beside.
    NewerSchema(StoreError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::NewerSchema(e) => e.fmt(f),
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}
use crate::idempotency::Idempotency;
use crate::pb;
use crate::pb::admin::admin_service_server::AdminServiceServer;
use crate::pb::event_service_server::EventServiceServer;
use crate::pb::refund_service_server::RefundServiceServer;
use crate::pb::subscription_service_server::SubscriptionServiceServer;
use crate::providers::Provider;
use crate::ratelimit::CallerLimits;
use crate::store::{self, Store};
use std::collections::HashMap;

// What the builder takes, re-exported from the crate-private modules that own it.
pub use crate::admission::GuardSettings;
pub use crate::api::{ApiSettings, DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_CALLER, Shared};
pub use crate::auth::{Auth, Policy, hash_token};
pub use crate::connections::GrpcLimits;
pub use crate::notify::{Limits as NotifyLimits, serve as serve_notifications};
pub use crate::ratelimit::Rate;

/// Any error from serving.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything the server needs, built from a [`Config`].
#[derive(Debug)]
pub struct Gateway {
    /// What the services share.
    pub(crate) shared: Arc<Shared>,
    /// How long shutdown waits for in-flight calls.
    pub shutdown_grace: Duration,
    /// How long, after the shutdown signal, the gateway reports NOT_SERVING but keeps taking
    /// calls (while endpoints and load balancers stop sending it new ones).
    pub drain_delay: Duration,
    /// TLS (and mutual TLS) on the gRPC port, fixed.
    pub tls: Option<ServerTlsConfig>,
    /// TLS on the gRPC port from files, read again when they change (the configuration's).
    pub live_tls: Option<Arc<crate::tls::LiveTls>>,
    /// The relay of events to NATS JetStream, when on.
    pub relay: Option<crate::relay::NatsSettings>,
    /// Where gRPC calls are taken (bound by [`Gateway::bind`]).
    pub listen_addr: SocketAddr,
    /// Where provider notifications are received, if anywhere (bound by [`Gateway::bind`]).
    pub notify_addr: Option<SocketAddr>,
    /// Bounds on the notification listener.
    pub notify_limits: NotifyLimits,
    /// Bounds on the gRPC port's connections and streams.
    pub grpc_limits: GrpcLimits,
    /// What is read from files that may change while the gateway serves (accounts' keys and
    /// passwords, the callers' tokens), read again when they do.
    pub secrets: crate::reload::Reloader,
}

impl Gateway {
    /// A gateway over `store`, with no account yet and every setting at its default: the
    /// way tests, benches and [`Gateway::from_config`] build one.
    pub fn builder(store: Arc<dyn Store>) -> GatewayBuilder {
        GatewayBuilder {
            store,
            accounts: Vec::new(),
            default_account: None,
            retention: crate::idempotency::DEFAULT_RETENTION,
            unkeyed_retention: crate::idempotency::DEFAULT_UNKEYED_RETENTION,
            auth: Auth::default(),
            caller_rate: None,
            caller_rates: HashMap::new(),
            api: ApiSettings::default(),
            tls: None,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            notify_addr: None,
            shutdown_grace: crate::config::DEFAULT_SHUTDOWN_GRACE,
            drain_delay: Duration::ZERO,
            notify_limits: NotifyLimits::default(),
            grpc_limits: GrpcLimits::default(),
        }
    }

    /// What the services share: for serving notifications on a listener of one's own
    /// ([`serve_notifications`]).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The idempotency layer over the gateway's store.
    pub fn idempotency(&self) -> &Idempotency {
        &self.shared.idempotency
    }

    /// The accounts' names.
    pub fn account_names(&self) -> Vec<String> {
        self.shared.accounts.names()
    }

    /// Builds the provider clients of every account and opens (and migrates) the store.
    pub async fn from_config(config: Config) -> Result<Self, StartError> {
        let store = store::open(&config.store_url).await.map_err(|e| {
            if e.newer_schema().is_some() {
                StartError::NewerSchema(e)
            } else {
                StartError::Config(ConfigError {
                    setting: "PAYGATE_STORE_URL".into(),
                    problem: format!("cannot open the idempotency store: {e}"),
                })
            }
        })?;
        let live_tls = match &config.tls {
            Some(t) => Some(
                crate::tls::LiveTls::load(
                    t.cert_file.clone(),
                    t.key_file.clone(),
                    t.client_ca_file.clone(),
                    !config.auth.token_hashes.is_empty(),
                )
                .map_err(|problem| {
                    StartError::Config(ConfigError {
                        setting: "PAYGATE_TLS_CERT_FILE".into(),
                        problem,
                    })
                })?,
            ),
            None => None,
        };
        let mut gateway = Gateway::builder(store)
            .default_account(config.default_account)
            .retention(config.idempotency_retention, config.unkeyed_retention)
            .auth(config.auth)
            .caller_rates(config.caller_rate, config.caller_rates)
            .api(ApiSettings {
                max_request_time: config.max_request_time,
                max_in_flight: config.max_in_flight_requests,
                max_queue: config.max_queue,
                max_streams: config.max_event_streams.0,
                max_streams_per_caller: config.max_event_streams.1,
            })
            .listen(config.listen_addr, config.notify_addr)
            .notify_limits(config.notify_limits)
            .grpc_limits(config.grpc_limits)
            .shutdown(config.shutdown_grace, config.shutdown_drain_delay);
        for a in config.accounts {
            let client_error = |e: reqwest::Error| ConfigError {
                setting: format!("accounts.{}", a.name),
                problem: format!("cannot build the HTTP client: {e}"),
            };
            let provider = a.provider.build().map_err(client_error)?;
            gateway = gateway.account(a.name, provider, &a.guard);
        }
        let mut gateway = gateway.build();
        gateway.relay = config.events_nats;
        if let Some(tls) = live_tls {
            gateway.secrets.add(tls.clone());
            gateway.live_tls = Some(tls);
        }
        Ok(gateway)
    }

    /// Binds the notification port, then the gRPC port: the last step before serving. An
    /// address in use (or not this host's) is a configuration error naming its setting.
    pub async fn bind(self) -> Result<Bound, ConfigError> {
        let notify = match self.notify_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| ConfigError {
                setting: "PAYGATE_NOTIFY_ADDR".into(),
                problem: format!("cannot listen for notifications on {addr}: {e}"),
            })?),
            None => None,
        };
        let addr = self.listen_addr;
        let grpc = TcpListener::bind(addr).await.map_err(|e| ConfigError {
            setting: "PAYGATE_LISTEN_ADDR (listen_addr)".into(),
            problem: format!("cannot listen on {addr}: {e}"),
        })?;
        Ok(Bound {
            gateway: self,
            grpc,
            notify,
        })
    }
}

/// Builds a [`Gateway`]: accounts, store, limits, ports and shutdown timing. Every setting
/// not given keeps its default; the gRPC port defaults to any free port on 127.0.0.1, with no
/// notification listener.
pub struct GatewayBuilder {
    store: Arc<dyn Store>,
    accounts: Vec<Account>,
    default_account: Option<Option<String>>,
    retention: Duration,
    unkeyed_retention: Duration,
    auth: Auth,
    caller_rate: Option<Rate>,
    caller_rates: HashMap<String, Rate>,
    api: ApiSettings,
    tls: Option<ServerTlsConfig>,
    listen_addr: SocketAddr,
    notify_addr: Option<SocketAddr>,
    shutdown_grace: Duration,
    drain_delay: Duration,
    notify_limits: crate::notify::Limits,
    grpc_limits: GrpcLimits,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("accounts", &self.accounts)
            .field("listen_addr", &self.listen_addr)
            .finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// Adds an account served by `provider`, guarded by `guard`.
    pub fn account(
        mut self,
        name: impl Into<String>,
        provider: Arc<dyn Provider>,
        guard: &GuardSettings,
    ) -> Self {
        let name = name.into();
        self.accounts.push(Account {
            guard: AccountGuard::new(&name, guard),
            name,
            provider,
        });
        self
    }

    /// The account of requests that name none (`None`: there is none). Unless set, it is the
    /// first account added.
    pub fn default_account(mut self, name: Option<String>) -> Self {
        self.default_account = Some(name);
        self
    }

    /// How long completed keys are kept, and those of providers without an idempotency key.
    pub fn retention(mut self, keys: Duration, unkeyed: Duration) -> Self {
        self.retention = keys;
        self.unkeyed_retention = unkeyed;
        self
    }

    /// Caller authentication and policies.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Caller rate limits: the default one and overrides by caller.
    pub fn caller_rates(mut self, default: Option<Rate>, by_caller: HashMap<String, Rate>) -> Self {
        self.caller_rate = default;
        self.caller_rates = by_caller;
        self
    }

    /// Request time, in-flight, queue and stream limits.
    pub fn api(mut self, api: ApiSettings) -> Self {
        self.api = api;
        self
    }

    /// TLS (and mutual TLS) on the gRPC port.
    pub fn tls(mut self, tls: Option<ServerTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Where gRPC calls and (if anywhere) provider notifications are taken.
    pub fn listen(mut self, grpc: SocketAddr, notify: Option<SocketAddr>) -> Self {
        self.listen_addr = grpc;
        self.notify_addr = notify;
        self
    }

    /// Bounds on the notification listener.
    pub fn notify_limits(mut self, limits: NotifyLimits) -> Self {
        self.notify_limits = limits;
        self
    }

    /// Bounds on the gRPC port's connections and streams.
    pub fn grpc_limits(mut self, limits: GrpcLimits) -> Self {
        self.grpc_limits = limits;
        self
    }

    /// How long in-flight calls may finish once shutdown begins, and how long before that
    /// the gateway reports NOT_SERVING while still taking calls.
    pub fn shutdown(mut self, grace: Duration, drain_delay: Duration) -> Self {
        self.shutdown_grace = grace;
        self.drain_delay = drain_delay;
        self
    }

    /// The gateway, ready to [`Gateway::bind`].
    pub fn build(self) -> Gateway {
        let default = match self.default_account {
            Some(chosen) => chosen,
            None => self.accounts.first().map(|a| a.name.clone()),
        };
        let mut secrets = crate::reload::Reloader::default();
        for a in &self.accounts {
            for s in a.provider.secrets() {
                secrets.add(s);
            }
        }
        if let Some(t) = &self.auth.tokens_file {
            secrets.add(t.clone());
        }
        let idempotency = Idempotency::new(self.store, self.retention)
            .with_unkeyed_retention(self.unkeyed_retention)
            .with_event_window(self.notify_limits.max_age);
        let shared = Shared::new(
            Arc::new(Accounts::new(self.accounts, default)),
            idempotency,
            self.auth,
            CallerLimits::new(self.caller_rate, self.caller_rates),
            self.api,
        );
        Gateway {
            shared: Arc::new(shared),
            shutdown_grace: self.shutdown_grace,
            drain_delay: self.drain_delay,
            tls: self.tls,
            live_tls: None,
            relay: None,
            listen_addr: self.listen_addr,
            notify_addr: self.notify_addr,
            notify_limits: self.notify_limits,
            grpc_limits: self.grpc_limits,
            secrets,
        }
    }
}

/// Readiness: the health of the three services, SERVING or NOT_SERVING together. Liveness
/// (the empty service name) is not touched.
async fn set_ready(health: &tonic_health::server::HealthReporter, up: bool) {
    if up {
        health.set_serving::<RefundServiceServer<RefundApi>>().await;
        health
            .set_serving::<SubscriptionServiceServer<SubscriptionApi>>()
            .await;
        health.set_serving::<EventServiceServer<EventApi>>().await;
    } else {
        health
            .set_not_serving::<RefundServiceServer<RefundApi>>()
            .await;
        health
            .set_not_serving::<SubscriptionServiceServer<SubscriptionApi>>()
            .await;
        health
            .set_not_serving::<EventServiceServer<EventApi>>()
            .await;
    }
}

/// A gateway with its ports bound, ready to [`serve`].
#[derive(Debug)]
pub struct Bound {
    /// The gateway.
    pub gateway: Gateway,
    grpc: TcpListener,
    notify: Option<TcpListener>,
}

impl Bound {
    /// The gRPC port's address (the port the system chose, for port 0).
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The notification port's address, if notifications are taken.
    pub fn notify_addr(&self) -> Option<SocketAddr> {
        self.notify.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Serves on the bound ports until `shutdown` completes, then stops taking new calls, reports
/// NOT_SERVING, and lets in-flight calls finish for up to the grace period.
pub async fn serve(
    bound: Bound,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let Bound {
        gateway,
        grpc: listener,
        notify,
    } = bound;
    // Before any port takes connections: the notification listener caps strangers below it.
    crate::notify::raise_open_files_limit();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    set_ready(&health_reporter, true).await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_file_descriptor_set(rpc_descriptors())
    };
    let (reflection_v1, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);

    if !gateway.shared.auth.enabled() {
        tracing::warn!(
            "no caller authentication is configured: every caller may use every RPC and account (set PAYGATE_AUTH_TOKENS_FILE or mutual TLS)"
        );
    }
    let refunds = RefundApi::new(gateway.shared.clone());
    let subscriptions = SubscriptionApi::new(gateway.shared.clone());
    let events = EventApi::new(gateway.shared.clone());
    let admin = AdminApi::new(
        gateway.shared.clone(),
        listener.local_addr()?.ip().is_loopback(),
    );
    let notify = notify.map(|listener| spawn_notify(&gateway, listener));
    let _background = spawn_background(&gateway);
    let readiness = spawn_readiness(&gateway.shared, health_reporter.clone());

    let (draining_tx, draining_rx) = oneshot::channel::<()>();
    let signal = draining(
        shutdown,
        gateway.drain_delay,
        (health_reporter.clone(), readiness.abort_handle()),
        gateway.shared.stopping.clone(),
        draining_tx,
    );
    let limits = gateway.grpc_limits;
    let incoming = crate::connections::incoming(listener, limits);
    let mut builder = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .http2_max_pending_accept_reset_streams(Some(limits.max_pending_reset_streams))
        .http2_max_local_error_reset_streams(Some(limits.max_local_error_reset_streams))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout));
    if let Some(tls) = gateway.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    // Undecodable or oversized request messages answer like every other bad request.
    let server = builder
        .layer(crate::connections::OpenRequests::new(
            limits.max_open_requests,
        ))
        .layer(tower::util::MapResponseLayer::new(
            crate::error::undecodable_as_invalid::<tonic::body::Body>,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(RefundServiceServer::new(refunds))
        .add_service(SubscriptionServiceServer::new(subscriptions))
        .add_service(EventServiceServer::new(events))
        .add_service(AdminServiceServer::new(admin));
    type Serving = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
    let mut server: Serving = match gateway.live_tls.clone() {
        // TLS from files, read again when they change: handshakes with the settings current
        // when each connection arrives.
        Some(tls) => Box::pin(server.serve_with_incoming_shutdown(
            crate::tls::incoming(incoming, tls, limits.handshake_timeout),
            signal,
        )),
        None => Box::pin(server.serve_with_incoming_shutdown(incoming, signal)),
    };
    let grace = gateway.shutdown_grace;
    let _stop_readiness = AbortOnDrop(readiness);
    let _stop_notify = notify.map(AbortOnDrop);
    tokio::select! {
        r = &mut server => return Ok(r?),
        _ = async {
            if draining_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        } => {}
    }
    // The grace is over: calls still in flight are answered UNAVAILABLE `SHUTTING_DOWN` with
    // RetryInfo, and given a moment to reach their callers, instead of being cut off.
    tracing::warn!(
        grace_ms = grace.as_millis() as u64,
        "grace period over; answering the calls still in flight"
    );
    gateway.shared.abandon.send_replace(true);
    match tokio::time::timeout(ABANDON_FLUSH, &mut server).await {
        Ok(r) => Ok(r?),
        Err(_) => Ok(()),
    }
}

/// Serves provider notifications on `listener` in the background.
/// The tasks a serving process runs beside its listeners, stopped when the returned handles
/// are dropped.
fn spawn_background(gateway: &Gateway) -> Vec<AbortOnDrop> {
    let s = &gateway.shared;
    let idempotency = &s.idempotency;
    let mut tasks = vec![
        AbortOnDrop(tokio::spawn(idempotency.clone().purge_loop(PURGE_EVERY))),
        // While it serves, this instance heartbeats, so its leases can be taken over within
        // seconds of its death instead of at their expiry.
        AbortOnDrop(tokio::spawn(idempotency.clone().heartbeat_loop())),
        AbortOnDrop(tokio::spawn(crate::telemetry::trim_loop(
            Duration::from_secs(2),
        ))),
        // What needs a person stays measured for as long as it lasts.
        AbortOnDrop(tokio::spawn(crate::idempotency::attention_loop(
            idempotency.store().clone(),
            s.accounts.names(),
        ))),
    ];
    // Keys, passwords and tokens are read again when their files change, and on SIGHUP
    // (which therefore never ends the process).
    tasks.push(AbortOnDrop(tokio::spawn(gateway.secrets.clone().run())));
    // Events reach the bus from here, never from a call.
    if let Some(settings) = gateway.relay.clone() {
        let relay = crate::relay::Relay::new(
            settings,
            idempotency.store().clone(),
            s.events.clone(),
            idempotency.instance().to_owned(),
        );
        tasks.push(AbortOnDrop(tokio::spawn(relay.run(s.stopping.subscribe()))));
    }
    tasks
}

fn spawn_notify(
    gateway: &Gateway,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "receiving provider notifications");
    }
    let shared = gateway.shared.clone();
    let limits = gateway.notify_limits;
    tokio::spawn(async move {
        if let Err(e) = crate::notify::serve_with(shared, listener, limits).await {
            tracing::error!(error = %e, "the notification listener stopped");
        }
    })
}

/// Readiness says whether this replica can do its job: not while the store takes no writes
/// (every mutating call would fail). Shutdown's NOT_SERVING is never overridden.
fn spawn_readiness(
    shared: &Shared,
    health: tonic_health::server::HealthReporter,
) -> tokio::task::JoinHandle<()> {
    let mut writable = shared.idempotency.writable();
    let stopping = shared.stopping.subscribe();
    tokio::spawn(async move {
        while writable.changed().await.is_ok() {
            if *stopping.borrow() {
                break;
            }
            let up = *writable.borrow_and_update();
            set_ready(&health, up).await;
        }
    })
}

/// What follows `shutdown`: readiness turns NOT_SERVING at once (and the store watcher stops
/// changing it), but calls keep being taken for `drain_delay`: until the endpoints controller
/// and every client's load balancer have stopped sending here, a closed port would fail their
/// calls. Liveness ("") stays SERVING, so the kubelet does not kill the pod meanwhile. Then
/// event streams end (UNAVAILABLE, resume elsewhere), the notification listener stops taking
/// notifications (providers send them again later), and `draining` says the grace begins.
async fn draining(
    shutdown: impl Future<Output = ()>,
    drain_delay: Duration,
    (health, readiness): (
        tonic_health::server::HealthReporter,
        tokio::task::AbortHandle,
    ),
    stopping: tokio::sync::watch::Sender<bool>,
    draining: oneshot::Sender<()>,
) {
    shutdown.await;
    readiness.abort();
    set_ready(&health, false).await;
    if !drain_delay.is_zero() {
        tracing::info!(
            drain_delay_ms = drain_delay.as_millis() as u64,
            "shutting down: reporting NOT_SERVING, still taking calls for the drain delay"
        );
        tokio::time::sleep(drain_delay).await;
    }
    tracing::info!("shutting down: no new calls, draining in-flight calls");
    stopping.send_replace(true);
    let _ = draining.send(());
}

/// Asks the gRPC health service at `addr` (host:port, plaintext) about `service` (empty = the
/// whole process), as the kubelet's grpc probe does; answers the serving status's name.
pub async fn health_check(
    addr: &str,
    service: &str,
    timeout: Duration,
) -> Result<String, BoxError> {
    use tonic_health::pb::health_client::HealthClient;
    let call = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(timeout)
            .connect()
            .await?;
        let answer = HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?
            .into_inner();
        Ok::<_, BoxError>(answer.status().as_str_name().to_owned())
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

/// How long the answers to abandoned calls get to reach their callers.
pub const ABANDON_FLUSH: Duration = Duration::from_millis(500);

/// How often expired idempotency keys are purged.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A gateway running in the background (tests).
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    task: Background<Result<(), BoxError>>,
}

impl Running {
    /// `http://addr` for a tonic client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts down gracefully and waits.
    pub async fn stop(self) {
        self.task.stop().await;
    }
}

/// Starts the bound gateway in the background.
pub fn spawn(bound: Bound) -> std::io::Result<Running> {
    let addr = bound.grpc_addr()?;
    let task = Background::spawn(|stop| serve(bound, stop));
    Ok(Running { addr, task })
}

/// The descriptors of `google.rpc.Status` and the error details (ErrorInfo, RetryInfo,
/// BadRequest, ...), for reflection: under their canonical file names
/// (`google/rpc/status.proto`, `google/rpc/error_details.proto`), which tonic-types' own set
/// lacks, so that grpcurl and other reflection clients resolve the details every error carries
/// and print them as fields.
fn rpc_descriptors() -> prost_types::FileDescriptorSet {
    use prost::Message;
    let canonical = |name: &str| match name {
        "status.proto" | "error_details.proto" => format!("google/rpc/{name}"),
        other => other.to_owned(),
    };
    let mut set = prost_types::FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .unwrap_or_default();
    for file in &mut set.file {
        file.name = file.name.as_deref().map(canonical);
        for dep in &mut file.dependency {
            *dep = canonical(dep);
        }
    }
    set
}
