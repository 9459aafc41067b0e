//! Configuration: a TOML file (`--config` / `PAYGATE_CONFIG`) plus environment overrides, so
//! a container can also run from a Secret alone. Every error names the setting at fault.
//! The keys every account has are read here; each provider reads its own keys and
//! environment shortcuts in its folder (`providers/<name>/config.rs`), through
//! [`crate::settings::AccountKeys`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use std::collections::HashMap;

use crate::admission::GuardSettings;
use crate::auth::{Auth, Policy};
pub use crate::providers::ProviderConfig;
use crate::providers::registry;
use crate::ratelimit::Rate;
use crate::relay::NatsSettings;
use crate::secret::Secret;
pub use crate::settings::ConfigError;
use crate::settings::{AccountKeys, FileText, Pick, err, read_file, read_table};
use crate::telemetry::LogFormat;

/// How long the gateway keeps taking calls after the shutdown signal, reporting NOT_SERVING,
/// unless `shutdown_drain_delay_ms` / `PAYGATE_SHUTDOWN_DRAIN_DELAY_MS` says otherwise.
pub const DEFAULT_SHUTDOWN_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// How long in-flight calls may finish after the drain, unless `shutdown_grace_ms` /
/// `PAYGATE_SHUTDOWN_GRACE_MS` says otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// The environment variables `serve` and `check-config` read, for `--help`.
pub fn environment_help() -> String {
    let mut help = String::from(ENVIRONMENT_HELP_HEAD);
    for r in registry::REGISTRY {
        help.push_str(r.help);
    }
    help + ENVIRONMENT_HELP_TAIL
}

const ENVIRONMENT_HELP_HEAD: &str = "\
Environment (each overrides the file's key of the same meaning):
  PAYGATE_CONFIG                       the TOML file (--config)
  PAYGATE_LISTEN_ADDR                  gRPC address, host:port (listen_addr; default 0.0.0.0:50051)
  PAYGATE_DEFAULT_ACCOUNT              account of requests that name none (default_account)
  PAYGATE_STORE_URL                    sqlite://PATH or postgres://... (store_url; default sqlite://./data/paygate.db)
  PAYGATE_METRICS_ADDR                 Prometheus /metrics address (metrics_addr; default: none)
  PAYGATE_NOTIFY_ADDR                  provider notification address, or off (notify_addr; default 0.0.0.0:8081)
  PAYGATE_NOTIFY_MAX_AGE_MS            notifications signed longer ago are refused (notify_max_age_ms; default 93600000, 26 h)
  PAYGATE_LOG_FORMAT                   text or json (log_format)
  PAYGATE_SHUTDOWN_DRAIN_DELAY_MS      NOT_SERVING but still taking calls after SIGTERM (shutdown_drain_delay_ms; default 5000)
  PAYGATE_SHUTDOWN_GRACE_MS            then in-flight calls may finish for this long (shutdown_grace_ms; default 25000)
  PAYGATE_IDEMPOTENCY_RETENTION_HOURS  how long keys replay (idempotency_retention_hours)
  PAYGATE_UNKEYED_RETENTION_DAYS       how long PayXpert keys are kept (unkeyed_retention_days; default 395)
  PAYGATE_AUTH_TOKENS_FILE             caller tokens, CALLER SHA256HEX lines (auth.tokens_file)
  PAYGATE_TLS_CERT_FILE, PAYGATE_TLS_KEY_FILE, PAYGATE_TLS_CLIENT_CA_FILE   TLS / mutual TLS (tls.*)
  PAYGATE_EVENTS_NATS_URL              relay events to NATS JetStream (events.nats.url; default: off)
  PAYGATE_EVENTS_NATS_SUBJECT_PREFIX   subjects <prefix>.<account>.<kind> (events.nats.subject_prefix; default paygate.events)
  PAYGATE_EVENTS_NATS_STREAM           the stream, created when missing (events.nats.stream; default PAYGATE_EVENTS)
";

const ENVIRONMENT_HELP_TAIL: &str =
    "  RUST_LOG                             log filter (default info)
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL
  (grpc or http/protobuf), OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES   OpenTelemetry traces";

/// The file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen_addr: Option<String>,
    default_account: Option<String>,
    max_request_time_ms: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    shutdown_drain_delay_ms: Option<u64>,
    log_format: Option<LogFormat>,
    store_url: Option<String>,
    metrics_addr: Option<String>,
    notify_addr: Option<String>,
    notify_max_connections: Option<usize>,
    notify_header_timeout_ms: Option<u64>,
    notify_body_timeout_ms: Option<u64>,
    notify_max_connection_ms: Option<u64>,
    notify_max_age_ms: Option<u64>,
    grpc_max_connections: Option<usize>,
    grpc_max_connections_per_client: Option<usize>,
    grpc_handshake_timeout_ms: Option<u64>,
    grpc_max_concurrent_streams: Option<u32>,
    grpc_max_open_requests: Option<usize>,
    grpc_max_header_list_bytes: Option<u32>,
    grpc_max_pending_reset_streams: Option<usize>,
    grpc_max_local_error_reset_streams: Option<usize>,
    idempotency_retention_hours: Option<u64>,
    unkeyed_retention_days: Option<u64>,
    max_in_flight_requests: Option<usize>,
    max_event_streams: Option<usize>,
    max_event_streams_per_caller: Option<usize>,
    max_queue_ms: Option<u64>,
    caller_rps: Option<f64>,
    caller_burst: Option<u32>,
    tls: Option<FileTls>,
    auth: Option<FileAuth>,
    #[serde(default)]
    callers: BTreeMap<String, FileCaller>,
    events: Option<FileEvents>,
}

