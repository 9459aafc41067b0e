//! The notification listener: an HTTP port of its own where providers post their signed
//! notifications, at `/notify/{account}/{kind}` (`kind`: `refund`, `subscription`, `payment`).
//!
//! Each notification is verified by the account's provider; one that is unsigned, wrongly
//! signed or from another client id is refused (401) and counted, never acted on. A verified
//! one is stored once, with its effect, *before* the acknowledgement the provider expects is
//! returned; a duplicate is acknowledged again and changes nothing. When the store cannot be
//! written the answer is 503 and no acknowledgement, so the provider sends it again later.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::Shared;
use crate::events::Recorded;
use crate::providers::{
    NotificationError, NotificationRefusal, NotificationReply, Provider, neutral_reply,
};
use crate::telemetry;

/// Largest notification body accepted.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// What a stranger can hold of the listener, which faces the internet by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections; more are closed at once and counted
    /// (`paygate_notify_connections_refused_total`).
    pub max_connections: usize,
    /// How long a request's headers may take to arrive, and how long a kept-alive connection
    /// may wait idle for its next request.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
    /// How long one connection may stay open at all.
    pub max_connection_time: Duration,
    /// The freshness window: a notification signed longer ago than this (by the store's
    /// clock) is refused as stale, and what proves a notification was seen (its event) is
    /// kept at least this long. The default covers Antom's resend schedule (8 resends within
    /// 24 h 22 min of the first notice, each possibly carrying the first one's time) and clock
    /// skew.
    pub max_age: Duration,
}

/// The default freshness window: 26 hours.
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(26 * 3600);

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_connection_time: Duration::from_secs(60),
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// File descriptors kept back from the notification listener for the gRPC port, the store
/// and the provider clients.
pub(crate) const FD_RESERVE: u64 = 512;

/// Raises the soft open-files limit to the hard one (the server does this when it starts), so
/// that strangers' connections, capped below it, leave a reserve.
pub(crate) fn raise_open_files_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
}

/// The soft open-files limit in force.
fn open_files_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

/// What the listener's handler needs.
#[derive(Clone)]
struct Listener {
    shared: Arc<Shared>,
    max_age: Duration,
}

/// The listener's routes.
pub(crate) fn router(shared: Arc<Shared>, max_age: Duration) -> Router {
    Router::new()
        .route("/notify/{account}/{kind}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Listener { shared, max_age })
}

/// Serves notifications on `listener` with the default [`Limits`] until shutdown starts.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) -> std::io::Result<()> {
    serve_with(shared, listener, Limits::default()).await
}

/// Serves notifications on `listener` until shutdown starts (`Shared::stopping`): at most
/// `limits.max_connections` connections (and never more than the open-files limit minus
/// [`FD_RESERVE`]), each bounded in time.
pub(crate) async fn serve_with(
    shared: Arc<Shared>,
    listener: TcpListener,
    limits: Limits,
) -> std::io::Result<()> {
    let fds = open_files_limit();
    let cap = limits
        .max_connections
        .min(fds.saturating_sub(FD_RESERVE).max(1) as usize);
    if cap < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            cap,
            open_files = fds,
            "the open-files limit caps notification connections lower than configured"
        );
    }
    let slots = Arc::new(Semaphore::new(cap));
    let app = router(shared.clone(), limits.max_age).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            body_within(limits.body_timeout, req, next)
        },
    ));
    let mut stopping = shared.stopping.subscribe();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a notification connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stopping) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("paygate_notify_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stopping = shared.stopping.subscribe();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = telemetry::GaugeGuard::hold(metrics::gauge!("paygate_notify_connections"));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            // The connection ends by itself, or at its time limit or at shutdown: then it
            // finishes what it is answering (at most a header timeout more) and closes.
            enum Next {
                Ended,
                Close,
            }
            let lifetime = tokio::time::sleep(limits.max_connection_time);
            tokio::pin!(lifetime);
            let mut closing = false;
            loop {
                let next = tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "notification connection ended");
                        }
                        Next::Ended
                    }
                    _ = &mut lifetime => Next::Close,
                    _ = stopped(&mut stopping), if !closing => Next::Close,
                };
                match next {
                    Next::Ended => break,
                    Next::Close if closing => break,
                    Next::Close => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        lifetime
                            .as_mut()
                            .reset(tokio::time::Instant::now() + limits.header_timeout);
                    }
                }
            }
        });
    }
    Ok(())
}

