//! The dev mode: an Antom simulator on loopback with demo data, keys under the data
//! directory, and a gateway account pointing at it. Also the key handling `paygate sim` uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AccountConfig, Config, ProviderConfig};
use crate::providers::antom::client::Settings;
use crate::providers::antom::keys::{KeyRing, Keys};
use crate::providers::antom::signing::{Signer, Verifier};
use crate::providers::payxpert::client::Settings as PayXpertSettings;

use crate::sim::SimServer;
use crate::sim::antom::{ANTOM_RESEND_SCHEDULE, AntomData, AntomSim, NotifyTarget};
use crate::sim::payxpert::{PayXpertData, PayXpertSim};
use crate::task::Background;
use crate::telemetry::LogFormat;

/// The simulator's merchant client id in dev mode (a sandbox id, so sandbox paths are used).
pub const DEV_CLIENT_ID: &str = "SANDBOX_PAYGATE_DEV";

/// Paths of the four PEM files a simulator set-up uses.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// Merchant private key (the gateway signs with it).
    pub merchant_private: PathBuf,
    /// Merchant public key (the simulator verifies with it).
    pub merchant_public: PathBuf,
    /// Antom private key (the simulator signs with it).
    pub antom_private: PathBuf,
    /// Antom public key (the gateway verifies with it).
    pub antom_public: PathBuf,
}

impl KeyFiles {
    /// The files inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            merchant_private: dir.join("merchant_private_key.pem"),
            merchant_public: dir.join("merchant_public_key.pem"),
            antom_private: dir.join("antom_private_key.pem"),
            antom_public: dir.join("antom_public_key.pem"),
        }
    }
}

/// Loads the simulator key pairs from `dir`, creating fresh ones (mode 0600) if absent.
pub fn load_or_create_keys(dir: &Path) -> std::io::Result<KeyFiles> {
    let files = KeyFiles::in_dir(dir);
    std::fs::create_dir_all(dir)?;
    for (private, public) in [
        (&files.merchant_private, &files.merchant_public),
        (&files.antom_private, &files.antom_public),
    ] {
        if private.exists() && public.exists() {
            continue;
        }
        let key = Signer::generate().map_err(std::io::Error::other)?;
        write_private(private, key.private_key_pem().as_bytes())?;
        std::fs::write(public, key.public_key_pem())?;
    }
    Ok(files)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

fn read_signer(path: &Path) -> std::io::Result<Signer> {
    Signer::from_bytes(&std::fs::read(path)?).map_err(std::io::Error::other)
}

fn read_verifier(path: &Path) -> std::io::Result<Verifier> {
    Verifier::from_bytes(&std::fs::read(path)?).map_err(std::io::Error::other)
}

/// Starts a simulator for `client_id` with the keys in `files`.
pub async fn start_sim(
    files: &KeyFiles,
    client_id: &str,
    addr: SocketAddr,
) -> std::io::Result<SimServer> {
    let sim = AntomSim::new(
        client_id,
        read_verifier(&files.merchant_public)?,
        read_signer(&files.antom_private)?,
    );
    sim.seed_demo();
    sim.bind(addr).await
}

/// An Antom account settings block that talks to a simulator.
pub fn sim_account(
    files: &KeyFiles,
    base_url: String,
    client_id: &str,
) -> std::io::Result<Settings> {
    Ok(Settings {
        base_url,
        client_id: client_id.into(),
        sandbox: client_id.starts_with("SANDBOX_"),
        timeout: Duration::from_secs(5),
        keys: Keys::fixed(KeyRing::single(
            1,
            read_signer(&files.merchant_private)?,
            read_verifier(&files.antom_public)?,
        )),
        notify_url: None,
    })
}

/// The PayXpert simulator's originator id in dev mode.
pub const DEV_ORIGINATOR: &str = "DEV_ORIGINATOR";

/// The dev simulators.
#[derive(Debug)]
pub struct DevSims {
    /// Antom.
    pub antom: SimServer,
    /// PayXpert.
    pub payxpert: SimServer<PayXpertSim>,
    /// Writes what the simulators know to [`SIMS_FILE`] as it changes.
    saver: Background<()>,
    /// The data directory's lock, held for as long as this dev mode runs.
    _lock: std::fs::File,
}

impl DevSims {
    /// Stops both, and writes what they know a last time.
    pub async fn stop(self) {
        self.antom.stop().await;
        self.payxpert.stop().await;
        self.saver.stop().await;
    }
}

/// The file, in the data directory, where dev mode keeps what its simulators know (payments,
/// refunds, subscriptions, id counters), so that `--keep` keeps them with the store.
pub const SIMS_FILE: &str = "dev-sims.json";

/// What both simulators know, as [`SIMS_FILE`] holds it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SimsData {
    antom: AntomData,
    payxpert: PayXpertData,
}