/// `[events]`: where events go besides Watch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEvents {
    nats: Option<FileNats>,
}

/// `[events.nats]`: the relay to NATS JetStream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNats {
    url: Option<String>,
    subject_prefix: Option<String>,
    stream: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    tokens_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCaller {
    methods: Option<Vec<String>>,
    accounts: Option<Vec<String>>,
    read_others: Option<bool>,
    rps: Option<f64>,
    burst: Option<u32>,
}

/// The keys every account has; the rest of `[accounts.NAME]` belongs to its provider.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccount {
    provider: Option<String>,
    rps: Option<f64>,
    burst: Option<u32>,
    max_in_flight: Option<usize>,
    max_calls: Option<usize>,
    breaker_threshold: Option<u32>,
    breaker_cool_down_ms: Option<u64>,
}

/// The keys of [`FileAccount`].
const ACCOUNT_KEYS: &[&str] = &[
    "provider",
    "rps",
    "burst",
    "max_in_flight",
    "max_calls",
    "breaker_threshold",
    "breaker_cool_down_ms",
];

/// An account's table as the file has it (or an empty one the environment created).
struct RawAccount<'a> {
    table: Spanned<DeTable<'a>>,
    /// The provider whose environment shortcuts created or describe this account.
    env_provider: Option<&'static str>,
}

/// One provider account, ready to build.
#[derive(Debug)]
pub struct AccountConfig {
    /// The name callers use.
    pub name: String,
    /// The provider and its settings.
    pub provider: ProviderConfig,
    /// Rate limit, in-flight cap, circuit breaker.
    pub guard: GuardSettings,
}

/// TLS material for the gRPC port.
#[derive(Debug)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: Vec<u8>,
    /// Server private key (PEM).
    pub key: Secret<Vec<u8>>,
    /// CA that signs client certificates; set = mutual TLS.
    pub client_ca: Option<Vec<u8>>,
    /// Where the certificate is read from (again, when it changes).
    pub cert_file: PathBuf,
    /// Where the key is read from.
    pub key_file: PathBuf,
    /// Where the client CA is read from.
    pub client_ca_file: Option<PathBuf>,
}

/// The whole configuration.
#[derive(Debug)]
pub struct Config {
    /// gRPC listen address.
    pub listen_addr: SocketAddr,
    /// Account used when a request names none.
    pub default_account: Option<String>,
    /// Longest time one RPC may take.
    pub max_request_time: Duration,
    /// How long shutdown waits for in-flight calls.
    pub shutdown_grace: Duration,
    /// How long, after the shutdown signal, the gateway reports NOT_SERVING but keeps taking
    /// calls, while load balancers stop sending it new ones.
    pub shutdown_drain_delay: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Idempotency store: `sqlite://PATH` or `postgres://...`.
    pub store_url: String,
    /// Where `/metrics` is served; `None` = off.
    pub metrics_addr: Option<SocketAddr>,
    /// Where provider notifications are received (`PAYGATE_NOTIFY_ADDR`, default
    /// `0.0.0.0:8081`; `off` turns the listener off).
    pub notify_addr: Option<SocketAddr>,
    /// Bounds on what strangers can hold of the notification listener.
    pub notify_limits: crate::notify::Limits,
    /// Bounds on what one client can hold of the gRPC port.
    pub grpc_limits: crate::connections::GrpcLimits,
    /// TLS on the gRPC port.
    pub tls: Option<TlsFiles>,
    /// Caller authentication and policies.
    pub auth: Auth,
    /// Gateway-wide in-flight cap.
    pub max_in_flight_requests: usize,
    /// Most open `EventService.Watch` streams, and per authenticated caller.
    pub max_event_streams: (usize, usize),
    /// Longest wait for a rate-limit slot.
    pub max_queue: Duration,
    /// Rate for callers without their own.
    pub caller_rate: Option<Rate>,
    /// Rates by caller.
    pub caller_rates: HashMap<String, Rate>,
    /// How long completed idempotency keys are kept.
    pub idempotency_retention: Duration,
    /// How long completed keys of providers without their own idempotency key (PayXpert)
    /// are kept, so a late retry replays instead of refunding again.
    pub unkeyed_retention: Duration,
    /// Provider accounts.
    pub accounts: Vec<AccountConfig>,
    /// The relay of events to NATS JetStream, when on.
    pub events_nats: Option<NatsSettings>,
}

/// The relay to NATS JetStream as the environment alone sets it (dev mode, which reads no
/// file): on when `PAYGATE_EVENTS_NATS_URL` is set.
pub fn events_nats_from_env(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<NatsSettings>, ConfigError> {
    nats_settings(FileNats::default(), env)
}

/// The relay to NATS JetStream (`[events.nats]`, `PAYGATE_EVENTS_NATS_*`): on when a URL is
/// given, the environment over the file.
fn nats_settings(
    table: FileNats,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<NatsSettings>, ConfigError> {
    let Some(url) = Pick::of(env, "PAYGATE_EVENTS_NATS_URL", "events.nats.url", table.url) else {
        return Ok(None);
    };
    if url.value.trim().is_empty() {
        return Err(err(
            url.setting,
            "must name a NATS server, e.g. nats://nats:4222",
        ));
    }
    let prefix = Pick::or(
        env,
        "PAYGATE_EVENTS_NATS_SUBJECT_PREFIX",
        "events.nats.subject_prefix",
        table.subject_prefix,
        crate::relay::DEFAULT_SUBJECT_PREFIX,
    );
    let subject_ok = |p: &str| {
        p.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        })
    };
    if !subject_ok(&prefix.value) {
        return Err(err(
            prefix.setting,
            "must be a NATS subject without wildcards, e.g. paygate.events",
        ));
    }
    let stream = Pick::or(
        env,
        "PAYGATE_EVENTS_NATS_STREAM",
        "events.nats.stream",
        table.stream,
        crate::relay::DEFAULT_STREAM,
    );
    if stream.value.is_empty()
        || !stream
            .value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(err(
            stream.setting,
            "must be a JetStream stream name: A-Z a-z 0-9 _ -",
        ));
    }
    Ok(Some(NatsSettings {
        url: url.value,
        subject_prefix: prefix.value,
        stream: stream.value,
    }))
}

