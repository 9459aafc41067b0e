//! HTTP plumbing every provider client shares: bounded answer reading and the meaning of
//! transport failures.

use crate::reason;
use std::time::Duration;

use super::{CallContext, NotExecuted, ProviderError};

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

/// What every provider call shares, before and after the provider's own part: the time this
/// attempt may take (the account's `timeout`, cut by the caller's deadline; none left: nothing
/// is sent), trace headers, sending, what a transport failure means, and HTTP 429 as a
/// throttle that executed nothing (retry after the provider's `Retry-After`, else `throttled`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// What the call is, in messages: `antom refund`.
    pub what: &'a str,
    /// The account's timeout of one attempt.
    pub timeout: Duration,
    /// The retry delay of a 429 without `Retry-After`.
    pub throttled: Duration,
}

/// An answer other than 429, and whether the caller's deadline (not the account's timeout)
/// bounded the attempt: a timeout reading it then means the deadline cut the call.
#[derive(Debug)]
pub(crate) struct Answered {
    pub resp: reqwest::Response,
    pub cut_by_deadline: bool,
}

impl Answered {
    /// Reads the whole answer (see [`read_capped`]).
    pub(crate) async fn read(self, what: &str, cap: usize) -> Result<Vec<u8>, ProviderError> {
        read_capped(self.resp, what, self.cut_by_deadline, cap).await
    }
}

impl Call<'_> {
    /// Sends `request` (built, not yet timed) within the context's deadline.
    pub(crate) async fn send(
        self,
        request: reqwest::RequestBuilder,
        ctx: &CallContext,
    ) -> Result<Answered, ProviderError> {
        let Some(timeout) = ctx.attempt_timeout(self.timeout) else {
            return Err(ProviderError::deadline_cut(
                "no time left for the provider call",
            ));
        };
        let cut_by_deadline = timeout < self.timeout;
        let request = crate::telemetry::trace_headers()
            .into_iter()
            .fold(request.timeout(timeout), |r, (k, v)| r.header(k, v));
        let resp = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(transport_error(self.what, &e, cut_by_deadline)),
        };
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(ProviderError::retryable(
                NotExecuted::Throttled,
                reason::PROVIDER_RATE_LIMITED,
                format!("{} answered HTTP 429", self.what),
                retry_after(&resp).unwrap_or(self.throttled),
            ));
        }
        Ok(Answered {
            resp,
            cut_by_deadline,
        })
    }
}

/// Reads the whole answer, refusing more than `cap` bytes ([`MAX_ANSWER_BYTES`] for every
/// answer but a provider's export).
async fn read_capped(
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
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
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
fn transport_error(what: &str, e: &reqwest::Error, cut_by_deadline: bool) -> ProviderError {
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
