//! Antom's HTTP plumbing: one pooled reqwest client, request signing, answer verification on
//! the raw bytes, bounded answer size. Knows nothing of refunds or subscriptions.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use super::codes::{self, Meaning, TRAFFIC_RETRY};
use super::keys::Keys;
use super::signing;
use super::wire::ResultOnly;
use crate::providers::http::{AccountClient, Call};
use crate::providers::{CallContext, ProviderError};

/// An Antom API endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/payments/refund`
    Refund,
    /// `/v1/payments/inquiryRefund`
    InquiryRefund,
    /// `/v1/subscriptions/cancel`
    Cancel,
}

impl Endpoint {
    /// The path after `/ams/api` (or `/ams/sandbox/api`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Refund => "/v1/payments/refund",
            Endpoint::InquiryRefund => "/v1/payments/inquiryRefund",
            Endpoint::Cancel => "/v1/subscriptions/cancel",
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Refund => "refund",
            Endpoint::InquiryRefund => "inquiryRefund",
            Endpoint::Cancel => "cancel",
        }
    }
}

/// Everything needed to talk to one Antom account.
#[derive(Debug)]
pub struct Settings {
    /// Scheme and host, e.g. `https://open-sea-global.alipay.com`.
    pub base_url: String,
    /// The merchant's client id.
    pub client_id: String,
    /// Use `/ams/sandbox/api` paths.
    pub sandbox: bool,
    /// Upper bound for one HTTP attempt.
    pub timeout: Duration,
    /// The merchant's private keys and Antom's public keys, by version (reloaded when their
    /// files change).
    pub keys: Arc<Keys>,
    /// Where Antom should send this account's notifications, as the gateway is reached from
    /// the internet (e.g. `https://paygate.example.com/notify/antom`); refunds carry
    /// `<notify_url>/refund` as their `refundNotifyUrl`. `None`: the Antom Dashboard's URLs
    /// apply.
    pub notify_url: Option<String>,
}

/// A signed-HTTP client for one Antom account.
pub type Client = AccountClient<Settings>;

impl AccountClient<Settings> {
    /// The request URI that is both requested and signed.
    pub fn uri(&self, endpoint: Endpoint) -> String {
        let prefix = if self.settings().sandbox {
            "/ams/sandbox/api"
        } else {
            "/ams/api"
        };
        format!("{prefix}{}", endpoint.path())
    }

    /// Sends `body` to `endpoint`, signed, within the context's deadline, and returns the
    /// answer body once its signature has been verified on the raw bytes.
    pub async fn post(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
        ctx: &CallContext,
    ) -> Result<Vec<u8>, ProviderError> {
        let s = self.settings();
        let uri = self.uri(endpoint);
        let request_time = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let request_time = request_time.to_string();
        // The keys this call uses from start to end, whatever a reload swaps in meanwhile.
        let keys = s.keys.current();
        let (key_version, signature) =
            keys.sign(&signing::content(&uri, &s.client_id, &request_time, &body));
        let url = format!("{}{}", s.base_url.trim_end_matches('/'), uri);
        let request = self
            .http()
            .post(&url)
            .header("Content-Type", "application/json; charset=UTF-8")
            .header("Client-Id", &s.client_id)
            .header("Request-Time", &request_time)
            .header(
                "Signature",
                signing::signature_header(key_version, &signature),
            )
            .body(body);
        let what = format!("antom {}", endpoint.name());
        let call = Call {
            what: &what,
            timeout: s.timeout,
            throttled: TRAFFIC_RETRY,
        };
        let answered = call.send(request, ctx).await?;
        let status = answered.resp.status();
        if status != StatusCode::OK {
            return Err(ProviderError::unknown(
                format!("{what} answered HTTP {}", status.as_u16()),
                None,
            ));
        }
        let response_time = header(&answered.resp, "response-time");
        let signature = header(&answered.resp, "signature");
        let answer = answered
            .read(&what, crate::providers::http::MAX_ANSWER_BYTES)
            .await?;
        self.verify(&keys, endpoint, &uri, response_time, signature, answer)
    }

    fn verify(
        &self,
        keys: &super::keys::KeyRing,
        endpoint: Endpoint,
        uri: &str,
        response_time: Option<String>,
        signature: Option<String>,
        answer: Vec<u8>,
    ) -> Result<Vec<u8>, ProviderError> {
        let s = self.settings();
        let (Some(time), Some(sig_header)) = (response_time, signature) else {
            // Antom may leave its refusal of our own signature unsigned. Such an answer is
            // never trusted as a success; a gateway-level refusal is reported as our
            // misconfiguration, anything else as an unknown outcome.
            if let Ok(r) = super::wire::from_json::<ResultOnly>(&answer)
                && codes::classify(&r.result.result_code, &r.result.result_status)
                    == Meaning::Misconfigured
            {
                tracing::error!(endpoint = endpoint.name(), code = %r.result.result_code,
                    "antom refused the request signature or client id; check the merchant key and client id");
                return Err(ProviderError::misconfigured(
                    r.result.result_code,
                    format!(
                        "antom {} refused the request: {}",
                        endpoint.name(),
                        r.result.result_message.unwrap_or_default()
                    ),
                ));
            }
            metrics::counter!("paygate_signature_failures_total", "provider" => "antom", "kind" => "missing").increment(1);
            tracing::error!(
                endpoint = endpoint.name(),
                "antom answer carries no signature; treating the outcome as unknown"
            );
            return Err(ProviderError::unknown(
                format!("antom {} answer is not signed", endpoint.name()),
                None,
            ));
        };
        let named = signing::key_version_of(&sig_header);
        let valid = signing::parse_signature_header(&sig_header).is_some_and(|sig| {
            keys.verify(
                named,
                &signing::content(uri, &s.client_id, &time, &answer),
                &sig,
            )
        });
        if !valid {
            metrics::counter!("paygate_signature_failures_total", "provider" => "antom", "kind" => "invalid").increment(1);
            tracing::error!(
                endpoint = endpoint.name(),
                "antom answer signature does not verify; treating the outcome as unknown"
            );
            return Err(ProviderError::unknown(
                format!("antom {} answer signature does not verify", endpoint.name()),
                None,
            ));
        }
        Ok(answer)
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