/// Default store: an SQLite file under `./data`.
pub const DEFAULT_STORE_URL: &str = "sqlite://./data/paygate.db";

/// The configuration file's text, if a file is given.
fn read_text(path: Option<&Path>) -> Result<Option<String>, ConfigError> {
    match path {
        Some(p) => Ok(Some(std::fs::read_to_string(p).map_err(|e| {
            err(
                "PAYGATE_CONFIG",
                format!("cannot read {}: {e}", p.display()),
            )
        })?)),
        None => Ok(None),
    }
}

/// The file's settings and its accounts' tables (empty without a file).
fn parse_file(
    source: Option<FileText<'_>>,
) -> Result<(FileConfig, BTreeMap<String, RawAccount<'_>>), ConfigError> {
    Ok(match source {
        Some(f) => {
            let mut root = DeTable::parse(f.text).map_err(|e| f.error(e))?;
            let accounts = root.get_mut().remove("accounts");
            let file: FileConfig = read_table(root, source)?;
            let accounts = match accounts {
                None => BTreeMap::new(),
                Some(v) => {
                    let span = v.span();
                    match v.into_inner() {
                        toml::de::DeValue::Table(t) => account_tables(t, f)?,
                        _ => {
                            return Err(f.error_at(span, "accounts must be a table of accounts"));
                        }
                    }
                }
            };
            (file, accounts)
        }
        None => (FileConfig::default(), BTreeMap::new()),
    })
}

/// Where the idempotency store is and how long its keys are kept.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `sqlite://PATH` or `postgres://...` (`store_url`, PAYGATE_STORE_URL).
    pub url: String,
    /// How long keys replay.
    pub retention: Duration,
    /// How long PayXpert keys are kept.
    pub unkeyed_retention: Duration,
    /// The setting the URL came from (`PAYGATE_STORE_URL`, or the file key `store_url`, also
    /// when it is the default).
    pub url_setting: &'static str,
}

impl StoreSettings {
    fn read(file: &FileConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let store = Pick::or(
            env,
            "PAYGATE_STORE_URL",
            "store_url",
            file.store_url.clone(),
            DEFAULT_STORE_URL,
        );
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| store.value.starts_with(p))
        {
            return Err(err(
                store.setting,
                "must start with sqlite:// or postgres://",
            ));
        }
        let retention_hours = Pick::number_or(
            env,
            (
                "PAYGATE_IDEMPOTENCY_RETENTION_HOURS",
                "idempotency_retention_hours",
            ),
            file.idempotency_retention_hours,
            crate::idempotency::DEFAULT_RETENTION.as_secs() / 3600,
            |h| h > 0,
            "must be a positive number of hours",
        )?;
        let unkeyed = Pick::number(
            env,
            ("PAYGATE_UNKEYED_RETENTION_DAYS", "unkeyed_retention_days"),
            file.unkeyed_retention_days,
            |d| d > 0,
            "must be a positive number of days",
        )?;
        let (unkeyed_setting, unkeyed_days) = match unkeyed {
            Some(p) => (p.setting, p.value),
            None => (
                "unkeyed_retention_days",
                crate::idempotency::DEFAULT_UNKEYED_RETENTION.as_secs() / 86_400,
            ),
        };
        if unkeyed_days * 24 < retention_hours {
            return Err(err(
                unkeyed_setting,
                "must not be shorter than the idempotency retention",
            ));
        }
        Ok(Self {
            url: store.value,
            retention: Duration::from_secs(retention_hours * 3600),
            unkeyed_retention: Duration::from_secs(unkeyed_days * 86_400),
            url_setting: store.setting,
        })
    }
}

/// Default cap on calls in progress at once (`max_in_flight_requests`).
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: usize = 1024;
/// Default longest wait for a rate-limit slot (`max_queue_ms`).
pub const DEFAULT_MAX_QUEUE: Duration = Duration::from_millis(250);
/// Default cap on one call without a shorter deadline (`max_request_time_ms`).
pub const DEFAULT_MAX_REQUEST_TIME: Duration = Duration::from_secs(30);
/// Default gRPC listen address.
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:50051";
/// The notification listener's default address.
pub const DEFAULT_NOTIFY_ADDR: &str = "0.0.0.0:8081";

