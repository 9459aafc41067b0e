//! HTTP plumbing every provider client shares: bounded answer reading and the meaning of
//! transport failures.

use crate::reason;
use std::time::Duration;

use super::{NotExecuted, ProviderError};

/// Answers larger than this are not read (and the outcome is unknown).
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// One provider account's HTTP side: a pooled client, shared by every call of the account,
/// and the account's settings. Each provider adds its calls (`impl AccountClient<Settings>`
/// in its `client.rs`).
#[derive(Debug)]
pub struct AccountClient<S> {
    http: reqwest::Client,
    settings: S,
}

impl<S> AccountClient<S> {
    /// Builds the client.
    pub fn new(settings: S) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("paygate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, settings })
    }

    /// The account's settings.
    pub fn settings(&self) -> &S {
        &self.settings
    }

    /// The pooled client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Reads the whole answer, refusing more than `cap` bytes ([`MAX_ANSWER_BYTES`] for every
/// answer but a provider's export).
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    what: &str,
    cut_by_deadline: bool,
    cap: usize,
) -> Result<Vec<u8>, ProviderError> {
    let mut answer = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if answer.len() + chunk.len() > cap {
                    return Err(ProviderError::unknown(
                        format!("{what} answer exceeds {cap} bytes"),
                        None,
                    ));
                }
                answer.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(answer),
            Err(e) => return Err(transport_error(what, &e, cut_by_deadline)),
        }
    }
}

/// The `Retry-After` header in seconds, capped at 5 minutes.
pub(crate) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

/// What a failed send means: a refused connection executed nothing; anything later may have.
pub(crate) fn transport_error(
    what: &str,
    e: &reqwest::Error,
    cut_by_deadline: bool,
) -> ProviderError {
    if e.is_connect() {
        return ProviderError::retryable(
            NotExecuted::Unreachable,
            reason::PROVIDER_UNAVAILABLE,
            format!("cannot connect for {what}"),
            super::failure::PROVIDER_UNREACHABLE,
        );
    }
    if e.is_timeout() && cut_by_deadline {
        return ProviderError::deadline_cut(format!("the deadline ended the {what} call"));
    }
    if e.is_timeout() {
        return ProviderError::unknown(format!("{what} call timed out"), None);
    }
    ProviderError::unknown(format!("{what} call failed mid-way"), None)
}
