//! PayXpert's account keys (`[accounts.NAME]` with `provider = "payxpert"`), its environment
//! shortcuts (`PAYGATE_PAYXPERT_*`, for the account named `payxpert`) and their validation:
//! the password file is read here, and the reconciliation quiet period must outlast an attempt.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::client::{DEFAULT_QUIET_PERIOD, Settings};
use super::{NAME, PayXpert};
use crate::providers::{Provider, ProviderConfig, ProviderSettings, Registration};
use crate::secret::SecretFile;
use crate::settings::{self as source, AccountKeys, ConfigError, Shortcut, err};
use crate::telemetry::ProviderSeries;

/// PayXpert in the registry.
pub(crate) const REGISTRATION: Registration = Registration {
    name: NAME,
    env_account: "payxpert",
    shortcuts: &[
        shortcut("PAYGATE_PAYXPERT_BASE_URL", "base_url", true),
        shortcut("PAYGATE_PAYXPERT_ORIGINATOR_ID", "originator_id", true),
        shortcut("PAYGATE_PAYXPERT_PASSWORD_FILE", "password_file", true),
        shortcut(
            "PAYGATE_PAYXPERT_RECONCILE_QUIET_PERIOD_MS",
            "reconcile_quiet_period_ms",
            false,
        ),
    ],
    help: "  PAYGATE_PAYXPERT_BASE_URL, PAYGATE_PAYXPERT_ORIGINATOR_ID, PAYGATE_PAYXPERT_PASSWORD_FILE,
  PAYGATE_PAYXPERT_RECONCILE_QUIET_PERIOD_MS             the account named payxpert (accounts.payxpert.*)
",
    setup: "the PAYGATE_PAYXPERT_* variables",
    metrics: ProviderSeries {
        provider: NAME,
        signs_answers: false,
        notification_kinds: &[],
    },
    configure,
};

const fn shortcut(var: &'static str, key: &'static str, creates_account: bool) -> Shortcut {
    Shortcut {
        var,
        key,
        creates_account,
    }
}

/// The keys a PayXpert account may have besides the ones every account has.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    base_url: Option<String>,
    originator_id: Option<String>,
    password_file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    reconcile_quiet_period_ms: Option<u64>,
}

fn configure(keys: &mut AccountKeys<'_>) -> Result<ProviderConfig, ConfigError> {
    let file: Keys = keys.file()?;
    let base_url = source::base_url(
        keys.text("base_url", file.base_url),
        &keys.setting("base_url"),
    )?;
    let id_set = keys.setting("originator_id");
    let originator_id = keys
        .text("originator_id", file.originator_id)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| err(&id_set, "missing"))?;
    if originator_id.contains(':') || !originator_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(
            &id_set,
            "must be printable ASCII without spaces or ':'",
        ));
    }
    let pw_set = keys.setting("password_file");
    let pw_path = keys
        .path("password_file", file.password_file)
        .ok_or_else(|| err(&pw_set, "missing"))?;
    source::read_file(&pw_set, &pw_path)?;
    let password = SecretFile::load(&format!("accounts.{} password", keys.name), &pw_path)
        .map_err(|e| err(&pw_set, e))?;
    let timeout = source::timeout(keys.name, file.timeout_ms)?;
    let quiet_key = "reconcile_quiet_period_ms";
    let quiet_period = keys
        .millis(quiet_key, file.reconcile_quiet_period_ms)?
        .map_or(DEFAULT_QUIET_PERIOD, Duration::from_millis);
    if quiet_period <= timeout {
        return Err(err(
            keys.setting(quiet_key),
            format!(
                "must be longer than the account's attempt timeout ({} ms): until then an attempt may still be executing",
                timeout.as_millis()
            ),
        ));
    }
    Ok(ProviderConfig::new(Settings {
        base_url,
        originator_id,
        password,
        timeout,
        quiet_period,
    }))
}

impl ProviderSettings for Settings {
    fn build(self: Box<Self>) -> Result<Arc<dyn Provider>, reqwest::Error> {
        Ok(Arc::new(PayXpert::new(*self)?))
    }
}