impl Config {
    /// Loads the file at `path` (if any) and applies environment overrides read through
    /// `env`.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = read_text(path)?;
        let file = path
            .zip(text.as_deref())
            .map(|(path, text)| FileText { path, text });
        Self::from_file(file, env)
    }

    /// The store settings alone, read from the file at `path` (if any) and the environment
    /// exactly as [`Config::load`] reads them, for commands that open the store and nothing
    /// else (`paygate settle`): provider accounts, keys and listeners are neither read nor
    /// required.
    pub fn load_store(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<StoreSettings, ConfigError> {
        let text = read_text(path)?;
        let file = path
            .zip(text.as_deref())
            .map(|(path, text)| FileText { path, text });
        let (file, _accounts) = parse_file(file)?;
        StoreSettings::read(&file, env)
    }

    fn from_file(
        source: Option<FileText<'_>>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (mut file, raw_accounts) = parse_file(source)?;
        let listen = Pick::or(
            env,
            "PAYGATE_LISTEN_ADDR",
            "listen_addr",
            file.listen_addr.clone(),
            DEFAULT_LISTEN_ADDR,
        );
        let listen_addr = socket_addr(listen.setting, &listen.value, "")?;
        let log_format = match env("PAYGATE_LOG_FORMAT") {
            Some(v) => v.parse().map_err(|e| err("PAYGATE_LOG_FORMAT", e))?,
            None => file.log_format.unwrap_or_default(),
        };

        let accounts = accounts(raw_accounts, source, env)?;

        let default_account = default_account(&accounts, &file, env)?;
        if accounts.is_empty() {
            return Err(err(
                "accounts",
                format!(
                    "no provider account is configured: set {}, or pass --config (or run `paygate dev` for a local demo)",
                    registry::setup_hint()
                ),
            ));
        }

        let (shutdown_grace, shutdown_drain_delay) = shutdown_times(&file, env)?;
        let nats = file.events.take().and_then(|e| e.nats).unwrap_or_default();
        let events_nats = nats_settings(nats, env)?;
        let store = StoreSettings::read(&file, env)?;
        // A window shorter than a minute refuses notifications that clock skew alone delays.
        let notify_max_age = Duration::from_millis(Pick::number_or(
            env,
            ("PAYGATE_NOTIFY_MAX_AGE_MS", "notify_max_age_ms"),
            file.notify_max_age_ms,
            crate::notify::DEFAULT_MAX_AGE.as_millis() as u64,
            |ms| ms >= 60_000,
            "must be a number of milliseconds, at least 60000",
        )?);
        let tls = tls_files(file.tls.take().unwrap_or_default(), env)?;
        let (auth, caller_rate, caller_rates) = callers(&mut file, tls.as_ref(), env)?;
        let metrics = Pick::of(
            env,
            "PAYGATE_METRICS_ADDR",
            "metrics_addr",
            file.metrics_addr.take(),
        );
        let metrics_addr = match metrics {
            Some(m) => Some(socket_addr(m.setting, &m.value, "")?),
            None => None,
        };
        let notify = Pick::or(
            env,
            "PAYGATE_NOTIFY_ADDR",
            "notify_addr",
            file.notify_addr.take(),
            DEFAULT_NOTIFY_ADDR,
        );
        let notify_addr = match notify.value.as_str() {
            "off" => None,
            v => Some(socket_addr(notify.setting, v, " (or off)")?),
        };
        Ok(Config {
            listen_addr,
            metrics_addr,
            notify_addr,
            notify_limits: notify_limits(&file, notify_max_age),
            grpc_limits: grpc_limits(&file),
            tls,
            auth,
            max_in_flight_requests: file
                .max_in_flight_requests
                .unwrap_or(DEFAULT_MAX_IN_FLIGHT_REQUESTS)
                .max(1),
            max_event_streams: (
                file.max_event_streams
                    .unwrap_or(crate::api::DEFAULT_MAX_STREAMS)
                    .max(1),
                file.max_event_streams_per_caller
                    .unwrap_or(crate::api::DEFAULT_MAX_STREAMS_PER_CALLER)
                    .max(1),
            ),
            max_queue: file
                .max_queue_ms
                .map_or(DEFAULT_MAX_QUEUE, Duration::from_millis),
            caller_rate,
            caller_rates,
            store_url: store.url,
            idempotency_retention: store.retention,
            unkeyed_retention: store.unkeyed_retention,
            default_account,
            max_request_time: file
                .max_request_time_ms
                .map_or(DEFAULT_MAX_REQUEST_TIME, Duration::from_millis),
            shutdown_grace,
            shutdown_drain_delay,
            log_format,
            accounts,
            events_nats,
        })
    }
}

/// The provider accounts: the file's, and those the environment shortcuts describe (created
/// when the file has none), each configured by its provider.
fn accounts(
    mut raw_accounts: BTreeMap<String, RawAccount<'_>>,
    source: Option<FileText<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<AccountConfig>, ConfigError> {
    // Environment shortcuts create the account they describe when the file has none.
    for r in registry::REGISTRY {
        let set = r
            .shortcuts
            .iter()
            .any(|s| s.creates_account && env(s.var).is_some());
        if set {
            let account = raw_accounts
                .entry(r.env_account.to_owned())
                .or_insert_with(|| RawAccount {
                    table: Spanned::new(0..0, DeTable::new()),
                    env_provider: None,
                });
            account.env_provider = Some(r.name);
        }
    }

    let mut accounts = Vec::new();
    for (name, raw) in raw_accounts {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(err(
                format!("accounts.{name}"),
                "account names are 1-64 characters of A-Z a-z 0-9 _ - .",
            ));
        }
        let (common, own) = split_keys(raw.table);
        let a: FileAccount = read_table(common, source)?;
        let provider = a.provider.as_deref().or(raw.env_provider);
        let registration = match provider {
            Some(p) => registry::find(p).ok_or_else(|| {
                err(
                    format!("accounts.{name}.provider"),
                    format!("unknown provider {p:?}; known: {}", registry::names()),
                )
            })?,
            None => {
                return Err(err(
                    format!("accounts.{name}.provider"),
                    format!("missing; known: {}", registry::names()),
                ));
            }
        };
        let shortcuts = if name == registration.env_account {
            registration.shortcuts
        } else {
            &[]
        };
        let mut keys = AccountKeys::new(&name, own, source, shortcuts, env);
        let guard = guard_settings(&keys, &a)?;
        let provider = (registration.configure)(&mut keys)?;
        accounts.push(AccountConfig {
            name,
            provider,
            guard,
        });
    }
    Ok(accounts)
}

