//! `paygate settle`: an operator settles a refund key whose outcome the gateway could not
//! decide, after checking the provider's back office, on the store directly: for when no
//! gateway runs (`paygate admin settle` asks a running one). It writes the same audit entry as
//! the admin service, naming the operating-system user.

use std::path::Path;

use paygate::config::Config;
use paygate::idempotency::operator::{Decision, Reason};
use paygate::idempotency::{self, Idempotency};
use paygate::store::{self, Actor, Key};
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
    /// Why: what you checked (a ticket, the provider's back office). Required; kept in the
    /// audit trail with your operating-system user.
    #[arg(long)]
    reason: String,
}

/// The operating-system user running this command.
fn os_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var)
            && !u.is_empty()
        {
            return u;
        }
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    format!("uid={}", unsafe { libc::getuid() })
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
        reason,
    } = args;
    let Some(reason) = Reason::new(&reason) else {
        return Err(Failure::Usage(format!(
            "settle: --reason must say why (what you checked), in at most {} characters",
            Reason::MAX_CHARS
        )));
    };
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
    let decision = if failed {
        Decision::NotExecuted
    } else {
        Decision::Executed {
            refund_id,
            amount: amount.zip(currency),
        }
    };
    let key = Key {
        caller,
        method: idempotency::CREATE_REFUND,
        request_id: request_id.clone(),
    };
    let failed = |e: String| Failure::Failed(format!("settle: {e}"));
    let view = idem
        .key_detail(&key)
        .await
        .map_err(|e| failed(e.to_string()))?
        .map(|d| d.view);
    if let Some(v) = &view {
        if !v.account.is_empty() && v.account != account {
            return Err(failed(format!(
                "the key {request_id:?} was made on account {:?}, not {account:?}; nothing was changed",
                v.account
            )));
        }
        if let (Some(given), Some(held)) = (&payment_id, &v.payment_id)
            && given != held
        {
            return Err(failed(format!(
                "the key {request_id:?} refunds payment {held:?}, not {given:?}; nothing was changed"
            )));
        }
    }
    let actor = Actor::Os(os_user());
    let settled = idem
        .settle(&key, &decision, &reason, &actor)
        .await
        .map_err(|e| failed(e.to_string()))?;
    match settled.refusal() {
        None => {
            println!("settled {request_id} (audited as {})", actor.recorded());
            Ok(())
        }
        Some(why) => Err(failed(format!("{request_id:?}: {why}"))),
    }
}
