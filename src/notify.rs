//! The notification listener: an HTTP port of its own where providers post their signed
//! notifications, at `/notify/{account}/{kind}` (`kind`: `refund`, `subscription`, `payment`).
//!
//! Each notification is verified by the account's provider; one that is unsigned, wrongly
//! signed or from another client id is refused (401) and counted, never acted on. A verified
//! one is stored once, with its effect, *before* the acknowledgement the provider expects is
//! returned; a duplicate is acknowledged again and changes nothing. When the store cannot be
//! written the answer is 503 and no acknowledgement, so the provider sends it again later.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use tokio::net::TcpListener;

use crate::api::Shared;
use crate::events::Recorded;
use crate::providers::NotificationError;
use crate::providers::antom::wire::NOTIFY_ACK;

/// Largest notification body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The listener's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/notify/{account}/{kind}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// Serves notifications on `listener` until shutdown starts (`Shared::stopping`).
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) -> std::io::Result<()> {
    let mut stopping = shared.stopping.subscribe();
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|s| *s).await;
        })
        .await
}

fn answer(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A refusal in the shape of Antom's answers, so the provider's logs show why.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "result": {"resultCode": code, "resultStatus": "F", "resultMessage": message}
    });
    answer(status, body.to_string())
}

fn count(provider: &str, kind: &str, outcome: &'static str) {
    metrics::counter!(
        "paygate_notifications_total",
        "provider" => provider.to_owned(),
        "kind" => kind.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

async fn receive(
    State(s): State<Arc<Shared>>,
    Path((account_name, kind)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(account) = s
        .accounts
        .resolve(&account_name)
        .filter(|_| !account_name.is_empty())
    else {
        count("unknown", "unknown", "unknown_account");
        return refusal(StatusCode::NOT_FOUND, "NOT_FOUND", "no such account");
    };
    let provider = account.provider.name();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let signed_uri = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let notification = match account
        .provider
        .notification(&kind, &signed_uri, &header, &body)
    {
        Ok(n) => n,
        Err(NotificationError::Unsupported) => {
            count(provider, "unknown", "unsupported");
            return refusal(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "this account takes no such notification",
            );
        }
        Err(NotificationError::Unverified(why)) => {
            count(provider, &kind, "rejected");
            tracing::warn!(account = %account.name, kind = %kind, why, "refused a notification that does not verify");
            return refusal(StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE", why);
        }
        Err(NotificationError::Malformed(why)) => {
            count(provider, &kind, "malformed");
            tracing::warn!(account = %account.name, kind = %kind, why = %why, "refused a signed notification the gateway cannot read");
            return refusal(StatusCode::BAD_REQUEST, "PARAM_ILLEGAL", &why);
        }
    };
    match s
        .events
        .record(&account.name, provider, &notification)
        .await
    {
        Ok(Recorded::New(seq)) => {
            count(provider, &kind, "stored");
            tracing::info!(account = %account.name, kind = %kind, seq, event_id = %notification.event_id, "notification stored");
            answer(StatusCode::OK, NOTIFY_ACK.into())
        }
        Ok(Recorded::Duplicate) => {
            count(provider, &kind, "duplicate");
            tracing::info!(account = %account.name, kind = %kind, event_id = %notification.event_id, "duplicate notification acknowledged");
            answer(StatusCode::OK, NOTIFY_ACK.into())
        }
        Err(e) => {
            count(provider, &kind, "store_error");
            tracing::error!(account = %account.name, kind = %kind, error = %e, "cannot store a notification; the provider will send it again");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNKNOWN_EXCEPTION",
                "cannot store the notification now",
            )
        }
    }
}