/// The account a request that names none uses: PAYGATE_DEFAULT_ACCOUNT or the file's
/// `default_account` (which must name an account), else the only account, else `antom`.
fn default_account(
    accounts: &[AccountConfig],
    file: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let named = Pick::of(
        env,
        "PAYGATE_DEFAULT_ACCOUNT",
        "default_account",
        file.default_account.clone(),
    );
    let default_account = match named.map(|p| (p.setting, p.value)) {
        Some((setting, name)) => {
            if !accounts.iter().any(|a| a.name == name) {
                return Err(err(setting, format!("no account named {name:?}")));
            }
            Some(name)
        }
        None if accounts.len() == 1 => Some(accounts[0].name.clone()),
        None => accounts
            .iter()
            .find(|a| a.name == registry::DEFAULT_ACCOUNT)
            .map(|a| a.name.clone()),
    };
    Ok(default_account)
}

/// The shutdown grace and drain delay: the environment's, else the file's, else the defaults.
fn shutdown_times(
    file: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Duration, Duration), ConfigError> {
    let millis = |names, file_value, default: Duration| {
        let default = default.as_millis() as u64;
        let ms = Pick::number_or(
            env,
            names,
            file_value,
            default,
            |_| true,
            "must be a number of milliseconds",
        );
        ms.map(Duration::from_millis)
    };
    let shutdown_grace = millis(
        ("PAYGATE_SHUTDOWN_GRACE_MS", "shutdown_grace_ms"),
        file.shutdown_grace_ms,
        DEFAULT_SHUTDOWN_GRACE,
    )?;
    let shutdown_drain_delay = millis(
        ("PAYGATE_SHUTDOWN_DRAIN_DELAY_MS", "shutdown_drain_delay_ms"),
        file.shutdown_drain_delay_ms,
        DEFAULT_SHUTDOWN_DRAIN_DELAY,
    )?;
    Ok((shutdown_grace, shutdown_drain_delay))
}

/// Who may call, and at what rate: [`Auth`], everyone's rate, each caller's own.
type Callers = (Auth, Option<Rate>, HashMap<String, Rate>);

/// Who may call: mutual TLS when the TLS settings name a client CA, the bearer-token hashes,
/// each caller's policy; and the callers' rates (everyone's, and each one's own).
fn callers(
    file: &mut FileConfig,
    tls: Option<&TlsFiles>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Callers, ConfigError> {
    let mut auth = Auth {
        mtls: tls.is_some_and(|t| t.client_ca.is_some()),
        ..Auth::default()
    };
    let tokens = env("PAYGATE_AUTH_TOKENS_FILE")
        .map(|v| ("PAYGATE_AUTH_TOKENS_FILE".to_owned(), PathBuf::from(v)))
        .or_else(|| {
            file.auth
                .take()
                .and_then(|a| a.tokens_file)
                .map(|p| ("auth.tokens_file".to_owned(), p))
        });
    if let Some((setting, path)) = tokens {
        auth.tokens_file = Some(
            crate::auth::TokensFile::load(&path, &mut auth.token_hashes)
                .map_err(|e| err(&setting, e))?,
        );
    }
    let caller_rate = rate("caller_rps", file.caller_rps, file.caller_burst)?;
    let mut caller_rates = HashMap::new();
    for (name, c) in std::mem::take(&mut file.callers) {
        if let Some(r) = rate(&format!("callers.{name}.rps"), c.rps, c.burst)? {
            caller_rates.insert(name.clone(), r);
        }
        auth.policies.insert(
            name,
            Policy {
                methods: c.methods,
                accounts: c.accounts,
                read_others: c.read_others.unwrap_or(false),
            },
        );
    }
    Ok((auth, caller_rate, caller_rates))
}

/// The notification port's limits: the file's, else the listener's defaults.
fn notify_limits(file: &FileConfig, max_age: Duration) -> crate::notify::Limits {
    let d = crate::notify::Limits::default();
    let ms = |v: Option<u64>, default: Duration| {
        v.filter(|ms| *ms > 0)
            .map_or(default, Duration::from_millis)
    };
    crate::notify::Limits {
        max_connections: file
            .notify_max_connections
            .unwrap_or(d.max_connections)
            .max(1),
        header_timeout: ms(file.notify_header_timeout_ms, d.header_timeout),
        body_timeout: ms(file.notify_body_timeout_ms, d.body_timeout),
        max_connection_time: ms(file.notify_max_connection_ms, d.max_connection_time),
        max_age,
    }
}

/// The gRPC port's limits: the file's, else the defaults of `connections`.
fn grpc_limits(file: &FileConfig) -> crate::connections::GrpcLimits {
    let d = crate::connections::GrpcLimits::default();
    crate::connections::GrpcLimits {
        max_connections: file
            .grpc_max_connections
            .unwrap_or(d.max_connections)
            .max(1),
        max_connections_per_client: file
            .grpc_max_connections_per_client
            .unwrap_or(d.max_connections_per_client)
            .max(1),
        handshake_timeout: file
            .grpc_handshake_timeout_ms
            .filter(|ms| *ms > 0)
            .map_or(d.handshake_timeout, Duration::from_millis),
        max_concurrent_streams: file
            .grpc_max_concurrent_streams
            .unwrap_or(d.max_concurrent_streams)
            .max(1),
        max_open_requests: file
            .grpc_max_open_requests
            .unwrap_or(d.max_open_requests)
            .max(1),
        max_header_list_bytes: file
            .grpc_max_header_list_bytes
            .unwrap_or(d.max_header_list_bytes)
            .max(1024),
        max_pending_reset_streams: file
            .grpc_max_pending_reset_streams
            .unwrap_or(d.max_pending_reset_streams),
        max_local_error_reset_streams: file
            .grpc_max_local_error_reset_streams
            .unwrap_or(d.max_local_error_reset_streams),
        ..d
    }
}

fn rate(setting: &str, rps: Option<f64>, burst: Option<u32>) -> Result<Option<Rate>, ConfigError> {
    let Some(per_second) = rps else {
        return Ok(None);
    };
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err(err(setting, "must be a positive number"));
    }
    let burst = burst.unwrap_or_else(|| per_second.ceil().max(1.0) as u32);
    if burst == 0 {
        return Err(err(setting, "burst must be positive"));
    }
    Ok(Some(Rate { per_second, burst }))
}

