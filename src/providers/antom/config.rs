//! Antom's account keys (`[accounts.NAME]` with `provider = "antom"`), its environment
//! shortcuts (`PAYGATE_ANTOM_*`, for the account named `antom`) and their validation: the
//! key files are read and parsed here, so a bad key fails at start, not at the first call.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::client::Settings;
use super::signing::{Signer, Verifier};
use super::{Antom, NAME};
use crate::providers::Provider;
use crate::providers::{ProviderConfig, ProviderSettings, Registration};
use crate::settings::{self as source, AccountKeys, ConfigError, Shortcut, err};
use crate::telemetry::ProviderSeries;

/// Antom in the registry.
pub(crate) const REGISTRATION: Registration = Registration {
    name: NAME,
    env_account: "antom",
    shortcuts: &[
        shortcut("PAYGATE_ANTOM_BASE_URL", "base_url"),
        shortcut("PAYGATE_ANTOM_CLIENT_ID", "client_id"),
        shortcut("PAYGATE_ANTOM_PRIVATE_KEY_FILE", "private_key_file"),
        shortcut("PAYGATE_ANTOM_PUBLIC_KEY_FILE", "antom_public_key_file"),
        shortcut("PAYGATE_ANTOM_SANDBOX", "sandbox"),
        shortcut("PAYGATE_ANTOM_NOTIFY_URL", "notify_url"),
        shortcut("PAYGATE_ANTOM_RPS", "rps"),
        shortcut("PAYGATE_ANTOM_BURST", "burst"),
    ],
    help: "  PAYGATE_ANTOM_BASE_URL, PAYGATE_ANTOM_CLIENT_ID, PAYGATE_ANTOM_PRIVATE_KEY_FILE,
  PAYGATE_ANTOM_PUBLIC_KEY_FILE, PAYGATE_ANTOM_NOTIFY_URL, PAYGATE_ANTOM_SANDBOX (true or false),
  PAYGATE_ANTOM_RPS, PAYGATE_ANTOM_BURST                 the account named antom (accounts.antom.*)
",
    setup: "PAYGATE_ANTOM_BASE_URL, PAYGATE_ANTOM_CLIENT_ID, PAYGATE_ANTOM_PRIVATE_KEY_FILE and \
            PAYGATE_ANTOM_PUBLIC_KEY_FILE",
    metrics: ProviderSeries {
        provider: NAME,
        signs_answers: true,
        notification_kinds: &["refund", "subscription", "payment"],
    },
    configure,
};

const fn shortcut(var: &'static str, key: &'static str) -> Shortcut {
    Shortcut {
        var,
        key,
        creates_account: true,
    }
}

/// The keys an Antom account may have besides the ones every account has.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    base_url: Option<String>,
    client_id: Option<String>,
    private_key_file: Option<PathBuf>,
    antom_public_key_file: Option<PathBuf>,
    notify_url: Option<String>,
    sandbox: Option<bool>,
    key_version: Option<u32>,
    timeout_ms: Option<u64>,
}

fn configure(keys: &mut AccountKeys<'_>) -> Result<ProviderConfig, ConfigError> {
    let file: Keys = keys.file()?;
    let name = keys.name;
    let sandbox = keys.flag("sandbox", file.sandbox)?;
    let base_url = source::base_url(
        keys.text("base_url", file.base_url),
        &keys.setting("base_url"),
    )?;
    let client_id_set = keys.setting("client_id");
    let client_id = keys
        .text("client_id", file.client_id)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| err(&client_id_set, "missing"))?;
    if !client_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(
            &client_id_set,
            "must be printable ASCII without spaces",
        ));
    }
    let key_set = keys.setting("private_key_file");
    let key_path = keys
        .path("private_key_file", file.private_key_file)
        .ok_or_else(|| err(&key_set, "missing"))?;
    let key_bytes = source::read_file(&key_set, &key_path)?;
    let signer = Signer::from_bytes(&key_bytes)
        .map_err(|e| err(&key_set, format!("{}: {e}", key_path.display())))?;
    let pub_set = keys.setting("antom_public_key_file");
    let pub_path = keys
        .path("antom_public_key_file", file.antom_public_key_file)
        .ok_or_else(|| err(&pub_set, "missing"))?;
    let pub_bytes = source::read_file(&pub_set, &pub_path)?;
    let verifier = Verifier::from_bytes(&pub_bytes)
        .map_err(|e| err(&pub_set, format!("{}: {e}", pub_path.display())))?;
    let sandbox = sandbox.unwrap_or(client_id.starts_with("SANDBOX_"));
    let timeout = source::timeout(name, file.timeout_ms)?;
    let notify_url = match keys.text("notify_url", file.notify_url) {
        Some(u) => Some(
            source::base_url(Some(u), &keys.setting("notify_url"))?
                .trim_end_matches('/')
                .to_owned(),
        ),
        None => None,
    };
    Ok(ProviderConfig::new(Settings {
        base_url,
        client_id,
        notify_url,
        sandbox,
        key_version: file.key_version.unwrap_or(1),
        timeout,
        signer,
        verifier,
    }))
}

impl ProviderSettings for Settings {
    fn build(self: Box<Self>) -> Result<Arc<dyn Provider>, reqwest::Error> {
        Ok(Arc::new(Antom::new(*self)?))
    }
}