impl SimsData {
    fn of(antom: &AntomSim, payxpert: &PayXpertSim) -> Self {
        Self {
            antom: antom.data(),
            payxpert: payxpert.data(),
        }
    }
}

/// Writes `bytes` to `path` whole or not at all (a temporary file, synced, then renamed).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes what the simulators know to `path` whenever it changed (checked every 100 ms), and
/// once more when stopped.
fn spawn_saver(antom: Arc<AntomSim>, payxpert: Arc<PayXpertSim>, path: PathBuf) -> Background<()> {
    Background::spawn(move |stop| async move {
        let mut last = Vec::new();
        let save = |last: &mut Vec<u8>| {
            let now = serde_json::to_vec(&SimsData::of(&antom, &payxpert)).unwrap_or_default();
            if now != *last {
                match write_atomically(&path, &now) {
                    Ok(()) => *last = now,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot save the simulators' data")
                    }
                }
            }
        };
        tokio::pin!(stop);
        loop {
            save(&mut last);
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        save(&mut last);
    })
}

/// The first id a simulator gives in this run: the clock in units fine enough (`per_ms` ids a
/// millisecond) that no earlier run on this data directory can have reached it, even one
/// whose last ids were never saved.
fn ids_from_clock(per_ms: u64) -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms.saturating_mul(per_ms)
}

