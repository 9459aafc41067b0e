//! One event as a NATS message: its subject, its CloudEvents 1.0 headers in binary mode (the
//! NATS binding's `ce-` headers), `Nats-Msg-Id` for JetStream's deduplication, and the body:
//! the `paygate.v1.Event` in the protobuf JSON mapping, so any language decodes it with the
//! stubs it already has.

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use crate::domain::Notice;
use crate::events::Event;
use crate::pb;

/// The message of one event.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// `<prefix>.<account>.<kind>`.
    pub subject: String,
    /// Header name and value, in order.
    pub headers: Vec<(&'static str, String)>,
    /// The event in the protobuf JSON mapping.
    pub body: Vec<u8>,
}

/// The kind of an event, as its subject's last token and its CloudEvents type name.
pub(crate) fn kind(e: &Event) -> &'static str {
    match e.notice {
        Notice::Refund(_) => "refund",
        Notice::Subscription(_) => "subscription",
        Notice::SubscriptionPayment(_) => "subscription_payment",
    }
}

/// What the event is about, within its account: `refund/<request id>`,
/// `subscription/<subscription id>` or `subscription_payment/<payment id>`.
fn subject_of(e: &Event) -> String {
    match &e.notice {
        Notice::Refund(r) => format!(
            "refund/{}",
            r.request_id
                .as_deref()
                .or(r.refund_id.as_deref())
                .unwrap_or_default()
        ),
        Notice::Subscription(s) => format!("subscription/{}", s.subscription_id),
        Notice::SubscriptionPayment(p) => format!("subscription_payment/{}", p.payment_id),
    }
}

/// An account name as one subject token: account names are `A-Z a-z 0-9 _ - .`, and a dot
/// splits tokens, which is valid unless it leaves one empty; then dots become `_`.
fn token(account: &str) -> String {
    if account.split('.').any(str::is_empty) {
        account.replace('.', "_")
    } else {
        account.to_owned()
    }
}

fn event_descriptor() -> Option<&'static MessageDescriptor> {
    static DESCRIPTOR: OnceLock<Option<MessageDescriptor>> = OnceLock::new();
    DESCRIPTOR
        .get_or_init(|| {
            DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
                .ok()?
                .get_message_by_name("paygate.v1.Event")
        })
        .as_ref()
}

/// `event` in the protobuf JSON mapping (lowerCamelCase names, enums by name, timestamps in
/// RFC 3339, default values left out).
pub(crate) fn json(event: &pb::Event) -> Result<Vec<u8>, String> {
    let descriptor = event_descriptor().ok_or("the paygate.v1.Event descriptor is missing")?;
    let message = DynamicMessage::decode(descriptor.clone(), event.encode_to_vec().as_slice())
        .map_err(|e| e.to_string())?;
    serde_json::to_vec(&message).map_err(|e| e.to_string())
}

/// The message of `e` under `prefix`.
pub(crate) fn outgoing(prefix: &str, e: &Event) -> Result<Outgoing, String> {
    let event = crate::api::event_to_pb(e);
    let time = event
        .receive_time
        .as_ref()
        .map(|t| {
            time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
            )
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
        })
        .unwrap_or_default();
    let kind = kind(e);
    Ok(Outgoing {
        subject: format!("{prefix}.{}.{kind}", token(&e.account)),
        headers: vec![
            ("Nats-Msg-Id", e.event_id.clone()),
            ("ce-specversion", "1.0".into()),
            ("ce-id", e.event_id.clone()),
            ("ce-source", format!("paygate/{}/{}", e.provider, e.account)),
            ("ce-type", format!("paygate.v1.{kind}")),
            ("ce-time", time),
            ("ce-subject", subject_of(e)),
            ("Content-Type", "application/json".into()),
        ],
        body: json(&event)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_subject_tokens() {
        assert_eq!(token("main"), "main");
        assert_eq!(token("eu.main"), "eu.main");
        assert_eq!(token(".x"), "_x");
        assert_eq!(token("a..b"), "a__b");
    }

    /// The body is the protobuf JSON mapping: a strict JSON parser reads it, names are
    /// lowerCamelCase, enums are names, timestamps RFC 3339.
    #[test]
    fn the_body_is_the_protobuf_json_mapping() {
        let event = pb::Event {
            cursor: "7".into(),
            event_id: "antom/main/refund/r1/SUCCEEDED".into(),
            account: "main".into(),
            provider: "antom".into(),
            receive_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            source: pb::EventSource::ProviderAnswer as i32,
            payload: Some(pb::event::Payload::Refund(pb::Refund {
                request_id: "r1".into(),
                status: pb::RefundStatus::Succeeded as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&json(&event).unwrap()).unwrap();
        assert_eq!(v["eventId"], "antom/main/refund/r1/SUCCEEDED");
        assert_eq!(v["receiveTime"], "2023-11-14T22:13:20Z");
        assert_eq!(v["source"], "EVENT_SOURCE_PROVIDER_ANSWER");
        assert_eq!(v["refund"]["requestId"], "r1");
        assert_eq!(v["refund"]["status"], "REFUND_STATUS_SUCCEEDED");
        assert!(
            v.get("providerEventType").is_none(),
            "defaults are left out"
        );
    }
}
