//! Antom's account keys (`[accounts.NAME]` with `provider = "antom"`), its environment
//! shortcuts (`PAYGATE_ANTOM_*`, for the account named `antom`) and their validation: the
//! key files are read and parsed here, so a bad key fails at start, not at the first call.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::client::Settings;
use super::keys::{self as account_keys, KeySource};
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
        shortcut("PAYGATE_ANTOM_PRIVATE_KEYS_DIR", "private_keys_dir"),
        shortcut("PAYGATE_ANTOM_PUBLIC_KEYS_DIR", "antom_public_keys_dir"),
        shortcut("PAYGATE_ANTOM_SANDBOX", "sandbox"),
        shortcut("PAYGATE_ANTOM_NOTIFY_URL", "notify_url"),
        shortcut("PAYGATE_ANTOM_RPS", "rps"),
        shortcut("PAYGATE_ANTOM_BURST", "burst"),
    ],
    help: "  PAYGATE_ANTOM_BASE_URL, PAYGATE_ANTOM_CLIENT_ID, PAYGATE_ANTOM_PRIVATE_KEY_FILE,
  PAYGATE_ANTOM_PUBLIC_KEY_FILE (or PAYGATE_ANTOM_PRIVATE_KEYS_DIR, PAYGATE_ANTOM_PUBLIC_KEYS_DIR:
  <version>.pem files, reloaded when they change), PAYGATE_ANTOM_NOTIFY_URL, PAYGATE_ANTOM_SANDBOX (true or false),
  PAYGATE_ANTOM_RPS, PAYGATE_ANTOM_BURST                 the account named antom (accounts.antom.*)
",
    setup: "PAYGATE_ANTOM_BASE_URL, PAYGATE_ANTOM_CLIENT_ID, PAYGATE_ANTOM_PRIVATE_KEY_FILE (or \
            PAYGATE_ANTOM_PRIVATE_KEYS_DIR) and PAYGATE_ANTOM_PUBLIC_KEY_FILE (or \
            PAYGATE_ANTOM_PUBLIC_KEYS_DIR)",
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
    private_keys_dir: Option<PathBuf>,
    antom_public_keys_dir: Option<PathBuf>,
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
    let private = key_source(
        keys,
        ("private_key_file", file.private_key_file),
        ("private_keys_dir", file.private_keys_dir),
        Some(file.key_version),
    )?;
    let public = key_source(
        keys,
        ("antom_public_key_file", file.antom_public_key_file),
        ("antom_public_keys_dir", file.antom_public_keys_dir),
        None,
    )?;
    let key_setting = |private: bool, source: &KeySource| {
        let key = match (private, source) {
            (true, KeySource::File(..)) => "private_key_file",
            (true, KeySource::Dir(_)) => "private_keys_dir",
            (false, KeySource::File(..)) => "antom_public_key_file",
            (false, KeySource::Dir(_)) => "antom_public_keys_dir",
        };
        keys.setting(key)
    };
    let loaded = account_keys::Keys::load(name, private.clone(), public.clone()).map_err(
        |(side, why)| {
            let source = if side { &private } else { &public };
            err(key_setting(side, source), why)
        },
    )?;
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
        timeout,
        keys: loaded,
    }))
}

/// One side's keys: a file (with the merchant key's `key_version`) or a directory of
/// `<version>.pem` files; exactly one of them.
fn key_source(
    keys: &AccountKeys<'_>,
    (file_key, file): (&str, Option<PathBuf>),
    (dir_key, dir): (&str, Option<PathBuf>),
    version: Option<Option<u32>>,
) -> Result<KeySource, ConfigError> {
    let file = keys.path(file_key, file);
    let dir = keys.path(dir_key, dir);
    match (file, dir) {
        (Some(_), Some(_)) => Err(err(
            keys.setting(dir_key),
            format!("give {dir_key} or {file_key}, not both"),
        )),
        (Some(f), None) => Ok(KeySource::File(f, version.map(|v| v.unwrap_or(1)))),
        (None, Some(d)) => {
            if version.flatten().is_some() {
                return Err(err(
                    keys.setting("key_version"),
                    format!(
                        "names the version of {file_key}; in {dir_key} the file names (<version>.pem) give the versions"
                    ),
                ));
            }
            if !d.is_dir() {
                return Err(err(
                    keys.setting(dir_key),
                    format!("{}: not a directory", d.display()),
                ));
            }
            Ok(KeySource::Dir(d))
        }
        (None, None) => Err(err(
            keys.setting(file_key),
            format!("missing (or {})", keys.setting(dir_key)),
        )),
    }
}

impl ProviderSettings for Settings {
    fn build(self: Box<Self>) -> Result<Arc<dyn Provider>, reqwest::Error> {
        Ok(Arc::new(Antom::new(*self)?))
    }

    fn key_versions(&self) -> Option<String> {
        let ring = self.keys.current();
        let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let antom: Vec<String> = ring
            .public_versions()
            .iter()
            .map(|v| {
                v.map_or("any (a key file without a version)".into(), |v| {
                    v.to_string()
                })
            })
            .collect();
        Some(format!(
            "signs with merchant key version {} (holds {}); verifies Antom key versions {}",
            ring.signing_version,
            list(&ring.private_versions),
            antom.join(", ")
        ))
    }
}
