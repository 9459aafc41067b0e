//! Antom's JSON request and answer bodies, and their conversion to and from domain values.
//! Every field is a string on the wire; optional fields are omitted, never sent empty.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Provider name in errors and results.
pub const NAME: &str = "antom";

use crate::domain::{
    CancelSubscription, CancellationType, CreateRefund, InquireRefund, Money, RefundState,
};

/// Reads an Antom body (an answer or a notification): a JSON object, with objects for the
/// nested `result` and amounts. serde's derive also reads a struct from a JSON array, field by
/// field, which would take `{"result":["X","S"]}` for a success: nothing here reads an array
/// as a struct.
pub(crate) fn from_json<T: DeserializeOwned>(body: &[u8]) -> serde_json::Result<T> {
    T::deserialize(serde_json::Value::Object(serde_json::from_slice(body)?))
}

/// Deserializes `Fields` from a JSON object only (not from an array), for `Into<T>`.
fn from_object<'de, D, Fields, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    Fields: DeserializeOwned + Into<T>,
{
    let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    Fields::deserialize(serde_json::Value::Object(map))
        .map(Into::into)
        .map_err(serde::de::Error::custom)
}

/// Antom's Amount: ISO currency and the value in minor units as a string.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Amount {
    /// ISO 4217 code.
    pub currency: String,
    /// Minor units, as a decimal string.
    pub value: String,
}

#[derive(Deserialize)]
struct AmountFields {
    currency: String,
    value: String,
}

impl From<AmountFields> for Amount {
    fn from(f: AmountFields) -> Self {
        Self {
            currency: f.currency,
            value: f.value,
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_object::<D, AmountFields, Self>(d)
    }
}

impl From<&Money> for Amount {
    fn from(m: &Money) -> Self {
        Self {
            currency: m.currency.clone(),
            value: m.value.to_string(),
        }
    }
}

impl Amount {
    /// The domain amount, if the value is a non-negative integer.
    pub(crate) fn to_money(&self) -> Option<Money> {
        let value = self.value.parse::<i64>().ok().filter(|v| *v >= 0)?;
        Some(Money {
            currency: self.currency.clone(),
            value,
        })
    }
}

/// `POST /v1/payments/refund` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RefundRequest {
    /// Idempotency key.
    pub refund_request_id: String,
    /// Payment to refund.
    pub payment_id: String,
    /// Merchant's own reference.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reference_refund_id: Option<String>,
    /// Amount to refund.
    pub refund_amount: Amount,
    /// Reason.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refund_reason: Option<String>,
    /// Where Antom sends this refund's notifyRefund.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refund_notify_url: Option<String>,
}

impl From<&CreateRefund> for RefundRequest {
    fn from(r: &CreateRefund) -> Self {
        Self {
            refund_request_id: r.request_id.clone(),
            payment_id: r.payment_id.clone(),
            reference_refund_id: r.reference_refund_id.clone(),
            refund_amount: (&r.amount).into(),
            refund_reason: r.reason.clone(),
            refund_notify_url: None,
        }
    }
}

/// `POST /v1/payments/inquiryRefund` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InquiryRefundRequest {
    /// Antom's refund id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refund_id: Option<String>,
    /// Merchant's refund request id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refund_request_id: Option<String>,
}

impl From<&InquireRefund> for InquiryRefundRequest {
    fn from(r: &InquireRefund) -> Self {
        Self {
            refund_id: r.refund_id.clone(),
            refund_request_id: r.request_id.clone(),
        }
    }
}

/// `POST /v1/subscriptions/cancel` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CancelRequest {
    /// Antom's subscription id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subscription_id: Option<String>,
    /// Merchant's subscription request id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subscription_request_id: Option<String>,
    /// `CANCEL` or `TERMINATE`.
    pub cancellation_type: String,
}

impl From<&CancelSubscription> for CancelRequest {
    fn from(r: &CancelSubscription) -> Self {
        Self {
            subscription_id: r.subscription_id.clone(),
            subscription_request_id: r.subscription_request_id.clone(),
            cancellation_type: match r.cancellation_type {
                CancellationType::Cancel => "CANCEL",
                CancellationType::Terminate => "TERMINATE",
            }
            .into(),
        }
    }
}

/// The `result` object of every answer.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResultObject {
    /// Result code, e.g. `SUCCESS`.
    pub result_code: String,
    /// `S`, `F` or `U`.
    pub result_status: String,
    /// Message.
    #[serde(default)]
    pub result_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultFields {
    result_code: String,
    result_status: String,
    #[serde(default)]
    result_message: Option<String>,
}

impl From<ResultFields> for ResultObject {
    fn from(f: ResultFields) -> Self {
        Self {
            result_code: f.result_code,
            result_status: f.result_status,
            result_message: f.result_message,
        }
    }
}

impl<'de> Deserialize<'de> for ResultObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_object::<D, ResultFields, Self>(d)
    }
}

/// An answer that carries only `result` (cancel).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ResultOnly {
    /// The result.
    pub result: ResultObject,
}