fn guard_settings(keys: &AccountKeys<'_>, a: &FileAccount) -> Result<GuardSettings, ConfigError> {
    let d = GuardSettings::default();
    Ok(GuardSettings {
        rate: rate(
            &keys.setting("rps"),
            keys.positive_number("rps", a.rps)?,
            keys.positive_integer("burst", a.burst)?,
        )?,
        max_in_flight: a.max_in_flight.unwrap_or(d.max_in_flight).max(1),
        max_calls: a.max_calls.unwrap_or(d.max_calls).max(1),
        max_queue: d.max_queue,
        breaker_threshold: a.breaker_threshold.unwrap_or(d.breaker_threshold).max(1),
        breaker_cool_down: a
            .breaker_cool_down_ms
            .map(Duration::from_millis)
            .unwrap_or(d.breaker_cool_down),
    })
}

/// The accounts of the file's `[accounts]` table, each a table.
fn account_tables<'a>(
    table: DeTable<'a>,
    file: FileText<'_>,
) -> Result<BTreeMap<String, RawAccount<'a>>, ConfigError> {
    let mut accounts = BTreeMap::new();
    for (name, value) in table {
        let span = value.span();
        let name = name.into_inner().into_owned();
        match value.into_inner() {
            toml::de::DeValue::Table(t) => {
                accounts.insert(
                    name,
                    RawAccount {
                        table: Spanned::new(span, t),
                        env_provider: None,
                    },
                );
            }
            _ => {
                return Err(file.error_at(span, "an account must be a table of settings"));
            }
        }
    }
    Ok(accounts)
}

/// An account's table split into the keys every account has and its provider's own.
fn split_keys(table: Spanned<DeTable<'_>>) -> (Spanned<DeTable<'_>>, Spanned<DeTable<'_>>) {
    let span = table.span();
    let (mut common, mut own) = (DeTable::new(), DeTable::new());
    for (k, v) in table.into_inner() {
        if ACCOUNT_KEYS.contains(&k.get_ref().as_ref()) {
            common.insert(k, v);
        } else {
            own.insert(k, v);
        }
    }
    (Spanned::new(span.clone(), common), Spanned::new(span, own))
}

fn tls_files(
    f: FileTls,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let pick = |var: &str, key: &str, from_file: Option<PathBuf>| {
        env(var)
            .map(|v| (var.to_owned(), PathBuf::from(v)))
            .or_else(|| from_file.map(|p| (format!("tls.{key}"), p)))
    };
    let cert = pick("PAYGATE_TLS_CERT_FILE", "cert_file", f.cert_file);
    let key = pick("PAYGATE_TLS_KEY_FILE", "key_file", f.key_file);
    let ca = pick(
        "PAYGATE_TLS_CLIENT_CA_FILE",
        "client_ca_file",
        f.client_ca_file,
    );
    match (cert, key) {
        (None, None) => match ca {
            Some((setting, _)) => Err(err(
                setting,
                "mutual TLS needs PAYGATE_TLS_CERT_FILE and PAYGATE_TLS_KEY_FILE too",
            )),
            None => Ok(None),
        },
        (Some((s, _)), None) => Err(err(s, "PAYGATE_TLS_KEY_FILE is missing")),
        (None, Some((s, _))) => Err(err(s, "PAYGATE_TLS_CERT_FILE is missing")),
        (Some((cs, cp)), Some((ks, kp))) => {
            let cert = read_file(&cs, &cp)?;
            let key = read_file(&ks, &kp)?;
            let client_ca = match &ca {
                Some((s, p)) => Some(read_file(s, p)?),
                None => None,
            };
            for (setting, bytes, tag) in [(&cs, &cert, "CERTIFICATE"), (&ks, &key, "PRIVATE KEY")] {
                if !String::from_utf8_lossy(bytes).contains(tag) {
                    return Err(err(
                        setting.as_str(),
                        format!("not a PEM file with a {tag}"),
                    ));
                }
            }
            Ok(Some(TlsFiles {
                cert,
                key: Secret::new(key),
                client_ca,
                cert_file: cp,
                key_file: kp,
                client_ca_file: ca.map(|(_, p)| p),
            }))
        }
    }
}