/// Resolves once shutdown has started.
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// Reads the request's body within `limit`, or answers 408 and closes the connection.
async fn body_within(
    limit: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => refusal(
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
            NotificationRefusal::Malformed,
            "the body is too large",
        ),
        Err(_) => {
            let mut r = refusal(
                None,
                StatusCode::REQUEST_TIMEOUT,
                NotificationRefusal::Malformed,
                "the body did not arrive in time",
            );
            r.headers_mut()
                .insert("connection", axum::http::HeaderValue::from_static("close"));
            r
        }
    }
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

/// A refusal in the provider's words (neutral ones before the account is known), so the
/// provider's logs show why.
fn refusal(
    provider: Option<&dyn Provider>,
    status: StatusCode,
    why: NotificationRefusal,
    message: &str,
) -> Response {
    let reply = NotificationReply::Refused(why, message);
    let body = provider.map_or_else(|| neutral_reply(reply), |p| p.notification_reply(reply));
    answer(status, body)
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
    State(Listener { shared: s, max_age }): State<Listener>,
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
        return refusal(
            None,
            StatusCode::NOT_FOUND,
            NotificationRefusal::NotFound,
            "no such account",
        );
    };
    let p = account.provider.as_ref();
    let provider = p.name();
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
                Some(p),
                StatusCode::NOT_FOUND,
                NotificationRefusal::NotFound,
                "this account takes no such notification",
            );
        }
        Err(NotificationError::Unverified(why)) => {
            count(provider, &kind, "rejected");
            tracing::warn!(account = %account.name, kind = %kind, why, "refused a notification that does not verify");
            return refusal(
                Some(p),
                StatusCode::UNAUTHORIZED,
                NotificationRefusal::Unverified,
                why,
            );
        }
        Err(NotificationError::Malformed(why)) => {
            count(provider, &kind, "malformed");
            tracing::warn!(account = %account.name, kind = %kind, why = %why, "refused a signed notification the gateway cannot read");
            return refusal(
                Some(p),
                StatusCode::BAD_REQUEST,
                NotificationRefusal::Malformed,
                &why,
            );
        }
    };
    match s
        .events
        .record(&account.name, provider, &notification, max_age)
        .await
    {
        Ok(Recorded::New(seq)) => {
            count(provider, &kind, "stored");
            tracing::info!(account = %account.name, kind = %kind, seq, event_id = %notification.event_id, "notification stored");
            answer(
                StatusCode::OK,
                p.notification_reply(NotificationReply::Accepted),
            )
        }
        Ok(Recorded::Duplicate) => {
            count(provider, &kind, "duplicate");
            tracing::info!(account = %account.name, kind = %kind, event_id = %notification.event_id, "duplicate notification acknowledged");
            answer(
                StatusCode::OK,
                p.notification_reply(NotificationReply::Accepted),
            )
        }
        Ok(Recorded::Superseded) => {
            // An earlier state than the one recorded (Antom resends what was not acknowledged
            // minutes later): acknowledged, nothing changes.
            count(provider, &kind, "superseded");
            tracing::info!(account = %account.name, kind = %kind, event_id = %notification.event_id, "notification of an earlier state acknowledged; nothing changed");
            answer(
                StatusCode::OK,
                p.notification_reply(NotificationReply::Accepted),
            )
        }
        Ok(Recorded::Contradicts { recorded }) => {
            // A final state never changes: the report is recorded for a person, and
            // acknowledged so that it is not resent for a day.
            count(provider, &kind, "contradicts");
            metrics::counter!("paygate_state_anomalies_total", "kind" => "refund_notification")
                .increment(1);
            tracing::error!(account = %account.name, kind = %kind, event_id = %notification.event_id,
                recorded = %recorded, "anomaly: a notification contradicts a final state; nothing changed, recorded for an operator");
            answer(
                StatusCode::OK,
                p.notification_reply(NotificationReply::Accepted),
            )
        }
        Ok(Recorded::Stale) => {
            count(provider, &kind, "stale");
            tracing::warn!(account = %account.name, kind = %kind, event_id = %notification.event_id,
                max_age_ms = max_age.as_millis() as u64, "refused a notification signed outside the freshness window");
            refusal(
                Some(p),
                StatusCode::BAD_REQUEST,
                NotificationRefusal::Stale,
                "the notification's request-time is outside the freshness window",
            )
        }
        Err(e) => {
            count(provider, &kind, "store_error");
            tracing::error!(account = %account.name, kind = %kind, error = %e, "cannot store a notification; the provider will send it again");
            refusal(
                Some(p),
                StatusCode::SERVICE_UNAVAILABLE,
                NotificationRefusal::Unavailable,
                "cannot store the notification now",
            )
        }
    }
}
