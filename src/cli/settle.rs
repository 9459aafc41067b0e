//! `paygate settle`: an operator settles a refund key whose outcome the gateway could not
//! decide, after checking the provider's back office.

use std::path::Path;

use paygate::config::Config;
use paygate::idempotency::{self, Idempotency};
use paygate::store::{self, Completion, Key};
use paygate::telemetry::{self, LogFormat};

use super::process::{Failure, env};

#[derive(clap::Args)]
pub(super) struct Args {
    /// The gateway's configuration file: its store settings (store_url, retention) are read
    /// with the environment (PAYGATE_STORE_URL, ...) exactly as `serve` reads them.
    #[command(flatten)]
    pub(super) config: super::args::ConfigArg,
    /// The idempotency store, instead of the configuration's (sqlite://PATH or
    /// postgres://...).
    #[arg(long)]
    store_url: Option<String>,
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
}

pub(super) async fn run(args: Args, config: Option<&Path>) -> Result<(), Failure> {
    let Args {
        config: _,
        store_url,
        account,
        caller,
        request_id,
        refund_id,
        payment_id,
        amount,
        currency,
        failed,
    } = args;
    let _telemetry = telemetry::init(LogFormat::Text);
    let settings = Config::load_store(config, &env).map_err(Failure::config)?;
    let (store_url, setting) = match store_url {
        Some(url) => (url, "--store-url"),
        None => (settings.url, settings.url_setting),
    };
    // Settle changes the gateway's store; it never creates one (a wrong path would settle
    // nothing, in a new empty file).
    if let Some(path) = store_url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if !std::path::Path::new(path).is_file() {
            return Err(Failure::Usage(format!(
                "settle: no store at {path} ({setting}): give the gateway's own store (--config, PAYGATE_STORE_URL or --store-url); settle never creates one"
            )));
        }
    }
    let store = store::open(&store_url)
        .await
        .map_err(|e| Failure::Usage(format!("settle: {setting}: {e}")))?;
    // Which store, without its credentials.
    let shown = store_url
        .rsplit_once('@')
        .map_or(store_url.as_str(), |(_, at)| at);
    eprintln!("settle: store {} ({shown})", store.name());
    let idem = Idempotency::new(store, settings.retention);
    let outcome = idempotency::operator_outcome(
        &request_id,
        refund_id,
        payment_id,
        amount.zip(currency),
        failed,
    );
    let key = Key {
        caller,
        method: idempotency::CREATE_REFUND,
        request_id: request_id.clone(),
    };
    match idem.settle(&key, &account, &outcome).await {
        Ok(Completion::Done) => {
            println!("settled {request_id}");
            Ok(())
        }
        Ok(Completion::LeaseLost) => Err(Failure::Failed(format!(
            "settle: no unresolved key {request_id:?}: it is unknown, still being settled by the gateway, or already final; only keys the gateway reported as needing an operator (FAILED_PRECONDITION OUTCOME_UNKNOWN) can be settled"
        ))),
        Ok(Completion::AttributedElsewhere) => Err(Failure::Failed(
            "settle: that refund id is already attributed to another request; nothing was changed"
                .into(),
        )),
        Err(e) => Err(Failure::Failed(format!("settle: {e}"))),
    }
}