/// The refund answer.
#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RefundResponse {
    /// The result.
    pub result: ResultObject,
    /// Antom's refund id (when `S`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// Echo of the request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_request_id: Option<String>,
    /// Echo of the payment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// Refunded amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_amount: Option<Amount>,
    /// When the refund reached its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_time: Option<String>,
}

/// The inquiryRefund answer.
#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InquiryRefundResponse {
    /// The result of the inquiry itself (not of the refund).
    pub result: ResultObject,
    /// Antom's refund id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// Merchant's refund request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_request_id: Option<String>,
    /// Refunded amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_amount: Option<Amount>,
    /// `SUCCESS`, `PROCESSING` or `FAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_status: Option<String>,
    /// When the refund succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_time: Option<String>,
}

/// What of `answered` contradicts `asked` for field `name`: a different value, or none where
/// the answer must name it.
fn differs(name: &str, asked: &str, answered: Option<&str>, required: bool) -> Option<String> {
    match answered {
        Some(a) if a != asked => Some(format!("{name} is {a:?}, the request's is {asked:?}")),
        None if required => Some(format!("{name} is missing")),
        _ => None,
    }
}

/// Why a refund answer is not the answer to `req`, if it is not: Antom's signature binds an
/// answer to the path and the time, not to the request, so the body must name this request's
/// `refundRequestId` and payment (always, on a success) and its amount.
pub(crate) fn refund_answer_mismatch(
    ans: &RefundResponse,
    req: &CreateRefund,
    success: bool,
) -> Option<String> {
    differs(
        "refundRequestId",
        &req.request_id,
        ans.refund_request_id.as_deref(),
        success,
    )
    .or_else(|| {
        differs(
            "paymentId",
            &req.payment_id,
            ans.payment_id.as_deref(),
            success,
        )
    })
    .or_else(|| {
        let a = ans.refund_amount.as_ref()?;
        (a.to_money().as_ref() != Some(&req.amount)).then(|| {
            format!(
                "refundAmount is {} {}, the request's is {} {}",
                a.currency, a.value, req.amount.currency, req.amount.value
            )
        })
    })
}

/// Why an inquiryRefund answer is not about the refund `req` asked for, if it is not. An
/// answer that reports a refund (`refundStatus`) must name the id it was asked by.
pub(crate) fn inquiry_answer_mismatch(
    ans: &InquiryRefundResponse,
    req: &InquireRefund,
) -> Option<String> {
    let record = ans.refund_status.is_some();
    if let Some(id) = &req.refund_id {
        return differs("refundId", id, ans.refund_id.as_deref(), record);
    }
    let asked = req.request_id.as_deref()?;
    differs(
        "refundRequestId",
        asked,
        ans.refund_request_id.as_deref(),
        record,
    )
}

/// Antom's refundStatus -> domain state. Anything unrecognised is still pending: never a
/// success and never a failure.
pub(crate) fn refund_state(status: Option<&str>) -> RefundState {
    match status {
        Some("SUCCESS") => RefundState::Succeeded,
        Some("FAIL") | Some("FAILED") => RefundState::Failed,
        _ => RefundState::Processing,
    }
}

