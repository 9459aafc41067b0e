//! The providers the gateway knows: one line each in [`REGISTRY`]. What a line holds is
//! [`Registration`].

use super::{Registration, antom, payxpert};

/// Every provider, by the name accounts give in `provider = "..."`. The first one's
/// environment account is the default account when there are several and none is named.
pub const REGISTRY: &[Registration] =
    &[antom::config::REGISTRATION, payxpert::config::REGISTRATION];

/// With several accounts and no `default_account`, requests that name no account go to the
/// account of this name (the first provider's environment account), if there is one.
pub const DEFAULT_ACCOUNT: &str = REGISTRY[0].env_account;

/// The registration of `provider`, if it is known.
pub fn find(provider: &str) -> Option<&'static Registration> {
    REGISTRY.iter().find(|r| r.name == provider)
}

/// The known provider names, for messages: `antom, payxpert`.
pub fn names() -> String {
    REGISTRY
        .iter()
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to set when no account is configured: the first provider's shortcuts, or the others'.
pub fn setup_hint() -> String {
    let others: Vec<&str> = REGISTRY[1..].iter().map(|r| r.setup).collect();
    format!("{} (or {})", REGISTRY[0].setup, others.join(", or "))
}