/// Takes the data directory's lock: one dev mode per data directory, and a second one touches
/// nothing of the first's (its store is deleted only under the lock), and says so.
fn lock_data_dir(data_dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)?;
    let lock = std::fs::File::create(data_dir.join("dev.lock"))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::other(format!(
            "another paygate dev is running on {}; nothing was touched (stop it, or give --data-dir another directory)",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The store and what the simulators know belong together: both start fresh (demo data only),
/// or with `keep` both are kept. Keys of a store whose simulators forgot their refunds would
/// name refunds nobody can confirm. Returns what the simulators knew, when kept.
fn kept_or_fresh(data_dir: &Path, keep: bool) -> std::io::Result<Option<SimsData>> {
    let sims_file = data_dir.join(SIMS_FILE);
    if keep {
        return match std::fs::read(&sims_file) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!(
                    "{}: {e}; nothing was changed (move it away to start the simulators afresh)",
                    sims_file.display()
                ))
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
    }
    for file in ["paygate.db", "paygate.db-wal", "paygate.db-shm", SIMS_FILE] {
        match std::fs::remove_file(data_dir.join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(None)
}

/// Starts the dev simulators and returns them with a gateway configuration for them.
pub async fn start(
    data_dir: &Path,
    listen_addr: SocketAddr,
    log_format: LogFormat,
    keep: bool,
) -> std::io::Result<(DevSims, Config)> {
    let lock = lock_data_dir(data_dir)?;
    let files = load_or_create_keys(&data_dir.join("dev-keys"))?;
    let sims_file = data_dir.join(SIMS_FILE);
    let kept = kept_or_fresh(data_dir, keep)?;
    let loopback: SocketAddr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
    let antom = AntomSim::new(
        DEV_CLIENT_ID,
        read_verifier(&files.merchant_public)?,
        read_signer(&files.antom_private)?,
    );
    let password = hex_token();
    let px = PayXpertSim::new(DEV_ORIGINATOR, password.clone());
    match kept {
        Some(data) => {
            antom.restore(data.antom);
            px.restore(data.payxpert);
        }
        None => {
            antom.seed_demo();
            px.seed_demo();
        }
    }
    // Ids never repeat across runs, even where a run's last ids were not saved.
    antom.ids_from(ids_from_clock(1_000));
    px.ids_from(ids_from_clock(100));
    let saver = spawn_saver(antom.clone(), px.clone(), sims_file);
    let sim = antom.bind(loopback).await?;
    let settings = sim_account(&files, sim.base_url(), DEV_CLIENT_ID)?;
    let px = px.bind(loopback).await?;
    let px_settings = PayXpertSettings {
        base_url: px.base_url(),
        originator_id: DEV_ORIGINATOR.into(),
        password: crate::secret::SecretFile::fixed(password),
        timeout: Duration::from_secs(5),
        quiet_period: Duration::from_secs(10),
    };
    let config = Config {
        listen_addr,
        default_account: Some("antom".into()),
        max_request_time: crate::config::DEFAULT_MAX_REQUEST_TIME,
        shutdown_grace: Duration::from_secs(5),
        // Nothing balances load in front of the demo: Ctrl-C stops it at once.
        shutdown_drain_delay: Duration::ZERO,
        log_format,
        store_url: format!("sqlite://{}", data_dir.join("paygate.db").display()),
        tls: None,
        metrics_addr: None,
        // Loopback, on a free port unless PAYGATE_NOTIFY_ADDR names one; the Antom simulator
        // is pointed at it once it is bound.
        notify_addr: Some(
            std::env::var("PAYGATE_NOTIFY_ADDR")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(loopback),
        ),
        notify_limits: crate::notify::Limits::default(),
        // PAYGATE_EVENTS_NATS_URL relays the demo's events to NATS, as it would in serve.
        events_nats: crate::config::events_nats_from_env(&|v| std::env::var(v).ok())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?,
        grpc_limits: crate::connections::GrpcLimits::default(),
        auth: crate::auth::Auth::default(),
        max_in_flight_requests: crate::config::DEFAULT_MAX_IN_FLIGHT_REQUESTS,
        max_event_streams: (
            crate::api::DEFAULT_MAX_STREAMS,
            crate::api::DEFAULT_MAX_STREAMS_PER_CALLER,
        ),
        max_queue: crate::config::DEFAULT_MAX_QUEUE,
        caller_rate: None,
        caller_rates: Default::default(),
        idempotency_retention: crate::idempotency::DEFAULT_RETENTION,
        unkeyed_retention: crate::idempotency::DEFAULT_UNKEYED_RETENTION,
        accounts: vec![
            AccountConfig {
                name: "antom".into(),
                provider: ProviderConfig::new(settings),
                guard: Default::default(),
            },
            AccountConfig {
                name: "payxpert".into(),
                provider: ProviderConfig::new(px_settings),
                guard: Default::default(),
            },
        ],
    };
    Ok((
        DevSims {
            _lock: lock,
            antom: sim,
            payxpert: px,
            saver,
        },
        config,
    ))
}

fn hex_token() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Points the Antom simulator's notifications at the gateway's listener, with Antom's
/// resends, and settles its PROCESSING refunds after a few seconds (those an earlier run kept
/// too).
pub fn connect_notifications(sims: &DevSims, notify: SocketAddr) {
    let sim = &sims.antom.sim;
    sim.notify_to(NotifyTarget {
        base_url: format!("http://{notify}/notify/antom"),
        resend: ANTOM_RESEND_SCHEDULE.to_vec(),
        auto_settle: Some(DEV_SETTLE_AFTER),
    });
    for refund_id in sim.processing_refunds() {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DEV_SETTLE_AFTER).await;
            sim.settle_refund(&refund_id, true);
        });
    }
}

