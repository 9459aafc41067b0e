//! `paygate admin list|show|settle|audit`: a thin client of a running gateway's
//! `paygate.admin.v1.AdminService`, as a caller reaches it (address, bearer token file, TLS),
//! from a laptop through `kubectl port-forward` or from inside the cluster.

use std::path::PathBuf;
use std::time::Duration;

use paygate::pb::admin as apb;
use paygate::pb::admin::admin_service_client::AdminServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::process::Failure;

#[derive(clap::Args)]
pub(super) struct Args {
    /// The gateway's gRPC address: http://HOST:PORT, or https://HOST:PORT for TLS.
    #[arg(
        long,
        env = "PAYGATE_ADMIN_ADDRESS",
        default_value = "http://127.0.0.1:50051"
    )]
    address: String,
    /// A file holding the bearer token of a caller whose policy names the AdminService
    /// methods.
    #[arg(long, env = "PAYGATE_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the gateway's TLS certificate (https only).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The name the gateway's certificate is checked against, if not the address's host.
    #[arg(long)]
    tls_server_name: Option<String>,
    /// A client certificate (PEM) for mutual TLS, with --key-file.
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// How long to wait for each answer, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_seconds: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List keys: by default those that need a person (unknown and unresolved).
    List {
        /// Only keys in this state (repeatable): in_flight, unknown, unresolved, done.
        #[arg(long = "state", value_parser = ["in_flight", "unknown", "unresolved", "done"])]
        states: Vec<String>,
        /// Only keys of this account.
        #[arg(long, default_value = "")]
        account: String,
        /// Only keys of this payment.
        #[arg(long, default_value = "")]
        payment: String,
        /// Only keys unchanged for at least this many seconds.
        #[arg(long, default_value_t = 0)]
        min_age_seconds: i64,
        /// Keys per page (every page is read).
        #[arg(long, default_value_t = 100)]
        page_size: i32,
    },
    /// Show a key and its history: every attempt and transition, with what the provider said.
    Show {
        /// The key's name, as `list` prints it (keys/CALLER/METHOD/REQUEST_ID).
        name: String,
    },
    /// Settle a key that needs a person, after checking the provider's back office.
    Settle {
        /// The key's name, as `list` prints it.
        name: String,
        /// The refund happened: the provider's refund id.
        #[arg(
            long,
            conflicts_with = "not_executed",
            required_unless_present = "not_executed"
        )]
        refund_id: Option<String>,
        /// The refund did not happen.
        #[arg(long)]
        not_executed: bool,
        /// Why: what you checked (a ticket, the back office's page). Required; kept in the
        /// audit trail with your caller name.
        #[arg(long)]
        reason: String,
    },
    /// The audit trail: every operator action, oldest first.
    Audit {
        /// Only actions on this key.
        #[arg(long, default_value = "")]
        key: String,
    },
}

fn read(path: &PathBuf, what: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("admin: {what} {}: {e}", path.display())))
}

async fn connect(a: &Args) -> Result<Channel, Failure> {
    let usage = |e: String| Failure::Usage(format!("admin: {e}"));
    let mut endpoint = Channel::from_shared(a.address.clone())
        .map_err(|e| usage(format!("--address {:?}: {e}", a.address)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(a.timeout_seconds));
    if a.address.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &a.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--ca-file")?));
        }
        if let Some(name) = &a.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        if let (Some(cert), Some(key)) = (&a.cert_file, &a.key_file) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "--cert-file")?,
                read(key, "--key-file")?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| usage(format!("TLS: {e}")))?;
    } else if a.ca_file.is_some() || a.cert_file.is_some() {
        return Err(usage("TLS options need an https:// --address".into()));
    }
    endpoint
        .connect()
        .await
        .map_err(|e| Failure::Failed(format!("admin: cannot reach {}: {e}", a.address)))
}

fn request<T>(message: T, token: &Option<String>) -> Result<tonic::Request<T>, Failure> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        let v = MetadataValue::try_from(format!("Bearer {t}"))
            .map_err(|_| Failure::Usage("admin: the token file holds no valid token".into()))?;
        r.metadata_mut().insert("authorization", v);
    }
    Ok(r)
}

fn refused(s: tonic::Status) -> Failure {
    Failure::Failed(format!("admin: {:?}: {}", s.code(), s.message()))
}

