//! Antom's notifications (notifyRefund, notifySubscription, notifyPayment): verified like an
//! answer (`POST <path>\n<client-id>.<request-time>.<body>` with Antom's public key), then read
//! into domain values. Nothing here acts on them.

use super::client::Settings;
use super::signing;
use super::wire::NAME;
use super::wire::{
    RefundNotify, ResultObject, SubscriptionNotify, SubscriptionPaymentNotify, parse_time,
};
use crate::domain::{
    CancellationStatus, CancellationType, Notice, Notification, ProviderResult, RefundRecord,
    RefundState, SubscriptionPayment, SubscriptionRecord,
};
use crate::providers::{NotificationError, NotificationRefusal, NotificationReply};

/// Checks the client id and the signature of a notification on its raw bytes; returns the
/// signed `request-time` (Unix ms).
pub(crate) fn verify(
    settings: &Settings,
    uri: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<i64, NotificationError> {
    let client_id = header("client-id").ok_or(NotificationError::Unverified("no client-id"))?;
    if client_id != settings.client_id {
        return Err(NotificationError::Unverified("unknown client-id"));
    }
    let time = header("request-time").ok_or(NotificationError::Unverified("no request-time"))?;
    let value = header("signature").ok_or(NotificationError::Unverified("no signature"))?;
    let signature = signing::parse_signature_header(&value)
        .ok_or(NotificationError::Unverified("no signature"))?;
    let named = signing::key_version_of(&value);
    if !settings.keys.current().verify(
        named,
        &signing::content(uri, &client_id, &time, body),
        &signature,
    ) {
        return Err(NotificationError::Unverified("signature does not verify"));
    }
    signed_time(&time).ok_or(NotificationError::Unverified(
        "request-time is neither epoch milliseconds nor an ISO 8601 time",
    ))
}

/// A `request-time` as Unix ms: epoch milliseconds (what Antom sends today) or ISO 8601 with
/// an offset (what older documents show).
pub(crate) fn signed_time(t: &str) -> Option<i64> {
    let t = t.trim();
    if !t.is_empty() && t.len() <= 16 && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    let at = parse_time(Some(t))?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

fn result(r: &ResultObject) -> ProviderResult {
    ProviderResult {
        provider: NAME.into(),
        code: r.result_code.clone(),
        status: r.result_status.clone(),
        message: r.result_message.clone().unwrap_or_default(),
    }
}

/// Antom's answer to its notification: the documented acknowledgement byte for byte, or a
/// refusal in the shape of Antom's answers (a `result` with Antom's code, `F` and the reason),
/// so Antom's logs show why.
pub(crate) fn reply(reply: NotificationReply<'_>) -> String {
    let (why, message) = match reply {
        NotificationReply::Accepted => return super::wire::NOTIFY_ACK.into(),
        NotificationReply::Refused(why, message) => (why, message),
    };
    let code = match why {
        NotificationRefusal::NotFound => "NOT_FOUND",
        NotificationRefusal::Unverified => "INVALID_SIGNATURE",
        NotificationRefusal::Malformed => "PARAM_ILLEGAL",
        NotificationRefusal::Unavailable => "UNKNOWN_EXCEPTION",
        NotificationRefusal::Stale => "REQUEST_TIME_EXPIRED",
    };
    serde_json::json!({
        "result": {"resultCode": code, "resultStatus": "F", "resultMessage": message}
    })
    .to_string()
}

fn malformed(kind: &str, e: impl std::fmt::Display) -> NotificationError {
    NotificationError::Malformed(format!("not an Antom {kind} notification: {e}"))
}

fn required(kind: &str, field: &str, v: &str) -> Result<(), NotificationError> {
    if v.is_empty() || v.len() > 64 {
        return Err(malformed(kind, format!("{field} is empty or too long")));
    }
    Ok(())
}

/// Reads a verified body of `kind`, signed at `signed_at` (Unix ms).
pub(crate) fn read(
    kind: &str,
    body: &[u8],
    signed_at: i64,
) -> Result<Notification, NotificationError> {
    let mut n = read_body(kind, body)?;
    n.signed_at = Some(signed_at);
    Ok(n)
}

fn read_body(kind: &str, body: &[u8]) -> Result<Notification, NotificationError> {
    match kind {
        "refund" => {
            let n: RefundNotify = super::wire::from_json(body).map_err(|e| malformed(kind, e))?;
            required(kind, "refundId", &n.refund_id)?;
            required(kind, "refundRequestId", &n.refund_request_id)?;
            let state = match n.refund_status.as_str() {
                "SUCCESS" => RefundState::Succeeded,
                "FAIL" | "FAILED" => RefundState::Failed,
                other => {
                    return Err(malformed(
                        kind,
                        format!("refundStatus {other:?} is not final"),
                    ));
                }
            };
            let amount = n
                .refund_amount
                .to_money()
                .ok_or_else(|| malformed(kind, "refundAmount is not an amount"))?;
            Ok(Notification {
                event_id: format!("refund/{}/{}", n.refund_id, n.refund_status),
                provider_event_type: n.notify_type.clone(),
                signed_at: None,
                notice: Notice::Refund(RefundRecord {
                    refund_id: Some(n.refund_id),
                    request_id: Some(n.refund_request_id),
                    payment_id: None,
                    amount: Some(amount),
                    state,
                    refund_time: parse_time(n.refund_time.as_deref()),
                    reference_refund_id: None,
                    result: result(&n.result),
                }),
            })
        }
        "subscription" => {
            let n: SubscriptionNotify =
                super::wire::from_json(body).map_err(|e| malformed(kind, e))?;
            required(kind, "subscriptionId", &n.subscription_id)?;
            required(
                kind,
                "subscriptionNotificationType",
                &n.subscription_notification_type,
            )?;
            let cancellation_type = match n.subscription_notification_type.as_str() {
                "CANCEL" => Some(CancellationType::Cancel),
                "TERMINATE" => Some(CancellationType::Terminate),
                _ => None,
            };
            Ok(Notification {
                event_id: format!(
                    "subscription/{}/{}/{}",
                    n.subscription_id,
                    n.subscription_notification_type,
                    n.subscription_end_time.as_deref().unwrap_or("")
                ),
                provider_event_type: n.subscription_notification_type.clone(),
                signed_at: None,
                notice: Notice::Subscription(SubscriptionRecord {
                    subscription_id: n.subscription_id,
                    subscription_request_id: Some(n.subscription_request_id)
                        .filter(|s| !s.is_empty()),
                    cancellation: cancellation_type.map(|_| CancellationStatus::Confirmed),
                    cancellation_type,
                    state: Some(n.subscription_status),
                    last_notification_type: Some(n.subscription_notification_type),
                    end_time: parse_time(n.subscription_end_time.as_deref()),
                }),
            })
        }
        "payment" => {
            let n: SubscriptionPaymentNotify =
                super::wire::from_json(body).map_err(|e| malformed(kind, e))?;
            required(kind, "paymentId", &n.payment_id)?;
            required(kind, "subscriptionId", &n.subscription_id)?;
            let succeeded = match n.result.result_status.as_str() {
                "S" => true,
                "F" => false,
                other => {
                    return Err(malformed(
                        kind,
                        format!("result status {other:?} is not final"),
                    ));
                }
            };
            Ok(Notification {
                event_id: format!("payment/{}/{}", n.payment_id, n.result.result_status),
                provider_event_type: n
                    .notify_type
                    .clone()
                    .unwrap_or_else(|| "PAYMENT_RESULT".into()),
                signed_at: None,
                notice: Notice::SubscriptionPayment(SubscriptionPayment {
                    subscription_id: n.subscription_id,
                    subscription_request_id: Some(n.subscription_request_id)
                        .filter(|s| !s.is_empty()),
                    payment_id: n.payment_id,
                    amount: n.payment_amount.to_money(),
                    succeeded,
                    phase: n.phase_no,
                    period_start: parse_time(n.period_start_time.as_deref()),
                    period_end: parse_time(n.period_end_time.as_deref()),
                    payment_time: parse_time(n.payment_time.as_deref()),
                    result: result(&n.result),
                }),
            })
        }
        _ => Err(NotificationError::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn antom_hears_its_acknowledgement_and_refusals_in_its_own_words() {
        assert_eq!(
            reply(NotificationReply::Accepted),
            r#"{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}"#
        );
        let cases = [
            (NotificationRefusal::NotFound, "NOT_FOUND"),
            (NotificationRefusal::Unverified, "INVALID_SIGNATURE"),
            (NotificationRefusal::Malformed, "PARAM_ILLEGAL"),
            (NotificationRefusal::Unavailable, "UNKNOWN_EXCEPTION"),
            (NotificationRefusal::Stale, "REQUEST_TIME_EXPIRED"),
        ];
        for (why, code) in cases {
            let body = reply(NotificationReply::Refused(why, "because"));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["result"]["resultCode"], code);
            assert_eq!(v["result"]["resultStatus"], "F");
            assert_eq!(v["result"]["resultMessage"], "because");
        }
    }
}