/// Reads a tokens file: one `CALLER SHA256HEX` per line; `#` starts a comment.
/// A listen address: `IP:PORT`, or `HOST:PORT` with a host name such as `localhost` (its first
/// address, IPv4 first).
fn socket_addr(setting: &str, v: &str, or: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = v.parse() {
        return Ok(a);
    }
    let bad = || err(setting, format!("{v:?} is not a host:port address{or}"));
    let addrs: Vec<SocketAddr> = v.to_socket_addrs().map_err(|_| bad())?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::antom::client::Settings as AntomSettings;
    use crate::providers::antom::signing::Signer;
    use crate::providers::payxpert::client::Settings as PayXpertSettings;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn keys(dir: &Path) -> (PathBuf, PathBuf) {
        let s = Signer::generate().unwrap();
        let k = dir.join("k.pem");
        let p = dir.join("p.pem");
        std::fs::write(&k, s.private_key_pem()).unwrap();
        std::fs::write(&p, s.public_key_pem()).unwrap();
        (k, p)
    }

    #[test]
    fn environment_alone_configures_the_default_antom_account() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = keys(dir.path());
        let env = env_of(&[
            (
                "PAYGATE_ANTOM_BASE_URL",
                "https://open-sea-global.alipay.com",
            ),
            ("PAYGATE_ANTOM_CLIENT_ID", "SANDBOX_5X00000000000000"),
            ("PAYGATE_ANTOM_PRIVATE_KEY_FILE", k.to_str().unwrap()),
            ("PAYGATE_ANTOM_PUBLIC_KEY_FILE", p.to_str().unwrap()),
        ]);
        let c = Config::load(None, &env).unwrap();
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:50051");
        assert_eq!(c.default_account.as_deref(), Some("antom"));
        let Some(s) = c.accounts[0].provider.settings::<AntomSettings>() else {
            panic!("an antom account")
        };
        assert!(s.sandbox, "SANDBOX_ client ids use sandbox paths");
        assert_eq!(c.shutdown_drain_delay, DEFAULT_SHUTDOWN_DRAIN_DELAY);
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
    }

    #[test]
    fn the_drain_delay_from_the_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = keys(dir.path());
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!(
                "shutdown_drain_delay_ms = 1500\n[accounts.antom]\nprovider = \"antom\"\nbase_url = \"https://x.example\"\nclient_id = \"C\"\nprivate_key_file = {k:?}\nantom_public_key_file = {p:?}\n"
            ),
        )
        .unwrap();
        let c = Config::load(Some(&file), &env_of(&[])).unwrap();
        assert_eq!(c.shutdown_drain_delay, Duration::from_millis(1500));
        let c = Config::load(
            Some(&file),
            &env_of(&[("PAYGATE_SHUTDOWN_DRAIN_DELAY_MS", "0")]),
        )
        .unwrap();
        assert_eq!(c.shutdown_drain_delay, Duration::ZERO);
        let e = Config::load(
            Some(&file),
            &env_of(&[("PAYGATE_SHUTDOWN_DRAIN_DELAY_MS", "soon")]),
        )
        .unwrap_err();
        assert_eq!(e.setting, "PAYGATE_SHUTDOWN_DRAIN_DELAY_MS");
    }

    #[test]
    fn payxpert_quiet_period_and_unkeyed_retention() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret").unwrap();
        let base = [
            ("PAYGATE_PAYXPERT_BASE_URL", "https://api.payxpert.com"),
            ("PAYGATE_PAYXPERT_ORIGINATOR_ID", "ORIG1"),
            ("PAYGATE_PAYXPERT_PASSWORD_FILE", pw.to_str().unwrap()),
        ];
        let c = Config::load(None, &env_of(&base)).unwrap();
        let Some(s) = c.accounts[0].provider.settings::<PayXpertSettings>() else {
            panic!("a payxpert account")
        };
        assert_eq!(s.quiet_period, Duration::from_secs(120));
        assert_eq!(c.unkeyed_retention, Duration::from_secs(395 * 86_400));
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            Config::load(None, &env_of(&v))
        };
        let c = with(&[("PAYGATE_PAYXPERT_RECONCILE_QUIET_PERIOD_MS", "20000")]).unwrap();
        let Some(s) = c.accounts[0].provider.settings::<PayXpertSettings>() else {
            panic!("a payxpert account")
        };
        assert_eq!(s.quiet_period, Duration::from_secs(20));
        // Not longer than the attempt timeout (15 s): an attempt may still be executing.
        let e = with(&[("PAYGATE_PAYXPERT_RECONCILE_QUIET_PERIOD_MS", "15000")]).unwrap_err();
        assert_eq!(e.setting, "PAYGATE_PAYXPERT_RECONCILE_QUIET_PERIOD_MS");
        let e = with(&[("PAYGATE_PAYXPERT_RECONCILE_QUIET_PERIOD_MS", "soon")]).unwrap_err();
        assert_eq!(e.setting, "PAYGATE_PAYXPERT_RECONCILE_QUIET_PERIOD_MS");
        let c = with(&[("PAYGATE_UNKEYED_RETENTION_DAYS", "30")]).unwrap();
        assert_eq!(c.unkeyed_retention, Duration::from_secs(30 * 86_400));
        let e = with(&[
            ("PAYGATE_UNKEYED_RETENTION_DAYS", "5"),
            ("PAYGATE_IDEMPOTENCY_RETENTION_HOURS", "168"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "PAYGATE_UNKEYED_RETENTION_DAYS");
    }

    #[test]
    fn toml_errors_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listen_addr = \"127.0.0.1:1\"\n[accounts.a\n").unwrap();
        let e = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.setting.ends_with("bad.toml:2:12"), "{}", e.setting);
        std::fs::write(&path, "max_queue_ms = \"soon\"\n").unwrap();
        let e = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.setting.ends_with("bad.toml:1:16"), "{}", e.setting);
    }

    #[test]
    fn each_provider_refuses_keys_it_does_not_have_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = keys(dir.path());
        let path = dir.path().join("c.toml");
        let antom = format!(
            "[accounts.a]\nprovider = \"antom\"\nbase_url = \"https://x.example\"\nclient_id = \"C\"\nprivate_key_file = {k:?}\nantom_public_key_file = {p:?}\n"
        );
        std::fs::write(&path, &antom).unwrap();
        Config::load(Some(&path), &env_of(&[])).unwrap();
        // A PayXpert key on an Antom account is refused, at its line.
        std::fs::write(&path, format!("{antom}password_file = \"pw\"\n")).unwrap();
        let e = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.setting.ends_with("c.toml:7:1"), "{}", e.setting);
        assert!(e.problem.contains("password_file"), "{e}");
        // A wrong type in a provider's own key and in a key every account has: line and column.
        std::fs::write(&path, format!("{antom}sandbox = \"yes\"\n")).unwrap();
        let e = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.setting.ends_with("c.toml:7:11"), "{}", e.setting);
        std::fs::write(&path, format!("{antom}rps = \"fast\"\n")).unwrap();
        let e = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.setting.ends_with("c.toml:7:7"), "{}", e.setting);
        // An Antom key on a PayXpert account.
        std::fs::write(
            &path,
            "[accounts.px]\nprovider = \"payxpert\"\nclient_id = \"C\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.setting.ends_with("c.toml:3:1"), "{}", e.setting);
        assert!(e.problem.contains("client_id"), "{e}");
        // An account that is not a table.
        std::fs::write(&path, "accounts = { a = 1 }\n").unwrap();
        let e = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.setting.contains("c.toml:1:"), "{}", e.setting);
    }

    #[test]
    fn errors_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let (k, _) = keys(dir.path());
        let env = env_of(&[
            ("PAYGATE_ANTOM_BASE_URL", "https://x.example"),
            ("PAYGATE_ANTOM_CLIENT_ID", "C1"),
            ("PAYGATE_ANTOM_PRIVATE_KEY_FILE", k.to_str().unwrap()),
            ("PAYGATE_ANTOM_PUBLIC_KEY_FILE", "/nonexistent/p.pem"),
        ]);
        let e = Config::load(None, &env).unwrap_err();
        assert_eq!(e.setting, "PAYGATE_ANTOM_PUBLIC_KEY_FILE");
        let e = Config::load(None, &env_of(&[])).unwrap_err();
        assert_eq!(e.setting, "accounts");
        let e = Config::load(None, &env_of(&[("PAYGATE_LISTEN_ADDR", "nope")])).unwrap_err();
        assert_eq!(e.setting, "PAYGATE_LISTEN_ADDR");
    }

    #[test]
    fn file_accounts_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = keys(dir.path());
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "listen_addr = \"127.0.0.1:6000\"\n[accounts.eu]\nprovider = \"antom\"\nbase_url = \"https://open-de-global.alipay.com\"\nclient_id = \"C2\"\nprivate_key_file = {k:?}\nantom_public_key_file = {p:?}\n"
            ),
        )
        .unwrap();
        let c = Config::load(Some(&path), &env_of(&[])).unwrap();
        assert_eq!(c.default_account.as_deref(), Some("eu"));
        let Some(s) = c.accounts[0].provider.settings::<AntomSettings>() else {
            panic!("an antom account")
        };
        assert!(!s.sandbox);
        std::fs::write(&path, "listen_adr = \"x\"\n").unwrap();
        let e = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.problem.contains("listen_adr"), "{e}");
    }

    #[test]
    fn tokens_callers_limits_and_tls_settings() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = keys(dir.path());
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!(
                "# caller sha256\nbilling {}\nsupport sha256:{}\n",
                crate::auth::hash_token("t1"),
                crate::auth::hash_token("t2").to_uppercase()
            ),
        )
        .unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "caller_rps = 50\n[auth]\ntokens_file = {tokens:?}\n[callers.billing]\nmethods = [\"RefundService.Create\"]\nrps = 5\nburst = 2\n[accounts.antom]\nprovider = \"antom\"\nbase_url = \"https://x.example\"\nclient_id = \"C\"\nprivate_key_file = {k:?}\nantom_public_key_file = {p:?}\nrps = 10\n"
            ),
        )
        .unwrap();
        let env = env_of(&[("PAYGATE_ANTOM_BURST", "4")]);
        let c = Config::load(Some(&path), &env).unwrap();
        assert_eq!(c.auth.token_hashes.len(), 2);
        assert_eq!(
            c.auth
                .token_hashes
                .caller(&crate::auth::hash_token("t2"))
                .as_deref(),
            Some("support")
        );
        assert_eq!(
            c.caller_rates["billing"],
            Rate {
                per_second: 5.0,
                burst: 2
            }
        );
        assert_eq!(
            c.caller_rate,
            Some(Rate {
                per_second: 50.0,
                burst: 50
            })
        );
        assert_eq!(
            c.accounts[0].guard.rate,
            Some(Rate {
                per_second: 10.0,
                burst: 4
            })
        );
        assert!(c.tls.is_none());

        std::fs::write(&tokens, "billing not-a-hash\n").unwrap();
        let e = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert_eq!(e.setting, "auth.tokens_file");
        assert!(e.problem.contains("line 1"));
        let e = Config::load(
            Some(&path),
            &env_of(&[("PAYGATE_TLS_CERT_FILE", "/nonexistent.pem")]),
        )
        .unwrap_err();
        assert_eq!(e.setting, "PAYGATE_TLS_CERT_FILE");
        let e = Config::load(Some(&path), &env_of(&[("PAYGATE_ANTOM_RPS", "-1")])).unwrap_err();
        assert_eq!(e.setting, "PAYGATE_ANTOM_RPS");
    }
}