/// How long dev-mode refunds of `PAY_DEMO_ASYNC` stay PROCESSING.
pub const DEV_SETTLE_AFTER: Duration = Duration::from_secs(5);

/// The banner dev mode prints: where things are and a call that works.
pub fn banner(
    addr: SocketAddr,
    notify: Option<SocketAddr>,
    sims: &DevSims,
    store: &Path,
    keep: bool,
) -> String {
    let sims_file = store.with_file_name(SIMS_FILE);
    let state = if keep {
        format!(
            "{} and the simulators' {} (kept from earlier runs: --keep)",
            store.display(),
            sims_file.display()
        )
    } else {
        format!(
            "{} and the simulators' {} (fresh: reset at each start; --keep keeps both)",
            store.display(),
            sims_file.display()
        )
    };
    let notify = notify.map_or_else(
        || "off".to_owned(),
        |a| format!("http://{a}/notify/antom/{{refund,subscription,payment}}"),
    );
    format!(
        r#"paygate dev mode
  gRPC gateway     {addr} (plaintext; reflection and grpc.health.v1 enabled)
  notifications    {notify} (the Antom simulator sends here)
  Antom simulator     {sim_url}  (account "antom", the default; client id {DEV_CLIENT_ID})
  PayXpert simulator  {px_url}  (account "payxpert")
  store            {state}
  demo data   Antom: payment PAY_DEMO_0001 (USD 100.00), payment PAY_DEMO_ASYNC (EUR 50.00, refunds PROCESSING for 5 s),
                     subscription SUB_DEMO_0001
              PayXpert: transaction 1000001 (EUR 100.00, subscription 2000001), transaction 1000002 (EUR 50.00)

Try it:
  grpcurl -plaintext -d '{{"request_id":"demo-refund-1","payment_id":"PAY_DEMO_0001","amount":{{"currency":"USD","value":"500"}}}}' {addr} paygate.v1.RefundService/Create
  grpcurl -plaintext -d '{{"request_id":"demo-refund-1"}}' {addr} paygate.v1.RefundService/Inquire
  grpcurl -plaintext -d '{{"request_id":"demo-cancel-1","subscription_id":"SUB_DEMO_0001","cancellation_type":"CANCELLATION_TYPE_CANCEL"}}' {addr} paygate.v1.SubscriptionService/Cancel
  grpcurl -plaintext -d '{{"account":"payxpert","request_id":"demo-px-refund-1","payment_id":"1000002","amount":{{"currency":"EUR","value":"700"}}}}' {addr} paygate.v1.RefundService/Create
  grpcurl -plaintext -d '{{"account":"payxpert","request_id":"demo-px-cancel-1","subscription_id":"2000001","cancellation_type":"CANCELLATION_TYPE_CANCEL","cancel_reason":1016}}' {addr} paygate.v1.SubscriptionService/Cancel
  grpcurl -plaintext -d '{{"subscription_id":"SUB_DEMO_0001"}}' {addr} paygate.v1.SubscriptionService/Get
  grpcurl -plaintext -d '{{}}' {addr} paygate.v1.EventService/Watch

Without grpcurl: npx --yes @bufbuild/buf curl --protocol grpc --http2-prior-knowledge -d '{{"request_id":"demo-refund-1"}}' http://{addr}/paygate.v1.RefundService/Inquire
From code: examples/python/quickstart.py, examples/node/quickstart.js, examples/go, examples/java (README: "Calling it from Python, Node.js, Go and Java").
Stop with Ctrl-C.
"#,
        sim_url = sims.antom.base_url(),
        px_url = sims.payxpert.base_url(),
    )
}