/// Parses an ISO 8601 timestamp with offset; `None` if absent or unparseable.
pub(crate) fn parse_time(t: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t?, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_are_read_from_objects_only() {
        let ok: RefundResponse = from_json(
            br#"{"result":{"resultCode":"SUCCESS","resultStatus":"S"},"refundId":"X","refundAmount":{"currency":"USD","value":"1"}}"#,
        )
        .unwrap();
        assert_eq!(ok.result.result_status, "S");
        assert_eq!(ok.refund_amount.unwrap().value, "1");
        // serde's derive alone would read each of these as a success.
        for body in [
            r#"{"result":["SUCCESS","S","F"],"refundId":"X"}"#,
            r#"[{"resultCode":"SUCCESS","resultStatus":"S"},"X"]"#,
            r#"{"result":{"resultCode":"SUCCESS","resultStatus":"S"},"refundAmount":["USD","1"]}"#,
        ] {
            assert!(
                from_json::<RefundResponse>(body.as_bytes()).is_err(),
                "{body}"
            );
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
        }
        assert!(from_json::<ResultOnly>(br#"{"result":["SUCCESS","S"]}"#).is_err());
    }

    #[test]
    fn optional_fields_are_omitted_and_amounts_are_strings() {
        let r = RefundRequest::from(&CreateRefund {
            request_id: "r1".into(),
            payment_id: "p1".into(),
            amount: Money {
                currency: "USD".into(),
                value: 100,
            },
            reason: None,
            reference_refund_id: None,
            cancel_subscription: false,
        });
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"refundRequestId":"r1","paymentId":"p1","refundAmount":{"currency":"USD","value":"100"}}"#
        );
    }

    #[test]
    fn an_answer_is_bound_to_its_request() {
        let req = CreateRefund {
            request_id: "r1".into(),
            payment_id: "p1".into(),
            amount: Money {
                currency: "USD".into(),
                value: 100,
            },
            reason: None,
            reference_refund_id: None,
            cancel_subscription: false,
        };
        let answer =
            |rrid: Option<&str>, pid: Option<&str>, amount: Option<(&str, &str)>| RefundResponse {
                refund_request_id: rrid.map(Into::into),
                payment_id: pid.map(Into::into),
                refund_amount: amount.map(|(c, v)| Amount {
                    currency: c.into(),
                    value: v.into(),
                }),
                ..Default::default()
            };
        let ok = answer(Some("r1"), Some("p1"), Some(("USD", "100")));
        assert_eq!(refund_answer_mismatch(&ok, &req, true), None);
        // A processing answer need not name them; if it does, they must be this request's.
        assert_eq!(
            refund_answer_mismatch(&answer(None, None, None), &req, false),
            None
        );
        for (bad, success) in [
            (answer(Some("r2"), Some("p1"), None), true),
            (answer(Some("r1"), Some("p2"), None), false),
            (answer(None, Some("p1"), None), true),
            (answer(Some("r1"), None, None), true),
            (answer(Some("r1"), Some("p1"), Some(("USD", "10000"))), true),
            (answer(Some("r1"), Some("p1"), Some(("EUR", "100"))), false),
        ] {
            assert!(
                refund_answer_mismatch(&bad, &req, success).is_some(),
                "{bad:?}"
            );
        }
        let by_id = InquireRefund {
            refund_id: Some("R1".into()),
            request_id: None,
        };
        let inquiry =
            |id: Option<&str>, rrid: Option<&str>, status: Option<&str>| InquiryRefundResponse {
                refund_id: id.map(Into::into),
                refund_request_id: rrid.map(Into::into),
                refund_status: status.map(Into::into),
                ..Default::default()
            };
        assert_eq!(
            inquiry_answer_mismatch(&inquiry(Some("R1"), None, Some("SUCCESS")), &by_id),
            None
        );
        assert!(
            inquiry_answer_mismatch(&inquiry(Some("R2"), None, Some("SUCCESS")), &by_id).is_some()
        );
        assert!(inquiry_answer_mismatch(&inquiry(None, None, Some("SUCCESS")), &by_id).is_some());
        let by_request = InquireRefund {
            refund_id: None,
            request_id: Some("r1".into()),
        };
        assert!(
            inquiry_answer_mismatch(&inquiry(Some("R9"), Some("r2"), Some("FAIL")), &by_request)
                .is_some()
        );
        assert_eq!(
            inquiry_answer_mismatch(&inquiry(None, None, None), &by_request),
            None,
            "no record: nothing to bind"
        );
    }

    #[test]
    fn unknown_refund_status_is_processing() {
        assert_eq!(refund_state(Some("SUCCESS")), RefundState::Succeeded);
        assert_eq!(refund_state(Some("FAIL")), RefundState::Failed);
        assert_eq!(refund_state(Some("PENDING")), RefundState::Processing);
        assert_eq!(refund_state(None), RefundState::Processing);
    }

    #[test]
    fn times_with_offsets_parse() {
        let t = parse_time(Some("2020-04-22T23:24:36-07:00")).unwrap();
        assert_eq!(t.unix_timestamp(), 1587623076);
        assert!(parse_time(Some("yesterday")).is_none());
    }
}

/// The notifyRefund body: a refund reached a final state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RefundNotify {
    /// `REFUND_RESULT`.
    pub notify_type: String,
    /// The refund's result.
    pub result: ResultObject,
    /// `SUCCESS` or `FAIL`.
    pub refund_status: String,
    /// The merchant's refund request id (paygate's request_id).
    pub refund_request_id: String,
    /// Antom's refund id.
    pub refund_id: String,
    /// The refunded amount.
    pub refund_amount: Amount,
    /// When it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_time: Option<String>,
}

/// The notifySubscription body: a subscription's lifecycle changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionNotify {
    /// The merchant's subscription id.
    pub subscription_request_id: String,
    /// Antom's subscription id.
    pub subscription_id: String,
    /// `ACTIVE`, `CANCELLED`, `TERMINATED`.
    pub subscription_status: String,
    /// `CREATE`, `CHANGE`, `CANCEL`, `TERMINATE`, `UPDATE`.
    pub subscription_notification_type: String,
    /// Start of the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_start_time: Option<String>,
    /// End of the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_end_time: Option<String>,
}

/// The notifyPayment body of a subscription period's charge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionPaymentNotify {
    /// `PAYMENT_RESULT`.
    #[serde(default)]
    pub notify_type: Option<String>,
    /// The payment's outcome (`S` or `F`).
    pub result: ResultObject,
    /// Antom's payment id.
    pub payment_id: String,
    /// The amount charged.
    pub payment_amount: Amount,
    /// When it was paid (when `S`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_time: Option<String>,
    /// The merchant's subscription id.
    pub subscription_request_id: String,
    /// Antom's subscription id.
    pub subscription_id: String,
    /// Start of the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start_time: Option<String>,
    /// End of the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_end_time: Option<String>,
    /// The period's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_no: Option<String>,
}

/// The acknowledgement Antom expects, byte for byte the documented fixed `result`.
pub(crate) const NOTIFY_ACK: &str =
    r#"{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}"#;
