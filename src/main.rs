//! The `paygate` binary: `serve` (default), `dev` and `sim`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paygate::config::Config;
use paygate::server::{self, Gateway};
use paygate::telemetry::LogFormat;
use paygate::{dev, telemetry};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "paygate",
    version,
    about = "gRPC gateway for subscription cancels and refunds at payment providers"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "PAYGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format (overrides the file and PAYGATE_LOG_FORMAT).
    #[arg(long, global = true, value_parser = log_format_parser())]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway from the configuration file and environment (the default).
    #[command(after_help = paygate::config::ENVIRONMENT_HELP)]
    Serve,
    /// Load and validate the configuration and every file it names (keys, passwords, tokens,
    /// TLS) as `serve` would, without network: exit 0 and a summary, or exit 2 and one line.
    #[command(after_help = paygate::config::ENVIRONMENT_HELP)]
    CheckConfig,
    /// Ask a running gateway's gRPC health service, as a container health check or the
    /// kubelet's grpc probe does: exit 0 when SERVING, 1 otherwise (plaintext gRPC only).
    Healthcheck {
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
    },
    /// Local demo: an Antom simulator with demo data on loopback and a gateway in front of it.
    #[command(after_help = "Environment:
  PAYGATE_LISTEN_ADDR   gRPC address (default 127.0.0.1:50051)
  PAYGATE_NOTIFY_ADDR   notification address (default: a free loopback port)
  RUST_LOG              log filter (default info)")]
    Dev {
        /// Where dev keys and local state live.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Keep the idempotency store of earlier runs (by default each run starts with a fresh
        /// store, like the simulators' demo data).
        #[arg(long)]
        keep: bool,
    },
    /// Print the SHA-256 of a bearer token read from standard input, for the tokens file.
    HashToken,
    /// Operator: settle a refund key whose outcome the gateway could not decide
    /// (OUTCOME_UNKNOWN), after checking the provider's back office.
    Settle {
        /// Idempotency store.
        #[arg(long, env = "PAYGATE_STORE_URL", default_value = paygate::config::DEFAULT_STORE_URL)]
        store_url: String,
        /// The account the refund was made on.
        #[arg(long)]
        account: String,
        /// The caller that owns the key (empty without authentication).
        #[arg(long, default_value = "")]
        caller: String,
        /// The refund's request_id.
        #[arg(long)]
        request_id: String,
        /// The refund happened: its provider refund id.
        #[arg(long, conflicts_with = "failed", required_unless_present = "failed")]
        refund_id: Option<String>,
        /// The refunded payment (with --refund-id).
        #[arg(long, requires = "refund_id")]
        payment_id: Option<String>,
        /// The refunded amount in minor units (with --refund-id).
        #[arg(long, requires_all = ["refund_id", "currency"])]
        amount: Option<i64>,
        /// The amount's currency.
        #[arg(long, requires = "amount")]
        currency: Option<String>,
        /// The refund did not happen.
        #[arg(long)]
        failed: bool,
    },
    /// Run a provider simulator alone.
    Sim {
        /// Which provider to simulate.
        #[arg(long, default_value = "antom", value_parser = ["antom", "payxpert"])]
        provider: String,
        /// PayXpert: the originator password the simulator accepts.
        #[arg(
            long,
            env = "PAYGATE_SIM_PAYXPERT_PASSWORD",
            default_value = "dev-password"
        )]
        password: String,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// Antom: where to send notifications, e.g. `http://127.0.0.1:8081/notify/antom`
        /// (`/refund`, `/subscription`, `/payment` are appended), with Antom's resends.
        #[arg(long)]
        notify_url: Option<String>,
        /// Directory with (or for) the merchant and Antom key pairs.
        #[arg(long, default_value = "./data/sim-keys")]
        keys_dir: PathBuf,
        /// The merchant client id the simulator accepts.
        #[arg(long, default_value = dev::DEV_CLIENT_ID)]
        client_id: String,
    },
}

fn log_format_parser() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["text", "json"])
        .map(|s| s.parse::<LogFormat>().unwrap_or_default())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Binds the gRPC port; an address in use (or not ours) is a configuration error: exit 2.
async fn bind(addr: SocketAddr) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|e| {
        eprintln!(
            "paygate: configuration error: PAYGATE_LISTEN_ADDR (listen_addr): cannot listen on {addr}: {e}"
        );
        ExitCode::from(2)
    })
}

