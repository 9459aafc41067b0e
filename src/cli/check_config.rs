//! `paygate check-config`: load and validate the configuration as `serve` would, offline.

use std::path::Path;

use paygate::config::Config;

use super::process::{Failure, env};

pub(super) fn run(config: Option<&Path>) -> Result<(), Failure> {
    let config = Config::load(config, &env).map_err(Failure::config)?;
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
    for a in &config.accounts {
        if let Some(keys) = a.provider.key_versions() {
            println!("  {}: {keys}", a.name);
        }
    }
    Ok(())
}
