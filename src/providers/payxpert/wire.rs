//! PayXpert's JSON bodies. Ids and amounts arrive as numbers or strings; both are accepted.

use serde::{Deserialize, Deserializer, Serialize};

/// Provider name in errors and results.
pub const NAME: &str = "payxpert";

/// A value that may be a JSON string or number, read as a string.
fn flexible<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// `POST transaction/{id}/refund` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RefundRequest {
    /// The refunded transaction (repeated from the path, as the SDKs do).
    #[serde(rename = "transactionID")]
    pub transaction_id: String,
    /// Minor units.
    pub amount: i64,
    /// Always sent: PayXpert's default (true) would cancel the customer's subscription.
    pub cancel_subscription: bool,
}

/// `POST subscription/{id}/cancel` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CancelRequest {
    /// 1000-1099.
    pub cancel_reason: u16,
}

/// Fields every answer has.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// `"000"` = success.
    #[serde(default, deserialize_with = "flexible")]
    pub error_code: Option<String>,
    /// Message.
    #[serde(default)]
    pub error_message: Option<String>,
    /// New transaction id (refund).
    #[serde(default, rename = "transactionID", deserialize_with = "flexible")]
    pub transaction_id: Option<String>,
    /// Transaction object (status query).
    #[serde(default)]
    pub transaction: Option<Transaction>,
    /// Subscription object (cancel).
    #[serde(default)]
    pub subscription: Option<Subscription>,
    /// Transactions (export).
    #[serde(default)]
    pub transaction_list: Option<Vec<Transaction>>,
}

/// A transaction.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    /// Id.
    #[serde(default, rename = "transactionID", deserialize_with = "flexible")]
    pub transaction_id: Option<String>,
    /// The transaction this one refers to (the sale a refund belongs to).
    #[serde(default, rename = "referralID", deserialize_with = "flexible")]
    pub referral_id: Option<String>,
    /// `sale`, `refund`, ...
    #[serde(default)]
    pub operation: Option<String>,
    /// That transaction's own result code.
    #[serde(default, deserialize_with = "flexible")]
    pub error_code: Option<String>,
    /// Minor units.
    #[serde(default, deserialize_with = "flexible")]
    pub amount: Option<String>,
    /// ISO 4217.
    #[serde(default)]
    pub currency: Option<String>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "flexible")]
    pub date: Option<String>,
}

/// A subscription.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// State: trial, active, retry, unpaid, finished, disabled, canceled.
    #[serde(default)]
    pub state: Option<String>,
    /// Unix seconds, as a string.
    #[serde(default, deserialize_with = "flexible")]
    pub cancel_date: Option<String>,
    /// Reason code (may carry leading zeros).
    #[serde(default, deserialize_with = "flexible")]
    pub cancel_reason: Option<String>,
}

/// Unix seconds (string or number) -> time.
pub(crate) fn unix_time(s: Option<&str>) -> Option<time::OffsetDateTime> {
    let secs: i64 = s?.trim().parse().ok()?;
    time::OffsetDateTime::from_unix_timestamp(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_body_sends_cancel_subscription_explicitly() {
        let b = RefundRequest {
            transaction_id: "123".into(),
            amount: 500,
            cancel_subscription: false,
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"transactionID":"123","amount":500,"cancelSubscription":false}"#
        );
    }

    #[test]
    fn ids_and_amounts_as_numbers_or_strings() {
        let a: Answer = serde_json::from_str(
            r#"{"errorCode":"000","transaction":{"transactionID":12345678901234567890,"amount":"500","currency":"EUR","date":1700000000}}"#,
        )
        .unwrap();
        let t = a.transaction.unwrap();
        assert_eq!(t.transaction_id.as_deref(), Some("12345678901234567890"));
        assert_eq!(t.amount.as_deref(), Some("500"));
        assert_eq!(
            unix_time(t.date.as_deref()).unwrap().unix_timestamp(),
            1_700_000_000
        );
    }
}