async fn run_gateway(config: Config) -> Result<(), ExitCode> {
    let listen = config.listen_addr;
    if let Some(addr) = config.metrics_addr {
        telemetry::install_metrics(addr).map_err(|e| {
            eprintln!(
                "paygate: configuration error: PAYGATE_METRICS_ADDR (metrics_addr): cannot serve metrics on {addr}: {e}"
            );
            ExitCode::from(2)
        })?;
        tracing::info!(%addr, "metrics on /metrics");
    }
    let gateway = Gateway::from_config(config).await.map_err(|e| {
        eprintln!("paygate: configuration error: {e}");
        ExitCode::from(2)
    })?;
    let listener = bind(listen).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addr = %listen,
        store = gateway.shared.idempotency.store().name(),
        accounts = ?gateway.shared.accounts.names(),
        tls = gateway.tls.is_some(),
        "paygate listening"
    );
    server::serve(gateway, listener, shutdown_signal())
        .await
        .map_err(|e| {
            eprintln!("paygate: server error: {e}");
            ExitCode::from(1)
        })
}

async fn main_inner(cli: Cli) -> Result<(), ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let mut config = Config::load(cli.config.as_deref(), &env).map_err(|e| {
                eprintln!("paygate: configuration error: {e}");
                ExitCode::from(2)
            })?;
            if let Some(f) = cli.log_format {
                config.log_format = f;
            }
            let telemetry = telemetry::init(config.log_format);
            let served = run_gateway(config).await;
            telemetry.shutdown().await;
            served
        }
        Command::CheckConfig => {
            let config = Config::load(cli.config.as_deref(), &env).map_err(|e| {
                eprintln!("paygate: configuration error: {e}");
                ExitCode::from(2)
            })?;
            let accounts: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
            let store = config.store_url.split("://").next().unwrap_or_default();
            println!(
                "paygate: configuration OK: accounts {}; default account {}; store {store}; gRPC on {}{}",
                accounts.join(", "),
                config.default_account.as_deref().unwrap_or("(none)"),
                config.listen_addr,
                if config.auth.enabled() {
                    "; callers authenticated"
                } else {
                    "; no caller authentication"
                },
            );
            Ok(())
        }
        Command::Healthcheck {
            addr,
            service,
            timeout_ms,
        } => {
            let addr = addr.unwrap_or_else(|| {
                let port = env("PAYGATE_LISTEN_ADDR")
                    .and_then(|a| a.rsplit_once(':').map(|(_, p)| p.to_owned()))
                    .unwrap_or_else(|| "50051".into());
                format!("127.0.0.1:{port}")
            });
            match paygate::server::health_check(
                &addr,
                &service,
                std::time::Duration::from_millis(timeout_ms),
            )
            .await
            {
                Ok(status) if status == "SERVING" => {
                    println!("{status}");
                    Ok(())
                }
                Ok(status) => {
                    eprintln!("paygate: healthcheck: {addr} {service:?}: {status}");
                    Err(ExitCode::from(1))
                }
                Err(e) => {
                    eprintln!("paygate: healthcheck: {addr}: {e}");
                    Err(ExitCode::from(1))
                }
            }
        }
        Command::Dev { data_dir, keep } => {
            let format = cli.log_format.unwrap_or(LogFormat::Text);
            let _telemetry = telemetry::init(format);
            let listen = match env("PAYGATE_LISTEN_ADDR") {
                Some(v) => v.parse().map_err(|_| {
                    eprintln!("paygate: configuration error: PAYGATE_LISTEN_ADDR: {v:?} is not a host:port address");
                    ExitCode::from(2)
                })?,
                None => SocketAddr::from(([127, 0, 0, 1], 50051)),
            };
            let (sims, config) =
                dev::start(&data_dir, listen, format, keep)
                    .await
                    .map_err(|e| {
                        eprintln!("paygate: dev mode: {e}");
                        ExitCode::from(1)
                    })?;
            let gateway = Gateway::from_config(config).await.map_err(|e| {
                eprintln!("paygate: configuration error: {e}");
                ExitCode::from(2)
            })?;
            let listener = bind(listen).await?;
            let addr = listener.local_addr().unwrap_or(listen);
            let notify = gateway.notify.as_ref().and_then(|l| l.local_addr().ok());
            if let Some(n) = notify {
                dev::connect_notifications(&sims, n);
            }
            println!(
                "{}",
                dev::banner(addr, notify, &sims, &data_dir.join("paygate.db"), keep)
            );
            let served = server::serve(gateway, listener, shutdown_signal()).await;
            sims.stop().await;
            served.map_err(|e| {
                eprintln!("paygate: server error: {e}");
                ExitCode::from(1)
            })
        }
        Command::Settle {
            store_url,
            account,
            caller,
            request_id,
            refund_id,
            payment_id,
            amount,
            currency,
            failed,
        } => {
            let _telemetry = telemetry::init(LogFormat::Text);
            let store = paygate::idempotency::open(&store_url).await.map_err(|e| {
                eprintln!("paygate: settle: PAYGATE_STORE_URL: {e}");
                ExitCode::from(2)
            })?;
            let idem = paygate::idempotency::Idempotency::new(
                store,
                paygate::idempotency::DEFAULT_RETENTION,
            );
            let outcome = paygate::idempotency::operator_outcome(
                &request_id,
                refund_id,
                payment_id,
                amount.zip(currency),
                failed,
            );
            let key = paygate::idempotency::Key {
                caller,
                method: "RefundService.Create",
                request_id: request_id.clone(),
            };
            match idem.settle(&key, &account, &outcome).await {
                Ok(paygate::idempotency::Completion::Done) => {
                    println!("settled {request_id}");
                    Ok(())
                }
                Ok(paygate::idempotency::Completion::LeaseLost) => {
                    eprintln!(
                        "paygate: settle: no unresolved key {request_id:?}: it is unknown, still being settled by the gateway, or already final; only keys the gateway reported as needing an operator (FAILED_PRECONDITION OUTCOME_UNKNOWN) can be settled"
                    );
                    Err(ExitCode::from(1))
                }
                Ok(paygate::idempotency::Completion::AttributedElsewhere) => {
                    eprintln!(
                        "paygate: settle: that refund id is already attributed to another request; nothing was changed"
                    );
                    Err(ExitCode::from(1))
                }
                Err(e) => {
                    eprintln!("paygate: settle: {e}");
                    Err(ExitCode::from(1))
                }
            }
        }
        Command::HashToken => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token).map_err(|e| {
                eprintln!("paygate: hash-token: {e}");
                ExitCode::from(1)
            })?;
            let token = token.trim_end_matches(['\r', '\n']);
            if token.is_empty() {
                eprintln!("paygate: hash-token: no token on standard input");
                return Err(ExitCode::from(2));
            }
            println!("{}", paygate::auth::hash_token(token));
            Ok(())
        }
        Command::Sim {
            provider,
            password,
            listen,
            keys_dir,
            client_id,
            notify_url,
        } => {
            let _telemetry = telemetry::init(cli.log_format.unwrap_or(LogFormat::Text));
            if provider == "payxpert" {
                let sim =
                    paygate::sim::payxpert::PayXpertSim::new(dev::DEV_ORIGINATOR, password.clone());
                sim.seed_demo();
                let sim = sim.bind(listen).await.map_err(|e| {
                    eprintln!("paygate: sim: cannot listen on {listen}: {e}");
                    ExitCode::from(1)
                })?;
                println!(
                    "PayXpert simulator on {url} (originator {o}, password {pw:?})\nPoint a gateway at it with:\n  echo {pw:?} > px-password\n  PAYGATE_PAYXPERT_BASE_URL={url} PAYGATE_PAYXPERT_ORIGINATOR_ID={o} \\\n  PAYGATE_PAYXPERT_PASSWORD_FILE=px-password paygate serve",
                    url = sim.base_url(),
                    o = dev::DEV_ORIGINATOR,
                    pw = password,
                );
                shutdown_signal().await;
                sim.stop().await;
                return Ok(());
            }
            if provider != "antom" {
                eprintln!("paygate: sim: --provider must be antom or payxpert");
                return Err(ExitCode::from(2));
            }
            let files = dev::load_or_create_keys(&keys_dir).map_err(|e| {
                eprintln!("paygate: sim: keys in {}: {e}", keys_dir.display());
                ExitCode::from(1)
            })?;
            let sim = dev::start_sim(&files, &client_id, listen)
                .await
                .map_err(|e| {
                    eprintln!("paygate: sim: cannot listen on {listen}: {e}");
                    ExitCode::from(1)
                })?;
            if let Some(base_url) = notify_url {
                sim.sim.notify_to(paygate::sim::antom::NotifyTarget {
                    base_url,
                    resend: paygate::sim::antom::ANTOM_RESEND_SCHEDULE.to_vec(),
                    auto_settle: Some(dev::DEV_SETTLE_AFTER),
                });
            }
            println!(
                "Antom simulator on {url} (client id {client_id})\nPoint a gateway at it with:\n  PAYGATE_ANTOM_BASE_URL={url} PAYGATE_ANTOM_CLIENT_ID={client_id} \\\n  PAYGATE_ANTOM_PRIVATE_KEY_FILE={mk} PAYGATE_ANTOM_PUBLIC_KEY_FILE={ak} paygate serve",
                url = sim.base_url(),
                mk = files.merchant_private.display(),
                ak = files.antom_public.display(),
            );
            shutdown_signal().await;
            sim.stop().await;
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_inner(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