fn time(t: &Option<prost_types::Timestamp>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    time::OffsetDateTime::from_unix_timestamp(t.seconds)
        .ok()
        .and_then(|d| {
            d.replace_millisecond((t.nanos / 1_000_000) as u16)
                .ok()?
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.seconds.to_string())
}

fn state(s: i32) -> &'static str {
    match apb::KeyState::try_from(s) {
        Ok(apb::KeyState::InFlight) => "in_flight",
        Ok(apb::KeyState::Unknown) => "unknown",
        Ok(apb::KeyState::Unresolved) => "unresolved",
        Ok(apb::KeyState::Done) => "done",
        _ => "unspecified",
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn print_key(k: &apb::Key) {
    println!("{}", k.name);
    println!(
        "  state {} · account {} · caller {} · payment {} · refund {} · {} attempt(s)",
        state(k.state),
        or_dash(&k.account),
        or_dash(&k.caller),
        or_dash(&k.payment_id),
        or_dash(&k.refund_id),
        k.attempts
    );
    println!(
        "  created {} · updated {} · blocks its payment: {} · lease holder alive: {}",
        time(&k.create_time),
        time(&k.update_time),
        if k.blocks_payment { "yes" } else { "no" },
        if k.lease_holder_alive { "yes" } else { "no" }
    );
    if !k.last_failure_reason.is_empty() {
        println!("  last failure: {}", k.last_failure_reason);
    }
}

type Client = AdminServiceClient<Channel>;

/// Every page of keys by the filters, printed.
async fn list(
    client: &mut Client,
    token: &Option<String>,
    filter: apb::ListKeysRequest,
) -> Result<(), Failure> {
    let mut req = filter;
    let mut n = 0;
    loop {
        let page = client
            .list_keys(request(req.clone(), token)?)
            .await
            .map_err(refused)?
            .into_inner();
        for k in &page.keys {
            print_key(k);
        }
        n += page.keys.len();
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    println!("{n} key(s)");
    Ok(())
}

/// Every audit entry (of `key`, if given), printed one per line.
async fn audit(client: &mut Client, token: &Option<String>, key: String) -> Result<(), Failure> {
    let mut req = apb::ListAuditEntriesRequest {
        key,
        page_size: 100,
        page_token: String::new(),
    };
    loop {
        let page = client
            .list_audit_entries(request(req.clone(), token)?)
            .await
            .map_err(refused)?
            .into_inner();
        for a in &page.audit_entries {
            let refund = if a.refund_id.is_empty() {
                String::new()
            } else {
                format!(" (refund {})", a.refund_id)
            };
            println!(
                "{}  {}  {}  {}  {} -> {}{refund}  reason: {}",
                time(&a.time),
                a.actor,
                a.action,
                a.key,
                state(a.state_before),
                state(a.state_after),
                a.reason
            );
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        req.page_token = page.next_page_token;
    }
}

fn state_named(s: &str) -> i32 {
    let state = match s {
        "in_flight" => apb::KeyState::InFlight,
        "unknown" => apb::KeyState::Unknown,
        "unresolved" => apb::KeyState::Unresolved,
        _ => apb::KeyState::Done,
    };
    state as i32
}

pub(super) async fn run(args: Args) -> Result<(), Failure> {
    let token = match &args.token_file {
        Some(p) => Some(read(p, "--token-file")?.trim().to_owned()),
        None => None,
    };
    let mut client = AdminServiceClient::new(connect(&args).await?);
    match args.command {
        Command::List {
            states,
            account,
            payment,
            min_age_seconds,
            page_size,
        } => {
            let filter = apb::ListKeysRequest {
                states: states.iter().map(|s| state_named(s)).collect(),
                account,
                payment_id: payment,
                min_age_seconds,
                page_size,
                page_token: String::new(),
            };
            list(&mut client, &token, filter).await
        }
        Command::Show { name } => {
            let k = client
                .get_key(request(apb::GetKeyRequest { name }, &token)?)
                .await
                .map_err(refused)?
                .into_inner();
            print_key(&k);
            println!("  history:");
            for h in &k.history {
                println!(
                    "    {}  attempt {}  {:<10}  {}",
                    time(&h.time),
                    h.attempt,
                    h.kind,
                    h.detail
                );
            }
            Ok(())
        }
        Command::Settle {
            name,
            refund_id,
            not_executed,
            reason,
        } => {
            let outcome = if not_executed {
                apb::SettleOutcome::NotExecuted
            } else {
                apb::SettleOutcome::Executed
            };
            let req = apb::SettleKeyRequest {
                name,
                outcome: outcome as i32,
                refund_id: refund_id.unwrap_or_default(),
                reason,
            };
            let k = client
                .settle_key(request(req, &token)?)
                .await
                .map_err(refused)?
                .into_inner();
            println!("settled:");
            print_key(&k);
            Ok(())
        }
        Command::Audit { key } => audit(&mut client, &token, key).await,
    }
}
