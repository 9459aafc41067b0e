//! PayXpert's HTTP plumbing: one pooled reqwest client with HTTP Basic auth (originator id
//! and password), JSON bodies, bounded answers.

use crate::reason;
use std::time::Duration;

use reqwest::StatusCode;

use super::wire::Answer;
use crate::providers::http::{AccountClient, Call};
use crate::providers::{CallContext, ProviderError};
use crate::secret::SecretFile;
use std::sync::Arc;

/// Everything needed to talk to one PayXpert account.
#[derive(Debug)]
pub struct Settings {
    /// Scheme and host, e.g. `https://api.payxpert.com`.
    pub base_url: String,
    /// The originator id (Basic auth user).
    pub originator_id: String,
    /// The originator password (Basic auth password), read again when its file changes.
    pub password: Arc<SecretFile>,
    /// Upper bound for one HTTP attempt.
    pub timeout: Duration,
    /// How long after a refund attempt may have left "not in the refund export" starts to
    /// mean "not executed".
    pub quiet_period: Duration,
}

/// The default quiet period: two minutes, far above PayXpert's processing time (its calls are
/// synchronous) and above the gateway's own attempt timeout cap.
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(120);

/// The refund export is read up to this size (about 200,000 refunds), apart from the cap on
/// other answers.
pub const MAX_EXPORT_BYTES: usize = 64 << 20;

/// An authenticated client for one PayXpert account.
pub type Client = AccountClient<Settings>;

impl AccountClient<Settings> {
    /// Calls `path` (GET without a body, POST with one) and parses the answer, reading at most
    /// `cap` bytes of it.
    pub async fn call(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        ctx: &CallContext,
        cap: usize,
    ) -> Result<Answer, ProviderError> {
        let s = self.settings();
        let url = format!("{}/{}", s.base_url.trim_end_matches('/'), path);
        let what = format!("payxpert {what}");
        let request = match body {
            Some(b) => self
                .http()
                .post(&url)
                .header("Content-Type", "application/json")
                .body(b),
            None => self.http().get(&url),
        }
        .basic_auth(&s.originator_id, Some(s.password.current().expose()))
        .query(query);
        let call = Call {
            what: &what,
            timeout: s.timeout,
            throttled: crate::providers::failure::PROVIDER_THROTTLED,
        };
        let answered = call.send(request, ctx).await?;
        match answered.resp.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                tracing::error!(what = %what, "payxpert refused the originator id or password");
                return Err(ProviderError::misconfigured(
                    reason::PROVIDER_AUTH_FAILED,
                    format!("{what}: PayXpert refused the originator credentials"),
                ));
            }
            s if !s.is_success() => {
                // A refusal PayXpert explains with a definitive code executed nothing; any
                // other non-2xx answer leaves the outcome unknown.
                let status = s.as_u16();
                let body = answered.read(&what, cap).await.ok();
                let refusal = body
                    .and_then(|b| serde_json::from_slice::<Answer>(&b).ok())
                    .and_then(|a| definitive_refusal(&what, status, &a));
                return Err(refusal.unwrap_or_else(|| {
                    ProviderError::unknown(format!("{what} answered HTTP {status}"), None)
                }));
            }
            _ => {}
        }
        let bytes = answered.read(&what, cap).await?;
        serde_json::from_slice(&bytes).map_err(|_| {
            tracing::error!(what = %what, "payxpert answer is not the expected JSON");
            ProviderError::unknown(format!("{what} answer could not be understood"), None)
        })
    }
}

/// The error for a non-2xx answer whose JSON `errorCode` the code table calls definitive (or a
/// set-up error); `None` for any other code, or none.
fn definitive_refusal(what: &str, status: u16, a: &Answer) -> Option<ProviderError> {
    use crate::providers::Meaning;
    let code = a.error_code.as_deref()?;
    let meaning = super::codes::classify(code);
    if !matches!(meaning, Meaning::Definitive(_) | Meaning::Misconfigured) {
        return None;
    }
    let message = a.error_message.clone().unwrap_or_default();
    let result = crate::domain::ProviderResult {
        provider: super::wire::NAME.into(),
        code: code.to_owned(),
        status: "F".into(),
        message: message.clone(),
    };
    Some(ProviderError::refusal(
        meaning,
        super::codes::reason(code),
        format!("{what} answered HTTP {status}, {code}: {message}"),
        result,
    ))
}
